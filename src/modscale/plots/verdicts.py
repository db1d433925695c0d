"""The paper's claims (PAPER.md), what the stored runs show, and whether the two agree: computed, not typed.

Each check reads one experiment's records, averages each seed's number per config (mean +- SD over seeds;
sample complexities as medians over seeds in which a bound stays a bound, :mod:`modscale.plots.scaling`)
and states the outcome as one sentence with its numbers and seed count. The verdict is ``yes`` (the claim
holds at every point the runs cover), ``partly`` (at some), ``no`` (at none) or ``not run`` (no records of
that experiment, or none that settle it). The rules are fixed here, before any result is looked at, and are
deliberately plain: orderings of means, and for "flat" a spread below 10% of the mean (for the growth of
n* per unit m, an interval within 1 -+ 10%). A mean difference smaller than one SD is still counted as an
ordering, so each sentence gives the SDs for the reader to weigh.

:func:`verdicts` is what the report (:mod:`modscale.plots.report`) and ``summary.txt`` open with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from modscale import paper
from modscale.results import Record

YES, PARTLY, NO, NOT_RUN = "yes", "partly", "no", "not run"
FLAT = 0.10  # "does not change": (max - min) / mean of the means below this
METHODS = ("modular-kernel", "modular-random", "monolithic")  # the paper's order: best first


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim: ``claim`` (the paper's words, shortened), ``ours`` (what the runs show), ``agrees``."""

    claim: str
    experiment: str
    ours: str
    agrees: str


def _of(records: Sequence[Record], experiment: str, **where) -> list[Record]:
    return [
        r
        for r in records
        if r.experiment == experiment and all(r.config.get(k) == v for k, v in where.items())
    ]


def _stat(records: Sequence[Record], key: Callable[[Record], object], metric: str):
    """{key: (mean, SD, seeds)} of ``metric`` (seed values first averaged over configs sharing the key)."""
    per: dict[object, dict[int, list[float]]] = {}
    for r in records:
        v = r.metrics.get(metric)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            per.setdefault(key(r), {}).setdefault(r.seed, []).append(float(v))
    out = {}
    for k, seeds in per.items():
        vals = np.array([np.mean(v) for v in seeds.values()])
        out[k] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals))
    return out


def _pm(stat) -> str:
    mean, sd, n = stat
    return f"{mean:.3g} +- {sd:.2g}" if n > 1 else f"{mean:.3g}"


def _seeds(stats) -> str:
    counts = sorted({s[2] for s in stats})
    return (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}") + " seed(s)"


def _share(hits: int, total: int) -> str:
    if total == 0:
        return NOT_RUN
    return YES if hits == total else NO if hits == 0 else PARTLY


def _not_run(claim: str, experiment: str, records: Sequence[Record] = ()) -> Verdict:
    """No verdict: no runs of ``experiment``, or (when ``records`` has some) not the ones the claim needs."""
    have = any(r.experiment == experiment for r in records)
    what = "its stored runs do not yet cover what the claim compares" if have else "no stored runs"
    return Verdict(claim, experiment, what, NOT_RUN)


# ----------------------------------------------------------------------------------------------- theory


def _theory_m(records):
    claim = "theory: monolithic test loss grows with m, sublinearly (claim 1)"
    rs = _of(records, "theory_loss_trends", panel="m", model="monolithic")
    s = _stat(rs, lambda r: r.config["m"], "test")
    if len(s) < 3:
        return _not_run(claim, "theory_loss_trends", records)
    ms = sorted(s)
    t = [s[m][0] for m in ms]
    rising = sum(b > a for a, b in zip(t, t[1:], strict=False))
    steps = np.diff(t)
    sublinear = steps[-1] < steps[0]
    ours = (
        f"test {t[0]:.3g} -> {t[-1]:.3g} for m = {ms[0]}..{ms[-1]}; rises at {rising} of {len(ms) - 1} steps"
    )
    ours += ", increments shrink" if sublinear else ", increments do not shrink"
    return Verdict(claim, "theory_loss_trends", ours, _share(rising + int(sublinear), len(ms)))


