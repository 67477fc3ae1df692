"""The COLT-vs-IMP gap search (search_spaces/colt_gap_*.yaml): accuracy and cost at a target sparsity, the
sweep's efficiency figure, ``--set``, and the report's ready-to-run command lines.

Hand-made results (digits / lenet300, val_fraction 0.1, target_sparsity 0.6, 100 sample-epochs and 1 s per
ticket row, no shard rows; cycle 0 is the dense ticket at val .90 / test .90). Per later cycle: (sparsity,
val_acc_best, test_acc_at_best_val).

* COLT config A (lr .1), seeds 1 and 2: first ticket past .6 at cycle 2 (.64 val .88 test .86; .66 val .86
  test .85); seed 1 goes on to .8 (val .70), which must not count.
* COLT config B (lr .05), seed 1: past .6 at cycle 1 (.61, val .80 test .82).
* IMP config C, seed 1: .5 (val .89) then .7 at cycle 2 (val .89 test .87); seed 2 never gets there.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import pandas as pd
import pytest
import test_sweep
from test_compare_report import T0, _row  # the same hand-made ticket rows
from test_sweep import finished_before_it_was_killed, kill_tagged, wait_for

from colt_ray.cli import build_parser
from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError
from colt_ray.parallel.sweep.efficiency import efficiency, efficiency_lines, training_cpu_seconds
from colt_ray.parallel.sweep.parse import load_spec
from colt_ray.parallel.sweep.state import Totals
from colt_ray.parallel.sweep.trainable import cycle_metrics
from colt_ray.results.commands import ticket_command
from colt_ray.results.reader import load_results
from colt_ray.results.report import build_tables
from colt_ray.results.writer import ResultsWriter

ray_tag = test_sweep.ray_tag  # the fixture: a private RAY_TMPDIR whose processes are killed afterwards
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {
    "a1": ("colt", 0.1, 1, [(0.4, 0.89, 0.88), (0.64, 0.88, 0.86), (0.8, 0.70, 0.69)]),
    "a2": ("colt", 0.1, 2, [(0.4, 0.89, 0.88), (0.66, 0.86, 0.85)]),
    "b1": ("colt", 0.05, 1, [(0.61, 0.80, 0.82)]),
    "c1": ("imp", 0.1, 1, [(0.5, 0.89, 0.88), (0.7, 0.89, 0.87)]),
    "c2": ("imp", 0.1, 2, [(0.5, 0.88, 0.87)]),
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap")
    w = ResultsWriter(str(out))
    for run_id, (method, lr, seed, cycles) in RUNS.items():
        flat = RunConfig().to_flat()
        flat.update(method=method, dataset="digits", arch="lenet300", lr=lr, seed=seed, val_fraction=0.1)
        flat.update(target_sparsity=0.6, eval_tickets="final")
        w.write_run({"run_id": run_id, **flat, "status": "completed", "started_at": T0})
        for c, (sp, val, test) in enumerate([(0.0, 0.90, 0.90), *cycles]):
            w.write_cycle(run_id, c, [_row(c, sp, val, test)], [])
    return out


@pytest.fixture(scope="module")
def tables(results_dir):
    return build_tables(load_results(str(results_dir)))


def test_at_target_takes_each_runs_first_ticket_past_the_target_by_hand(tables):
    t = tables["at_target"].set_index("config_id")
    assert len(t) == 3  # A, B, C; IMP seed 2 never got there, so C has one run
    a = t[(t["method"] == "colt") & (t["n"] == 2)].iloc[0]
    assert a["sparsity"] == pytest.approx(0.65) and a["rounds"] == 2
    assert a["select_acc"] == pytest.approx(0.87) and a["select_acc_std"] == pytest.approx(0.0141421, abs=1e-6)
    assert a["report_acc"] == pytest.approx(0.855) and a["report_acc_std"] == pytest.approx(0.0070711, abs=1e-6)
    assert a["sample_epochs"] == 300  # IMP-like search compute: cycles 0 and 1, then the ticket's own training
    b = t[(t["method"] == "colt") & (t["n"] == 1)].iloc[0]
    assert b["rounds"] == 1 and b["select_acc"] == pytest.approx(0.80) and pd.isna(b["select_acc_std"])
    assert a["best"] and not b["best"]  # validation chooses A (.87 > .80), although B's test accuracy is higher
    c = t[t["method"] == "imp"].iloc[0]
    assert c["n"] == 1 and c["sparsity"] == pytest.approx(0.7) and c["report_acc"] == pytest.approx(0.87)


def test_report_prints_the_best_setting_per_method_as_a_command_line_that_parses_back(tables):
    settings = tables["best_settings"].set_index("method")
    assert set(settings.index) == {"colt", "imp"} and set(settings["rule"]) == {"best_at_target"}
    for method, row in settings.iterrows():
        argv = shlex.split(row["command"])
        assert argv[:2] == ["colt-ray", "ticket"]
        args = build_parser().parse_args(argv[1:])
        assert args.method == method and args.target_sparsity == 0.6 and args.val_fraction == 0.1
        assert args.lr == 0.1 and args.arch == "lenet300" and args.eval_tickets == "final"
        assert args.seed == 1  # the configuration's first seed: the line reproduces that run


def test_ticket_command_gives_flags_for_non_defaults_only():
    flat = {**RunConfig().to_flat(), "method": "imp", "prune_groups": ["conv", "linear", "output"], "augment": False}
    cmd = ticket_command(flat, out="o")
    assert cmd == "colt-ray ticket --no-augment --prune-groups conv,linear,output --method imp --out o"


def test_cycle_metrics_are_those_of_the_first_ticket_at_or_past_the_target():
    class Record:  # the parts of a CycleRecord cycle_metrics reads
        def __init__(self, cycle, sparsity, val, test, done=False):
            self.cycle, self.done = cycle, done
            self.ticket_row = dict(sparsity=sparsity, acc_best=test, acc_final=test, val_acc_best=val,
                                   test_acc_at_best_val=test)  # fmt: skip

    totals = Totals()
    totals.sample_epochs, totals.wall_seconds = 100, 2.0
    m = cycle_metrics(Record(1, 0.5, 0.9, 0.88), totals, 0.6, "r")
    assert m["val_acc_at_target"] == 0.0 and m["rounds_at_target"] == float("inf")  # not there yet: worst values
    totals.sample_epochs, totals.wall_seconds = 200, 4.0
    m = cycle_metrics(Record(2, 0.64, 0.87, 0.85), totals, 0.6, "r")
    assert (m["val_acc_at_target"], m["test_acc_at_target"], m["rounds_at_target"]) == (0.87, 0.85, 2)
    assert (m["sample_epochs_at_target"], m["wall_at_target"]) == (200, 4.0)
    totals.sample_epochs, totals.wall_seconds = 300, 6.0
    m = cycle_metrics(Record(3, 0.8, 0.95, 0.94, done=True), totals, 0.6, "r")
    assert (m["val_acc_at_target"], m["rounds_at_target"], m["sample_epochs_at_target"]) == (0.87, 2, 200)


def test_sweep_efficiency_from_recorded_timings_by_hand():
    cycles = pd.DataFrame(
        {
            "cpu_seconds": [10.0, 20.0, None, 5.0],
            "wall_seconds": [11.0, 21.0, 4.0, 6.0],  # the third row predates cpu_seconds: its wall time counts
        }
    )
    assert training_cpu_seconds(cycles) == 39.0
    sessions = [{"wall_seconds": 20.0, "cores": 2.0}, {"wall_seconds": 5.0, "cores": 2.0}]  # interrupted, resumed
    s = efficiency(39.0, sessions, prepare=3.0, checkpoint=2.0)
    assert s["capacity_cpu_seconds"] == 50.0 and s["efficiency"] == pytest.approx(0.78)
    assert s["parts_cpu_seconds"]["other (Ray and trial start-up, idle cores, waits)"] == pytest.approx(6.0)
    (line,) = efficiency_lines(s)
    assert "78.0% of the CPU time (2 CPUs x 25 s over 2 sessions)" in line and "trial set-up 6.0%" in line
    killed = efficiency(39.0, [*sessions, {"wall_seconds": None, "cores": 2.0}], prepare=3.0, checkpoint=2.0)
    assert killed["efficiency"] == pytest.approx(0.78) and killed["sessions_without_length"] == 1
    assert "left out, so this figure is too high" in efficiency_lines(killed)[1]


def test_sweep_training_cpu_comes_from_the_trials_and_the_cycles_table_only_when_a_trial_lacks_it(tmp_path):
    from colt_ray.parallel.sweep.efficiency import summarise

    read, sessions = [], [{"wall_seconds": 10.0, "cores": 2.0}]
    rows = [{"train_cpu_seconds": 4.0}, {"train_cpu_seconds": 6.5}]
    summary = summarise(str(tmp_path), rows, sessions, lambda: read.append(1) or pd.DataFrame())
    assert summary["parts_cpu_seconds"]["training"] == 10.5 and not read
    older = [*rows, {"train_cpu_seconds": None}]  # a trial of an older version, resumed
    table = pd.DataFrame({"cpu_seconds": [1.0, 2.0], "wall_seconds": [1.5, 2.5]})
    summary = summarise(str(tmp_path), older, sessions, lambda: read.append(1) or table)
    assert summary["parts_cpu_seconds"]["training"] == 3.0 and read == [1]
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["efficiency"] == pytest.approx(0.15)


def test_set_fixes_settings_over_the_yaml_and_checks_them_like_it():
    space = os.path.join(ROOT, "search_spaces", "colt_gap_mnist.yaml")
    spec = load_spec(space, ["data_root=/data/m.npz", "epochs=4", "prune_groups=[conv, linear]"])
    assert spec.fixed["data_root"] == "/data/m.npz" and spec.fixed["epochs"] == 4 and "epochs" not in spec.search
    for item, message in [
        ("epochs=-1", "set.epochs: must be >= 0"),
        ("epoch=3", "set.epoch: unknown setting"),
        ("epochs", "set: expected KEY=VALUE"),
        ("lr=fast", "set.lr: lr must be a float"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_spec(space, [item])


def test_bad_set_on_the_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path):
    space = os.path.join(ROOT, "search_spaces", "colt_gap_mnist.yaml")
    cmd = [sys.executable, "-m", "colt_ray", "sweep", space, "--storage", str(tmp_path / "st"), "--set", "vote=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "set.vote: must be >= 1" in done.stderr and not (tmp_path / "st").exists()


@pytest.mark.slow
def test_gap_space_on_digits_runs_resumes_after_an_interruption_and_reports_command_lines(tmp_path, ray_tag):
    """colt_gap_mnist.yaml shrunk to digits: 1 recipe x 2 methods x 2 seeds (2 tiny trials per method)."""
    from colt_ray.results.report import report

    space = os.path.join(ROOT, "search_spaces", "colt_gap_mnist.yaml")
    storage, out = tmp_path / "st", tmp_path / "st" / "colt_gap_mnist"
    sets = ["dataset=digits", "data_root=null", "epochs=3", "target_sparsity=0.5", "prune_rate=0.3", "shards=2"]
    cmd = [sys.executable, "-m", "colt_ray", "sweep", space, "--storage", str(storage), "--num-samples", "1"]
    cmd += [a for s in sets for a in ("--set", s)] + ["--quiet", "--max-concurrent", "1"]
    env = {**os.environ, "RAY_TMPDIR": ray_tag}
    # the seeds: fixed by hand (seeds: 3 in the file; 2 here, through a copy of the space)
    small = tmp_path / "gap.yaml"
    small.write_text(open(space).read().replace("seeds: 3", "seeds: 2"))
    cmd[4] = str(small)
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: len(list((out / "tune" / "resume").glob("trial_*.npz"))) >= 1, 300, "a checkpoint", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_tagged(ray_tag)
    assert not finished_before_it_was_killed(out), "the sweep finished before it could be interrupted"
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the killed session never recorded its length: the figure says it leaves that time out
    assert "sweep efficiency:" in resumed.stdout and "1 earlier session(s) ended without" in resumed.stdout
    res = load_results(str(out))
    trials = res.trials_config()
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert trials.groupby("method").size().to_dict() == {"colt": 2, "imp": 2}
    assert trials["rounds_at_target"].notna().all() and trials["val_acc_at_target"].notna().all()
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert 0 < summary["efficiency"] <= 1 and summary["parts_cpu_seconds"]["training"] > 0
    # the driver's training figure is the trials' own sums, which equal the cycles table's (no table re-read)
    assert trials["train_cpu_seconds"].notna().all()
    assert summary["parts_cpu_seconds"]["training"] == pytest.approx(training_cpu_seconds(res.cycles))
    text = report(str(out)).text
    assert "colt-ray ticket --val-fraction 0.1" in text and "--method imp" in text


def test_at_target_breaks_a_tie_on_validation_by_less_compute_and_marks_one_best():
    """Means of a few seeds' accuracies on one validation set tie exactly: the cheaper search wins, once."""
    from colt_ray.results.tables import at_target

    rows = []
    for run_id, config_id, cycle, epochs in (("r1", "zz-cheap", 2, 100), ("r2", "aa-costly", 5, 400)):
        rows.append(dict(run_id=run_id, config_id=config_id, method="imp", dataset="digits", arch="lenet300",
                         cycle=cycle, sparsity=0.91, select_acc=0.97, report_acc=0.96, search_sample_epochs=epochs,
                         cum_wall_seconds=1.0, critical_path_seconds=1.0))  # fmt: skip
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "target_sparsity": [0.9, 0.9]})
    t = at_target(pd.DataFrame(rows), runs, None)
    assert list(t["config_id"]) == ["zz-cheap", "aa-costly"] and list(t["best"]) == [True, False]
