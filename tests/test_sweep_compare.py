"""Fair sweeps: ``compare:`` gives every method the same sampled recipes and seeds (equal trial counts, paired
configs, method-only settings only where read); Optuna sees one averaged result per recipe, and trials ASHA
stopped are told as pruned; ASHA compares trials of different prune rates at equal sparsity. Ray is imported
(the searchers, ASHA) but not started, except in the one small real sweep at the end."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import optuna
import pytest
import yaml

from colt_ray.parallel.cluster import stop_ray
from colt_ray.parallel.sweep.checks import check_spec
from colt_ray.parallel.sweep.cli import main
from colt_ray.parallel.sweep.compare import group_outcome, trial_variants
from colt_ray.parallel.sweep.parse import parse_spec
from colt_ray.parallel.sweep.trainable import sparsity_pct
from colt_ray.parallel.sweep.tuner import make_scheduler, make_searcher, param_space

FIXED = {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 2, "val_fraction": 0.1, "seed": 0}


def space(**over):
    """COLT vs IMP over prune rate, lr and COLT's shard count, 3 recipes x 3 seeds; ``over`` replaces keys
    (None deletes one)."""
    data = {
        "name": "cmp",
        "fixed": dict(FIXED),
        "compare": ["colt", "imp"],
        "seeds": 3,
        "search": {
            "prune_rate": {"float": [0.1, 0.4]},
            "lr": {"logfloat": [0.01, 0.2]},
            "shards": {"int": [2, 4]},
            "split": {"choice": ["class", "random"]},
        },
        "objectives": [{"metric": "val_acc", "mode": "max"}],
        "budget": {"num_samples": 3, "max_concurrent": 2},
        "sampler": {"kind": "random", "seed": 0},
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def drive(search, spec, result):
    """Play Tune: suggest every trial of the sweep and complete it with ``result(config)``; the configs."""
    search.set_search_properties(None, None, param_space(spec))
    configs = []
    for i in range(spec.trial_count):
        suggested = search.suggest(f"t{i:02d}")
        config = {**param_space(spec), **suggested}  # what Tune's SearchGenerator merges
        configs.append(config)
        search.on_trial_complete(f"t{i:02d}", result=result(config))
    return configs


def study_of(search):
    """The Optuna study behind ``make_searcher``'s wrappers (ConcurrencyLimiter, Replicates)."""
    while hasattr(search, "searcher"):
        search = search.searcher
    return search._ot_study


# ---- equal trials per method, paired recipes ----------------------------------------------------------------
def test_compare_gives_every_method_the_same_recipes_and_seeds():
    spec = parse_spec(space())
    assert spec.group_size == 6 and spec.trial_count == 18  # 3 recipes x 2 methods x 3 seeds
    variants = trial_variants(spec)
    assert [(v["method"], v["seed"]) for v in variants] == [
        ("colt", 0), ("imp", 0), ("colt", 1), ("imp", 1), ("colt", 2), ("imp", 2),
    ]  # fmt: skip
    imp = variants[1]
    assert (imp["shards"], imp["split"]) == (2, "class")  # COLT-only settings at their defaults for IMP
    assert "shards" not in variants[0] and "prune_rate" not in imp  # COLT keeps its sampled shards; both prune

    configs = drive(make_searcher(spec), spec, lambda c: {"val_acc": 0.5, "search_done": True})
    by_method = {m: [c for c in configs if c["method"] == m] for m in ("colt", "imp")}
    assert len(by_method["colt"]) == len(by_method["imp"]) == 9
    recipes = {(c["prune_rate"], c["lr"]) for c in configs}
    assert len(recipes) == 3  # three sampled recipes ...
    for recipe in recipes:  # ... each trained by both methods with seeds 0, 1, 2
        runs = sorted((c["method"], c["seed"]) for c in configs if (c["prune_rate"], c["lr"]) == recipe)
        assert runs == sorted((m, s) for m in ("colt", "imp") for s in (0, 1, 2))
    assert {c["shards"] for c in by_method["imp"]} == {2} and len({c["shards"] for c in by_method["colt"]}) > 1