def _theory_k(records):
    claim = "theory: loss does not change with the number of modules k (claim 1)"
    rs = _of(records, "theory_loss_trends", panel="k", model="monolithic")
    s = _stat(rs, lambda r: r.config["k"], "test")
    if len(s) < 2:
        return _not_run(claim, "theory_loss_trends", records)
    t = np.array([v[0] for v in s.values()])
    spread = (t.max() - t.min()) / t.mean()
    ours = f"test {t.min():.3g} ... {t.max():.3g} over k = {min(s)}..{max(s)} (spread {100 * spread:.1f}%)"
    return Verdict(claim, "theory_loss_trends", ours, YES if spread < FLAT else NO)


def _theory_spike(records):
    claim = "theory: double descent, a spike of test loss where p ~ n (claim 1)"
    rs = _of(records, "theory_loss_trends", panel="p", model="monolithic")
    if not rs:
        return _not_run(claim, "theory_loss_trends", records)
    hits = total = 0
    for n in sorted({r.config["n"] for r in rs}):
        s = _stat([r for r in rs if r.config["n"] == n], lambda r: r.config["p"], "test")
        ps = sorted(s)
        if len(ps) < 3:
            continue
        total += 1
        peak = max(ps, key=lambda p: s[p][0])
        hits += int(0.8 <= peak / n <= 1.25 and ps[0] < peak < ps[-1])
    ours = f"the test loss peaks within p/n = 0.8-1.25 at {hits} of {total} n values"
    return Verdict(claim, "theory_loss_trends", ours, _share(hits, total))


def _theory_samples(records):
    claim = "theory: samples needed grow exponentially with m; a modular model's do not (claims 1, 2)"
    rs = _of(records, "theory_samples_vs_m")
    if not rs:
        return _not_run(claim, "theory_samples_vs_m", records)
    ratios = {}
    for model in ("monolithic", "modular"):
        mono = [r for r in rs if r.config["model"] == model]
        per_eps = []
        for eps in sorted({r.config["eps"] for r in mono}):
            s = {r.config["m"]: r.metrics["n_star"] for r in mono if r.config["eps"] == eps}
            if len(s) >= 2 and s[min(s)] > 0:
                per_eps.append(s[max(s)] / s[min(s)])
        ratios[model] = per_eps
    mono, modu = ratios["monolithic"], ratios["modular"]
    if not mono:
        return _not_run(claim, "theory_samples_vs_m", records)
    ours = (
        f"n*(m max) / n*(m min): monolithic {min(mono):.3g} ... {max(mono):.3g} over {len(mono)} thresholds"
    )
    if modu:
        ours += f"; modular {min(modu):.3g} ... {max(modu):.3g}"
    grows = sum(r > 2 for r in mono)
    flat = bool(modu) and all(abs(r - 1) < FLAT for r in modu)
    return Verdict(claim, "theory_samples_vs_m", ours, _share(grows + int(flat), len(mono) + 1))


def _theory_check(records):
    claim = "the closed forms equal a Monte-Carlo simulation of the same model (DESIGN: within 3%)"
    rs = _of(records, "theory_check")
    s = _stat(rs, lambda r: r.config_hash, "test_rel_err")
    if not s:
        return _not_run(claim, "theory_check", records)
    worst = max(abs(v[0]) for v in s.values())
    ours = (
        f"largest |Monte Carlo / closed form - 1| of the test loss: {100 * worst:.2g}% over {len(s)} points"
    )
    return Verdict(claim, "theory_check", ours + f" ({_seeds(s.values())})", YES if worst <= 0.03 else NO)


# ----------------------------------------------------------------------------------------------- sine


def _net_m(records):
    claim = (
        "networks: a monolithic network's test loss grows with m; a modular one's on the true projections "
        "does not (claim 2)"
    )
    out = {}
    for model in ("monolithic", "modular"):
        rs = _of(records, "sine_loss_trends", panel="m", model=model)
        out[model] = _stat(rs, lambda r: r.config["m"], "test")
    mono, modu = out["monolithic"], out["modular"]
    if len(mono) < 2:
        return _not_run(claim, "sine_loss_trends", records)
    lo, hi = min(mono), max(mono)
    ours = f"monolithic test {_pm(mono[lo])} at m = {lo}, {_pm(mono[hi])} at m = {hi}"
    ok = int(mono[hi][0] > mono[lo][0])
    total = 1
    if len(modu) >= 2:
        t = np.array([v[0] for v in modu.values()])
        ratio = t.max() / t.min()
        ours += f"; modular {t.min():.3g} ... {t.max():.3g} over every m (max/min {ratio:.2g})"
        ok += int(ratio < mono[hi][0] / mono[lo][0])
        total += 1
    else:
        ours += "; modular on the true projections: not run"
    return Verdict(claim, "sine_loss_trends", ours + f" ({_seeds(mono.values())})", _share(ok, total))


