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
    header = next(line for line in section.splitlines() if line.startswith("| dataset"))
    assert "| colt_acc | colt_n | imp_acc | imp_n |" in header and "_std" not in header
    first = next(line for line in section.splitlines() if line.startswith("| digits"))
    assert "| 0.8800 ± 0.0100 | 3 | 0.8700 ± 0.0141 | 2 |" in first
    last = [line for line in section.splitlines() if line.startswith("| digits")][-1]
    assert "| yes | 0.8708 | 1 | 0.8364 ± 0.0206 | 2 |" in last  # one run: the mean alone