def test_per_method_settings_apply_to_their_method_only():
    spec = parse_spec(space(compare={"colt": {"vote": 1}, "imp": {"rewind_step": 10}}, seeds=None))
    assert spec.seeds == 1 and spec.trial_count == 6
    colt, imp = trial_variants(spec)
    assert colt["vote"] == 1 and "rewind_step" not in colt and "seed" not in colt
    assert imp["rewind_step"] == 10 and "vote" not in imp and imp["shards"] == 2
    check_spec(spec)  # every corner, once per method, passes validation


def test_optuna_is_told_each_recipe_once_with_the_mean_over_its_trials():
    spec = parse_spec(space())
    search = make_searcher(spec)
    drive(search, spec, lambda c: {"val_acc": 0.5 + 0.1 * c["seed"] + (0.05 if c["method"] == "imp" else 0),
                                   "search_done": True})  # fmt: skip
    trials = study_of(search).trials
    assert len(trials) == 3 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert [t.value for t in trials] == pytest.approx([0.625] * 3)  # mean over seeds 0..2 and both methods


def test_a_resumed_sweep_finishes_the_recipe_it_was_launching():
    """Tune saves the wrappers' state with ``get_state`` and restores it into the unpickled searcher."""
    from colt_ray.parallel.sweep.searchers import Replicates

    spec = parse_spec(space(seeds=None))  # groups of 2: colt, imp
    first = make_searcher(spec)
    first.set_search_properties(None, None, param_space(spec))
    launched = first.suggest("t0")
    replicates = first.searcher
    assert isinstance(replicates, Replicates)
    state = replicates.get_state()
    resumed = make_searcher(spec)
    resumed.set_search_properties(None, None, param_space(spec))
    resumed.searcher.set_state(state)
    second = resumed.suggest("t1")
    assert (launched["method"], second["method"]) == ("colt", "imp") and second["lr"] == launched["lr"]
    assert resumed.searcher.groups == {"t0": ["t0", "t1"]}


def test_a_recipe_with_a_failed_trial_is_failed_and_one_stopped_early_is_pruned():
    assert group_outcome([{"val_acc": 0.8, "search_done": True}, None], ["val_acc"]) == {"result": None, "error": True}
    stopped = [{"val_acc": 0.8, "search_done": True}, {"val_acc": 0.9, "search_done": False}]
    assert group_outcome(stopped, ["val_acc"]) == {"result": None, "error": False}
    done = [{"val_acc": 0.8, "sparsity": 0.5, "search_done": True}, {"val_acc": 0.6, "sparsity": 0.7, "search_done": 1}]
    assert group_outcome(done, ["val_acc", "sparsity"]) == {
        "result": {"val_acc": pytest.approx(0.7), "sparsity": pytest.approx(0.6), "search_done": True},
        "error": False,
    }


# ---- trials ASHA stops are not complete results for Optuna -----------------------------------------------------
@pytest.mark.parametrize("objectives", [[{"metric": "val_acc"}], [{"metric": "val_acc"}, {"metric": "sparsity"}]])
def test_a_trial_stopped_early_is_told_to_optuna_as_pruned(objectives):
    fixed = {**FIXED, "method": "colt"}
    budget = {"num_samples": 3, "max_concurrent": 3}
    spec = parse_spec(space(compare=None, seeds=None, fixed=fixed, objectives=objectives, sampler=None, budget=budget))
    search = make_searcher(spec)
    search.set_search_properties(None, None, param_space(spec))
    for tid in ("done", "stopped", "failed"):
        search.suggest(tid)
    metrics = {"val_acc": 0.9, "sparsity": 0.5}
    search.on_trial_complete("done", result={**metrics, "search_done": True})
    search.on_trial_complete("stopped", result={**metrics, "search_done": False})  # what Tune passes after ASHA
    search.on_trial_complete("failed", error=True)
    states = [t.state for t in study_of(search).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]


