"""The training loop, the ticket methods and their determinism, on small data."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from colt_ray.core.config import DataConfig, RecipeConfig, RunConfig, TicketConfig
from colt_ray.core.data import load_dataset
from colt_ray.core.models import build_model, prunable_names
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.seeds import generator
from colt_ray.core.tickets.io import load_ticket, save_ticket
from colt_ray.core.tickets.search import prepare, run_local
from colt_ray.core.train import lr_factor, train


def small_cfg(**ticket) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits"),
        recipe=RecipeConfig(epochs=1, batch_size=64, lr=0.05),
        ticket=TicketConfig(**{"cycles": 2, **ticket}),
    ).replace(resources=dataclasses.replace(RunConfig().resources, progress=False))


def collect(cfg):
    records = []
    prepared = prepare(cfg)
    run_local(prepared, records.append)
    return prepared, records


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay(optimizer):
    bundle = load_dataset(DataConfig(dataset="digits"), seed=0)
    model = build_model("lenet300", bundle.in_shape, bundle.num_classes, seed=1)
    names = prunable_names(model, ("linear",))
    weights = {n: p for n, p in model.named_parameters() if n in names}
    mask = prune(magnitude_scores(weights), Mask.ones_like(weights), 0.7)
    recipe = RecipeConfig(epochs=2, optimizer=optimizer, lr=0.01, momentum=0.9, weight_decay=1e-2)
    train(model, bundle, recipe, mask, generator=generator(0, "t"))
    params = dict(model.named_parameters())
    for n in names:
        assert torch.all(params[n][~mask[n]] == 0), n
        assert torch.count_nonzero(params[n][mask[n]]) > 0


def test_lr_schedule_warmup_multistep_and_cosine_by_hand():
    r = RecipeConfig(epochs=10, lr=1.0, warmup_epochs=1.0, schedule="multistep", milestones=(2, 4), gamma=0.5)
    assert lr_factor(0, 10, r) == pytest.approx(0.1)  # first step of a 10-step warm-up
    assert lr_factor(9, 10, r) == pytest.approx(1.0)
    assert lr_factor(25, 10, r) == pytest.approx(0.5)  # epoch 2.5: one milestone passed
    assert lr_factor(45, 10, r) == pytest.approx(0.25)
    c = RecipeConfig(epochs=2, lr=1.0, warmup_epochs=0.0, schedule="cosine")
    assert lr_factor(0, 10, c) == pytest.approx(1.0)
    assert lr_factor(10, 10, c) == pytest.approx(0.5)


def test_colt_same_seed_gives_bit_identical_masks_and_metrics():
    _, first = collect(small_cfg())
    _, second = collect(small_cfg())
    assert [r.cycle for r in first] == [0, 1, 2]
    for a, b in zip(first, second):
        assert a.mask == b.mask
        strip = lambda rows: [
            {k: v for k, v in r.items() if k not in ("wall_seconds", "cpu_seconds", "finished_at")} for r in rows
        ]
        assert strip(a.cycle_rows) == strip(b.cycle_rows)
    _, other = collect(small_cfg(seed=7))
    assert other[-1].mask != first[-1].mask


def test_colt_cycles_intersect_shard_masks_and_never_revive():
    prepared, records = collect(small_cfg(shards=2, cycles=3))
    assert records[0].mask.sparsity() == 0.0
    for prev, cur in zip(records, records[1:]):
        cur.mask.check_subset_of(prev.mask)
        # the ticket of cycle c is the AND of the proposals emitted in cycle c-1
        expected = {n: prev.proposals[0][n] & prev.proposals[1][n] for n in cur.mask}
        assert cur.mask == Mask(expected)
        # each shard pruned 15% of the survivors, so the AND prunes at least that much
        assert cur.mask.kept() <= round(prev.mask.kept() * 0.85) + 1
    shard_rows = [r for r in records[0].cycle_rows if r["shard"] is not None]
    assert [r["shard"] for r in shard_rows] == [0, 1]
    assert records[-1].done and not records[-1].proposals
    assert prepared.shards[0].classes == (0, 1, 2, 3, 4)


def test_colt_stops_at_target_sparsity():
    _, records = collect(small_cfg(cycles=None, target_sparsity=0.25, eval_tickets="none"))
    assert records[-1].mask.sparsity() >= 0.25
    assert records[-2].mask.sparsity() < 0.25
    assert records[-1].ticket_row["acc_best"] is None


def test_imp_levels_prune_twenty_percent_of_survivors_and_rewind_to_init():
    prepared, records = collect(small_cfg(method="imp", cycles=2))
    kept = [r.mask.kept() for r in records]
    total = records[0].mask.numel()
    assert kept[0] == total
    assert kept[1] == total - round(0.2 * total)
    assert kept[2] == kept[1] - round(0.2 * kept[1])
    for r in records:
        for name, value in prepared.ctx.theta0.items():
            assert np.array_equal(r.theta[name], value)  # rewind point is theta_0


def test_imp_late_rewinding_uses_the_weights_after_k_steps():
    prepared, records = collect(small_cfg(method="imp", cycles=1, rewind_step=3))
    name = next(iter(prepared.ctx.groups))
    assert np.array_equal(records[0].theta[name], prepared.ctx.theta0[name])
    assert not np.array_equal(records[1].theta[name], prepared.ctx.theta0[name])


def test_imp_late_rewind_point_survives_a_resume_after_level_0(tmp_path):
    from colt_ray.parallel.sweep.state import Totals, load_state, save_state

    cfg = small_cfg(method="imp", cycles=2, rewind_step=3)
    prepared, whole = collect(cfg)
    save_state(str(tmp_path), whole[0], Totals(), {})  # a trial checkpointed after level 0, then restarted
    resume = load_state(str(tmp_path)).resume
    name = next(iter(prepared.ctx.groups))
    assert np.array_equal(resume.theta[name], whole[1].theta[name])  # theta_k, not theta_0
    resumed = []
    run_local(prepare(cfg), resumed.append, resume)
    assert [r.cycle for r in resumed] == [1, 2]
    for got, want in zip(resumed, whole[1:]):
        assert got.mask == want.mask and got.ticket_row["acc_best"] == want.ticket_row["acc_best"]
        assert all(np.array_equal(got.theta[k], v) for k, v in want.theta.items())


def test_ticket_file_round_trip_and_corrupt_file(tmp_path):
    prepared, records = collect(small_cfg(cycles=1))
    path = tmp_path / "t.safetensors"
    save_ticket(path, records[1].theta, records[1].mask, {"arch": "conv2", "in_shape": [1, 8, 8]})
    ticket = load_ticket(path)
    assert ticket.mask == records[1].mask and ticket.arch == "conv2"
    assert all(np.array_equal(ticket.theta[k], v) for k, v in records[1].theta.items())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception, match="corrupt"):
        load_ticket(path)


def test_importing_the_core_imports_neither_ray_nor_optuna_nor_pyarrow():
    code = (
        "import sys, colt_ray.core, colt_ray.core.tickets.search, colt_ray.core.tickets.methods, "
        "colt_ray.core.train, colt_ray.core.data, colt_ray.core.models, colt_ray.core.pruning;"
        "bad = [m for m in ('ray', 'optuna', 'pyarrow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_test_accuracy_at_the_best_validation_epoch_matches_the_epoch_history():
    from colt_ray.core.tickets.search import make_full_trainer

    cfg = small_cfg(cycles=1)
    cfg = cfg.replace(
        data=dataclasses.replace(cfg.data, val_fraction=0.2),
        recipe=dataclasses.replace(cfg.recipe, epochs=5, lr=0.2),
    )
    p = prepare(cfg)
    trainer = make_full_trainer(cfg, p.bundle)
    history = []

    class Keep:
        def on_step_end(self, step, model):
            pass

        def on_epoch_end(self, epoch, metrics, model):
            history.append(dict(metrics))

        def on_train_end(self, model):
            pass

    generator_ = generator(cfg.ticket.seed, "train", 0, -1)
    result = train(trainer.model, p.bundle, trainer.recipe, generator=generator_, callbacks=[Keep()])
    vals = [h["val_acc"] for h in history]
    best_epoch = vals.index(max(vals))  # the first epoch with the highest validation accuracy
    assert result.val_acc_best == max(vals)
    assert result.test_acc_at_best_val == history[best_epoch]["acc"]
    assert result.acc_best == max(h["acc"] for h in history)
    out = trainer.run(p.ctx.theta0, None, 0, False)  # and a trainer reports both, as the Parquet columns do
    assert {"val_acc_best", "test_acc_at_best_val"} <= set(out.metrics) and out.metrics["val_acc_best"] is not None
