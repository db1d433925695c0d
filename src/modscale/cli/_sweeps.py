"""``modscale list | run | reproduce | plot | report``: experiments as resumable sweeps, figures, the report.

- ``list``: the registered experiments, their tiers and (``-v``) their config keys;
- ``run NAME``: one experiment's sweep into ``--out`` (resumes: stored runs are skipped);
- ``reproduce``: every experiment at a tier, then the figures and the report; an experiment whose data set
  is missing is skipped (``--fetch-data`` downloads it first; exit status 3 says something was skipped);
- ``plot DIR``: PNG and PDF of every figure that has results in ``DIR``;
- ``report DIR``: one self-contained HTML page.

Bad input (an unknown experiment, a bad ``--set``, an unreachable Ray address...) is one line on stderr and
exit status 2, with nothing written. Progress goes to stderr (a bar with ETA on a terminal, plain lines
otherwise); where the output is goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from modscale.errors import UsageError
from modscale.experiments import TIERS, all_experiments, current, execute, get, plan
from modscale.experiments.backends import BACKENDS, available_cores, check_device, make_backend
from modscale.experiments.runner import Progress, Summary
from modscale.results import FILENAME, load

PLAIN_EVERY_S = 10.0
# `modscale reproduce` finished and wrote its outputs, but skipped experiments whose data is missing.
EXIT_SKIPPED = 3


# ------------------------------------------------------------------------------------------ progress


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Eta:
    """Remaining time: the remaining estimated cost (calibrated on this machine, as ``--plan`` prices it),
    scaled by how long the cost done so far really took; before the first chunk, the calibrated estimate."""

    def __init__(self, total: int, cost: float, wall_s: float | None = None):
        self.t0 = time.monotonic()
        self.total, self.done = total, 0
        # Without estimates every run weighs the same.
        self.estimated = cost > 0
        self.cost_total = cost if cost > 0 else float(total)
        self.cost_done = 0.0
        self.wall_s = cost if wall_s is None else wall_s  # the estimate before anything has finished

    def add(self, runs: int, cost: float) -> None:
        self.done += runs
        self.cost_done += cost if cost > 0 else float(runs)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float | None:
        if self.cost_done <= 0:
            return max(0.0, self.wall_s - self.elapsed()) if self.estimated and self.total else None
        return self.elapsed() / self.cost_done * max(0.0, self.cost_total - self.cost_done)


class PlainProgress(Progress):
    """Lines on a stream: each experiment's start and end, and a line with an ETA at most every 10 s."""

    def __init__(self, stream=None, every_s: float = PLAIN_EVERY_S):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.eta: _Eta | None = None

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int, stored: int, cost: float = 0.0, wall_s: float | None = None) -> None:
        self.eta, self.last = _Eta(total, cost, wall_s), time.monotonic()
        self.todo: dict[str, int] = {}
        self.done: dict[str, int] = {}
        about = f", about {_clock(self.eta.wall_s)} here" if cost > 0 and total else ""
        self._say(f"{total} run(s) to do, {stored} already stored{about}")

    def experiment(self, name: str, todo: int, stored: int, cost: float = 0.0) -> None:
        self.todo[name] = self.todo.get(name, 0) + todo
        self.done.setdefault(name, 0)
        if todo or stored:
            self._say(f"{name}: {todo} run(s) to do" + (f", {stored} already stored" if stored else ""))

    def chunk(self, name: str, runs: int, wall_s: float, cost: float = 0.0) -> None:
        eta = self.eta
        eta.add(runs, cost)
        self.done[name] = self.done.get(name, 0) + runs
        now = time.monotonic()
        if self.done[name] == self.todo.get(name) or now - self.last >= self.every_s:
            self.last = now
            left = eta.remaining()
            timing = f"elapsed {_clock(eta.elapsed())}" + (
                f", ETA {_clock(left)}" if left is not None else ""
            )
            runs = f"{self.done[name]}/{self.todo.get(name, 0)} runs"
            self._say(f"[{eta.done}/{eta.total}] {name}: {runs}, {timing}")

    def failed(self, name: str, runs: int, message: str) -> None:
        self.eta.add(runs, 0.0)
        self._say(f"FAILED: {message}")

    def finish(self) -> None:
        if self.eta is not None and self.eta.total:
            what = "done" if self.eta.done == self.eta.total else "stopped after"
            self._say(f"{what} {self.eta.done}/{self.eta.total} run(s) in {_clock(self.eta.elapsed())}")