# ---- ASHA's axis: percent sparsity when prune rates differ ------------------------------------------------------
def test_asha_compares_trials_of_different_prune_rates_at_equal_sparsity():
    """A prunes at .4 per cycle, B at .1. At cycle 1 B (10% sparse, .90) beats A (40% sparse, .80), so ASHA
    over cycles stops A; over sparsity A is compared with B once B is 40% sparse too (cycle 5, .78)."""
    scheduler = {"metric": "val_acc", "grace_period": 40, "reduction_factor": 2}
    spec = parse_spec(space(compare=None, seeds=None, fixed={**FIXED, "method": "colt"}, sampler=None,
                            scheduler={**scheduler, "time_attr": "sparsity_pct"}))  # fmt: skip
    assert parse_spec(space(compare=None, seeds=None, fixed={**FIXED, "method": "colt"}, sampler=None,
                            scheduler={"metric": "val_acc"})).scheduler.time_attr == "sparsity_pct"  # fmt: skip
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    b_cycles = [(1, 0.1, 0.90), (2, 0.19, 0.89), (3, 0.271, 0.87), (4, 0.3439, 0.85), (5, 0.40951, 0.78)]

    def decisions(asha):
        asha.on_trial_add(None, a)
        asha.on_trial_add(None, b)
        out = {"b1": asha.on_trial_result(None, b, _result(*b_cycles[0]))}
        out["a1"] = asha.on_trial_result(None, a, _result(1, 0.4, 0.80))
        for cycle, sp, acc in b_cycles[1:]:
            out[f"b{cycle}"] = asha.on_trial_result(None, b, _result(cycle, sp, acc))
        return out

    by_sparsity = decisions(make_scheduler(spec))
    assert make_scheduler(spec)._time_attr == "sparsity_pct"
    assert by_sparsity["a1"] == "CONTINUE" and by_sparsity["b5"] == "STOP"  # B at 40% (.78) below A at 40% (.80)
    fixed_rate = parse_spec(space(compare=None, seeds=None, fixed={**FIXED, "method": "colt", "prune_rate": 0.2},
                                  search={"lr": {"logfloat": [0.01, 0.2]}}, sampler=None,
                                  scheduler={"metric": "val_acc"}))  # fmt: skip
    assert fixed_rate.scheduler.time_attr == "cycle"  # one rate: cycles and sparsity agree
    assert decisions(make_scheduler(fixed_rate))["a1"] == "STOP"  # what the cycle axis did to the sparser trial


def _result(cycle, sparsity, val_acc):
    return {"cycle": cycle, "sparsity": sparsity, "sparsity_pct": sparsity_pct(sparsity), "val_acc": val_acc}


