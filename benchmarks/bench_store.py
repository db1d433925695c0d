"""The results store at scale: append throughput, load, `modscale report` and `modscale plot` over 10^5 runs.

The store is generated from a real one (default docs/paper-scale, every experiment of the paper tier):
its records are copied with their seeds shifted by multiples of 10,000 until ``--runs`` runs are stored, so
each figure's points aggregate ``--runs / len(source)`` times as many seeds and every line passes its
config-hash check. Then, in this order and one at a time:

1. append throughput: the records written with ``ResultsStore.append`` in batches of ``--batch`` (each batch
   written, flushed and fsynced, as a sweep stores a chunk);
2. ``load`` of the whole store (runs / s);
3. ``modscale report STORE -o report.html`` and ``modscale plot STORE --formats png`` as child processes:
   wall time and peak memory (the child's maximum resident set);
4. the same report after a crash left a torn last line (half a record, no newline).

Ends with ``report_s= plot_s= report_torn_s= report_mb= plot_mb= append_runs_per_s= load_runs_per_s=``.
Goal: a report over 10^5 runs in <= 60 s on a 2-core machine.

    python benchmarks/bench_store.py                    # 10^5 runs in a temporary folder
    python benchmarks/bench_store.py --runs 20000 --keep /tmp/store
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from modscale._provenance import code_version
from modscale.results import ResultsStore, ResultsWarning, load


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


_WRAP = (  # runs argv, then prints its peak resident set (KiB): one wrapper per child keeps them apart
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def child(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one child process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAP, *argv], capture_output=True, text=True,
                          env=dict(os.environ, MPLBACKEND="Agg"))  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("docs/paper-scale"), help="a store to copy")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="runs per append (a sweep's chunk)")
    parser.add_argument("--keep", type=Path, help="build the store here and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    source = load(args.source, warn=False).records
    if not source:
        parser.error(f"{args.source} holds no records")
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; modscale {code_version()}; source {args.source} "
          f"({len(source):,} runs)", flush=True)  # fmt: skip
    folder = args.keep or Path(tempfile.mkdtemp(prefix="modscale-store-"))
    store_dir = folder / "store"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    try:
        copies = [
            dataclasses.replace(r, seed=r.seed + 10_000 * (i // len(source)))
            for i, r in zip(
                range(args.runs), (source[j % len(source)] for j in range(args.runs)), strict=True
            )
        ]
        t0 = time.perf_counter()
        with ResultsStore(store_dir) as store:
            for start in range(0, len(copies), args.batch):
                store.append(copies[start : start + args.batch])
        append_s = time.perf_counter() - t0
        size = (store_dir / "results.jsonl").stat().st_size
        rate = len(copies) / append_s
        print(f"append: {len(copies):,} runs in {append_s:.1f} s ({rate:,.0f} runs/s, batches of "
              f"{args.batch}); {size / 2**20:.0f} MB", flush=True)  # fmt: skip
        t0 = time.perf_counter()
        n_loaded = len(load(store_dir).records)
        load_s = time.perf_counter() - t0
        print(f"load: {n_loaded:,} runs in {load_s:.1f} s ({n_loaded / load_s:,.0f} runs/s)", flush=True)
        modscale = [sys.executable, "-m", "modscale"]
        report_s, report_mb = child([*modscale, "report", str(store_dir), "-o", str(folder / "report.html")])
        print(f"report: {report_s:.1f} s, peak {report_mb:.0f} MB", flush=True)
        plot_s, plot_mb = child([*modscale, "plot", str(store_dir), "--formats", "png"])
        print(f"plot: {plot_s:.1f} s, peak {plot_mb:.0f} MB", flush=True)
        with open(store_dir / "results.jsonl", "a") as f:  # a crash mid-write: half a line, no newline
            f.write(copies[0].to_json()[:100])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultsWarning)
            torn_s, _ = child([*modscale, "report", str(store_dir), "-o", str(folder / "report-torn.html")])
        print(f"report with a torn last line: {torn_s:.1f} s", flush=True)
        print(
            f"report_s={report_s:.1f} plot_s={plot_s:.1f} report_torn_s={torn_s:.1f} "
            f"report_mb={report_mb:.0f} plot_mb={plot_mb:.0f} append_runs_per_s={rate:.0f} "
            f"load_runs_per_s={n_loaded / load_s:.0f}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
