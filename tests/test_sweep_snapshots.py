"""What a sweep's snapshots hold and what a resume does with a stale one (no Ray started): a trial's packed
checkpoint file, the searcher state saved with Tune's snapshots (the Optuna study in its journal, the state
no larger after 40 trials than after 4), a study continued after a resume, and runs the snapshot does not
know removed before one."""

from __future__ import annotations

import json
import os
import pickle

import optuna
import pytest
from test_results_io import cycle_rows, layer_rows, run_row

from colt_ray.parallel.sweep import orphans
from colt_ray.parallel.sweep.parse import parse_spec
from colt_ray.parallel.sweep.spec import SAMPLER_OPTIONS, SAMPLERS
from colt_ray.parallel.sweep.state import Totals, pack_state, resume_rel, save_state, unpack_state
from colt_ray.parallel.sweep.tuner import OPTUNA_JOURNAL, make_searcher, param_space
from colt_ray.results import layout
from colt_ray.results.compact import compact
from colt_ray.results.reader import load_results
from colt_ray.results.writer import ResultsWriter
from tests.test_checkpoint import collect, small_cfg


def spec_of(**over):
    data = {
        "name": "snap",
        "fixed": {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 2, "val_fraction": 0.1},
        "search": {"prune_rate": {"float": [0.1, 0.4]}, "lr": {"logfloat": [0.01, 0.2]}},
        "objectives": [{"metric": "val_acc", "mode": "max"}],
        "budget": {"num_samples": 100, "max_concurrent": 2},
        "sampler": {"kind": "tpe", "seed": 0},
    }
    data.update(over)
    return parse_spec(data)


def optuna_search(search):
    while hasattr(search, "searcher"):
        search = search.searcher
    return search


def run_trials(search, spec, ids, finish=True):
    """Play Tune for ``ids``: suggest, report cycles 0 and 1, complete (unless ``finish`` is False)."""
    for tid in ids:
        config = search.suggest(tid)
        for cycle in (0, 1):
            search.on_trial_result(tid, {"val_acc": 0.5 + 0.01 * cycle, "cycle": cycle, "training_iteration": 1})
        if finish:
            search.on_trial_complete(tid, result={"val_acc": config["lr"], "search_done": True})


def new_searcher(spec, out):
    search = make_searcher(spec, str(out))
    search.set_search_properties(None, None, param_space(spec))
    return search


def saved_size(search, path) -> int:
    optuna_search(search).save(str(path))
    return os.path.getsize(path)


# ---- a trial's checkpoint: one file ---------------------------------------------------------------------------
def test_a_packed_checkpoint_holds_what_the_directory_holds(tmp_path):
    prepared, whole = collect(small_cfg())
    record, totals = whole[1], Totals(sample_epochs=7, checkpoint_seconds=0.5)
    data = pack_state(record, totals, {"cycle": 1, "acc": 0.5}, theta0=prepared.ctx.theta0)
    save_state(str(tmp_path), record, totals, {"cycle": 1, "acc": 0.5}, theta0=prepared.ctx.theta0)
    from colt_ray.parallel.sweep.state import load_state

    packed, unpacked = unpack_state(data), load_state(str(tmp_path))
    assert packed.resume.cycle == unpacked.resume.cycle == 1 and packed.resume.theta is None
    assert packed.resume.mask == unpacked.resume.mask == record.mask
    assert packed.resume.proposals == record.proposals
    assert packed.totals == totals and packed.metrics == {"cycle": 1, "acc": 0.5} and not packed.done
    assert resume_rel("ab12cd34") == ("tune", "resume", "trial_ab12cd34.npz")


# ---- the searcher's state -------------------------------------------------------------------------------------
def test_the_searcher_state_does_not_grow_with_finished_trials_and_the_study_is_in_the_journal(tmp_path):
    spec = spec_of()
    search = new_searcher(spec, tmp_path)
    run_trials(search, spec, [f"t{i:02d}" for i in range(4)])
    small = saved_size(search, tmp_path / "s4.pkl")
    run_trials(search, spec, [f"t{i:02d}" for i in range(4, 40)])
    run_trials(search, spec, ["t40", "t41"], finish=False)  # two running
    large = saved_size(search, tmp_path / "s40.pkl")
    assert large <= small + 600, (small, large)  # only the running trials' ids, not the 36 more finished
    with open(tmp_path / "s40.pkl", "rb") as fh:
        assert set(pickle.load(fh)["_running"]) == {"t40", "t41"}
    study = optuna.load_study(
        study_name="snap",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path.joinpath(*OPTUNA_JOURNAL)))
        ),
    )
    assert len(study.trials) == 42 and sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 40
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.51}  # steps are cycles

    # the in-memory study of an object-store sweep is pickled whole, as Ray's OptunaSearch does: every trial
    # adds hundreds of bytes (the sampler, ~11 KB of random states, is the bulk of both)
    memory = make_searcher(spec)
    memory.set_search_properties(None, None, param_space(spec))
    run_trials(memory, spec, [f"t{i:02d}" for i in range(40)])
    assert saved_size(memory, tmp_path / "m40.pkl") > large + 40 * 300


