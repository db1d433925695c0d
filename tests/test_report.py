"""Figures, the HTML report and the paper's numbers: pure functions of records, checked by second routes."""

from __future__ import annotations

import base64
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from modscale import paper
from modscale.errors import InvalidValue
from modscale.experiments import registry, run_sweep
from modscale.plots import curves, render, save, write_report
from modscale.plots.figure import seeds_phrase
from modscale.plots.report import fmt, summary_text
from modscale.plots.stats import draw
from modscale.results import load, make_record
from modscale.theory import monolithic_losses, spectrum

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "PAPER.md"
# a copy of the notes kept with the tests, so the numbers are checked on a clone without ../shared;
# where ../shared is there, the copy is checked to be the same file
PAPER_MD_COPY = Path(__file__).resolve().parent / "fixtures" / "PAPER.md"
PLUGIN = Path(__file__).with_name("_sweep_experiments.py")


@pytest.fixture(scope="module")
def theory_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    for name in ("theory_loss_trends", "theory_samples_vs_m"):
        run_sweep(name, out, tier="smoke")
    return load(out).records


@pytest.fixture
def probe_records(tmp_path):
    module = registry.import_plugin(str(PLUGIN))
    registry.register(module.EXPERIMENTS[0], replace=True)
    try:
        run_sweep("sweep_probe", tmp_path, tier="smoke", seeds=3)
    finally:
        registry.unregister("sweep_probe")
    return load(tmp_path).records


# ------------------------------------------------------------------------------------------ statistics


def _record(seed, metric, **config):
    return make_record("e", config, seed, {"v": metric}, wall_s=0.0, device="cpu")


def test_curves_mean_and_sd_over_seeds_after_averaging_within_a_seed():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 3, 2))  # (seed, x, other key)
    records = [
        _record(s, float(values[s, i, j]), x=i, other=j) for s in range(4) for i in range(3) for j in range(2)
    ]
    random.Random(1).shuffle(records)
    c = curves(records, "x", "v")[()]
    per_seed = values.mean(axis=2)  # averaged over the other key within each seed
    np.testing.assert_allclose(c.mean, per_seed.mean(axis=0))
    np.testing.assert_allclose(c.sd, per_seed.std(axis=0, ddof=1))
    assert c.n_seeds.tolist() == [4, 4, 4] and c.x.tolist() == [0, 1, 2]
    by = curves(records, "x", "v", by=("other",))
    np.testing.assert_allclose(by[(1,)].mean, values[:, :, 1].mean(axis=0))


def test_log_curves_are_geometric_and_non_finite_points_are_gaps():
    records = [_record(s, v, x=1) for s, v in enumerate([10.0, 1000.0])]
    records += [_record(0, float("inf"), x=2), _record(1, 5.0, x=2)]
    c = curves(records, "x", "v", log=True)[()]
    assert c.mean[0] == pytest.approx(100.0) and np.isnan(c.mean[1])
    assert c.lo[0] < 100 < c.hi[0]


def test_seed_phrases():
    assert seeds_phrase([1, 1]) == "one seed" and seeds_phrase([3, 3]) == "3 seeds"
    assert seeds_phrase([2, 5]) == "2-5 seeds per point"


def test_fmt():
    assert fmt(None) == "&mdash;" and fmt(float("inf")) == "&infin;" and fmt(0.123456) == "0.123"
    assert fmt(340000.0) == "3.40e+05"


# ------------------------------------------------------------------------------------------ figures