def _double_descent(records):
    claim = "networks: double descent, a test-loss peak where p ~ n (claim 1)"
    rs = [r for r in _of(records, "double_descent") if r.config["noise"] > 0]
    if not rs:
        return _not_run(claim, "double_descent", records)
    hits = total = 0
    parts = []
    for key in sorted({(r.config["m"], r.config["n"]) for r in rs}):
        g = [r for r in rs if (r.config["m"], r.config["n"]) == key]
        s = _stat(g, lambda r: round(r.metrics["p_over_n"], 3), "test")
        xs = sorted(s)
        if len(xs) < 3:
            continue
        total += 1
        near = min(xs, key=lambda x: abs(math.log(x)))
        peak = s[near][0] > max(s[xs[0]][0], s[xs[-1]][0]) and xs[0] < near < xs[-1]
        hits += int(peak)
        ends = f"{_pm(s[xs[0]])} and {_pm(s[xs[-1]])}"
        parts.append(f"m={key[0]}, n={key[1]}: {_pm(s[near])} at p/n = {near:g} vs {ends} at the ends")
    if total == 0:
        return _not_run(claim, "double_descent", records)
    ours = (
        f"with label noise, a peak near p/n = 1 in {hits} of {total} settings (" + "; ".join(parts[:3]) + ")"
    )
    return Verdict(claim, "double_descent", ours, _share(hits, total))


def _n_star_cells(rs: Sequence[Record]):
    """{(regime, method, eps): [Point]} of the sample-complexity runs (bounds kept as bounds)."""
    from modscale.plots.sine_sample_complexity import points

    return points(rs)


def _below(a, b) -> bool | None:
    """Whether median ``a`` is surely below median ``b`` (each a :class:`~modscale.plots.scaling.Median`);
    None where their bounds leave it open."""
    if a.kind == "value" and b.kind == "value":
        return a.value < b.value
    if b.kind == "above" and a.kind in ("value", "below") and a.value <= b.value:
        return True  # b exceeds its bound, a does not
    if a.kind == "above" and b.kind in ("value", "below") and b.value <= a.value:
        return False
    if a.kind == "below" and b.kind == "value":
        return a.value < b.value or None
    if b.kind == "below" and a.kind == "value":
        return False if b.value <= a.value else None
    return None


def _n_star_claims(records):
    """Claim 4 on the sine task (rich regime): n* of kernel-init, random-init and monolithic networks vs m,
    with censored medians (a bound decides an ordering only where it settles it); and, per regime, the law
    n*(m) follows (:mod:`modscale.plots.scaling`)."""
    from modscale.plots.scaling import censored_median, which_law

    names = (
        "sine task: the kernel-initialised modular network needs fewer samples than a monolith (claim 4)",
        "sine task: ... and fewer than the same network with random projections (claim 4)",
        "sine task: random projections do worse than the monolith (claim 4, paper figure)",
        "sine task: the kernel-initialised network's n* grows less with m than a monolith's (claims 2, 4)",
    )
    exp = "sine_sample_complexity"
    cells = _n_star_cells(_of(records, exp))
    rich = {k[1:]: v for k, v in cells.items() if k[0] == "rich"}
    out = []
    pairs = ((names[0], "modular-kernel", "monolithic"), (names[1], "modular-kernel", "modular-random"),
             (names[2], "monolithic", "modular-random"))  # fmt: skip
    for name, a, b in pairs:
        hits = total = open_ = 0
        shown = []
        for eps in sorted({e for (_, e) in rich}, reverse=True):
            pa, pb = rich.get((a, eps)), rich.get((b, eps))
            if not pa or not pb:
                continue
            for m in sorted({p.m for p in pa} & {p.m for p in pb}):
                ma = censored_median([p for p in pa if p.m == m])
                mb = censored_median([p for p in pb if p.m == m])
                settled = _below(ma, mb)
                if settled is None:
                    open_ += 1
                    continue
                total += 1
                hits += settled
                if len(shown) < 6:
                    sign = {"value": "", "above": ">", "below": "<="}
                    shown.append(
                        f"eps {eps:g} m {m:g}: {sign[ma.kind]}{ma.value:.3g} vs {sign[mb.kind]}{mb.value:.3g}"
                    )
        if not total:
            out.append(
                _not_run(name, exp, records) if not rich else Verdict(name, exp, "no cell settled", NOT_RUN)
            )
            continue
        what = "fewer" if name != names[2] else "the monolith fewer than random"
        ours = (f"median n*, {a} vs {b} (rich regime): {'; '.join(shown)}; {what} in {hits} of {total} "
                f"(eps, m) cells" + (f", {open_} left open by bounds" if open_ else ""))  # fmt: skip
        agrees = _share(hits, total)
        out.append(Verdict(name, exp, ours, agrees))
    # growth: the exponential fits' growth per unit m, kernel against monolith, eps by eps
    hits = total = 0
    shown = []
    for eps in sorted({e for (_, e) in rich}, reverse=True):
        pk, pm = rich.get(("modular-kernel", eps)), rich.get(("monolithic", eps))
        if not pk or not pm or len({p.m for p in pk}) < 2 or len({p.m for p in pm}) < 2:
            continue
        fk, _, _ = which_law(pk, bootstrap=0)
        fm, _, _ = which_law(pm, bootstrap=0)
        if not (fk.determined and fm.determined):
            continue
        total += 1
        hits += fk.growth < fm.growth
        shown.append(f"eps {eps:g}: x{fk.growth:.2f} vs x{fm.growth:.2f}")
    if total:
        ours = f"growth of n* per unit m, kernel vs monolith (rich, exponential fits): {'; '.join(shown)}"
        out.append(Verdict(names[3], exp, ours, _share(hits, total)))
    else:
        out.append(
            _not_run(names[3], exp, records)
            if not rich
            else Verdict(names[3], exp, "no fit settled", NOT_RUN)
        )
    out.extend(_scaling_laws(cells, records))
    return out


