"""The Ray backend: same tickets as the local backend, restarts after a killed actor, GPU fallback, the CLI.

One Ray cluster (2 CPUs) for the whole module; tiny runs on the embedded digits data.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import faults
import pandas as pd
import pytest
import ray

from colt_ray import cli
from colt_ray.core.config import RunConfig, TicketConfig, validate
from colt_ray.core.data import bundle_arrays
from colt_ray.core.errors import ConfigError
from colt_ray.core.pruning import unpack_mask
from colt_ray.core.tickets.io import load_ticket
from colt_ray.core.tickets.search import make_shard_trainer, prepare, run_local
from colt_ray.parallel.actors import ShardFailedError, ShardTrainer, bundle_strategies
from colt_ray.parallel.backend import run_on_ray
from colt_ray.parallel.cluster import stop_ray
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.resources import ActorResources, fit_to_cluster, placement_bundles, shard_resources
from colt_ray.runner import ResultsSink

TIMING = ("wall_seconds", "cpu_seconds", "finished_at")


def small_cfg(
    method: str = "colt", cycles: int = 2, epochs: int = 1, eval_tickets: str = "all", **resources
) -> RunConfig:
    d = RunConfig()
    return d.replace(
        recipe=dataclasses.replace(d.recipe, epochs=epochs),
        ticket=TicketConfig(method=method, shards=2, cycles=cycles, seed=7, eval_tickets=eval_tickets),
        resources=dataclasses.replace(d.resources, progress=False, **resources),
    )


def collect(run, *args, **kwargs):
    records = []
    last = run(*args, records.append, **kwargs)
    assert records[-1] is last
    return records


def assert_same_records(got, want):
    assert [r.cycle for r in got] == [r.cycle for r in want]
    for g, w in zip(got, want):
        assert g.mask == w.mask, f"cycle {g.cycle}: ticket masks differ"
        assert len(g.proposals) == len(w.proposals) and all(a == b for a, b in zip(g.proposals, w.proposals))
        strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
        assert strip(g.cycle_rows) == strip(w.cycle_rows), f"cycle {g.cycle}: metrics differ"
        assert g.layer_rows == w.layer_rows


@pytest.fixture(scope="module")
def colt_local():
    p = prepare(small_cfg())
    return p, collect(run_local, p)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The module's Ray, with the fault hook of ``faults`` in every worker; yields the hook's folder."""
    if ray.is_initialized():  # left running by another module
        ray.shutdown()
    folder = str(tmp_path_factory.mktemp("faults"))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": faults.kill_hook(folder)},
    )
    yield folder
    stop_ray()


# ---- the plain classes, no Ray ---------------------------------------------------------------------------
def test_plain_shard_trainer_and_coordinator_work_without_ray(colt_local):
    p, want = colt_local
    direct = make_shard_trainer(p.cfg, p.bundle, p.shards[1]).run(p.ctx.theta0, None, 0, True)
    via_actor_class = ShardTrainer(p.cfg, 1).run([bundle_arrays(p.bundle), p.shards[1]], p.ctx.theta0, None, 0, True)
    timing = {k: via_actor_class.metrics[k] for k in TIMING if k in via_actor_class.metrics}
    assert via_actor_class.metrics == {**direct.metrics, **timing}
    proposal = unpack_mask(via_actor_class.mask)  # a trainer's proposal comes back at one bit per weight
    assert list(proposal) == list(direct.mask) and all((proposal[k] == direct.mask[k]).all() for k in direct.mask)

    coord = Coordinator(p.cfg, prepared=p, use_ray=False)
    assert_same_records(collect(coord.run), want)
    assert not ray.is_initialized()


def test_a_loop_error_is_raised_after_the_records_before_it(colt_local):
    p, _ = colt_local

    class Broken(ShardTrainer):
        def run(self, data, theta, mask, cycle, prune_next=True, capture_step=0):
            if cycle == 1:
                raise RuntimeError("boom in cycle 1")
            return super().run(data, theta, mask, cycle, prune_next, capture_step)

    got = []
    with pytest.raises(RuntimeError, match="boom in cycle 1"):
        Coordinator(p.cfg, prepared=p, use_ray=False, trainer_cls=Broken).run(lambda r: got.append(r.cycle))
    assert got == [0]