SAMPLER_CASES = {  # every kind, and every option of SAMPLER_OPTIONS at least once, as the space writes it
    "tpe": ({"multivariate": True, "group": True, "n_startup_trials": 2, "constant_liar": True}, 2),
    "gp": ({"n_startup_trials": 2}, 2),
    "cmaes": ({"n_startup_trials": 2}, 1),
    "qmc": ({"qmc_type": "halton", "scramble": True}, 2),
    "nsga2": ({"population_size": 2}, 2),
    "random": ({}, 2),
}


def test_the_sampler_cases_cover_every_kind_and_option():
    assert set(SAMPLER_CASES) | {"grid"} == set(SAMPLERS)  # grid: its own test below
    assert {k for options, _ in SAMPLER_CASES.values() for k in options} == set(SAMPLER_OPTIONS)


@pytest.mark.parametrize("kind", sorted(SAMPLER_CASES))
def test_every_sampler_and_option_reaches_optuna_pickles_as_tune_pickles_it_and_keeps_sampling(tmp_path, kind):
    """Each sampler runs past its startup trials into its own model with the options the space gave. Tune
    pickles the searcher into the Tuner's state and every snapshot; Optuna 5.1's NSGA-II holds a thread lock,
    which failed every nsga2 sweep at ``tune.Tuner(...)`` before :class:`searchers.NSGAII` dropped it."""
    import ray.cloudpickle

    options, n_objectives = SAMPLER_CASES[kind]
    objectives = [{"metric": "val_acc", "mode": "max"}, {"metric": "sparsity", "mode": "max"}][:n_objectives]
    spec = spec_of(sampler={"kind": kind, "seed": 0, **options}, objectives=objectives)
    search = new_searcher(spec, tmp_path)
    sampler = optuna_search(search)._ot_study.sampler
    for key, value in options.items():  # Optuna keeps each option as its private attribute of the same name
        assert getattr(sampler, f"_{key}") == value, key

    def play(search, ids):
        for tid in ids:
            config = search.suggest(tid)
            assert 0.1 <= config["prune_rate"] <= 0.4 and 0.01 <= config["lr"] <= 0.2, config
            result = {"val_acc": config["prune_rate"] - abs(config["lr"] - 0.05), "sparsity": config["prune_rate"]}
            search.on_trial_complete(tid, result={**result, "search_done": True})

    play(search, ["t0", "t1", "t2"])
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(search))
    play(copy, ["t3", "t4"])  # past the 2 startup trials; the restored copy (a new lock where it has one) too
    trials = optuna_search(copy)._ot_study.trials
    assert len(trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_a_grid_hands_out_every_point_once_with_trials_running_two_at_a_time_and_goes_on_after_a_resume(
    tmp_path, n_objectives
):
    """{grid: [...]} for every searched setting: Optuna's GridSampler, each point to exactly one trial while two
    run at once; the last point's tell does not stop the study (Study.stop raises outside Study.optimize), and a
    searcher restored from the storage hands out only the points not yet given."""
    import itertools

    objectives = [{"metric": "val_acc", "mode": "max"}, {"metric": "sparsity", "mode": "max"}][:n_objectives]
    grid = {"prune_rate": [0.1, 0.2, 0.3], "lr": [0.01, 0.1]}
    spec = spec_of(
        search={k: {"grid": v} for k, v in grid.items()},
        objectives=objectives,
        budget={"max_concurrent": 2},
        sampler={"seed": 0},
    )
    assert spec.sampler.kind == "grid" and spec.budget.num_samples == spec.grid_size == 6
    search = new_searcher(spec, tmp_path)
    result = {"val_acc": 0.5, "sparsity": 0.3, "search_done": True}
    first, second = search.suggest("t0"), search.suggest("t1")  # both running
    search.on_trial_complete("t0", result=result)
    third = search.suggest("t2")
    search.on_trial_complete("t1", result=result)
    search.on_trial_complete("t2", result=result)
    resumed = new_searcher(spec, tmp_path)  # the same study, from its journal
    rest = []
    for tid in ("t3", "t4", "t5"):
        rest.append(resumed.suggest(tid))
        resumed.on_trial_complete(tid, result=result)  # the last one: no study.stop()
    got = sorted((c["prune_rate"], c["lr"]) for c in [first, second, third, *rest])
    assert got == sorted(itertools.product(*grid.values()))
    trials = optuna_search(resumed)._ot_study.trials
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_points_to_evaluate_are_tried_first_a_logint_draws_integers_and_a_resume_queues_no_point_again(tmp_path):
    points = [{"prune_rate": 0.2, "lr": 0.1, "shards": 3}, {"prune_rate": 0.3, "lr": 0.05, "shards": 1}]
    search_space = {"prune_rate": {"float": [0.1, 0.4]}, "lr": {"logfloat": [0.01, 0.2]}, "shards": {"logint": [1, 8]}}
    spec = spec_of(search=search_space, points_to_evaluate=points)
    search = new_searcher(spec, tmp_path)
    configs = []
    for i in range(3):  # at most 2 at once (budget.max_concurrent): each ends before the next is asked
        configs.append(search.suggest(f"t{i}"))
        search.on_trial_complete(f"t{i}", result={"val_acc": 0.5, "search_done": True})
    assert [{k: c[k] for k in p} for c, p in zip(configs, points)] == points
    assert isinstance(configs[2]["shards"], int) and 1 <= configs[2]["shards"] <= 8
    shards = optuna_search(search)._ot_study.trials[2].distributions["shards"]
    assert shards.log and (shards.low, shards.high) == (1, 8)

    resumed = new_searcher(spec, tmp_path)  # Tune's restore sets the search properties again: same study
    trials = optuna_search(resumed)._ot_study.trials
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert resumed.suggest("t3")["shards"] in range(1, 9)


def test_a_trial_that_errored_before_a_resume_and_is_run_again_adds_its_result_to_the_study(tmp_path):
    """--resume reruns errored trials (Tune's resume_errored / restart_errored): Tune tells the searcher their
    completion again, for a trial the study has as FAIL; the searcher adds the rerun's result as a new trial
    with the same settings instead of failing on a trial it no longer tracks."""
    spec = spec_of()
    search = new_searcher(spec, tmp_path)
    config = search.suggest("t0")
    search.on_trial_complete("t0", error=True)
    optuna_search(search).save(str(tmp_path / "snapshot.pkl"))
    limiter = search.get_state()

    resumed = new_searcher(spec, tmp_path)
    resumed.set_state(limiter)
    optuna_search(resumed).restore(str(tmp_path / "snapshot.pkl"))
    flat = {"val_acc": 0.75, "search_done": True, **{f"config/{k}": v for k, v in config.items()}}  # as Tune sends it
    resumed.on_trial_complete("t0", result=flat)
    trials = optuna_search(resumed)._ot_study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert trials[0].params == trials[1].params == {k: config[k] for k in spec.search}
    assert trials[1].value == 0.75
    resumed.on_trial_complete("t0", result=flat)
    assert len(optuna_search(resumed)._ot_study.trials) == 2  # told once


def test_a_resumed_searcher_continues_the_same_study_from_a_stale_snapshot(tmp_path):
    """The snapshot was saved with t0 finished and t1, t2 running; then t1 finished and t3 was asked before
    the driver was killed. Restored: t1's repeated completion is not told twice, t3 (unknown to Tune) is
    failed, t2 finishes, and new trials join the same study."""
    spec = spec_of()
    search = new_searcher(spec, tmp_path)
    run_trials(search, spec, ["t0"])
    run_trials(search, spec, ["t1", "t2"], finish=False)
    optuna_search(search).save(str(tmp_path / "snapshot.pkl"))
    limiter = search.get_state()  # Tune saves the wrappers' state beside the searcher's
    search.on_trial_complete("t1", result={"val_acc": 0.7, "search_done": True})
    search.suggest("t3")

    resumed = new_searcher(spec, tmp_path)
    resumed.set_state(limiter)
    optuna_search(resumed).restore(str(tmp_path / "snapshot.pkl"))
    for cycle in (0, 1):  # t1 reruns from its checkpoint file: reported again, not told twice
        resumed.on_trial_result("t1", {"val_acc": 0.9, "cycle": cycle})
    resumed.on_trial_complete("t1", result={"val_acc": 0.9, "search_done": True})
    resumed.on_trial_complete("t2", result={"val_acc": 0.6, "search_done": True})
    run_trials(resumed, spec, ["t4"])
    states = [(t.number, t.state.name, t.value) for t in optuna_search(resumed)._ot_study.trials]
    assert states[:4] == [(0, "COMPLETE", states[0][2]), (1, "COMPLETE", 0.7), (2, "COMPLETE", 0.6), (3, "FAIL", None)]
    assert states[4][:2] == (4, "COMPLETE") and len(states) == 5


# ---- runs the snapshot does not know --------------------------------------------------------------------------
def fake_run(out, run_id, cycles):
    """The files a trial writes: its runs row, cycle and layer parts (real Parquet), tickets, its checkpoint."""
    w = ResultsWriter(str(out))
    w.write_run(run_row(run_id, status="running"))
    for c in cycles:
        w.write_cycle(run_id, c, cycle_rows(run_id, c), layer_rows())
    paths = [layout.runs_rel(run_id), *(layout.cycles_rel(run_id, c) for c in cycles)]
    paths += [layout.layers_rel(run_id, c) for c in cycles]
    for rel in [*(layout.ticket_rel(run_id, c) for c in cycles), layout.theta0_rel(run_id)]:
        out.joinpath(*rel).parent.mkdir(parents=True, exist_ok=True)
        out.joinpath(*rel).write_bytes(b"x")
        paths.append(rel)
    out.joinpath(*resume_rel(orphans.trial_of(run_id))).parent.mkdir(parents=True, exist_ok=True)
    out.joinpath(*resume_rel(orphans.trial_of(run_id))).write_bytes(b"x")
    return [*paths, resume_rel(orphans.trial_of(run_id))]


def snapshot_knowing(out, *trial_ids):
    (out / "tune").mkdir(exist_ok=True)
    trials = [[json.dumps({"trial_id": t, "status": "RUNNING"}), "{}"] for t in trial_ids]
    (out / "tune" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trials}))


