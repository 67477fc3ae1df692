"""``colt-ray report``: tables from hand-made results equal hand-computed values; plots are real PNGs.

The data (digits / conv2 unless noted; accuracies are fractions):

* ``colt1`` (COLT, runs.dense_acc 0.905): tickets at sparsity 0, .4, .7, .85, .95 with acc_best
  .90, .91, .90, .88, .85. Cycle 0 is one row (100 sample-epochs, 10 s); every later cycle has two shard rows
  (50 sample-epochs each, 4 s and 6 s) and a ticket row (100, 10 s): cumulative sample-epochs
  100, 300, 500, 700, 900 and wall time 10, 26, 42, 58, 74 s (slowest shard + ticket per cycle).
* ``imp1`` (IMP, no runs.dense_acc, so dense = cycle 0 = .92): sparsity 0, .5, .75, .9 with acc .92, .915,
  .905, .87; ticket rows only, 100 sample-epochs and 8 s each: cumulative 100, 200, 300, 400.
* ``impstop`` (IMP, trial stopped early): (0, .92), (.97, .80) - kept out of the Pareto front.
* ``imp4`` (IMP, arch conv4, dense .95): (0, .95), (.2, .93), (.36, .92) - no ticket within 1 point.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError
from colt_ray.results.reader import load_results
from colt_ray.results.report import build_tables, report, report_main
from colt_ray.results.writer import ResultsWriter

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"
COLT = ([0.0, 0.4, 0.7, 0.85, 0.95], [0.90, 0.91, 0.90, 0.88, 0.85])
IMP = ([0.0, 0.5, 0.75, 0.9], [0.92, 0.915, 0.905, 0.87])
IMPSTOP = ([0.0, 0.97], [0.92, 0.80])
IMP4 = ([0.0, 0.2, 0.36], [0.95, 0.93, 0.92])


def _ticket(c, sp, acc, se, wall, overlap=None):
    return dict(cycle=c, shard=None, sparsity=sp, kept_weights=round(1000 * (1 - sp)), prunable_weights=1000,
                acc_best=acc, acc_final=acc - 0.01, overlap=overlap, sample_epochs=se, wall_seconds=wall,
                finished_at=T0 + dt.timedelta(hours=c))  # fmt: skip


def _write_run(w, run_id, method, curve, dense=None, arch="conv2", shards=False):
    flat = RunConfig().to_flat()
    flat.update(method=method, arch=arch, dataset="digits")
    w.write_run({"run_id": run_id, **flat, "status": "completed", "started_at": T0, "dense_acc": dense})
    for c, (sp, acc) in enumerate(zip(*curve)):
        rows, layers = [], []
        if shards and c > 0:
            overlap = 0.9 - 0.1 * c
            rows = [dict(_ticket(c, sp, acc - 0.1, 50, wall), shard=k) for k, wall in ((0, 4.0), (1, 6.0))]
            rows.insert(0, _ticket(c, sp, acc, 100, 10.0, overlap))
        else:
            overlap = None
            rows = [_ticket(c, sp, acc, 100, 10.0 if method == "colt" else 8.0)]
        for name, group, numel, density in (("conv1", "conv", 200, 1 - sp / 2), ("fc", "linear", 800, 1 - sp)):
            layers.append(dict(layer=name, group=group, numel=numel, kept=round(numel * density),
                               density=density, overlap=None if overlap is None else overlap - 0.05))  # fmt: skip
        w.write_cycle(run_id, c, rows, layers)


def _write_all(sweep_dir, per_trial=True):
    specs = [
        ("colt1", "colt", COLT, 0.905, "conv2", True),
        ("imp1", "imp", IMP, None, "conv2", False),
        ("impstop", "imp", IMPSTOP, None, "conv2", False),
        ("imp4", "imp", IMP4, 0.95, "conv4", False),
    ]
    for run_id, method, curve, dense, arch, shards in specs:
        out = sweep_dir / f"trial_{run_id}" if per_trial else sweep_dir
        _write_run(ResultsWriter(out), run_id, method, curve, dense, arch, shards)
    trials = [
        {"sweep": "s", "trial_id": f"t_{r}", "run_id": r, "status": "stopped_early" if r == "impstop" else "completed",
         "stopped_early": r == "impstop", "config_json": json.dumps({"method": m})}
        for r, m, *_ in specs
    ]  # fmt: skip
    ResultsWriter(sweep_dir).write_trials(trials)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    _write_all(d)
    return d


@pytest.fixture(scope="module")
def made(sweep):
    return report(sweep)


def _rows(df, cols):
    return [tuple(r) for r in df[cols].itertuples(index=False)]


def test_best_ticket_rule_within_one_point_else_most_accurate(made):
    best = made.tables["best_tickets"]
    assert _rows(best, ["method", "arch", "run_id", "cycle", "rule"]) == [
        ("colt", "conv2", "colt1", 2, "within_tol"),  # .90 >= .905 - .01; .85-sparsity .88 is not
        ("imp", "conv2", "imp1", 1, "within_tol"),  # dense .92 from cycle 0: .915 qualifies, .905 not
        ("imp", "conv4", "imp4", 1, "best_acc"),  # nothing >= .94: most accurate ticket (.93)
    ]
    colt, imp, imp4 = (best.iloc[i] for i in range(3))
    assert (colt.sparsity, colt.acc_best, colt.acc_final, colt.dense_acc) == (0.7, 0.90, 0.89, 0.905)
    assert colt.acc_drop == pytest.approx(0.005)
    assert (colt.cum_sample_epochs, colt.search_sample_epochs, colt.cum_wall_seconds) == (500, 200, 42.0)
    assert (imp.sparsity, imp.dense_acc, imp.cum_sample_epochs, imp.cum_wall_seconds) == (0.5, 0.92, 200, 16.0)
    assert imp.search_sample_epochs == 200
    assert imp.acc_drop == pytest.approx(0.005) and imp4.acc_drop == pytest.approx(0.02)


def test_matched_sparsity_interpolates_accuracy_and_compute(made):
    m = made.tables["matched_sparsity"]
    # grid .5 .8 .9 (.95 is beyond IMP's .9) plus the COLT ticket sparsities .4 .7 .85 (.95 again beyond)
    assert m["sparsity"].tolist() == pytest.approx([0.4, 0.5, 0.7, 0.8, 0.85, 0.9])
    assert m["colt_ticket"].tolist() == [True, False, True, False, True, False]
    # colt: .5 is 1/3 of the way .4->.7 (.91->.90); .8 is 2/3 of .7->.85 (.90->.88); .9 half of .85->.95
    assert m["colt_acc"].tolist() == pytest.approx([0.91, 0.91 - 0.01 / 3, 0.90, 0.90 - 0.02 * 2 / 3, 0.88, 0.865])
    # imp: .4 is 4/5 of 0->.5 (.92->.915); .7 4/5 of .5->.75; .8 1/3 and .85 2/3 of .75->.9 (.905->.87)
    imp = [0.92 - 0.005 * 0.8, 0.915, 0.915 - 0.01 * 0.8, 0.905 - 0.035 / 3, 0.905 - 0.035 * 2 / 3, 0.87]
    assert m["imp_acc"].tolist() == pytest.approx(imp)
    diff = [-0.006, -0.005 - 0.01 / 3, -0.007, -0.005 - 0.005 / 3, -0.025 + 0.07 / 3, -0.005]
    assert m["acc_diff"].tolist() == pytest.approx(diff)
    # search compute: COLT = shard trainings of earlier cycles + the ticket's own training (earlier ticket
    # evaluations excluded): 100, 100, 200, 300, 400 at sparsity 0, .4, .7, .85, .95; IMP = levels so far
    assert m["colt_sample_epochs"].tolist() == pytest.approx([100, 100 + 100 / 3, 200, 200 + 200 / 3, 300, 350])
    assert m["imp_sample_epochs"].tolist() == pytest.approx([180, 200, 280, 300 + 100 / 3, 300 + 200 / 3, 400])
    assert m["compute_ratio"].tolist() == pytest.approx(
        [100 / 180, (400 / 3) / 200, 200 / 280, 0.8, 900 / 1100, 350 / 400]
    )
    assert set(m["colt_run_id"]) == {"colt1"} and set(m["imp_run_id"]) == {"imp1"} and set(m["arch"]) == {"conv2"}


def test_pareto_front_maximises_both_and_skips_stopped_early_trials(made):
    front = made.tables["pareto_front"]
    assert _rows(front, ["arch", "run_id", "sparsity", "acc_best"]) == [
        ("conv2", "imp1", 0.0, 0.92),
        ("conv2", "imp1", 0.5, 0.915),
        ("conv2", "imp1", 0.75, 0.905),
        ("conv2", "colt1", 0.85, 0.88),
        ("conv2", "imp1", 0.9, 0.87),
        ("conv2", "colt1", 0.95, 0.85),  # (.97, .80) of the stopped-early trial would be here otherwise
        ("conv4", "imp4", 0.0, 0.95),
        ("conv4", "imp4", 0.2, 0.93),
        ("conv4", "imp4", 0.36, 0.92),
    ]


def test_layer_density_of_the_best_tickets(made):
    lay = made.tables["layer_density"]
    assert _rows(lay, ["run_id", "cycle", "layer", "group", "numel", "kept"]) == [
        ("colt1", 2, "conv1", "conv", 200, 130),
        ("colt1", 2, "fc", "linear", 800, 240),
        ("imp1", 1, "conv1", "conv", 200, 150),
        ("imp1", 1, "fc", "linear", 800, 400),
        ("imp4", 1, "conv1", "conv", 200, 180),
        ("imp4", 1, "fc", "linear", 800, 640),
    ]
    assert lay["density"].tolist() == pytest.approx([0.65, 0.3, 0.75, 0.5, 0.9, 0.8])
    assert lay["overlap"].tolist()[:2] == pytest.approx([0.65, 0.65])


def test_report_writes_markdown_and_valid_png_plots(made, sweep):
    import matplotlib.image as mpimg

    names = sorted(os.path.basename(f) for f in made.files)
    pngs = ["accuracy_vs_sparsity.png", "layer_density.png", "mask_overlap.png", "pareto_front.png"]
    assert names == pngs + ["report.md"]
    assert made.out_dir == str(sweep / "report")
    for f in made.files:
        assert os.path.dirname(f) == str(sweep / "report")
        if f.endswith(".png"):
            data = open(f, "rb").read()
            assert data[:8] == PNG and len(data) > 5000, f
            assert mpimg.imread(f).std() > 0, f
    md = open(os.path.join(sweep, "report", "report.md")).read()
    assert md == made.text and "## COLT vs IMP at matched sparsity" in md and "| colt1 |" in md
    assert "![pareto_front](pareto_front.png)" in md


def test_report_main_prints_csv_and_saves_one_csv_per_table(sweep, tmp_path, capsys):
    assert report_main(sweep, tmp_path / "rep", "csv") == 0
    out = capsys.readouterr()
    assert out.out.startswith("# best_tickets\nmethod,dataset,arch,run_id,cycle,sparsity,acc_best")
    assert "colt,digits,conv2,colt1,2,0.7,0.9,0.89,0.905," in out.out and "wrote 10 files" in out.err
    assert sorted(os.listdir(tmp_path / "rep")) == sorted(
        ["best_tickets.csv", "matched_sparsity.csv", "pareto_front.csv", "layer_density.csv", "at_target.csv",
         "best_settings.csv", "accuracy_vs_sparsity.png", "pareto_front.png", "layer_density.png",
         "mask_overlap.png"]
    )  # fmt: skip


def test_one_run_output_dir_gives_the_same_tables_as_the_sweep(made, tmp_path):
    _write_all(tmp_path, per_trial=False)
    flat = build_tables(load_results(tmp_path))
    for key in ("best_tickets", "matched_sparsity", "pareto_front", "layer_density"):
        assert flat[key].equals(made.tables[key]), key


def test_single_method_has_no_matched_rows_and_no_overlap_plot(tmp_path):
    _write_run(ResultsWriter(tmp_path), "imp1", "imp", IMP)
    out = report(tmp_path, tmp_path / "r")
    assert out.tables["matched_sparsity"].empty and "_No rows: needs COLT and IMP" in out.text
    assert not os.path.exists(tmp_path / "r" / "mask_overlap.png")


def test_report_input_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is empty") as e:
        report(tmp_path)
    assert e.value.field == "results"
    (tmp_path / "cycles").mkdir()
    (tmp_path / "cycles" / "x-c0001.parquet").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="no colt_ray results"):
        report(tmp_path)
    _write_run(ResultsWriter(tmp_path), "imp1", "imp", IMP)
    with pytest.raises(ConfigError, match="x-c0001.parquet is not a readable Parquet file"):
        report(tmp_path)
    with pytest.raises(ConfigError, match="format: unknown 'html'"):
        report(tmp_path, fmt="html")
    assert not os.path.exists(tmp_path / "report")


def test_best_ticket_is_chosen_on_validation_and_reports_test_at_the_best_validation_epoch(tmp_path):
    # dense: val .90; cycle 1 (sparsity .4): test .91 but val .85; cycle 2 (sparsity .7): test .80, val .895.
    # By test the best ticket within 1 point would be sparsity .4; by validation it is .7, reported with
    # the test accuracy at its best validation epoch (.79), not its best test accuracy.
    w = ResultsWriter(str(tmp_path))
    flat = RunConfig().to_flat()
    flat.update(method="colt", arch="conv2", dataset="digits", val_fraction=0.1)
    w.write_run({"run_id": "val1", **flat, "status": "completed", "started_at": T0, "dense_acc": 0.90})
    for c, (sp, test, val, test_at_val) in enumerate([(0.0, 0.90, 0.90, 0.90), (0.4, 0.91, 0.85, 0.90),
                                                       (0.7, 0.80, 0.895, 0.79)]):  # fmt: skip
        row = dict(_ticket(c, sp, test, 100, 10.0), val_acc_best=val, test_acc_at_best_val=test_at_val)
        w.write_cycle("val1", c, [row], [])
    best = build_tables(load_results(str(tmp_path)))["best_tickets"]
    (pick,) = best.to_dict("records")
    assert (pick["cycle"], pick["sparsity"], pick["rule"]) == (2, 0.7, "within_tol")
    assert pick["selected_by"] == "val_acc_best" and pick["select_acc"] == 0.895 and pick["report_acc"] == 0.79
    text = report(str(tmp_path), str(tmp_path / "rep")).text
    assert "Selection: a run with a validation split is selected on validation accuracy" in text


def test_search_compute_charges_a_ticket_its_mask_chain_and_one_training_by_hand():
    """IMP, 100 sample-epochs per level: ticket c cost 100 (c + 1). IMP whose tickets a tweak retrains apart
    (50 more per level, the row's sample_epochs 150, mask_sample_epochs 100): ticket c cost 100 c (the level
    trainings that formed its mask) + 50 (its own retraining), not 150 (c + 1): earlier retrainings formed no
    mask. COLT (2 shards x 40 per cycle >= 1, its ticket row 100) is unchanged: shards of cycles < c + 100."""
    import pandas as pd

    from colt_ray.results.tables import _cumulative_compute

    rows = []
    for c in range(3):
        rows.append(dict(run_id="imp", cycle=c, shard=None, sample_epochs=100, mask_sample_epochs=None))
        rows.append(dict(run_id="tweaked", cycle=c, shard=None, sample_epochs=150, mask_sample_epochs=100))
        rows.append(dict(run_id="colt", cycle=c, shard=None, sample_epochs=100, mask_sample_epochs=None))
        if c:
            rows += [dict(run_id="colt", cycle=c, shard=s, sample_epochs=40, mask_sample_epochs=None) for s in (0, 1)]
    cycles = pd.DataFrame(rows).assign(wall_seconds=1.0)
    cycles["shard"] = cycles["shard"].astype("Int64")
    cycles["mask_sample_epochs"] = cycles["mask_sample_epochs"].astype("Int64")
    got = _cumulative_compute(cycles).set_index(["run_id", "cycle"])
    search = {r: list(got.loc[r, "search_sample_epochs"]) for r in ("imp", "tweaked", "colt")}
    assert search == {"imp": [100, 200, 300], "tweaked": [50, 150, 250], "colt": [100, 100, 180]}
    assert list(got.loc["tweaked", "cum_sample_epochs"]) == [150, 300, 450]  # the run's whole cost is unchanged
    # files written before the column: every row is one training, as before
    old = _cumulative_compute(cycles.drop(columns="mask_sample_epochs")).set_index(["run_id", "cycle"])
    assert list(old.loc["imp", "search_sample_epochs"]) == [100, 200, 300]


def test_search_compute_charges_every_distilled_ticket_the_one_teacher_by_hand():
    """Distilled COLT (2 shards x 40 at cycles 0 and 1, each ticket's retraining 100, the teacher 100, trained
    once by the first distilled retraining, cycle 1, whose row holds it: sample_epochs 200,
    teacher_sample_epochs 100): ticket 1 cost 80 + 100 + 100 = 280, ticket 2 160 + 100 + 100 = 360, and the
    run 560 (the teacher once). Evaluating only the last ticket moves the teacher to its row, not the ticket's
    cost (360; the run 360). A resumed distilled IMP whose level 1 retrained the teacher (level 100,
    retraining 50, teacher 100): tickets 50, 250, 350."""
    import pandas as pd

    from colt_ray.results.tables import _cumulative_compute

    def row(run, c, se, shard=None, mask=None, teacher=None):
        return dict(run_id=run, cycle=c, shard=shard, sample_epochs=se, mask_sample_epochs=mask,
                    teacher_sample_epochs=teacher)  # fmt: skip

    rows = [row("kd", 0, 100), row("kd", 1, 200, teacher=100), row("kd", 2, 100)]
    rows += [row("final", 0, 0), row("final", 1, 0), row("final", 2, 200, teacher=100)]
    rows += [row(run, c, 40, shard=s) for run in ("kd", "final") for c in (0, 1) for s in (0, 1)]
    rows += [row("imp", 0, 150, mask=100), row("imp", 1, 250, mask=100, teacher=100), row("imp", 2, 150, mask=100)]
    cycles = pd.DataFrame(rows).assign(wall_seconds=1.0)
    for col in ("shard", "mask_sample_epochs", "teacher_sample_epochs"):
        cycles[col] = cycles[col].astype("Int64")
    got = _cumulative_compute(cycles).set_index(["run_id", "cycle"])
    search = {r: list(got.loc[r, "search_sample_epochs"]) for r in ("kd", "final", "imp")}
    assert search == {"kd": [100, 280, 360], "final": [0, 80, 360], "imp": [50, 250, 350]}
    assert list(got.loc["kd", "cum_sample_epochs"]) == [180, 460, 560]  # 3 x 100 + 4 x 40 + the teacher once
    assert list(got.loc["final", "cum_sample_epochs"]) == [80, 160, 360]  # 4 x 40 + one retraining + the teacher


def test_the_report_answers_whether_colt_is_worth_it_at_the_sparsest_matched_point():
    import pandas as pd

    from colt_ray.results.report import answer_lines

    matched = pd.DataFrame(
        [
            dict(dataset="digits", arch="conv2", sparsity=0.5, colt_acc=0.90, imp_acc=0.91, acc_diff=-0.01,
                 compute_ratio=0.6, colt_n=2, imp_n=2),
            dict(dataset="digits", arch="conv2", sparsity=0.8, colt_acc=0.88, imp_acc=0.86, acc_diff=0.02,
                 compute_ratio=0.55, colt_n=2, imp_n=1),
        ]
    )  # fmt: skip
    best = pd.DataFrame({"method": ["colt", "imp"]})
    assert answer_lines({"matched_sparsity": matched, "best_tickets": best}) == [
        "answer: COLT vs IMP on digits/conv2 at 80.0% sparsity: COLT 0.8800 vs IMP 0.8600 (+2.00 points, above "
        "IMP), at 0.55x IMP's search compute (n = 2 / 1 runs; see matched sparsity)"
    ]
    none = answer_lines({"matched_sparsity": matched.iloc[:0], "best_tickets": best})
    assert none == ["answer: COLT and IMP were both run, but at no sparsity that both reach (see matched sparsity)"]
    assert answer_lines({"matched_sparsity": matched.iloc[:0], "best_tickets": best.iloc[:1]}) == []