def _scaling_laws(cells, records):
    """Per regime: does the monolith's n* grow exponentially in m, and the modular networks' not at all?

    Decided eps by eps on the fits of :func:`modscale.plots.scaling.which_law`, where values carry them.
    Monolith: ``yes`` where every fit grows (the growth's 90% interval above 1) and the exponential
    predicts the largest m at least as well as a power law, ``partly`` where some fits grow (the law left
    open), ``no`` where none does. Modular: does not grow = the interval's upper end at most 1 + 10% per
    unit m (a falling n* does not grow either).
    """
    from modscale.plots.scaling import which_law

    exp = "sine_sample_complexity"
    groups = (("monolithic", ("monolithic",)), ("modular", ("modular-oracle", "modular-kernel")))
    out = []
    for regime in ("rich", "random-features", "lazy"):
        for label, methods in groups:
            if label == "monolithic":
                claim = (
                    f"networks ({regime}): samples needed grow exponentially in m for a monolith (claim 1)"
                )
                rule = "interval above 1 and the exponential at least as good out of sample"
            else:
                claim = f"networks ({regime}): ... but not for a modular network on its projections (claim 2)"
                rule = f"interval's upper end <= 1 + {FLAT:.0%}"
            hits = total = grows = undetermined = 0
            shown = []
            for method in methods:
                for eps in sorted({k[2] for k in cells if k[:2] == (regime, method)}, reverse=True):
                    ps = cells[(regime, method, eps)]
                    if len({p.m for p in ps}) < 2:
                        continue
                    fit, power, _ = which_law(ps, bootstrap=200)
                    if not fit.determined or fit.interval is None:
                        undetermined += 1
                        continue
                    lo, hi = fit.interval
                    total += 1
                    said = f"{method} eps {eps:g}: x{fit.growth:.2f} ({lo:.2f}-{hi:.2f})"
                    if label == "monolithic":
                        tie = fit.heldout is None or power.heldout is None
                        exp_better = tie or fit.heldout >= power.heldout
                        grows += lo > 1
                        hits += lo > 1 and exp_better
                        said += ", exponential better" if exp_better else ", power law better"
                    else:
                        hits += hi <= 1 + FLAT
                    if len(shown) < 5:
                        shown.append(said)
            if not total:
                ours = (
                    "no runs"
                    if not undetermined
                    else f"{undetermined} fit(s), all mostly bounds (n* off the grid)"
                )
                out.append(Verdict(claim, exp, ours, NOT_RUN))
                continue
            ours = f"growth of n* per unit m (90% bootstrap over seeds): {'; '.join(shown)}"
            ours += f"; {rule} in {hits} of {total}"
            if undetermined:
                ours += f"; {undetermined} undetermined (bounds)"
            if label == "monolithic":
                ours += f"; grows in {grows} of {total}"
                agrees = YES if hits == total else PARTLY if grows else NO
            else:
                agrees = _share(hits, total)
            out.append(Verdict(claim, exp, ours, agrees))
    return out