def test_a_resume_removes_the_runs_of_trials_its_snapshot_does_not_know(tmp_path):
    out = tmp_path / "sweep"
    kept = fake_run(out, "colt-digits-1a2b-aaaa0001", [0, 1, 2])
    gone = fake_run(out, "colt-digits-3c4d-bbbb0002", [0])
    assert orphans.drop_orphans(str(out)) == []  # no snapshot: nothing is known, nothing removed
    snapshot_knowing(out, "aaaa0001")
    assert orphans.drop_orphans(str(out)) == ["colt-digits-3c4d-bbbb0002"]
    assert all(out.joinpath(*rel).exists() for rel in kept)
    assert not any(out.joinpath(*rel).exists() for rel in gone)
    assert not (out / "tickets" / "colt-digits-3c4d-bbbb0002").exists()
    assert orphans.drop_orphans(str(out)) == []  # idempotent


def test_orphans_inside_compacted_files_are_dropped_too(tmp_path):
    """An interrupted sweep compacted by hand before its --resume: the orphan's rows are in compacted files."""
    out = tmp_path / "sweep"
    fake_run(out, "colt-digits-1a2b-aaaa0001", [0, 1, 2])
    fake_run(out, "colt-digits-3c4d-bbbb0002", [0, 1])
    compact(str(out))
    fake_run(out, "colt-digits-5e6f-cccc0003", [0])  # a part written after the compaction: an orphan too
    snapshot_knowing(out, "aaaa0001")
    assert orphans.drop_orphans(str(out)) == ["colt-digits-3c4d-bbbb0002", "colt-digits-5e6f-cccc0003"]
    res = load_results(str(out))
    assert list(res.runs["run_id"]) == ["colt-digits-1a2b-aaaa0001"]
    assert set(res.cycles["run_id"]) == set(res.layers["run_id"]) == {"colt-digits-1a2b-aaaa0001"}
    assert len(res.tickets()) == 3 and orphans.drop_orphans(str(out)) == []