def test_resource_requests_follow_the_config_and_drop_a_gpu_share_only_when_told():
    cfg = small_cfg(cpus_per_shard=0.5, gpus_per_shard=0.25)
    assert shard_resources(cfg, restarts=2) == ActorResources(0.5, 0.25, 2, 2)
    # the coordinator's token bundle, 2 shards, the evaluator
    assert placement_bundles(cfg) == [{"CPU": 0.01}] + [{"CPU": 0.5, "GPU": 0.25}] * 3
    assert placement_bundles(small_cfg("imp")) == [{"CPU": 0.01}, {"CPU": 1.0}]  # coordinator idle, 1 trainer
    assert len(placement_bundles(small_cfg(eval_tickets="none"))) == 3  # no evaluator
    on_cpu = fit_to_cluster(cfg, keep_gpus=False)  # the CPU fallback (chosen and said by gpus.plan_gpus)
    assert (on_cpu.resources.gpus_per_shard, on_cpu.resources.device) == (0.0, "cpu")
    assert fit_to_cluster(cfg, keep_gpus=True).resources.gpus_per_shard == 0.25
    with pytest.raises(ConfigError, match="gpus-per-shard"):  # refused up front, before Ray or any file
        validate(small_cfg(device="cuda", backend="ray"))


def test_a_trainer_without_a_gpu_share_never_uses_cuda_even_where_the_node_has_gpus(monkeypatch):
    import torch

    from colt_ray.core.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, as Ray shows it to every worker
    assert resolve_device(small_cfg().resources.device).type == "cuda"  # what "auto" alone would pick
    no_share = fit_to_cluster(small_cfg(), keep_gpus=True)
    assert no_share.resources.device == "cpu" and resolve_device(no_share.resources.device).type == "cpu"
    shared = fit_to_cluster(small_cfg(gpus_per_shard=0.25), keep_gpus=True)
    assert shared.resources.device == "auto"  # the actor resolves it: the GPU Ray assigned it (actor_device)


def test_a_placement_group_without_room_for_the_trainers_is_an_error_not_a_hang():
    class FakeGroup:
        bundle_specs = [{"CPU": 1.0}]

    with pytest.raises(ValueError, match="has 1 bundles; this run needs 3"):
        bundle_strategies(FakeGroup(), 1, 2, ActorResources(1.0))
    FakeGroup.bundle_specs = [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 1.0}]
    with pytest.raises(ValueError, match="bundle 1 .* cannot hold"):
        bundle_strategies(FakeGroup(), 1, 2, ActorResources(1.0))


# ---- Ray equals local ------------------------------------------------------------------------------------
def test_colt_on_ray_equals_local_bitwise(ray_cluster, colt_local):
    p, want = colt_local
    assert_same_records(collect(run_on_ray, p), want)


@pytest.mark.parametrize("rewind_step", [0, 5])  # 5: late rewinding, the levels after the first from step 5
def test_imp_on_ray_equals_imp_local(ray_cluster, rewind_step):
    cfg = small_cfg("imp")
    p = prepare(cfg.replace(ticket=dataclasses.replace(cfg.ticket, rewind_step=rewind_step)))
    assert_same_records(collect(run_on_ray, p), collect(run_local, p))


# COLT's own variants (docs/algorithms.md): overlapping shards (their rows put per shard actor), matched steps,
# and late rewinding to a pre-trained theta_k (the pre-training runs in the driver on Ray)
@pytest.mark.parametrize(
    "variant",
    [
        {"shard_overlap": 0.75},
        {"shard_overlap": 0.75, "split": "random"},
        {"shard_steps": "match"},
        {"rewind_step": 5},
        {"rewind_step": 5, "rewind_schedule": "restart"},
    ],
)
def test_colt_variants_on_ray_equal_local_bitwise(ray_cluster, variant):
    cfg = small_cfg()
    p = prepare(cfg.replace(ticket=dataclasses.replace(cfg.ticket, **variant)))
    assert_same_records(collect(run_on_ray, p), collect(run_local, p))


@pytest.mark.parametrize("method", ["colt", "imp"])
def test_tweaked_retraining_on_ray_equals_local(ray_cluster, method):
    cfg = small_cfg(method)
    cfg = cfg.replace(retrain=dataclasses.replace(cfg.retrain, tweaks="label-smoothing", activation="swish"))
    p = prepare(cfg)
    assert_same_records(collect(run_on_ray, p), collect(run_local, p))