def _alignment(records):
    claim = (
        "sine task: learned projections line up with the true ones, more so from the kernel rule (claim 4)"
    )
    rs = _of(records, "sine_alignment")
    if not rs:
        return _not_run(claim, "sine_alignment", records)
    end = _stat(rs, lambda r: r.config["method"], "alignment_end")
    start = _stat(rs, lambda r: r.config["method"], "alignment_start")
    if "modular-kernel" not in end or "modular-random" not in end:
        return _not_run(claim, "sine_alignment", records)
    k, r = end["modular-kernel"], end["modular-random"]
    sims = [
        paper.get("sims", "alignment over training", m).y[-1] for m in ("modular-kernel", "modular-random")
    ]
    k0, r0 = start["modular-kernel"][0], start["modular-random"][0]
    ours = (
        f"alignment after training: kernel {_pm(k)}, random {_pm(r)} (from {k0:.3g} and {r0:.3g} at the "
        f"start; {_seeds(end.values())}); paper {sims[0]:.3g} and {sims[1]:.3g} on its own score"
    )
    rises = start["modular-random"][0] < r[0]
    return Verdict(claim, "sine_alignment", ours, _share(int(k[0] > r[0]) + int(rises), 2))


# ----------------------------------------------------------------------------------------------- CIFAR


def _cifar(records):
    names = {
        "accuracy": "CIFAR: kernel-init > random-init > monolithic, in distribution (claim 4)",
        "ood_accuracy": "CIFAR: the same ordering on unseen class combinations (claim 4)",
        "noise_accuracy": "CIFAR: the same ordering under test-time noise (robustness table)",
    }
    exp = "cifar_accuracy_vs_k"
    rs = [r for r in _of(records, exp) if r.config["epochs"] == 1]
    out = []
    for metric, claim in names.items():
        s = {}
        for method in METHODS:
            s[method] = _stat(
                [r for r in rs if r.config["method"] == method], lambda r: r.config["k"], metric
            )
        # At k = 1 a slot projection is a sign (a unit vector in R^1): kernel and random init are one network.
        ks = sorted(k for k in set.intersection(*(set(v) for v in s.values())) if k >= 2)
        if not ks:
            out.append(_not_run(claim, exp, records))
            continue
        hits, parts = 0, []
        for k in ks:
            kern, rand, mono = (s[m][k] for m in METHODS)
            hits += int(kern[0] > rand[0] > mono[0])
            published = ""
            if metric == "accuracy":
                ref = [paper.get("multicifar_result", "accuracy vs k", m).at(k) for m in METHODS]
                if all(v is not None for v in ref):
                    published = f" [paper {ref[0]:.3g} / {ref[1]:.3g} / {ref[2]:.3g}]"
            parts.append(f"k={k}: {_pm(kern)} / {_pm(rand)} / {_pm(mono)}{published}")
        seeds = _seeds([v for m in s.values() for v in m.values()])
        ours = (
            f"kernel / random / monolithic: {'; '.join(parts)} ({seeds}); holds at {hits} of {len(ks)} k >= 2"
        )
        if metric != "accuracy":  # the project page's robustness table (k not stated)
            x = 0.0 if metric == "ood_accuracy" else 1.0
            ref = [paper.get("project page", "robustness table", m).at(x) for m in METHODS]
            ours += f" [paper, k not stated: {ref[0]:.3g} / {ref[1]:.3g} / {ref[2]:.3g}]"
        out.append(Verdict(claim, exp, ours, _share(hits, len(ks))))
    return out


def verdicts(records: Sequence[Record]) -> list[Verdict]:
    """Every claim's verdict from ``records`` (see the module docstring), in the paper's order."""
    return [
        _theory_m(records),
        _theory_k(records),
        _theory_spike(records),
        _theory_samples(records),
        _theory_check(records),
        _net_m(records),
        _double_descent(records),
        *_n_star_claims(records),
        _alignment(records),
        *_cifar(records),
    ]


__all__ = ["Verdict", "verdicts", "YES", "PARTLY", "NO", "NOT_RUN"]