def test_restart_errored_removes_the_files_of_the_errored_trials_only(tmp_path):
    """--resume --restart-errored: the trial the snapshot has as ERROR starts over, so its runs row, parts,
    tickets and checkpoint file go (from compacted files too); a finished and a running trial keep theirs."""
    out = tmp_path / "sweep"
    kept = fake_run(out, "colt-digits-1a2b-aaaa0001", [0, 1, 2])
    running = fake_run(out, "colt-digits-5e6f-cccc0003", [0])
    compact(str(out))
    gone = fake_run(out, "colt-digits-3c4d-bbbb0002", [0, 1])
    (out / "tune").mkdir(exist_ok=True)
    states = {"aaaa0001": "TERMINATED", "bbbb0002": "ERROR", "cccc0003": "RUNNING"}
    trials = [[json.dumps({"trial_id": t, "status": st}), "{}"] for t, st in states.items()]
    (out / "tune" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trials}))
    assert orphans.snapshot_trials(str(out)) == states
    assert orphans.drop_errored(str(out)) == ["colt-digits-3c4d-bbbb0002"]
    assert not any(out.joinpath(*rel).exists() for rel in gone)
    assert all(out.joinpath(*rel).exists() for rel in kept[-1:] + running[-1:])  # their checkpoint files
    res = load_results(str(out))
    assert sorted(res.runs["run_id"]) == ["colt-digits-1a2b-aaaa0001", "colt-digits-5e6f-cccc0003"]
    assert orphans.drop_errored(str(out)) == []  # idempotent


@pytest.mark.parametrize("run_id,trial", [("a-b-c-0123abcd", "0123abcd"), ("x-ffff0000", "ffff0000")])
def test_the_trial_id_is_the_last_part_of_a_sweep_run_id(run_id, trial):
    assert orphans.trial_of(run_id) == trial