def distilled(method: str, cycles: int = 2) -> RunConfig:
    cfg = small_cfg(method, cycles=cycles)
    return cfg.replace(retrain=dataclasses.replace(cfg.retrain, tweaks="distill,label-smoothing"))


@pytest.mark.parametrize("method", ["colt", "imp"])
def test_distilled_runs_on_ray_train_one_teacher_and_equal_local(ray_cluster, method):
    """Counted in the workers (``faults.teacher_trainings``): COLT on Ray trains the plain dense teacher once,
    and its first distilled row carries the cost, as on the local backend; IMP's level 0 is the teacher."""
    p = prepare(distilled(method))
    before = faults.teacher_trainings(ray_cluster)
    got = collect(run_on_ray, p)
    assert faults.teacher_trainings(ray_cluster) - before == (1 if method == "colt" else 0)
    assert_same_records(got, collect(run_local, p))
    carried = [r.ticket_row["teacher_sample_epochs"] for r in got]
    assert carried == ([None, len(p.bundle.train.x) * p.cfg.recipe.epochs, None] if method == "colt" else [None] * 3)


def test_every_actor_evaluating_after_the_mask_chain_uses_the_one_teacher(ray_cluster):
    """Once the mask chain is over the shard actors take evaluations too: three distilled evaluations at once
    go to three actors, one teacher is trained for all of them, and each equals the local evaluation."""
    import numpy as np

    from colt_ray.core.pruning import Mask
    from colt_ray.core.tickets.search import make_ticket_trainer

    p = prepare(distilled("colt", cycles=1))
    theta0 = p.ctx.theta0
    masks = [
        Mask.from_numpy({n: np.random.default_rng(c).random(theta0[n].shape) > 0.2 * c for n in p.ctx.groups})
        for c in (1, 2, 3)
    ]
    local = make_ticket_trainer(p.cfg, p.bundle)
    want = [local.run(theta0, m, c, False).metrics for c, m in enumerate(masks, start=1)]
    before = faults.teacher_trainings(ray_cluster)
    with Coordinator(p.cfg, prepared=p) as coord:
        coord.chain_done()
        pending = [coord.evaluate(theta0, m, c) for c, m in enumerate(masks, start=1)]
        actors = {(id(pool), position) for pool, position, _ in coord.scheduler.running.values()}
        got = [x.result() for x in pending]
    assert len(actors) == 3 and faults.teacher_trainings(ray_cluster) - before == 1
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING}  # noqa: E731
    assert [strip(g) for g in got] == [strip(w) for w in want]
    assert [g.get("teacher_sample_epochs") for g in got] == [len(p.bundle.train.x) * p.cfg.recipe.epochs, None, None]


def test_jackpot_on_ray_equals_jackpot_local(ray_cluster):
    cfg = small_cfg("jackpot")
    cfg = cfg.replace(jackpot=dataclasses.replace(cfg.jackpot, search_epochs=1))
    p = prepare(cfg)
    assert_same_records(collect(run_on_ray, p), collect(run_local, p))


def test_killed_shard_actor_is_restarted_and_the_cycle_gives_the_same_masks(ray_cluster):
    p = prepare(small_cfg(cycles=1, epochs=2, eval_tickets="none"))
    want = collect(run_local, p)
    with Coordinator(p.cfg, prepared=p) as coord:
        pids_before = coord.shards.ready()
        faults.arm(ray_cluster, "run", 0)  # the first shard to start training cycle 0 dies in that call
        got = collect(coord.run)
        assert faults.taken(ray_cluster, "run", 0)
        pids_after = [ray.get(a.pid.remote()) for a in coord.shards.actors]
        assert sum(a != b for a, b in zip(pids_before, pids_after)) == 1  # one really died and came back
    assert_same_records(got, want)


@pytest.mark.slow
def test_killed_evaluator_is_restarted_and_every_evaluation_lands_once(ray_cluster):
    p = prepare(small_cfg(cycles=2, epochs=2))
    want = collect(run_local, p)
    with Coordinator(p.cfg, prepared=p) as coord:
        victim = coord.full.actors[0]
        pid_before = coord.full.ready()[0]
        faults.arm(ray_cluster, "evaluate", 0)  # the evaluator dies inside the evaluation of cycle 0
        got = collect(coord.run)
        assert faults.taken(ray_cluster, "evaluate", 0)
        assert ray.get(victim.pid.remote()) != pid_before  # it really died and came back
        assert coord.full.submitted == [0, 1, 2]  # each evaluation submitted once (Ray retried the lost one)
    assert [r.cycle for r in got] == [0, 1, 2]  # every (run, cycle) record once
    assert_same_records(got, want)


