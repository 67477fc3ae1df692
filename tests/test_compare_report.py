"""The matched-sparsity table over seeds: runs that differ only by seed form one configuration, the best
configuration is chosen on validation averaged over its runs, and every cell is mean ± std over the runs that
reach its sparsity, with their number.

Hand-made results (digits / conv2, val_fraction 0.1, 100 sample-epochs per ticket row, no shard rows). Every
run's dense ticket (cycle 0) has validation and test accuracy .90. Per cycle: (sparsity, val_acc_best,
test_acc_at_best_val).

* COLT config A (lr .1), seeds 1, 2, 3: cycle 1 at .5 with val .90/.89/.91 (mean .90) and test .88/.87/.89;
  cycle 2 at .8/.8/.82 (mean .80667) with val .89/.90/.88 (mean .89, within one point of .90) and test
  .85/.86/.87.
* COLT config B (lr .05), seeds 1, 2: cycle 1 at .5 (val .90, test .88); cycle 2 at .8 with val .95 / .80
  (mean .875: not within one point) and test .93 / .70. Seed 1 alone is the best single ticket; the
  configuration is not the best.
* IMP config C, seeds 1, 2: .5 / .75 / .875 with val .90/.895/.89 and test .86,.88 / .84,.86 / .80,.84.
* IMP config C, seed 3, its trial stopped early: (.5, test .50): left out.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics

import pandas as pd
import pytest

from colt_ray.core.config import RunConfig
from colt_ray.results.reader import load_results
from colt_ray.results.report import build_tables, report
from colt_ray.results.tables import config_ids
from colt_ray.results.writer import ResultsWriter

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
# run id -> (method, lr, seed, [(sparsity, val, test at best val) per cycle after the dense one])
RUNS = {
    "a1": ("colt", 0.1, 1, [(0.5, 0.90, 0.88), (0.80, 0.89, 0.85)]),
    "a2": ("colt", 0.1, 2, [(0.5, 0.89, 0.87), (0.80, 0.90, 0.86)]),
    "a3": ("colt", 0.1, 3, [(0.5, 0.91, 0.89), (0.82, 0.88, 0.87)]),
    "b1": ("colt", 0.05, 1, [(0.5, 0.90, 0.88), (0.80, 0.95, 0.93)]),
    "b2": ("colt", 0.05, 2, [(0.5, 0.90, 0.88), (0.80, 0.80, 0.70)]),
    "c1": ("imp", 0.1, 1, [(0.5, 0.90, 0.86), (0.75, 0.895, 0.84), (0.875, 0.89, 0.80)]),
    "c2": ("imp", 0.1, 2, [(0.5, 0.90, 0.88), (0.75, 0.895, 0.86), (0.875, 0.89, 0.84)]),
    "cstop": ("imp", 0.1, 3, [(0.5, 0.90, 0.50)]),
}


def _row(cycle, sparsity, val, test):
    return dict(cycle=cycle, shard=None, sparsity=sparsity, kept_weights=round(1000 * (1 - sparsity)),
                prunable_weights=1000, acc_best=test, acc_final=test, val_acc_best=val, test_acc_at_best_val=test,
                sample_epochs=100, wall_seconds=1.0, finished_at=T0)  # fmt: skip


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    w = ResultsWriter(str(out))
    for run_id, (method, lr, seed, cycles) in RUNS.items():
        flat = RunConfig().to_flat()
        flat.update(method=method, dataset="digits", arch="conv2", lr=lr, seed=seed, val_fraction=0.1)
        flat.update(cpus_per_shard=0.5 if run_id == "a2" else 1.0)  # an execution setting: not the config
        w.write_run({"run_id": run_id, **flat, "status": "completed", "started_at": T0, "sweep": "s",
                     "trial_id": f"t_{run_id}"})  # fmt: skip
        for c, (sp, val, test) in enumerate([(0.0, 0.90, 0.90), *cycles]):
            w.write_cycle(run_id, c, [_row(c, sp, val, test)], [])
    w.write_trials([
        {"sweep": "s", "trial_id": f"t_{r}", "run_id": r, "status": "stopped_early" if r == "cstop" else "completed",
         "stopped_early": r == "cstop", "config_json": json.dumps({"method": m, "seed": s})}
        for r, (m, _, s, _) in RUNS.items()
    ])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def matched(results_dir):
    return build_tables(load_results(str(results_dir)))["matched_sparsity"]


def test_runs_that_differ_only_by_seed_share_a_configuration(results_dir):
    runs = load_results(str(results_dir)).runs
    ids = dict(zip(runs["run_id"], config_ids(runs)))
    assert ids["a1"] == ids["a2"] == ids["a3"]  # seeds and cpus_per_shard differ: the same configuration
    assert ids["b1"] == ids["b2"] != ids["a1"]  # lr differs
    assert ids["c1"] == ids["c2"] == ids["cstop"] != ids["a1"]  # method differs


def test_matched_sparsity_uses_the_configuration_best_on_mean_validation_not_the_lucky_seed(results_dir, matched):
    best = build_tables(load_results(str(results_dir)))["best_tickets"]
    assert best.set_index("method").loc["colt", "run_id"] == "b1"  # the best single ticket: seed luck
    assert set(matched["colt_run_id"]) <= {"a1,a2,a3", "a3"}  # ... the matched table compares configuration A


def test_cells_are_mean_and_std_over_the_runs_reaching_each_sparsity(matched):
    # .5: grid and COLT's cycle 1; .8: grid (IMP reaches .875, COLT .82 at most); COLT's mean cycle-2 sparsity
    assert matched["sparsity"].tolist() == pytest.approx([0.5, 0.8, (0.8 + 0.8 + 0.82) / 3])
    assert matched["colt_ticket"].tolist() == [True, False, True]
    assert matched["colt_n"].tolist() == [3, 3, 1]  # only seed 3 reaches .8067
    assert matched["imp_n"].tolist() == [2, 2, 2]  # the stopped-early run is left out
    assert matched["colt_run_id"].tolist() == ["a1,a2,a3", "a1,a2,a3", "a3"]
    assert matched["imp_run_id"].tolist() == ["c1,c2"] * 3
    # COLT at .8: seeds 1, 2 have a ticket there; seed 3 is 30/32 of the way from .5 (.89) to .82 (.87)
    colt_08 = [0.85, 0.86, 0.89 - 0.02 * 30 / 32]
    # seed 3 at .80667: 0.30667/0.32 of the way from .5 to .82
    colt_x = 0.89 - 0.02 * ((0.8 + 0.8 + 0.82) / 3 - 0.5) / 0.32
    assert matched["colt_acc"].tolist() == pytest.approx([0.88, statistics.mean(colt_08), colt_x])
    assert matched["colt_acc_std"].tolist()[:2] == pytest.approx([0.01, statistics.stdev(colt_08)])
    assert matched["colt_acc_std"].isna().tolist() == [False, False, True]  # one run: no std
    # IMP at .8: 0.4 of the way from .75 to .875 in both seeds; at .80667: 0.45333 of the way
    imp_08 = [0.84 - 0.04 * 0.4, 0.86 - 0.02 * 0.4]
    f = ((0.8 + 0.8 + 0.82) / 3 - 0.75) / 0.125
    imp_x = [0.84 - 0.04 * f, 0.86 - 0.02 * f]
    assert matched["imp_acc"].tolist() == pytest.approx([0.87, statistics.mean(imp_08), statistics.mean(imp_x)])
    assert matched["imp_acc_std"].tolist() == pytest.approx(
        [statistics.stdev([0.86, 0.88]), statistics.stdev(imp_08), statistics.stdev(imp_x)]
    )
    assert matched["acc_diff"].tolist() == pytest.approx((matched["colt_acc"] - matched["imp_acc"]).tolist())
    # search compute: 100 sample-epochs per ticket row, cumulative (no shard rows): 200 at .5 for both
    assert matched["colt_sample_epochs"][0] == 200 and matched["compute_ratio"][0] == 1.0


def test_markdown_shows_mean_plus_minus_std_and_n(results_dir, tmp_path):
    text = report(str(results_dir), str(tmp_path / "rep")).text
    section = text.split("## COLT vs IMP at matched sparsity")[1].split("\n## ")[0]
    assert "(mean ± std over seeds, n runs)" in section and "Runs that differ only by seed" in section
    assert "In every row: dataset `digits`, arch `conv2`" in section  # said once, not in every row
    header = next(line for line in section.splitlines() if line.startswith("| sparsity"))
    assert "| colt_acc | colt_n | imp_acc | imp_n |" in header and "_std" not in header
    first = next(line for line in section.splitlines() if line.startswith("| 0.5000"))
    assert "| 0.8800 ± 0.0100 | 3 | 0.8700 ± 0.0141 | 2 |" in first
    last = [line for line in section.splitlines() if line.startswith("| 0.8067")][0]
    assert "| yes | 0.8708 | 1 | 0.8364 ± 0.0206 | 2 |" in last  # one run: the mean alone


# A compare sweep with ``eval_tickets: final`` (digits, val_fraction .1, prune_rate .2, target .5): COLT trains
# no dense ticket and evaluates only its final one; IMP trains every level. Per evaluated cycle: (sparsity,
# val_acc_best, test_acc_at_best_val); acc_best is .02 above the test accuracy at the best-validation epoch.
# conv2: IMP seeds 1, 2 (dense val .90 / .92, test .89 / .91) and COLT seeds 1, 2, 3 of the same recipe (lr .1):
# COLT seeds 1 and 2 take their seed's IMP dense ticket, seed 3 (no IMP seed 3) the mean over seeds (.91).
# conv4: COLT (lr .1) and IMP of another recipe (lr .05): COLT has no dense reference at all.
FINAL = {
    "i1": ("imp", "conv2", 0.1, 1, [(0.0, 0.90, 0.89), (0.2, 0.905, 0.90), (0.36, 0.90, 0.895),
                                    (0.488, 0.895, 0.885), (0.59, 0.88, 0.87)]),
    "i2": ("imp", "conv2", 0.1, 2, [(0.0, 0.92, 0.91), (0.2, 0.915, 0.905), (0.36, 0.91, 0.90),
                                    (0.488, 0.905, 0.895), (0.59, 0.89, 0.88)]),
    "c1": ("colt", "conv2", 0.1, 1, [None, None, (0.51, 0.895, 0.885)]),
    "c2": ("colt", "conv2", 0.1, 2, [None, None, (0.53, 0.89, 0.88)]),
    "c3": ("colt", "conv2", 0.1, 3, [None, None, (0.45, 0.905, 0.895)]),
    "d1": ("colt", "conv4", 0.1, 1, [None, None, (0.51, 0.80, 0.79)]),
    "e1": ("imp", "conv4", 0.05, 1, [(0.0, 0.90, 0.90), (0.2, 0.91, 0.905), (0.36, 0.895, 0.89)]),
}  # fmt: skip


def _final_row(cycle, point, overlap):
    if point is None:  # a ticket the eval_tickets policy skipped: written, not trained
        skipped = _row(cycle, 0.2 * cycle, None, None)
        return dict(skipped, acc_best=None, acc_final=None, evaluated=False, sample_epochs=0, wall_seconds=0.0)
    sp, val, test = point
    return dict(_row(cycle, sp, val, test), acc_best=test + 0.02, evaluated=True, overlap=overlap)


@pytest.fixture(scope="module")
def final_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("final")
    w = ResultsWriter(str(out))
    for run_id, (method, arch, lr, seed, cycles) in FINAL.items():
        flat = RunConfig().to_flat()
        flat.update(method=method, dataset="digits", arch=arch, lr=lr, seed=seed, val_fraction=0.1, prune_rate=0.2)
        flat.update(target_sparsity=0.5, eval_tickets="final" if method == "colt" else "all")
        w.write_run({"run_id": run_id, **flat, "status": "completed", "started_at": T0})
        for c, point in enumerate(cycles):
            w.write_cycle(run_id, c, [_final_row(c, point, 0.9 if method == "colt" else None)], [])
    return out


@pytest.fixture(scope="module")
def final_tables(final_dir):
    return build_tables(load_results(str(final_dir)))


def test_a_run_without_a_dense_ticket_takes_its_recipes_and_every_method_gets_the_same_rule(final_tables):
    pts = final_tables["points"].drop_duplicates("run_id").set_index("run_id")
    assert pts.loc[["i1", "c1", "c2", "c3"], "dense_source"].tolist() == [
        "own", "same_recipe_seed", "same_recipe_seed", "same_recipe"
    ]  # fmt: skip
    assert pts.loc[["c1", "c2", "c3"], "dense_select"].tolist() == pytest.approx([0.90, 0.92, 0.91])
    assert pts.loc[["c1", "c2", "c3"], "dense_report"].tolist() == pytest.approx([0.89, 0.91, 0.90])
    assert pts.loc["c1", "dense_acc"] == pytest.approx(0.91)  # i1's dense acc_best (test .89 + .02)
    assert pd.isna(pts.loc["d1", "dense_source"]) and pd.isna(pts.loc["d1", "dense_select"])  # no run of its recipe
    best = final_tables["best_tickets"].set_index(["arch", "method"])
    # conv2: both within one point of their own recipe's dense ticket; COLT seed 2 (.89 vs .92) does not qualify
    assert best.loc[("conv2", "colt"), ["run_id", "sparsity", "rule"]].tolist() == ["c1", 0.51, "within_tol"]
    assert best.loc[("conv2", "colt"), "dense_select"] == pytest.approx(0.90)
    assert best.loc[("conv2", "imp"), ["run_id", "sparsity", "rule"]].tolist() == ["i1", 0.488, "within_tol"]
    # conv4: COLT has no dense reference, so IMP is not held to one either: both take their most accurate ticket
    # (IMP's .2 at val .91, not .36, which is within one point of its dense .90)
    assert best.loc[("conv4", "colt"), "rule"] == best.loc[("conv4", "imp"), "rule"] == "best_acc_no_dense"
    assert best.loc[("conv4", "imp"), "sparsity"] == 0.2


def test_matched_sparsity_says_one_evaluated_point_per_run_and_what_to_do(final_dir, final_tables, tmp_path):
    from colt_ray.results.report import answer_lines

    assert final_tables["matched_sparsity"].empty  # COLT has one point per run: no sparsity a run of each covers
    made = report(str(final_dir), str(tmp_path / "rep"))
    text = made.text
    conv2, conv4 = answer_lines(made.tables, made.unmatched)  # the line printed at the end: the same reason
    assert conv2.startswith("answer: COLT and IMP were both run, but no sparsity is matched on digits / conv2")
    assert "evaluated only its final ticket" in conv2 and "on digits / conv4" in conv4
    section = text.split("## COLT vs IMP at matched sparsity")[1].split("\n## ")[0]
    assert "needs COLT and IMP runs" not in section  # both exist
    line = next(x for x in section.splitlines() if x.startswith("No rows on digits / conv2"))
    assert "COLT's tickets lie at sparsity 0.4500-0.5300, IMP's at 0.2000-0.5900" in line
    assert "Each COLT run evaluated only its final ticket (`eval_tickets: final`): one point per run" in line
    assert "`eval_tickets: all`" in line


def test_markdown_tables_are_at_most_twelve_columns_and_print_integers_as_integers(final_dir, tmp_path):
    text = report(str(final_dir), str(tmp_path / "rep")).text
    widths = [line.count("|") - 1 for line in text.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= 12  # the 21-column best-ticket table is trimmed and split
    best = text.split("## Best ticket per")[1].split("\n## ")[0]
    assert "In every row: dataset `digits`, selected_by `val_acc_best`." in best
    assert best.count("| method | arch |") == 2  # split in two, each part keyed by method and arch
    assert "| colt | conv2 | colt k=2 prune_rate=0.2 lr=0.1 | c1 | 2 | 0.5100 | within_tol | same_recipe_seed |" in best
    assert "| colt | conv2 | 0.8950 | 0.9000 | 0.0050 | 0.8850 | 0.8900 | 100 |" in best
    target = text.split("## At the target sparsity")[1].split("\n## ")[0]
    # rounds (the mean cycle) and sample-epochs are whole: "2" and "100", not "2.0000" and "100.0"
    assert "| 0.8925 ± 0.0035 | 0.8825 ± 0.0035 | 2 | 100 | 1.0000 |" in target


def test_markdown_table_prints_whole_counts_without_a_decimal_point():
    from colt_ray.results.report import markdown_table

    df = pd.DataFrame({"cycle": [2.0, 3.5], "colt_n": [3.0, 1.0], "sample_epochs": [12930.0, 233.6],
                       "report_acc": [1.0, 0.5]})  # fmt: skip
    assert markdown_table(df).splitlines()[2:] == ["| 2 | 3 | 12930 | 1.0000 |", "| 3.5 | 1 | 234 | 0.5000 |"]


@pytest.fixture
def figures(monkeypatch):
    from colt_ray.results import plots

    monkeypatch.setattr(plots, "_png", lambda fig: fig)  # the figure itself, to read what was drawn
    return plots


def _labels(ax):
    return ax.get_legend_handles_labels()[1]


def test_accuracy_plot_draws_the_tables_figure_named_and_legends_name_recipes(figures, final_tables):
    fig = figures.accuracy_vs_sparsity(final_tables["points"], final_tables["best_tickets"])
    ax = fig.axes[0]  # digits / conv2
    assert ax.get_title() == "digits / conv2"
    assert ax.get_ylabel() == "report_acc: test accuracy at the best-validation epoch"
    assert _labels(ax) == [
        "colt k=2 prune_rate=0.2 lr=0.1 (best ticket's run)", "imp prune_rate=0.2 lr=0.1 (best ticket's run)",
        "dense ticket, imp runs (0.9000)",
    ]  # fmt: skip
    colt, imp = ax.lines[0], ax.lines[1]
    assert list(colt.get_ydata()) == pytest.approx([0.885])  # test at the best-validation epoch, not acc_best
    assert list(imp.get_ydata()) == pytest.approx([0.89, 0.90, 0.895, 0.885, 0.87])
    assert colt.get_marker() != imp.get_marker()
    no_layers = pd.DataFrame(columns=["run_id", "cycle", "layer", "overlap"])
    overlap = figures.mask_overlap(final_tables["points"], no_layers, ["c1"])
    assert _labels(overlap.axes[0]) == ["all weights (colt k=2 prune_rate=0.2 lr=0.1)"]


def test_pareto_plot_tells_colt_and_imp_points_apart(figures, final_tables):
    fig = figures.pareto(final_tables["pareto_points"])
    ax = fig.axes[0]
    labels = _labels(ax)
    assert labels[:2] == ["colt ticket", "imp ticket"] and "imp on the front" in labels
    by_label = {c.get_label(): c for c in ax.collections}
    colt, imp = by_label["colt ticket"], by_label["imp ticket"]
    assert len(colt.get_offsets()) == 3 and len(imp.get_offsets()) == 10  # every ticket, in its method's set
    assert (colt.get_facecolors()[0] != imp.get_facecolors()[0]).any()
    assert len(colt.get_paths()[0].vertices) != len(imp.get_paths()[0].vertices)  # circle vs square


def test_the_colt_variants_plot_draws_each_configuration_by_its_variant_beside_the_best_imp(monkeypatch):
    from colt_ray.results import plots

    def row(method, config_id, acc, best=False):
        return dict(method=method, dataset="digits", arch="conv2", config_id=config_id, target=0.9, n=3,
                    report_acc=acc, report_acc_std=0.01, best=best)  # fmt: skip

    targets = pd.DataFrame([row("colt", "a", 0.93), row("colt", "b", 0.95), row("imp", "i", 0.96, True)])
    settings = pd.DataFrame(
        {"config_id": ["a", "b"], "shard_overlap": [0.0, 0.5], "shard_steps": ["epochs", "match"],
         "rewind_step": [0, 20], "shards": [2, 2]}
    )  # fmt: skip
    drawn = []
    monkeypatch.setattr(plots, "_png", lambda fig: drawn.append(fig) or b"png")
    assert plots.colt_variants(targets, settings) == b"png"
    (ax,) = drawn[0].axes
    lines = [line for line in ax.lines if len(line.get_xdata()) == 1 and line.get_marker() in ("o", "^")]
    points = [(round(float(ln.get_xdata()[0]), 4), float(ln.get_ydata()[0]), ln.get_marker()) for ln in lines]
    assert sorted(points) == [(-0.01, 0.93, "o"), (0.49, 0.95, "^")]  # x: overlap, k = 2 shifted left a little
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "best IMP configuration (0.9600)" and "shard_steps: match" in labels
    same = settings.assign(shard_overlap=0.0, shard_steps="epochs", rewind_step=0)
    assert plots.colt_variants(targets, same) is None  # nothing varies: no plot