def test_loss_trends_numbers_match_the_closed_form(theory_records):
    """The figure's averaged theory values, recomputed straight from modscale.theory (a second route)."""
    (out,) = [o for o in render(theory_records) if o.name == "loss_trends"]
    rows = {(c.quantity, c.at): c for c in out.comparisons}
    trends = [r for r in theory_records if r.experiment == "theory_loss_trends"]
    p_lines = sorted({r.config["p"] for r in trends if r.config["panel"] == "m"})
    for m in (2, 5, 9):
        train, test = monolithic_losses(1000, np.array(p_lines), spectrum(m))
        got = rows[("test loss, theory", f"m={m}")]
        assert got.ours == pytest.approx(test.mean(), rel=1e-12) and got.n_seeds == 1
        assert got.paper == paper.get("loss_trends", "test loss vs m", "theory").at(m)
        assert rows[("train loss, theory", f"m={m}")].ours == pytest.approx(train.mean(), rel=1e-12)
    assert rows[("test loss, theory", "m=9")].paper == 2.85
    assert "one seed" in out.caption and "paper's own loss scale" in out.caption
    # the paper's markers are put on our scale by one factor per panel: its theory meets ours at m = 2
    theirs = paper.get("loss_trends", "test loss vs m", "theory").at(2)
    factor = rows[("test loss, theory", "m=2")].ours / theirs
    assert f"x{factor:.2f} (vs m)" in out.caption


def test_figures_are_pure_functions_of_records(theory_records):
    shuffled = list(theory_records)
    random.Random(0).shuffle(shuffled)
    a = {o.name: (o.caption, o.comparisons) for o in render(theory_records)}
    b = {o.name: (o.caption, o.comparisons) for o in render(shuffled)}
    assert a == b and set(a) == {"loss_trends", "theoretical_m_vs_n"}


def test_samples_vs_m_compares_growth_with_the_paper(theory_records):
    (out,) = [o for o in render(theory_records) if o.name == "theoretical_m_vs_n"]
    growth = [c for c in out.comparisons if c.quantity.startswith("growth")]
    assert [c.paper for c in growth] == pytest.approx([7.3, 3.4e5 / 7e4])
    by_eps = {
        (r.config["eps"], r.config["m"]): r.metrics["n_star"]
        for r in theory_records
        if r.experiment == "theory_samples_vs_m" and r.config["model"] == "monolithic"
    }
    eps_high = max(e for e, _ in by_eps)
    assert growth[0].ours == pytest.approx(by_eps[(eps_high, 9)] / by_eps[(eps_high, 2)])


def test_an_experiment_without_a_figure_gets_the_generic_one(probe_records):
    (out,) = render(probe_records)
    assert out.name == "sweep_probe" and "3 seeds" in out.caption and "generic" in out.caption
    assert out.comparisons == []


# ------------------------------------------------------------------------------------------ report


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href"):
                self.refs.append(value)
                if tag == "img":
                    self.images.append(value)

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_one_self_contained_page(theory_records, probe_records, tmp_path):
    path = write_report(
        theory_records + probe_records,
        tmp_path / "report.html",
        notes=["skipped 1 record(s): <because>"],
        descriptions={"sweep_probe": "a <b>probe</b>"},
        source="results/",
    )
    page = _Page()
    page.feed(path.read_text())
    assert "script" not in page.tags and "link" not in page.tags
    assert all(ref.startswith(("data:image/png;base64,", "#")) for ref in page.refs)
    assert len(page.images) == 3  # loss_trends, theoretical_m_vs_n and the generic sweep_probe figure
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    assert "a <b>probe</b>" in text and "<because>" in text  # escaped, shown as text
    assert "sweep_probe" in text and "cpu" in text and paper.CITATION in text
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_report_and_figure_paths_are_usage_errors(theory_records, tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidValue, match="cannot write the report"):
        write_report(theory_records, tmp_path / "f" / "r.html")
    (out,) = [o for o in render(theory_records) if o.name == "loss_trends"]
    with pytest.raises(InvalidValue, match="cannot create the figures folder"):
        save(out, tmp_path / "f" / "figures")


def test_report_tables_put_our_numbers_beside_the_papers(theory_records, tmp_path):
    html_text = write_report(theory_records, tmp_path / "r.html").read_text()
    row = re.search(r"<tr><td>test loss, theory</td><td>m=9</td>(.*?)</tr>", html_text).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    (out,) = [o for o in render(theory_records) if o.name == "loss_trends"]
    ours = next(c.ours for c in out.comparisons if c.quantity == "test loss, theory" and c.at == "m=9")
    assert cells[0] == fmt(ours) and cells[1] == "1" and cells[2] == "2.85" and cells[3] == fmt(ours / 2.85)
    text = summary_text(theory_records, render(theory_records))
    assert f"test loss, theory @ m=9: ours {fmt(ours)} (1 seeds)   paper 2.85" in text