@pytest.mark.parametrize("policy", ["final", "none", "every:2"])
def test_every_eval_policy_gives_the_same_records_on_ray_and_local(ray_cluster, policy):
    p = prepare(small_cfg(cycles=2, eval_tickets=policy))
    got, want = collect(run_on_ray, p), collect(run_local, p)
    assert_same_records(got, want)
    evaluated = [r.cycle for r in got if r.ticket_row["evaluated"]]
    assert evaluated == {"final": [2], "none": [], "every:2": [0, 2]}[policy]


def test_no_actor_reads_the_data_root(ray_cluster, tmp_path):
    import numpy as np

    path = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (120, 8, 8), dtype=np.uint8)
    y = np.arange(120) % 4
    np.savez(path, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    cfg = small_cfg(cycles=1)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, dataset="npz", data_root=str(path)))
    p = prepare(cfg)  # the driver loads the data once ...
    want = collect(run_local, p)
    path.unlink()  # ... and then the data root is gone: an actor that opened it would fail
    assert_same_records(collect(run_on_ray, p), want)


class DiesInCycle1(ShardTrainer):
    """Shard 0 crashes its process whenever it trains cycle 1 (every restart, too)."""

    def run(self, data, theta, mask, cycle, prune_next=True, capture_step=0):
        if cycle == 1 and self.index == 0:
            os._exit(1)
        return super().run(data, theta, mask, cycle, prune_next, capture_step)