class BarProgress(Progress):
    """A rich progress bar with ETA (for terminals); the bar advances by estimated cost, not by runs."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[runs]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = None
        self.eta: _Eta | None = None

    def start(self, total: int, stored: int, cost: float = 0.0, wall_s: float | None = None) -> None:
        self.eta = _Eta(total, cost, wall_s)
        self.bar.start()
        self.task = self.bar.add_task(
            "starting", total=self.eta.cost_total or 1, runs=f"0/{total} runs", eta=""
        )
        if stored:
            self.bar.console.print(f"{stored} run(s) already stored: skipped")

    def experiment(self, name: str, todo: int, stored: int, cost: float = 0.0) -> None:
        self.bar.update(self.task, description=name)

    def failed(self, name: str, runs: int, message: str) -> None:
        self.eta.add(runs, 0.0)
        self.bar.console.print(f"FAILED: {message}", markup=False, highlight=False)

    def chunk(self, name: str, runs: int, wall_s: float, cost: float = 0.0) -> None:
        self.eta.add(runs, cost)
        self.bar.update(self.task, description=name)
        left = self.eta.remaining()
        self.bar.update(
            self.task,
            completed=self.eta.cost_done,
            runs=f"{self.eta.done}/{self.eta.total} runs",
            eta=f"ETA {_clock(left)}" if left is not None else "",
        )

    def finish(self) -> None:
        if self.task is not None:
            done = self.eta is not None and self.eta.done == self.eta.total
            # The summed estimates can miss the total by float rounding: a finished sweep shows a full bar.
            completed = self.bar.tasks[0].total if done else self.eta.cost_done
            self.bar.update(self.task, description="done" if done else "stopped", eta="", completed=completed)
        self.bar.stop()


def make_progress(quiet: bool = False) -> Progress:
    if quiet:
        return Progress()
    return BarProgress() if sys.stderr.isatty() else PlainProgress()


# ------------------------------------------------------------------------------------------ parsers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (worker processes), got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (worker processes), got {value}")
    return value


def _add_sweep_options(p: argparse.ArgumentParser, keep_going: bool) -> None:
    p.add_argument("--tier", choices=TIERS, default="small", help="grid size (default: small)")
    p.add_argument("--seeds", type=_positive_int, default=None, help="seeds per config (default: the tier's)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="where chunks run (default: local)")
    p.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        default=None,
        metavar="N",
        help=f"worker processes of the local backend, one chunk and one thread each (default: the cores this "
        f"process may use, {available_cores()} here; 1 runs in this process)",
    )
    p.add_argument(
        "--keep-going",
        action=argparse.BooleanOptionalAction,
        default=keep_going,
        help="after a chunk fails, run the others (default: "
        + ("yes" if keep_going else "no: stop, keeping what finished")
        + ")",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (default: RAY_ADDRESS, else a local instance started and stopped)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="CIFAR-10 folder (npz or cifar-10-batches-py; default: $MODSCALE_DATA, else the data home, "
        "else ../shared/data/cifar10 next to the checkout; see `modscale data list`)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--plan",
        action="store_true",
        help="list the runs to do, those already stored and the time they should take here; run nothing",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="the registered experiments")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these experiments")
    p.add_argument("-v", "--verbose", action="store_true", help="tiers and config keys too")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="run one experiment's sweep (resumable)")
    p.add_argument("name", metavar="NAME", help="experiment (see `modscale list`)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config key (KEY=V) or sweep it (KEY=V1,V2,...)",
    )
    _add_sweep_options(p, keep_going=False)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("reproduce", help="every experiment at a tier, then figures and the report")
    p.add_argument("--only", default=None, metavar="NAMES", help="comma-separated experiments (default: all)")
    p.add_argument(
        "--fetch-data",
        action="store_true",
        help="download a missing data set first (CIFAR-10: 163 MB; `modscale data fetch cifar10`); "
        "without it, experiments whose data is missing are skipped",
    )
    _add_sweep_options(p, keep_going=True)
    p.set_defaults(handler=cmd_reproduce)

    p = sub.add_parser("plot", help="PNG and PDF of every figure with results in DIR")
    p.add_argument("dir", metavar="DIR", help="results directory")
    p.add_argument("--formats", default="png,pdf", help="comma-separated file formats (default: png,pdf)")
    p.add_argument("--figures-dir", default=None, help="where to write (default: DIR/figures)")
    p.set_defaults(handler=cmd_plot)

    p = sub.add_parser("report", help="one self-contained HTML page of the results in DIR")
    p.add_argument("dir", metavar="DIR", help="results directory")
    p.add_argument("-o", "--output", default=None, help="HTML file (default: DIR/report.html)")
    p.set_defaults(handler=cmd_report)


# ------------------------------------------------------------------------------------------ commands


def cmd_list(args: argparse.Namespace) -> int:
    experiments = [get(n) for n in args.names] if args.names else all_experiments()
    if not experiments:
        print("no experiments are registered")
        return 0
    width = max(len(e.name) for e in experiments)
    for e in experiments:
        if args.verbose:
            print(e.describe())
            print()
        else:
            sizes = "/".join(str(len(e.tiers[t].configs) * e.tiers[t].seeds) for t in TIERS)
            print(f"{e.name:<{width}}  runs {sizes:<14}  {e.description}")
    if not args.verbose:
        print(f"\nruns per tier: {'/'.join(TIERS)}; `modscale list -v NAME` shows config keys")
    return 0


def _check_common(args: argparse.Namespace) -> None:
    check_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if args.ray_address and args.backend != "ray":
        raise UsageError("--ray-address needs --backend ray")
    if args.data_dir is not None:
        from modscale.data import DATA_ENV, locate_cifar10

        _, folder = locate_cifar10(args.data_dir)  # a folder without the data is a usage error, now
        # experiments (and Ray workers started from this process) find the data through the environment
        os.environ[DATA_ENV] = str(Path(folder).resolve())


def _backend(args: argparse.Namespace):
    """The backend the options ask for, not yet entered: the local one with ``--jobs`` worker processes
    (default: the cores this process may use); a bad combination is a usage error here, before any work."""
    jobs = args.jobs
    if args.backend == "local" and jobs is None:
        jobs = available_cores()
    return make_backend(args.backend, ray_address=args.ray_address, jobs=jobs)


def _print_summary(summary: Summary) -> None:
    for name, planned in summary.planned.items():
        ran, skipped = summary.ran.get(name, 0), summary.skipped.get(name, 0)
        line = f"{name}: {planned} run(s): {ran} run now in {summary.wall_s.get(name, 0.0):.1f} s"
        if skipped:
            line += f", {skipped} already stored"
        if name in summary.errors:
            failed = summary.failed_chunks.get(name, 1)
            line += f"; FAILED ({failed} chunk(s)): {summary.errors[name]}"
        print(line)
    for note in summary.notes:
        print(f"modscale: note: {note}", file=sys.stderr)
    for name, text in summary.tracebacks.items():
        print(f"modscale: {name} failed with an unexpected error:\n{text}", file=sys.stderr, end="")


# A plan longer than this gets advice on how to go faster.
LONG_PLAN_S = 3 * 3600


# Drawing the figures and the report after `reproduce`: seconds per experiment on one process, and a fixed
# part (reading the results, the verdicts); measured for the small tier on a 2-core AMD EPYC, 2026-12-04
# (15 experiments, 18 figures: 16.5 s on two processes, 24.8 s on one).
DRAW_S_PER_EXPERIMENT = 1.4
DRAW_S_FIXED = 4.0


def _print_plan(plans, args: argparse.Namespace, backend, outputs: bool = False) -> None:
    """The runs each plan would do in ``--out``, the runs stored there and the calibrated time; no writes.
    ``outputs``: the figures and report are drawn afterwards (``reproduce``), and priced too."""
    from modscale.experiments import schedule

    out = Path(args.out)
    records = load(out, warn=False).records if (out / FILENAME).exists() else []
    # a local backend's workers are known; a Ray cluster's only once joined (a local instance: every core)
    if args.backend == "local":
        workers = backend.workers
    else:
        workers = None if args.ray_address else available_cores()
    sched = schedule.build(plans, records, args.device, workers=workers or 1)
    lines = sched.lines
    width = max([len(line.name) for line in lines] + [len("figures, report")])
    device = lines[0].device if lines else "cpu"
    print(f"plan: tier {args.tier} into {out} on {backend.describe()} ({device})")
    print(f"{'experiment':<{width}}  {'to do':>6}  {'stored':>6}  {'estimate':>9}  calibration")
    for line in lines:
        cal = line.calibration
        how = f"x{cal.factor:.2f} from {cal.detail}" if cal.source != "none" else cal.detail
        if not line.todo:
            how = "nothing to do"
        print(f"{line.name:<{width}}  {line.todo:>6}  {line.stored:>6}  {_clock(line.estimate_s):>9}  {how}")
    print(f"{'total':<{width}}  {sched.todo:>6}  {sched.stored:>6}  {_clock(sched.compute_s):>9}  one worker")
    wall, how = sched.compute_s, "one worker"
    if workers and workers > 1 and sched.chunks:
        longest = max(c.seconds for c in sched.chunks)
        wall, how = sched.wall_s, f"{workers} workers, longest chunk first (the longest: {_clock(longest)})"
    if outputs:
        draw = DRAW_S_FIXED + DRAW_S_PER_EXPERIMENT * len(plans) / min(workers or 1, max(len(plans), 1))
        print(f"{'figures, report':<{width}}  {'':>6}  {'':>6}  {_clock(draw):>9}  drawn after the runs")
        wall, how = wall + draw, how + ", then the figures and report"
    if outputs or (workers and workers > 1 and sched.chunks):
        print(f"{'wall time':<{width}}  {'':>6}  {'':>6}  {_clock(wall):>9}  {how}")
    if wall > LONG_PLAN_S:
        seeds = max((len({j.seed for j in p.jobs}) for p in plans), default=1)
        print(
            f"this is about {wall / 3600:.0f} hours here; to go faster: run on a GPU (--device cuda), "
            f"spread the chunks over a cluster (--backend ray --ray-address HOST:PORT), or run fewer seeds "
            f"(--seeds 1 runs 1/{seeds} of them); a stopped sweep resumes where it stopped"
        )


def cmd_run(args: argparse.Namespace) -> int:
    _check_common(args)
    sweep = plan(args.name, args.tier, args.seeds, args.overrides)
    backend = _backend(args)
    if args.plan:
        _print_plan([sweep], args, backend)
        return 0
    summary = execute(
        [sweep],
        args.out,
        backend,
        device=args.device,
        progress=make_progress(args.quiet),
        keep_going=args.keep_going,
    )
    _print_summary(summary)
    print(f"results: {summary.results_path}")
    return 1 if summary.errors else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    _check_common(args)
    if args.only:
        names = list(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
        experiments = [get(n) for n in names]
    else:
        experiments = all_experiments()
    if not experiments:
        raise UsageError("no experiments are registered")
    plans = [plan(e, args.tier, args.seeds) for e in experiments]
    backend = _backend(args)
    if args.plan:
        _print_plan(plans, args, backend, outputs=True)
        return 0
    from modscale.cli._data import ensure_data

    missing = ensure_data(
        [d for p in plans for d in p.experiment.data], fetch_missing=args.fetch_data, quiet=args.quiet
    )
    skipped = {p.experiment.name: missing[d] for p in plans for d in p.experiment.data if d in missing}
    plans = [p for p in plans if p.experiment.name not in skipped]
    if not args.quiet:
        print(
            f"reproducing {len(plans)} experiment(s) at tier {args.tier} on {backend.describe()} into "
            f"{args.out}",
            file=sys.stderr,
        )
    summary = execute(
        plans,
        args.out,
        backend,
        device=args.device,
        progress=make_progress(args.quiet),
        keep_going=args.keep_going,
    )
    _print_summary(summary)
    notes = []
    for name, reason in skipped.items():
        print(f"{name}: skipped: {reason}")
    for reason in dict.fromkeys(skipped.values()):
        names = ", ".join(n for n, r in skipped.items() if r == reason)
        notes.append(f"skipped {names}: {reason}")
    out = Path(args.out)
    figures, report, text = _write_outputs(
        out, out / "figures", ("png", "pdf"), out / "report.html", extra_notes=notes, jobs=backend.workers
    )
    print(f"results: {summary.results_path}")
    print(f"figures: {figures}")
    print(f"summary: {text}")
    print(f"report:  {report}")
    if summary.errors:
        return 1
    return EXIT_SKIPPED if skipped else 0


def _records(directory: Path):
    if not (directory / FILENAME).exists():
        raise UsageError(
            f"no results in {directory} (no {FILENAME}); run `modscale run NAME --out {directory}` "
            "or `modscale reproduce --out DIR` first"
        )
    loaded = load(directory, warn=False)
    records, misfits = current(loaded.records)
    return records, loaded.notes() + misfits


def _descriptions() -> dict[str, str]:
    return {e.name: e.description + (f" (paper: {e.paper})" if e.paper else "") for e in all_experiments()}


def _draw(blob: bytes, directory: Path, formats, report: bool) -> str | None:
    """Save one pickled figure in ``formats`` and return its report PNG (in a worker process)."""
    import pickle

    from modscale.plots import save
    from modscale.plots.report import figure_png

    output = pickle.loads(blob)
    save(output, directory, formats)
    return figure_png(output) if report else None


def _save_figures(outputs, directory: Path, formats, report: bool, jobs: int) -> dict[str, str]:
    """Save every figure, on up to ``jobs`` processes (drawing is most of the time after a sweep: 15-20 s for
    the small tier on one core); returns the report's PNGs by figure name when ``report``."""
    import pickle

    from modscale.plots import save
    from modscale.plots.report import figure_png

    jobs = min(jobs, len(outputs))
    if jobs <= 1:
        for output in outputs:
            save(output, directory, formats)
        return {o.name: figure_png(o) for o in outputs} if report else {}
    from concurrent.futures import ProcessPoolExecutor

    from modscale.experiments._pool import context

    blobs = {o.name: pickle.dumps(o) for o in outputs}
    with ProcessPoolExecutor(jobs, mp_context=context()) as pool:
        # the largest first (most drawn points), so that no long figure starts last
        order = sorted(blobs, key=lambda name: -len(blobs[name]))
        futures = {name: pool.submit(_draw, blobs[name], directory, formats, report) for name in order}
        images = {name: f.result() for name, f in futures.items()}
    return images if report else {}


