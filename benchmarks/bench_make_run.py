"""`make run` at --jobs 1 and --jobs N side by side: wall time, CPU use, memory, plan against measured.

Runs `modscale reproduce --tier TIER --out DIR --jobs J --fetch-data` into a fresh folder for each J (the
order alternates over rounds, so that a machine that speeds up or slows down during the benchmark does not
favour one), first asking `--plan` for its estimate. Measures:

- wall: the whole command (start-up, the sweep, figures, summary and report), as a user waits for it;
- CPU use: the machine's busy time over the command's wall time, from /proc/stat (100% = one core busy);
  worker processes are not children the shell's `time` counts, so the machine-wide figure is the honest one
  (run it on an otherwise idle machine);
- peak memory: the largest sum of resident memory over the command's process tree, sampled every 0.5 s;
- plan / measured: `--plan`'s wall estimate for that --jobs (its last column), over the measured wall;
- the stored metrics of the runs compared across J (timings, keys ending in `_s`, excepted): must be equal.

    python benchmarks/bench_make_run.py [--tier small] [--jobs 2] [--rounds 1]

Ends with one line: `ratio= cpu_pct= wall_1= wall_N= plan_ratio_1= plan_ratio_N= identical=`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from modscale.results import load


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        rss[int(entry)] = int(match.group(1)) if match else 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _seconds(text: str) -> float:
    parts = [int(p) for p in text.split(":")]
    return float(sum(p * 60**i for i, p in enumerate(reversed(parts))))


def plan_wall(modscale: list[str], tier: str, jobs: int, out: Path) -> float:
    """`--plan`'s wall estimate (its `wall time` row with several workers, else its `total` row)."""
    text = subprocess.run(
        [*modscale, "reproduce", "--tier", tier, "--out", str(out), "--jobs", str(jobs), "--plan"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    row = rows.get("wall") or rows["total"]
    return _seconds(next(word for word in row.split() if re.fullmatch(r"\d+(:\d\d)+", word)))


def one(modscale: list[str], tier: str, jobs: int, out: Path) -> dict:
    planned = plan_wall(modscale, tier, jobs, out)
    busy0, _ = _busy_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*modscale, "reproduce", "--tier", tier, "--out", str(out), "--jobs", str(jobs), "--fetch-data"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    busy1, _ = _busy_jiffies()
    sampler.join()
    if proc.returncode not in (0,):
        sys.exit(f"--jobs {jobs} failed (exit {proc.returncode}):\n{err[-2000:]}")
    runs = re.search(r"done (\d+)/(\d+) run\(s\) in (\S+)", err)
    return {
        "jobs": jobs,
        "wall": wall,
        "cpu_pct": 100.0 * (busy1 - busy0) / hz / wall,
        "peak_mb": peak[0],
        "plan": planned,
        "sweep": _seconds(runs.group(3)) if runs else float("nan"),
        "runs": int(runs.group(1)) if runs else 0,
    }


def metrics(out: Path) -> dict:
    return {
        r.key: {k: v for k, v in r.metrics.items() if not k.endswith("_s")}
        for r in load(out, warn=False).records
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", default="small")
    ap.add_argument("--jobs", type=int, default=2, help="the N compared with --jobs 1 (default 2)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    modscale = [sys.executable, "-m", "modscale"]
    info = Path("/proc/cpuinfo").read_text().splitlines()

    def field(name: str) -> str:
        values = (line.split(":", 1)[1].strip() for line in info if line.split(":")[0].strip() == name)
        return next(values, "?")

    cpu = f"{field('model name')} (family {field('cpu family')}, model {field('model')})"
    print(f"machine: {os.cpu_count()} cores, {cpu}; tier {args.tier}; --jobs 1 vs --jobs {args.jobs}")
    results: dict[int, list[dict]] = {1: [], args.jobs: []}
    outs: dict[int, Path] = {}
    root = Path(tempfile.mkdtemp(prefix="bench-make-run-"))
    try:
        for r in range(args.rounds):
            order = (1, args.jobs) if r % 2 == 0 else (args.jobs, 1)
            for jobs in order:
                out = root / f"r{r}-j{jobs}"
                res = one(modscale, args.tier, jobs, out)
                results[jobs].append(res)
                outs[jobs] = out
                print(
                    f"round {r} --jobs {jobs}: wall {_clock(res['wall'])} (sweep {_clock(res['sweep'])}, "
                    f"{res['runs']} runs), CPU {res['cpu_pct']:.0f}%, peak {res['peak_mb']:.0f} MB, "
                    f"plan {_clock(res['plan'])} = {res['plan'] / res['wall']:.2f} x measured",
                    flush=True,
                )
        a, b = metrics(outs[1]), metrics(outs[args.jobs])
        identical = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
        w1 = min(x["wall"] for x in results[1])
        wn = min(x["wall"] for x in results[args.jobs])
        best_n = min(results[args.jobs], key=lambda x: x["wall"])
        best_1 = min(results[1], key=lambda x: x["wall"])
        print(f"--jobs {args.jobs} / --jobs 1 wall: {wn / w1:.3f}; stored metrics identical: {identical}")
        print(
            f"ratio={wn / w1:.3f} cpu_pct={best_n['cpu_pct']:.0f} wall_1={w1:.1f} wall_{args.jobs}={wn:.1f} "
            f"plan_ratio_1={best_1['plan'] / w1:.2f} plan_ratio_{args.jobs}={best_n['plan'] / wn:.2f} "
            f"identical={identical}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