def test_actor_that_keeps_dying_fails_the_run_and_keeps_completed_cycles(ray_cluster, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    p = prepare(small_cfg(cycles=3))
    sink = ResultsSink(p, str(tmp_path))
    with (
        Coordinator(p.cfg, prepared=p, trainer_cls=DiesInCycle1, restarts=1) as coord,
        pytest.raises(ShardFailedError, match="shard 0 died in cycle 1 .*within 1 restarts") as err,
    ):
        coord.run(sink)
    assert "\n" not in str(err.value)
    rows = pd.read_parquet(tmp_path / "cycles")
    assert sorted(rows["cycle"].unique()) == [0]
    assert len(rows) == 3  # the ticket row and both shards of cycle 0


def test_trainers_go_to_their_bundles_of_a_placement_group(ray_cluster, colt_local):
    p, want = colt_local
    cfg = fit_to_cluster(p.cfg.replace(resources=dataclasses.replace(p.cfg.resources, cpus_per_shard=0.5)), False)
    pg = ray.util.placement_group(placement_bundles(cfg))
    ray.get(pg.ready(), timeout=60)
    try:
        got = collect(run_on_ray, dataclasses.replace(p, cfg=cfg), placement_group=pg)
    finally:
        ray.util.remove_placement_group(pg)
    assert_same_records(got, want)


CLI_ARGS = [
    "ticket",
    "--method",
    "colt",
    "--cycles",
    "2",
    "--epochs",
    "1",
    "--seed",
    "7",
    "--no-progress",
]  # = small_cfg()


def assert_cli_results_match(out, p, want):
    runs = pd.read_parquet(out / "runs")
    assert list(runs["run_id"]) == [p.run_id] and list(runs["status"]) == ["completed"]
    assert list(runs["backend"]) == ["ray"]
    cycles = pd.read_parquet(out / "cycles")
    got = {(r.cycle, None if pd.isna(r.shard) else int(r.shard)): r.acc_best for r in cycles.itertuples()}
    assert got == {(row["cycle"], row["shard"]): row["acc_best"] for rec in want for row in rec.cycle_rows}
    for rec in want:
        (path,) = (out / "tickets").rglob(f"*{rec.cycle:04d}.safetensors")
        assert load_ticket(path).mask == rec.mask


def test_cli_ray_backend_writes_parquet_and_tickets_equal_to_local(ray_cluster, colt_local, tmp_path, capsys):
    assert cli.main(CLI_ARGS + ["--out", str(tmp_path)]) == 0  # ray is the default backend
    err = capsys.readouterr().err
    assert "backend ray" in err and "cycle 1 | sparsity" in err and "shard test_acc" in err
    assert_cli_results_match(tmp_path, *colt_local)


@pytest.mark.timeout(240)
def test_gpu_share_without_a_gpu_runs_on_cpu(ray_cluster, colt_local, tmp_path, capsys):
    assert cli.main(CLI_ARGS + ["--gpus-per-shard", "0.5", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "GPU" in line]
    assert said == ["colt-ray: no GPU in the Ray cluster: training on the CPU instead of 0.5-GPU shares "
                    "(the default on a local Ray)"]  # fmt: skip
    assert_cli_results_match(tmp_path, *colt_local)
    row = pd.read_parquet(tmp_path / "runs").iloc[0]
    assert row["gpus_per_shard"] == 0 and row["device"] == "cpu"  # what ran, not what was asked


def test_no_cpu_fallback_on_a_cluster_without_gpus_is_a_one_line_error_and_writes_nothing(
    ray_cluster, tmp_path, capsys
):
    out = tmp_path / "out"
    assert cli.main(CLI_ARGS + ["--gpus-per-shard", "0.5", "--no-allow-cpu-fallback", "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("colt-ray: error: gpus-per-shard: the Ray cluster has no GPU and declares no autoscaler")
    assert "CPU fallback is off (--no-allow-cpu-fallback); pass --allow-cpu-fallback" in last
    assert not out.exists() or not any(out.rglob("*"))


def test_a_run_the_cluster_cannot_place_is_a_one_line_error_after_the_start_timeout(ray_cluster, tmp_path, capsys):
    out = tmp_path / "out"
    args = CLI_ARGS + ["--cpus-per-shard", "1.5", "--start-timeout", "3", "--out", str(out)]  # 3 CPUs on 2
    started = time.perf_counter()
    assert cli.main(args) == 2
    assert time.perf_counter() - started < 60
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after lines saying what it waits for
    assert last.startswith("colt-ray: error: cpus-per-shard: the Ray cluster could not place this run within 3 s")
    assert "needs 3 CPU in 2 bundles" in last and "the cluster has 2 CPU" in last
    assert not any(out.rglob("*.parquet"))
    assert not ray.util.placement_group_table() or all(
        g["state"] == "REMOVED" for g in ray.util.placement_group_table().values()
    )


def test_trainer_actors_carry_the_run_id_in_their_names(ray_cluster, colt_local):
    from colt_ray.parallel.backend import open_coordinator

    p, _ = colt_local
    with open_coordinator(p.cfg, name="run-abc") as coordinator:
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        assert {"run-abc/shard-0", "run-abc/shard-1", "run-abc/full"} <= names
        assert coordinator.owned_group is not None  # gang-scheduled: one placement group for the run
    deadline = time.time() + 30
    while time.time() < deadline and {"run-abc/shard-0"} & {a["name"] for a in ray.util.list_named_actors(True)}:
        time.sleep(0.2)
    assert "run-abc/shard-0" not in {a["name"] for a in ray.util.list_named_actors(True)}


def test_driver_modules_do_not_import_ray():
    code = (
        "import sys, colt_ray.cli, colt_ray.runner, colt_ray.core.tickets.search; "
        "sys.exit(1 if 'ray' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_shards_per_actor_trains_shards_stacked_in_one_actor_with_the_local_masks(ray_cluster):
    from colt_ray.core.tickets.batched import masks_jaccard

    cfg = small_cfg(cycles=2, backend="ray", cpus_per_shard=0.5, shards_per_actor=2)
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, arch="lenet300"))
    assert placement_bundles(cfg) == [{"CPU": 0.01}, {"CPU": 1.0}, {"CPU": 0.5}]  # 1 actor for 2 shards + evaluator
    p = prepare(cfg)
    want = collect(run_local, p)
    with Coordinator(p.cfg, prepared=p) as coord:
        assert len(coord.shards.actors) == 1
        got = collect(coord.run)
    assert [r.cycle for r in got] == [r.cycle for r in want]
    for g, w in zip(got, want):  # stacked kernels sum in another order: close, not bitwise (docs/batched.md)
        assert min(masks_jaccard(g.mask.to_numpy(), w.mask.to_numpy()).values()) >= 0.99
        assert [r["shard"] for r in g.cycle_rows] == [r["shard"] for r in w.cycle_rows]


def test_shards_per_actor_needs_the_ray_backend():
    with pytest.raises(ConfigError, match="shards-per-actor: groups the shard actors"):
        validate(small_cfg(backend="local", shards_per_actor=2))


@pytest.mark.slow
def test_restart_errored_reruns_an_errored_trial_from_cycle_0_and_keeps_each_cycle_once(ray_cluster, tmp_path):
    """A sweep trial raises after cycle 1 (its cycle-1 results, checkpoint file and report done) and the sweep
    ends with it errored. ``--resume --restart-errored`` runs it again from cycle 0 (as a new Tune trial, Tune's
    reset): the errored attempt's sink took cycles 0, 1, the rerun's take 0, 1, 2; the other trial is not run
    again; the results hold each trial's cycles once, both completed, and the study has the errored attempt as
    FAIL and the rerun as a new COMPLETE trial with the same settings and its value at each cycle (its reports
    crashed the restored searcher before: it had no Optuna trial for them)."""
    import json

    import optuna
    import yaml

    from colt_ray.parallel.sweep.cli import main
    from colt_ray.parallel.sweep.tuner import OPTUNA_JOURNAL
    from colt_ray.results.reader import load_results

    space = {
        "name": "restart",
        "fixed": {"dataset": "digits", "arch": "conv2", "method": "colt", "epochs": 1, "cycles": 2,
                  "backend": "local", "cpus_per_shard": 1},
        "search": {"prune_rate": {"grid": [0.2, 0.3]}},
        "objectives": [{"metric": "acc", "mode": "max"}],
        "allow_test_selection": True,
        "budget": {"max_concurrent": 1, "max_failures": 0},  # one at a time: the first trial is the one that errs
        "sampler": {"seed": 0},
    }  # fmt: skip
    path = tmp_path / "restart.yaml"
    path.write_text(yaml.safe_dump(space))
    storage, out = tmp_path / "st", tmp_path / "st" / "restart"
    faults.arm(ray_cluster, "sink", 1)
    assert main([str(path), "--storage", str(storage), "--quiet"]) == 0  # the sweep ends; its summary: 1 failed
    assert faults.taken(ray_cluster, "sink", 1)
    trials = load_results(str(out)).trials.set_index("trial_id")
    assert sorted(trials["status"]) == ["completed", "failed"]
    errored = trials.index[trials["status"] == "failed"][0]
    errored_rate = json.loads(trials.loc[errored, "config_json"])["prune_rate"]
    first = faults.sink_calls(ray_cluster)
    assert first[errored] == [0, 1] and sorted(map(len, first.values())) == [2, 3]

    assert main([str(path), "--storage", str(storage), "--quiet", "--resume", "--restart-errored"]) == 0
    calls = faults.sink_calls(ray_cluster)
    (new,) = set(calls) - set(first)  # Tune's restart_errored resets the trial: a new trial id, the same settings
    assert calls[new] == [0, 1, 2]  # from cycle 0 again, not from the errored attempt's cycle-1 checkpoint
    assert {t: c for t, c in calls.items() if t != new} == first  # nothing else ran again
    res = load_results(str(out))
    trials = res.trials.set_index("trial_id")
    assert sorted(trials.index) == sorted({new, *first} - {errored}) and set(trials["status"]) == {"completed"}
    assert json.loads(trials.loc[new, "config_json"])["prune_rate"] == errored_rate
    assert len(res.runs) == 2 and set(res.runs["status"]) == {"completed"}  # the errored attempt's run removed
    assert not any(errored in r for r in res.runs["run_id"])
    tickets = res.tickets()
    assert not tickets.duplicated(["run_id", "cycle"]).any()
    assert sorted(tickets.groupby("run_id")["cycle"].apply(list)) == [[0, 1, 2], [0, 1, 2]]
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.joinpath(*OPTUNA_JOURNAL)))
    )
    study = optuna.load_study(study_name="restart", storage=journal)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], states
    (failed,) = [t for t in study.trials if t.state.name == "FAIL"]
    rerun = [t for t in study.trials if t.state.name == "COMPLETE" and t.params == failed.params]
    assert failed.params == {"prune_rate": errored_rate}
    assert len(rerun) == 1 and rerun[0].value == trials.loc[new, "objective"]
    assert sorted(rerun[0].intermediate_values) == [0, 1, 2]  # its value at each cycle of the rerun