# ------------------------------------------------------------------------------------------ paper numbers


def test_paper_lookups():
    s = paper.get("multicifar_result", "accuracy vs k", "monolithic")
    assert s.at(8) == 0.390 and s.at(10) is None
    with pytest.raises(InvalidValue, match="no published series"):
        paper.get("loss_trends", "test loss vs m", "nonsense")
    for s in paper.SERIES:
        assert list(s.x) == sorted(s.x) and all(np.isfinite(s.y))


def _markdown_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_the_kept_copy_of_the_paper_notes_is_current():
    if PAPER_MD.exists():  # without ../shared the copy is all there is (and what the next test reads)
        assert PAPER_MD_COPY.read_text() == PAPER_MD.read_text(), "cp ../shared/PAPER.md tests/fixtures/"
    assert "Sample complexity vs dimension" in PAPER_MD_COPY.read_text()


def test_paper_numbers_match_the_paper_notes():
    """Every table of published numbers, read again from the notes they were copied from."""
    text = (PAPER_MD if PAPER_MD.exists() else PAPER_MD_COPY).read_text()
    tables = [
        (
            "| m |",
            "loss_trends",
            {
                "test, network": ("test loss vs m", "network"),
                "test, theory": ("test loss vs m", "theory"),
                "train, network": ("train loss vs m", "network"),
                "train, theory": ("train loss vs m", "theory"),
            },
        ),
        (
            "| k |",
            "multicifar_result",
            {
                "kernel-init modular": ("accuracy vs k", "modular-kernel"),
                "modular, random init": ("accuracy vs k", "modular-random"),
                "monolithic": ("accuracy vs k", "monolithic"),
            },
        ),
    ]
    for header, figure_name, names in tables:
        for row in _markdown_rows(text, header):
            panel, label = names[row[0]]
            assert paper.get(figure_name, panel, label).y == tuple(float(v) for v in row[1:]), row[0]
    sc = text[text.index("Sample complexity vs dimension") :]
    for row in _markdown_rows(sc, "| m |"):
        label = {
            "kernel-init modular": "modular-kernel",
            "monolithic": "monolithic",
            "modular, random init": "modular-random",
        }[row[0]]
        s = paper.get("compare_method1_sample_complexity1.5", "samples needed vs m", label)
        assert s.y == tuple(float(v) for v in row[1:])
    for row in _markdown_rows(text, "| method |"):
        label = {
            "monolithic": "monolithic",
            "modular, random init": "modular-random",
            "kernel-init modular": "modular-kernel",
        }[row[0]]
        s = paper.get("project page", "robustness table", label)
        assert s.y == pytest.approx(tuple(float(v.rstrip(" %")) / 100 for v in row[1:]))


def test_a_curve_of_one_point_is_drawn_as_a_marker_with_its_spread():
    records = [
        make_record("e", {"n": 3000}, s, {"v": v}, wall_s=0.0, device="cpu") for s, v in enumerate((1, 2, 6))
    ]
    c = curves(records, "n", "v")[()]
    ax = Figure().add_subplot()
    draw(ax, c, color="C0", label="one point")
    (container,) = ax.containers  # an errorbar: the marker and its +-1 SD bar
    marker, _, (bar,) = container
    assert marker.get_xydata().tolist() == [[3000.0, 3.0]]
    sd = float(np.std([1, 2, 6], ddof=1))
    np.testing.assert_allclose(bar.get_segments()[0][:, 1], [3.0 - sd, 3.0 + sd])
    assert ax.get_legend_handles_labels()[1] == ["one point"]
    draw(ax, curves(records[:1], "n", "v")[()], color="C1", linestyle="--")  # one seed: no bar
    assert ax.containers[1][2] == ()