def _write_outputs(
    directory: Path, figures_dir: Path, formats, report_path: Path | None, extra_notes=(), jobs: int = 1
):
    from modscale.plots import render
    from modscale.plots.report import summary_text, write_report

    records, notes = _records(directory)
    notes = list(extra_notes) + notes  # extra notes (skipped experiments) were printed already
    for note in notes[len(extra_notes) :]:
        print(f"modscale: note: {note}", file=sys.stderr)
    outputs = render(records)
    images = _save_figures(outputs, figures_dir, formats, report_path is not None, jobs)
    text_path = directory / "summary.txt"
    text_path.write_text(summary_text(records, outputs, notes=notes))
    report = None
    if report_path is not None:
        report = write_report(
            records,
            report_path,
            notes=notes,
            descriptions=_descriptions(),
            source=str(directory),
            outputs=outputs,
            images=images,
        )
    return figures_dir, report, text_path


def cmd_plot(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    allowed = {"png", "pdf", "svg"}
    if not formats or not set(formats) <= allowed:
        raise UsageError(
            f"--formats must be a comma-separated subset of {', '.join(sorted(allowed))}, "
            f"got {args.formats!r}"
        )
    records, notes = _records(directory)
    from modscale.plots import render, save

    for note in notes:
        print(f"modscale: note: {note}", file=sys.stderr)
    outputs = render(records)
    target = Path(args.figures_dir) if args.figures_dir else directory / "figures"
    for output in outputs:
        for path in save(output, target, formats):
            print(path)
    if not outputs:
        print(f"no records to plot in {directory}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    output = Path(args.output) if args.output else directory / "report.html"
    if output.exists() and output.is_dir():
        raise UsageError(f"-o {output} is a directory")
    records, notes = _records(directory)
    from modscale.plots.report import write_report

    for note in notes:
        print(f"modscale: note: {note}", file=sys.stderr)
    path = write_report(records, output, notes=notes, descriptions=_descriptions(), source=str(directory))
    print(f"report: {path}")
    return 0


__all__ = ["add_parsers", "PlainProgress", "BarProgress", "make_progress"]