def test_sparsity_pct_is_whole_percent_pruned():
    assert [sparsity_pct(s) for s in (0.0, 0.29, 0.4, 0.40951, 0.999)] == [0, 29, 40, 40, 99]


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------------------------
BAD = {
    "one_method": (space(compare=["colt"]), "compare: needs two or more methods"),
    "not_a_list": (space(compare="colt"), "compare: needs two or more methods: a list ([colt, imp])"),
    "unknown_method": (space(compare=["colt", "imb"]), "compare: unknown method 'imb'; valid: colt, imp, jackpot"),
    "repeated_method": (space(compare=["colt", "colt"]), "compare: method 'colt' is listed twice"),
    "method_also_searched": (
        space(search={**space()["search"], "method": {"choice": ["colt", "imp"]}}),
        "search.method: compare: runs each listed method; remove method from search:",
    ),
    "method_also_fixed": (space(fixed={**FIXED, "method": "imp"}), "fixed.method: compare: runs each listed method"),
    "recipe_setting_per_method": (
        space(compare={"colt": {"epochs": 5}, "imp": {}}),
        "compare.colt.epochs: is part of the training recipe, the same for every method: put it under fixed:",
    ),
    "setting_the_method_does_not_read": (
        space(compare={"colt": {}, "imp": {"vote": 1}}),
        "compare.imp.vote: imp does not read vote",
    ),
    "per_method_setting_also_searched": (
        space(compare={"colt": {"shards": 3}, "imp": {}}),
        "compare.colt.shards: is also under search:",
    ),
    "bad_per_method_value": (space(compare={"colt": {"vote": 0}, "imp": {}}), "compare.colt.vote: "),
    "zero_seeds": (space(seeds=0), "seeds: must be an integer >= 1, got 0"),
    "searched_seed_with_seeds": (
        space(
            search={**space()["search"], "seed": {"int": [0, 9]}}, fixed={k: v for k, v in FIXED.items() if k != "seed"}
        ),
        "search.seed: seeds: N gives each replicate its seed",
    ),
    "asha_with_compare": (space(scheduler={"metric": "val_acc"}), "scheduler: ASHA stops single trials"),
    "cycle_axis_with_searched_rate": (
        space(
            compare=None,
            seeds=None,
            fixed={**FIXED, "method": "colt"},
            scheduler={"metric": "val_acc", "time_attr": "cycle"},
        ),
        "scheduler.time_attr: trials prune at different rates, so equal cycles mean unequal sparsity",
    ),  # fmt: skip
    "cycle_units_with_searched_rate": (
        space(
            compare=None,
            seeds=None,
            fixed={**FIXED, "method": "colt"},
            scheduler={"metric": "val_acc", "grace_period": 2},
        ),
        "scheduler.time_attr: with prune rates that differ, ASHA's rungs are in percent sparsity",
    ),  # fmt: skip
    "sparsity_axis_past_100": (
        space(
            compare=None,
            seeds=None,
            fixed={**FIXED, "method": "colt"},
            scheduler={"metric": "val_acc", "time_attr": "sparsity_pct", "max_t": 150},
        ),
        "scheduler.max_t: time_attr sparsity_pct ends at 100 (percent), got 150",
    ),  # fmt: skip
    "colt_corner_fails_only_for_colt": (
        space(
            compare={"colt": {"shards_per_actor": 2}, "imp": {}},
            search={"lr": {"logfloat": [0.01, 0.2]}},
            fixed={**FIXED, "backend": "local"},
        ),
        "(search-space corner: method=colt, first values)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_compare_input_is_one_line_exit_2_nothing_written(case, tmp_path, capsys, no_ray):
    data, expected = BAD[case]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    storage = tmp_path / "st"
    rc = main([str(path), "--storage", str(storage)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("colt-ray: error: ") and expected in err[0], err
    assert not storage.exists()


def test_compare_smoke_test_is_one_recipe_per_method_and_one_seed():
    smoke = parse_spec(space()).smoke()
    assert (smoke.seeds, smoke.budget.num_samples, smoke.trial_count) == (1, 1, 2)


# ---- one small real sweep ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_small_compare_sweep_trains_each_recipe_with_both_methods_and_both_seeds(tmp_path):
    import ray

    from colt_ray.results.reader import load_results
    from colt_ray.results.report import build_tables

    data = space(
        fixed={**FIXED, "prune_rate": 0.5, "shards": 2, "split": "random", "backend": "local", "cpus_per_shard": 1},
        search={"lr": {"logfloat": [0.05, 0.2]}},
        seeds=2,
        budget={"num_samples": 1, "max_concurrent": 2},
    )
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(data))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        assert main([str(path), "--storage", str(tmp_path / "st"), "--quiet"]) == 0
    finally:
        stop_ray()
    res = load_results(os.path.join(tmp_path, "st", "cmp"))
    trials = res.trials_config()
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert sorted(zip(trials["method"], trials["seed"])) == [("colt", 0), ("colt", 1), ("imp", 0), ("imp", 1)]
    assert trials["lr"].nunique() == 1  # one recipe, trained four times
    assert {json.loads(c)["shards"] for c in trials["config_json"]} == {2}
    matched = build_tables(res)["matched_sparsity"]
    assert len(matched) >= 1 and set(matched["colt_n"]) == {2} and set(matched["imp_n"]) == {2}
