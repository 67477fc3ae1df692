"""``colt-ray status`` from the files a sweep keeps while it runs (no Ray): counts, the best completed trial
on each objective with its settings, elapsed and left time, the resources held; and bad input."""

from __future__ import annotations

import datetime as dt
import json

from colt_ray.cli import main
from colt_ray.parallel.sweep.parse import parse_spec
from colt_ray.parallel.sweep.status import STATUS_FILE, status_lines
from colt_ray.parallel.sweep.trials import mark_pareto, trial_row, write_trials
from colt_ray.results.writer import write_bytes_atomic

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)


def two_objective_spec():
    return parse_spec(
        {
            "name": "live",
            "fixed": {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 2, "val_fraction": 0.1},
            "search": {"prune_rate": {"float": [0.1, 0.4]}, "lr": {"logfloat": [0.01, 0.2]}},
            "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "sparsity", "mode": "max"}],
            "budget": {"num_samples": 10, "max_concurrent": 2},
        }
    )


def write_sweep(out, spec, trials, held, sessions):
    rows = []
    for tid, status, rate, val_acc, sparsity in trials:
        config = {**spec.base_config(), "prune_rate": rate, "lr": 0.05}
        metrics = {"val_acc": val_acc, "sparsity": sparsity, "cycle": 2, "search_done": status == "completed"}
        row = trial_row(spec, tid, config, metrics, "boom" if status == "failed" else None)
        if status == "running":
            row.update(status="running", stopped_early=False)
        rows.append(row)
    mark_pareto(spec, rows)
    write_trials(str(out), rows)
    record = {
        "sweep": spec.name, "planned_trials": spec.trial_count, "search": list(spec.search),
        "objectives": [[o.metric, o.mode] for o in spec.objectives],
        "updated_at": (NOW - dt.timedelta(seconds=20)).isoformat(), "cluster": {"CPU": 8.0, "GPU": 0.0},
        "held": held,
    }  # fmt: skip
    write_bytes_atomic(str(out), (STATUS_FILE,), json.dumps(record).encode())
    write_bytes_atomic(str(out), ("sweep_summary.json",), json.dumps({"sessions": sessions}).encode())


def test_status_of_a_running_sweep_counts_trials_names_the_best_and_estimates_the_time_left(tmp_path):
    spec = two_objective_spec()
    trials = [
        ("t1", "completed", 0.2, 0.91, 0.5),
        ("t2", "completed", 0.3, 0.88, 0.7),
        ("t3", "stopped_early", 0.1, 0.5, 0.2),
        ("t4", "failed", 0.4, None, None),
        ("t5", "running", 0.25, 0.6, 0.3),
    ]
    sessions = [
        {"started_at": (NOW - dt.timedelta(hours=2)).isoformat(), "wall_seconds": 600.0, "cores": 8.0},
        {"started_at": (NOW - dt.timedelta(seconds=600)).isoformat(), "wall_seconds": None, "cores": 8.0},
    ]
    write_sweep(tmp_path, spec, trials, {"CPU": 3.0}, sessions)
    lines = status_lines(str(tmp_path), now=NOW)
    assert lines[0] == f"sweep live at {tmp_path} (updated 0:00:20 ago)"
    assert lines[1] == "trials: 10 planned; 4 done (2 completed, 1 stopped early, 1 failed), 1 running, 5 to start"
    assert lines[2] == "best val_acc (max): 0.91, trial t1: prune_rate=0.2, lr=0.05"  # completed trials only
    assert lines[3] == "best sparsity (max): 0.7, trial t2: prune_rate=0.3, lr=0.05"
    # 20 min over two sessions for 4 of 10 trials: 30 min more at that pace
    assert lines[4] == "elapsed 0:20:00; about 0:30:00 left at the pace so far (4 of 10)"
    assert lines[5] == "cluster: 3 of 8 CPUs, 0 of 0 GPUs held by the 1 running trial(s)"


def test_status_of_a_sweep_with_no_trial_completed_and_of_a_finished_one(tmp_path):
    spec = two_objective_spec()
    write_sweep(tmp_path, spec, [("t1", "running", 0.2, 0.5, 0.1)], {"CPU": 1.0}, [])
    assert "best: no trial completed yet" in status_lines(str(tmp_path), now=NOW)
    done = [(f"t{i}", "completed", 0.2, 0.8 + i / 100, 0.5) for i in range(10)]
    write_sweep(tmp_path, spec, done, {}, [])
    lines = status_lines(str(tmp_path), now=NOW)
    assert lines[0].endswith("(finished)") and "10 done (10 completed" in lines[1]
    assert not any(line.startswith("cluster:") for line in lines)


def test_status_of_a_folder_without_a_sweep_is_one_line_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colt-ray: error: sweep: no trials.parquet at ") and "\n" not in err
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_live_rows_of_a_resumed_sweep_keep_trials_that_ended_before_it_as_ended():
    """The restored callback never hears again of trials that ended before the resume: Tune's status says."""
    from types import SimpleNamespace

    from colt_ray.parallel.sweep.live import live_rows

    spec = two_objective_spec()
    config = {**spec.base_config(), "prune_rate": 0.2, "lr": 0.05}
    done = {"val_acc": 0.9, "sparsity": 0.5, "cycle": 2, "search_done": True}

    def trial(tid, status, result):
        return SimpleNamespace(trial_id=tid, status=status, last_result=result, config=config)

    trials = [
        trial("a", "TERMINATED", done),  # ended before the resume
        trial("b", "ERROR", {"val_acc": 0.4, "cycle": 1}),  # errored before the resume
        trial("c", "RUNNING", {"val_acc": 0.5, "cycle": 1}),
        trial("d", "RUNNING", done),  # its completion just told to the callback; Tune's status not yet set
        trial("e", "PENDING", {}),  # not started
    ]
    rows = {r["trial_id"]: r["status"] for r in live_rows(spec, trials, {"d": False})}
    assert rows == {"a": "completed", "b": "failed", "c": "running", "d": "completed"}
