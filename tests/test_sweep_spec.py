"""Sweep pieces that need no Ray cluster: the YAML format, up-front checks (bad input -> exit 2, one line,
nothing written, Ray never started), trial bundles, checkpoint state, trial status and the Pareto flag."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from colt_ray.core.errors import ConfigError
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.parallel.sweep.bundles import trial_bundles
from colt_ray.parallel.sweep.checks import check_spec, corner_configs, dataset_classes
from colt_ray.parallel.sweep.cli import main
from colt_ray.parallel.sweep.parse import load_spec, parse_spec
from colt_ray.parallel.sweep.spec import Dist
from colt_ray.parallel.sweep.state import Totals, load_state, save_state
from colt_ray.parallel.sweep.trials import mark_pareto, trial_row, trial_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACES = os.path.join(REPO, "search_spaces")
MNIST = os.path.join(REPO, "..", "shared", "data", "mnist10k.npz")


def space(**over):
    """A small valid space as a dict; ``over`` replaces top-level keys (None deletes one)."""
    data = {
        "name": "t",
        "fixed": {"dataset": "digits", "arch": "conv2", "method": "colt", "epochs": 1, "cycles": 2},
        "search": {
            "prune_rate": {"float": [0.1, 0.4]},
            "shards": {"int": [1, 2]},
            "split": {"choice": ["class", "random"]},
        },
        "objectives": [{"metric": "acc", "mode": "max"}],
        "allow_test_selection": True,  # the parsing tests use test accuracy on purpose; see the selection tests
        "budget": {"num_samples": 2, "max_concurrent": 1},
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


# ---- the format ------------------------------------------------------------------------------------
def test_shipped_spaces_parse_and_pass_every_corner():
    names = sorted(f for f in os.listdir(SPACES) if f.endswith(".yaml"))
    assert {
        "quick.yaml",
        "colt_mnist.yaml",
        "colt_cifar10.yaml",
        "colt_cifar100.yaml",
        "colt_tinyimagenet.yaml",
        "colt_vs_imp.yaml",
    } <= set(names)
    for name in names:
        spec = load_spec(os.path.join(SPACES, name))
        assert {"prune_rate", "shards", "split", "lr"} <= set(spec.search), name
        if spec.fixed.get("dataset") == "npz" and not os.path.exists(MNIST):
            continue  # the shared benchmark file is optional
        check_spec(spec)
    vs = load_spec(os.path.join(SPACES, "colt_vs_imp.yaml"))
    assert vs.compare == {"colt": {}, "imp": {}} and "method" not in vs.search and vs.seeds == 2
    assert vs.trial_count == vs.budget.num_samples * 2 * 2  # every recipe: both methods, both seeds
    for name in ("colt_mnist.yaml", "colt_cifar10.yaml", "colt_cifar100.yaml", "colt_tinyimagenet.yaml"):
        assert load_spec(os.path.join(SPACES, name)).scheduler.time_attr == "sparsity_pct", name


def test_parse_reads_every_section():
    spec = parse_spec(
        space(
            objectives=[{"metric": "acc"}, {"metric": "sparsity"}],
            scheduler={"metric": "acc", "time_attr": "sparsity_pct", "grace_period": 10},
            sampler={"seed": 3},
        )
    )
    # two objectives: TPE below 1,000 recipes (Optuna's guidance), NSGA-II from there
    assert spec.multi and spec.sampler.kind == "tpe" and spec.sampler.seed == 3
    many = space(objectives=[{"metric": "acc"}, {"metric": "sparsity"}], budget={"num_samples": 1000})
    assert parse_spec(many).sampler.kind == "nsga2"
    assert [o.mode for o in spec.objectives] == ["max", "max"]
    assert spec.scheduler.metric == "acc" and spec.scheduler.mode == "max" and spec.scheduler.reduction_factor == 2
    assert (spec.scheduler.time_attr, spec.scheduler.grace_period, spec.scheduler.max_t) == ("sparsity_pct", 10, 100)
    assert spec.search["shards"].values == (1, 2) and spec.base_config()["progress"] is False
    single = parse_spec(space())
    assert not single.multi and single.sampler.kind == "tpe" and single.scheduler is None


def test_logint_and_points_to_evaluate_parse():
    point = {"prune_rate": 0.2, "shards": 2, "split": "class"}
    spec = parse_spec(space(search={**space()["search"], "shards": {"logint": [1, 8]}}, points_to_evaluate=[point]))
    assert spec.search["shards"].kind == "logint" and spec.search["shards"].values == (1, 8)
    assert spec.points_to_evaluate == (point,)
    assert parse_spec(space()).points_to_evaluate == ()


def test_a_grid_runs_each_point_once_by_default_and_num_samples_can_take_part_of_it(tmp_path, capsys, no_ray):
    grid = space(search={"prune_rate": {"grid": [0.1, 0.2, 0.3]}, "split": {"grid": ["class", "random"]}}, budget={})
    spec = parse_spec(grid)
    assert spec.sampler.kind == "grid" and spec.grid_size == 6 and spec.trial_count == 6
    assert spec.search["split"] == Dist("grid", ("class", "random"))
    assert parse_spec({**grid, "seeds": 2}).trial_count == 12  # each point once per seed
    assert spec.with_overrides(num_samples=4).trial_count == 4
    with pytest.raises(ConfigError, match="num-samples: 7 recipes, but the grid has 6 points"):
        spec.with_overrides(num_samples=7)
    assert spec.smoke().trial_count == 2
    rc = main([write(tmp_path, grid), "--storage", str(tmp_path / "st"), "--num-samples", "7"])
    assert rc == 2 and "num-samples: 7 recipes" in capsys.readouterr().err and not (tmp_path / "st").exists()


def test_acc_at_target_takes_the_fixed_target_sparsity():
    fixed = {**space()["fixed"], "target_sparsity": 0.5}
    fixed.pop("cycles")
    spec = parse_spec(space(fixed=fixed, objectives={"metric": "acc_at_target"}))
    assert spec.objectives[0].target == 0.5


def test_worst_corner_pairs_most_shards_with_a_class_split():
    spec = parse_spec(space(search={"shards": {"int": [1, 12]}, "split": {"choice": ["random", "class"]}}))
    label, worst = list(corner_configs(spec))[-1]
    assert worst["shards"] == 12 and worst["split"] == "class" and "worst case" in label


def test_npz_class_count_reads_labels_only(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=np.zeros((4, 2, 2), np.uint8),
        y_train=np.array([0, 1, 2, 6]),
        x_test=np.zeros((1, 2, 2), np.uint8),
        y_test=np.array([3]),
    )
    assert dataset_classes("npz", str(path)) == 7
    assert dataset_classes("cifar100", "/nonexistent") == 100
    with pytest.raises(ConfigError, match="data-root"):
        dataset_classes("npz", str(tmp_path / "missing.npz"))


# ---- bad input: one line, exit 2, nothing written, Ray never started --------------------------------------
BAD = {
    "yaml_does_not_parse": ("name: t\nfixed: {dataset: digits\n", "not valid YAML"),
    "unknown_top_level_key": (space(budgett={"num_samples": 2}), "budgett: unknown key; valid: name, description"),
    "unknown_fixed_setting": (space(fixed={"dataset": "digits", "epoch": 1}), "fixed.epoch: unknown setting; valid: "),
    "unknown_searched_setting": (space(search={"lrr": {"float": [0.01, 0.1]}}), "search.lrr: unknown setting; valid: "),
    "empty_range": (space(search={"prune_rate": {"float": [0.2, 0.2]}}), "search.prune_rate: empty range"),
    "inverted_range": (space(search={"lr": {"logfloat": [0.2, 0.01]}}), "search.lr: inverted range"),
    "categorical_without_choices": (
        space(search={"split": {"choice": []}}),
        "search.split: choice needs a non-empty list",
    ),
    "unknown_distribution": (space(search={"lr": {"normal": [0, 1]}}), "unknown distribution 'normal'"),
    "too_many_shards_for_class_split": (
        space(search={"shards": {"int": [2, 20]}, "split": {"choice": ["random", "class"]}}),
        "shards: a class split of 10 classes allows at most 10 shards, got 20",
    ),
    "bad_value_in_range": (space(search={"lr": {"float": [-1.0, 0.1]}}), "lr: must be > 0"),
    "integer_setting_as_float": (space(search={"shards": {"float": [1, 4]}}), "shards is an integer setting"),
    "asha_without_metric_for_two_objectives": (
        space(objectives=[{"metric": "acc"}, {"metric": "sparsity"}], scheduler={}),
        "scheduler.metric: ASHA is single-objective",
    ),
    "unknown_metric": (space(objectives={"metric": "accuracy"}), "unknown metric 'accuracy'"),
    "asha_metric_without_target": (space(scheduler={"metric": "acc_at_target"}), "acc_at_target needs a target"),
    "unknown_sampler": (
        space(sampler={"kind": "bohb"}),
        "sampler.kind: unknown 'bohb'; valid: tpe, gp, cmaes, qmc, nsga2, random, grid",
    ),
    "unknown_sampler_option": (space(sampler={"kind": "tpe", "multivariat": True}), "sampler.multivariat: unknown key"),
    "option_of_another_sampler": (
        space(sampler={"kind": "tpe", "population_size": 8}),
        "sampler.population_size: only applies to kind: nsga2",
    ),
    "option_not_a_boolean": (
        space(sampler={"kind": "tpe", "multivariate": "yes"}),
        "sampler.multivariate: must be true",
    ),
    "group_without_multivariate": (space(sampler={"kind": "tpe", "group": True}), "sampler.group: needs multivariate"),
    "negative_startup_trials": (
        space(sampler={"kind": "gp", "n_startup_trials": -1}),
        "sampler.n_startup_trials: must",
    ),
    "unknown_qmc_type": (
        space(sampler={"kind": "qmc", "qmc_type": "lhs"}),
        "sampler.qmc_type: unknown 'lhs'; valid: sobol, halton",
    ),
    "cmaes_for_two_objectives": (
        space(objectives=[{"metric": "acc"}, {"metric": "sparsity"}], sampler={"kind": "cmaes"}),
        "sampler.kind: cmaes is for one objective",
    ),
    "nsga2_for_one_objective": (space(sampler={"kind": "nsga2"}), "sampler.kind: nsga2 is for two objectives"),
    "study_storage_on_an_object_store": (
        space(sampler={"kind": "tpe", "storage": "s3://bucket/studies"}),
        "sampler.storage: s3:// cannot hold an Optuna study",
    ),
    "logint_from_zero": (space(search={"shards": {"logint": [0, 4]}}), "search.shards: logint needs lo > 0"),
    "logint_with_float_bounds": (space(search={"shards": {"logint": [1, 2.5]}}), "logint needs integer bounds"),
    "points_not_a_list": (space(points_to_evaluate={"shards": 1}), "points_to_evaluate: must be a list of mappings"),
    "point_of_a_fixed_setting": (
        space(points_to_evaluate=[{"prune_rate": 0.2, "shards": 1, "split": "class", "epochs": 3}]),
        "points_to_evaluate[0].epochs: unknown searched setting; valid: prune_rate, shards, split",
    ),
    "point_missing_a_setting": (
        space(points_to_evaluate=[{"prune_rate": 0.2, "shards": 1}]),
        "points_to_evaluate[0]: gives no value for split",
    ),
    "point_outside_the_range": (
        space(points_to_evaluate=[{"prune_rate": 0.5, "shards": 1, "split": "class"}]),
        "points_to_evaluate[0].prune_rate: 0.5 is outside the searched range [0.1, 0.4]",
    ),
    "point_not_a_choice": (
        space(points_to_evaluate=[{"prune_rate": 0.2, "shards": 1, "split": "label"}]),
        "points_to_evaluate[0].split:",
    ),
    "unknown_tracker": (
        space(callbacks=["comet"]),
        "callbacks: unknown tracker 'comet'; valid: mlflow, tensorboard, wandb",
    ),
    "callbacks_not_a_list": (space(callbacks="mlflow"), "callbacks: must be a list of trackers"),
    "tracker_named_twice": (
        space(callbacks=["tensorboard", {"tensorboard": {}}]),
        "callbacks.tensorboard: is named twice",
    ),
    "unknown_tracker_option": (
        space(callbacks=[{"mlflow": {"uri": "sqlite:///x.db"}}]),
        "callbacks.mlflow.uri: unknown option; valid: tracking_uri, experiment_name, tags",
    ),
    "unknown_wandb_mode": (
        space(callbacks=[{"wandb": {"mode": "dryrun"}}]),
        "callbacks.wandb.mode: unknown 'dryrun'; valid: online, offline, disabled",
    ),
    "grid_beside_a_sampled_setting": (
        space(search={"prune_rate": {"grid": [0.1, 0.2]}, "shards": {"int": [1, 2]}}),
        "search.shards: a grid search tries every combination of values: give it {grid: [a, b, ...]} too",
    ),
    "grid_with_another_sampler": (
        space(search={"prune_rate": {"grid": [0.1, 0.2]}}, sampler={"kind": "tpe"}),
        "sampler.kind: search.prune_rate is a grid",
    ),
    "grid_sampler_without_a_grid": (space(sampler={"kind": "grid"}), "search.prune_rate: a grid search tries every"),
    "more_recipes_than_grid_points": (
        space(
            search={"prune_rate": {"grid": [0.1, 0.2]}, "split": {"grid": ["class", "random"]}},
            budget={"num_samples": 5},
        ),
        "budget.num_samples: 5 recipes, but the grid has 4 points and each runs once; give at most 4",
    ),
    "empty_grid": (space(search={"prune_rate": {"grid": []}}), "search.prune_rate: grid needs a non-empty list"),
    "grid_value_out_of_bounds": (
        space(search={"prune_rate": {"grid": [0.1, 1.5]}}),
        "search.prune_rate: must be in (0, 1), got 1.5",
    ),
    "points_with_a_grid": (
        space(search={"prune_rate": {"grid": [0.1, 0.2]}}, points_to_evaluate=[{"prune_rate": 0.1}]),
        "points_to_evaluate: a grid search tries every point of its grid",
    ),
    "point_float_for_an_int": (
        space(points_to_evaluate=[{"prune_rate": 0.2, "shards": 1.5, "split": "class"}]),
        "points_to_evaluate[0].shards: must be an integer in [1, 2], got 1.5",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, capsys, no_ray):
    data, expected = BAD[case]
    storage = tmp_path / "st"
    rc = main([write(tmp_path, data), "--storage", str(storage)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("colt-ray: error: ") and expected in err[0], err
    assert not storage.exists()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("gs://bucket/studies", "optuna-storage: gs:// cannot hold an Optuna study"),
        ("sqlite:////nonexistent-colt-ray/studies.db", "optuna-storage: cannot open sqlite:////nonexistent-colt-ray"),
    ],
)
def test_an_optuna_storage_that_cannot_work_is_one_line_exit_2(tmp_path, capsys, no_ray, url, expected):
    storage = tmp_path / "st"
    rc = main([write(tmp_path, space()), "--storage", str(storage), "--optuna-storage", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("colt-ray: error: ") and expected in err[0], err
    assert not storage.exists()


def test_a_tracker_that_cannot_work_is_one_line_exit_2_nothing_written(tmp_path, capsys, no_ray, monkeypatch):
    """A missing package names the extra; an MLflow store that will not open, W&B online without a key, and a
    tracker that writes into trial folders on an object-store sweep are refused before anything starts."""
    storage = tmp_path / "st"

    def refused(callbacks, expected, *extra):
        rc = main([write(tmp_path, space(callbacks=callbacks)), "--storage", str(storage), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("colt-ray: error: ") and expected in err[0], err
        assert not storage.exists()

    for module, tracker in (("mlflow", "mlflow"), ("tensorboardX", "tensorboard"), ("wandb", "wandb")):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # `import module` raises ImportError
            refused([tracker], f"callbacks.{tracker}: needs the {module} package (")
            refused([tracker], "pip install 'colt_ray[track]'")
    # MLflow 3 keeps file stores in maintenance mode and refuses them unless MLFLOW_ALLOW_FILE_STORE=true
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    file_store = [{"mlflow": {"tracking_uri": f"file://{tmp_path / 'mlruns'}"}}]
    refused(file_store, "callbacks.mlflow.tracking_uri: cannot open file://")
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    refused(["wandb"], "callbacks.wandb: no W&B API key: run `wandb login`, set WANDB_API_KEY, or use mode: offline")


@pytest.mark.parametrize(
    "callbacks, expected",
    [
        (["tensorboard"], "callbacks.tensorboard: writes event files into each trial's folder"),
        ([{"wandb": {"mode": "offline"}}], "callbacks.wandb.mode: offline runs are written into each trial's folder"),
        (["mlflow"], "callbacks.mlflow.tracking_uri: an object-store sweep has no local folder"),
    ],
)
def test_trackers_that_need_a_local_sweep_are_refused_on_an_object_store(callbacks, expected, monkeypatch):
    from colt_ray.parallel.sweep.trackers import check_trackers, parse_callbacks

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_trackers(parse_callbacks(callbacks), "s3://bucket/sweeps/x", "x", remote=True)


def test_trackers_see_finite_metrics_only():
    from colt_ray.parallel.sweep.trackers import finite

    result = {"acc": 0.5, "rounds_at_target": math.inf, "wall_at_target": -math.inf, "x": math.nan, "cycle": 1,
              "run_id": "r", "config": {"lr": 0.1, "bad": math.inf}}  # fmt: skip
    assert finite(result) == {"acc": 0.5, "cycle": 1, "run_id": "r", "config": {"lr": 0.1}}


def test_a_resume_keeps_the_study_storage_the_sweep_started_with(tmp_path):
    from colt_ray.parallel.sweep.driver import check_study_storage
    from colt_ray.parallel.sweep.tuner import OPTUNA_RECORD, dashboard_line
    from colt_ray.results.writer import write_bytes_atomic

    out, db = str(tmp_path / "sweep"), f"sqlite:///{tmp_path / 'studies.db'}"
    spec = parse_spec(space())
    write_bytes_atomic(out, OPTUNA_RECORD, db.encode())
    resumed = check_study_storage(spec, out, resume=True)  # no --optuna-storage: the recorded one
    assert resumed.sampler.storage == db and f"optuna-dashboard {db}" in dashboard_line(resumed, out)
    other = spec.with_overrides(optuna_storage=str(tmp_path / "other.log"))
    with pytest.raises(ConfigError, match="keeps its study in sqlite:///"):
        check_study_storage(other, out, resume=True)
    fresh = str(tmp_path / "fresh")  # started with the default journal: another storage on resume is refused
    with pytest.raises(ConfigError, match="the sweep's default storage"):
        check_study_storage(other, fresh, resume=True)
    assert check_study_storage(spec, fresh, resume=True).sampler.storage is None
    assert "optuna-dashboard " + os.path.join(fresh, "optuna", "journal.log") in dashboard_line(spec, fresh)


def test_unwritable_storage_is_one_line_exit_2(tmp_path, capsys, no_ray):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main([write(tmp_path, space()), "--storage", str(blocker / "st")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("colt-ray: error: storage: ") and "not writable" in err[0]
    assert blocker.read_text() == "x" and sorted(os.listdir(tmp_path)) == ["file", "space.yaml"]


def test_resume_without_a_sweep_and_rerun_of_an_existing_name_are_refused(tmp_path, capsys, no_ray):
    rc = main([write(tmp_path, space()), "--storage", str(tmp_path / "st"), "--resume"])
    assert rc == 2 and "resume: no sweep to resume" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()


def test_restart_errored_without_resume_is_refused(tmp_path, capsys, no_ray):
    rc = main([write(tmp_path, space()), "--storage", str(tmp_path / "st"), "--restart-errored"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "restart-errored: only applies with --resume" in err[0], err
    assert not (tmp_path / "st").exists()


def test_bad_override_and_missing_file(tmp_path, capsys, no_ray):
    assert main([write(tmp_path, space()), "--num-samples", "0"]) == 2
    assert "num-samples: must be an integer >= 1" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "space: cannot read" in capsys.readouterr().err


def test_command_line_exit_status_is_2(tmp_path):
    storage = tmp_path / "st"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "colt_ray.parallel.sweep.cli",
            write(tmp_path, BAD["empty_range"][0]),
            "--storage",
            str(storage),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "search.prune_rate: empty range" in proc.stderr
    assert not storage.exists()


# ---- trial resources --------------------------------------------------------------------------------
def test_a_ray_trial_with_k_shards_reserves_2_plus_k_bundles():
    flat = {"method": "colt", "shards": 2, "backend": "ray", "cpus_per_shard": 0.5}
    # the trial's token bundle, k shards, the evaluator
    assert trial_bundles(flat) == [{"CPU": 0.01}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]
    assert len(trial_bundles({**flat, "shards": 1})) == 3
    assert len(trial_bundles({**flat, "shards": 5})) == 7
    assert len(trial_bundles({**flat, "eval_tickets": "none"})) == 3  # nothing to evaluate: no evaluator


def test_trial_bundles_gpu_share_imp_and_local_backend():
    gpu = {"method": "colt", "shards": 2, "backend": "ray", "cpus_per_shard": 2, "gpus_per_shard": 0.25}
    assert trial_bundles(gpu) == [{"CPU": 0.01}] + [{"CPU": 2, "GPU": 0.25}] * 3
    assert trial_bundles(gpu, keep_gpus=False) == [{"CPU": 0.01}] + [{"CPU": 2}] * 3  # the CPU fallback
    imp = trial_bundles({"method": "imp", "backend": "ray", "cpus_per_shard": 1})
    assert len(imp) == 2 and imp[1] == {"CPU": 1}  # the trial + its one full-data trainer
    assert trial_bundles({"shards": 4, "backend": "local", "cpus_per_shard": 1}) == [{"CPU": 1}]


# ---- checkpoint state -----------------------------------------------------------------------------------
def _record(cycle=1, done=False):
    mask = Mask({"w": torch.tensor([[True, False], [True, True]]), "v": torch.tensor([True, False, False])})
    props = [Mask({"w": torch.tensor([[True, False], [False, True]]), "v": torch.tensor([True, False, False])})]
    theta = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "v": np.ones(3, np.float32)}
    return CycleRecord("run-1", cycle, mask, theta, [], [], props, done)


def test_checkpoint_state_round_trip(tmp_path):
    rec = _record()
    totals = Totals(sample_epochs=300, wall_seconds=2.5, dense_acc=0.5, acc_at_target=0.0)
    save_state(str(tmp_path), rec, totals, {"cycle": 1, "acc": 0.7})
    state = load_state(str(tmp_path))
    assert state.run_id == "run-1" and not state.done and state.metrics == {"cycle": 1, "acc": 0.7}
    assert state.resume.cycle == 1 and state.resume.mask == rec.mask and state.resume.proposals == rec.proposals
    assert state.resume.mask.names() == ["w", "v"]
    assert all(np.array_equal(state.resume.theta[k], rec.theta[k]) for k in rec.theta)
    assert state.totals == totals


# ---- trial status and the Pareto front ------------------------------------------------------------------
def test_status_from_last_result():
    assert trial_status({"search_done": True}, None) == "completed"
    assert trial_status({"search_done": False}, None) == "stopped_early"
    assert trial_status({"search_done": True}, RuntimeError("x")) == "failed"


def test_pareto_front_holds_only_completed_non_dominated_trials():
    spec = parse_spec(space(objectives=[{"metric": "acc"}, {"metric": "sparsity"}]))
    results = {
        "a": ({"acc": 0.9, "sparsity": 0.3, "search_done": True}, None),
        "b": ({"acc": 0.8, "sparsity": 0.5, "search_done": True}, None),
        "c": ({"acc": 0.7, "sparsity": 0.4, "search_done": True}, None),  # dominated by b
        "d": ({"acc": 0.99, "sparsity": 0.9, "search_done": False}, None),  # would dominate all, stopped early
        "e": ({}, RuntimeError("boom")),
    }
    rows = [trial_row(spec, tid, {"shards": 2}, m, err) for tid, (m, err) in results.items()]
    mark_pareto(spec, rows)
    assert {r["trial_id"]: r["pareto"] for r in rows} == {"a": True, "b": True, "c": False, "d": False, "e": False}
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["stopped_early", "failed"]
    assert rows[3]["stopped_early"] and rows[0]["objective"] == 0.9 and rows[4]["run_id"].endswith("-e")


def test_single_objective_front_is_the_best_completed_trial():
    spec = parse_spec(space(objectives={"metric": "sparsity", "mode": "min"}))
    rows = [trial_row(spec, t, {}, {"sparsity": s, "search_done": True}, None) for t, s in (("a", 0.5), ("b", 0.2))]
    mark_pareto(spec, rows)
    assert [r["pareto"] for r in rows] == [False, True]


# ---- the cluster submit script ----------------------------------------------------------------------------
def test_submit_script_smoke_test_prints_the_job_command(tmp_path, capsys):
    import importlib.util
    import json
    import shlex

    spec = importlib.util.spec_from_file_location("submit_sweep", os.path.join(REPO, "scripts", "submit_sweep.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(
        [
            os.path.join(SPACES, "quick.yaml"),
            "--address",
            "http://10.0.0.1:8265",
            "--storage",
            "rel/st",
            "--smoke-test",
            "--",
            "--num-samples",
            "3",
        ]
    )
    assert rc == 0
    cmd = shlex.split(capsys.readouterr().out.splitlines()[0][2:])
    assert cmd[:3] == ["ray", "job", "submit"] and cmd[cmd.index("--working-dir") + 1] == "."
    assert cmd[cmd.index("--address") + 1] == "http://10.0.0.1:8265" and "--no-wait" in cmd
    env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    from importlib.metadata import version

    pins = env["pip"]["packages"]  # pinned at the versions installed here
    assert f"optuna=={version('optuna')}" in pins and not any(p.startswith("torch") for p in pins)
    entry = cmd[cmd.index("--") + 1 :]
    assert entry[:4] == ["python", "-m", "colt_ray", "sweep"] and entry[4] == "search_spaces/quick.yaml"
    assert entry[entry.index("--storage") + 1] == os.path.abspath("rel/st") and entry[-2:] == ["--num-samples", "3"]
    assert script.main([str(tmp_path / "x.yaml"), "--smoke-test"]) == 2  # outside the project: the job could not see it


def test_the_sweep_command_line_imports_neither_ray_nor_optuna_nor_torch():
    code = (
        "import sys, colt_ray.parallel.sweep.cli as c; "
        "print(sorted(m for m in ('ray', 'optuna', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    "over,message",
    [
        ({"objectives": [{"metric": "acc"}]}, "objectives[0].metric: acc is measured on the test set"),
        (
            {
                "fixed": {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 2, "val_fraction": 0.1},
                "objectives": [{"metric": "val_acc"}, {"metric": "sparsity"}],
                "scheduler": {"metric": "acc"},
            },
            "scheduler.metric: acc is measured on the test set",
        ),
        (
            {"objectives": [{"metric": "acc_at_target", "target": 0.5}]},
            "use val_acc_at_target with val_fraction > 0, or set allow_test_selection: true",
        ),
        ({"objectives": [{"metric": "val_acc"}]}, "objectives[0].metric: val_acc needs a validation split"),
    ],
)
def test_the_test_set_never_selects_unless_the_space_allows_it(over, message):
    with pytest.raises(ConfigError) as err:
        parse_spec(space(allow_test_selection=None, **over))
    assert message in str(err.value)


def test_validation_objectives_parse_with_a_validation_split_and_test_ones_when_allowed():
    fixed = {"dataset": "digits", "arch": "conv2", "method": "colt", "epochs": 1, "cycles": 2, "val_fraction": 0.1}
    spec = parse_spec(space(fixed=fixed, allow_test_selection=None, objectives=[{"metric": "val_acc"}]))
    assert [o.metric for o in spec.objectives] == ["val_acc"] and not spec.allow_test_selection
    assert parse_spec(space(objectives=[{"metric": "acc"}])).allow_test_selection


def test_a_trial_the_cluster_can_never_place_is_refused_before_the_sweep_starts():
    from colt_ray.parallel.sweep.checks import check_fits_cluster

    spec = parse_spec(
        {
            "name": "big",
            "fixed": {"backend": "ray", "cpus_per_shard": 1.0, "method": "colt"},
            "search": {"shards": {"int": [2, 4]}},
            "objectives": [{"metric": "sparsity", "mode": "max"}],
        }
    )
    two_nodes = [{"CPU": 4.0}, {"CPU": 4.0}]
    check_fits_cluster(spec, {"CPU": 8.0}, two_nodes)  # 4 shards + evaluator + token: 5.01 CPU, bundles of 1
    with pytest.raises(ConfigError, match=r"cluster: the largest trial \(shards=4\) needs 5.01 CPU, 0 GPU in 6"):
        check_fits_cluster(spec, {"CPU": 4.0}, [{"CPU": 4.0}])
    wide = parse_spec({**spec_dict(spec), "fixed": {"backend": "ray", "cpus_per_shard": 3.0, "method": "colt"}})
    with pytest.raises(ConfigError, match="has a bundle of .*'CPU': 3.0.* and the largest node has 2 CPU"):
        check_fits_cluster(wide, {"CPU": 20.0}, [{"CPU": 2.0}] * 10)


def spec_dict(spec):
    return {"name": spec.name, "search": {"shards": {"int": [2, 4]}},
            "objectives": [{"metric": "sparsity", "mode": "max"}]}  # fmt: skip


def test_an_autoscaler_node_type_that_holds_the_largest_trial_makes_it_fit():
    from colt_ray.parallel.resources import NodeType
    from colt_ray.parallel.sweep.checks import check_fits_cluster

    spec = parse_spec(
        {
            "name": "gpu",
            "fixed": {"backend": "ray", "cpus_per_shard": 1.0, "gpus_per_shard": 0.5, "method": "colt"},
            "search": {"shards": {"int": [2, 4]}},
            "objectives": [{"metric": "sparsity", "mode": "max"}],
        }
    )  # 4 shards + evaluator: 5.01 CPU, 2.5 GPU in bundles of 1 CPU, 0.5 GPU
    head = ({"CPU": 2.0}, [{"CPU": 2.0}])
    with pytest.raises(ConfigError, match=r"needs 5.01 CPU, 2.5 GPU in 6 bundles; the cluster has 2 CPU, 0 GPU: it"):
        check_fits_cluster(spec, *head)  # no autoscaler: the cluster as it is
    check_fits_cluster(spec, *head, [NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, max_count=3)])
    check_fits_cluster(spec, *head, [NodeType("gpu", {"CPU": 4.0, "GPU": 1.0})])  # no max count: no limit
    with pytest.raises(ConfigError, match="needs 5.01 CPU, 0 GPU"):  # the CPU fallback: no GPU bundles, CPUs short
        check_fits_cluster(spec, *head, keep_gpus=False)
    with pytest.raises(ConfigError, match="types add at most 8 CPU, 2 GPU"):
        check_fits_cluster(spec, *head, [NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, max_count=2)])
    apart = ({"CPU": 2.0, "GPU": 4.0}, [{"CPU": 2.0}, {"GPU": 4.0}])  # enough of each, on no one node
    with pytest.raises(ConfigError, match=r"has a bundle of .*'GPU': 0.5.* 4 GPU, no node type \(cpu\) either"):
        check_fits_cluster(spec, *apart, [NodeType("cpu", {"CPU": 64.0})])
    with pytest.raises(ConfigError, match="needs 5.01 CPU"):  # a type at its max count adds nothing
        check_fits_cluster(spec, *head, [NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, max_count=0)])


def test_the_cpu_fallback_is_one_choice_for_a_whole_sweep(tmp_path):
    from colt_ray.parallel.sweep.cli import fallback_setting

    with pytest.raises(ConfigError, match="allow_cpu_fallback: is one choice for the whole sweep"):
        check_spec(parse_spec(space(search={"allow_cpu_fallback": {"choice": [True, False]}})))
    assert fallback_setting(True) == ["allow_cpu_fallback=true"] and fallback_setting(None) == []
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(space()))
    assert load_spec(str(path), fallback_setting(False)).fixed["allow_cpu_fallback"] is False
