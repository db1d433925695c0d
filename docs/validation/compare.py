"""Early stopping on a split of the n samples (validation=split) against the full step budget without
selection (validation=none): the numbers of docs/validation/README.md, from results.jsonl beside this file.

    python docs/validation/compare.py
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from modscale.plots.scaling import Point, censored_median, which_law
from modscale.results import load

HERE = Path(__file__).resolve().parent


def main() -> None:
    rows = [r for r in load(HERE).records if r.experiment == "sine_sample_complexity"]
    groups = collections.defaultdict(list)
    n_star = {}
    for r in rows:
        c = r.config
        groups[(c["method"], c["eps"], c["validation"])].append(r)
        key = (c["validation"], c["method"], c["m"], c["eps"], r.seed)
        n_star[key] = (r.metrics["n_star"], r.metrics["censored"])
    print(
        "median n* over seeds at m = 3 / 6 / 9 ('>': beyond the grid) "
        "and the exponential fit's growth per unit m"
    )
    for method, eps in sorted({(k[0], k[1]) for k in groups}, key=lambda k: (k[0], -k[1])):
        line = [f"{method:15s} eps {eps:<5g}"]
        for validation in ("split", "none"):
            pts = [Point(r.config["m"], r.metrics["n_star"], r.metrics["censored"], r.seed)
                   for r in groups[(method, eps, validation)]]  # fmt: skip
            medians = []
            for m in sorted({p.m for p in pts}):
                md = censored_median([p for p in pts if p.m == m])
                medians.append({"value": "", "above": ">", "below": "<="}[md.kind] + f"{md.value:.0f}")
            fit, _, _ = which_law(pts, bootstrap=0)
            growth = f"x{fit.growth:.2f}" if fit.determined else "undetermined"
            line.append(f"{validation}: {' / '.join(medians):18s} {growth:12s}")
        print("  ".join(line))
    print(
        "\nper (method, m, eps, seed), n* with validation=none over n* with validation=split, "
        "both uncensored:"
    )
    for method in sorted({k[1] for k in n_star}):
        logs = []
        pairs = [(k, v) for k, v in n_star.items() if k[0] == "none" and k[1] == method]
        for (_, _, m, eps, seed), (n, censored) in pairs:
            n2, censored2 = n_star[("split", method, m, eps, seed)]
            if censored == "none" and censored2 == "none":
                logs.append(math.log(n / n2))
        mean = sum(logs) / len(logs)
        sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1))
        ratios = sorted(math.exp(v) for v in logs)
        print(f"  {method:15s} geometric mean {math.exp(mean):.2f} (x/ {math.exp(sd):.2f}), median "
              f"{ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}, "
              f"{len(logs)} of {len(pairs)} pairs")  # fmt: skip


if __name__ == "__main__":
    main()
