"""IMP late rewinding as open_lth does it (``lottery/runner.py``, ``training/train.py``): after the rewind to
theta_k every level trains global steps k..T, with the learning rate of step k onward and the first training's
data order from step k, from a fresh optimizer; ``rewind_schedule: restart`` keeps the former full T steps.

The small case: digits (1438 training images, no augmentation), batch 128, so 12 steps per epoch (11 of 128,
one of 30); 3 epochs, T = 36 steps; lr 0.1, one epoch of warm-up (12 steps), multistep milestone at epoch 2
with gamma 0.1.
"""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from colt_ray import cli
from colt_ray.core.config import DataConfig, RecipeConfig, RunConfig, TicketConfig
from colt_ray.core.data import AugmentSpec
from colt_ray.core.seeds import generator
from colt_ray.core.tickets import trainer as trainer_module
from colt_ray.core.tickets.search import make_full_trainer, prepare, run_local
from colt_ray.core.train import BaseCallback

N, BATCH, PER_EPOCH, EPOCHS, T = 1438, 128, 12, 3, 36


def cfg_for(k: int, schedule: str = "continue", **ticket) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits"),
        recipe=RecipeConfig(
            epochs=EPOCHS, batch_size=BATCH, lr=0.1, warmup_epochs=1.0, schedule="multistep", milestones=(2,), gamma=0.1
        ),
        ticket=TicketConfig(**{"method": "imp", "cycles": 1, "rewind_step": k, "rewind_schedule": schedule, **ticket}),
    ).replace(resources=dataclasses.replace(RunConfig().resources, progress=False))


class Recorder(BaseCallback):
    """Every trained step of one training: (global step, learning rate, batch indices)."""

    def __init__(self):
        self.steps: list[tuple[int, float, list[int]]] = []

    def on_step_start(self, step, lr, indices):
        self.steps.append((step, lr, indices.tolist()))


@pytest.fixture
def trainings(monkeypatch):
    """One Recorder per training the ticket trainers run, in order (level 0 first)."""
    recorded: list[Recorder] = []
    real = trainer_module.train

    def recording(*args, callbacks=(), **kw):
        recorded.append(Recorder())
        return real(*args, callbacks=[*callbacks, recorded[-1]], **kw)

    monkeypatch.setattr(trainer_module, "train", recording)
    return recorded


def permutations(cycle: int) -> list[list[int]]:
    """The per-epoch data order of the training of ``cycle``: one randperm per epoch from its generator
    (digits has no augmentation, so nothing else draws from it)."""
    g = generator(42, "train", cycle, -1)
    return [torch.randperm(N, generator=g).tolist() for _ in range(EPOCHS)]


# k = 5: epoch 0, batch 5, in the warm-up: lr = 0.1 * (5 + 1) / 12. k = 27: epoch 2, batch 3, past the milestone.
@pytest.mark.parametrize("k,lr", [(5, 0.1 * 6 / 12), (27, 0.1 * 0.1)])
def test_first_batch_after_a_rewind_is_step_k_with_its_lr_and_the_first_trainings_order(trainings, k, lr):
    records = []
    run_local(prepare(cfg_for(k)), records.append)
    level0, level1 = trainings
    assert len(level0.steps) == T
    step, got_lr, indices = level1.steps[0]
    epoch, batch = divmod(k, PER_EPOCH)
    assert step == k
    assert got_lr == pytest.approx(lr)
    assert indices == permutations(0)[epoch][batch * BATCH : (batch + 1) * BATCH]
    assert level1.steps == level0.steps[k:]  # the schedule and data order of steps k..T, as the first training's
    assert len(level1.steps) == T - k
    skipped = epoch * N + batch * BATCH  # the samples of steps 0..k-1 (the last batch of an epoch holds 30)
    assert records[0].ticket_row["sample_epochs"] == EPOCHS * N
    assert records[1].ticket_row["sample_epochs"] == EPOCHS * N - skipped


def test_restart_trains_every_level_from_step_0_with_its_own_data_order(trainings):
    records = []
    run_local(prepare(cfg_for(5, "restart")), records.append)
    level1 = trainings[1]
    assert [s for s, _, _ in level1.steps] == list(range(T))
    assert level1.steps[0][1] == pytest.approx(0.1 / 12)
    assert level1.steps[0][2] == permutations(1)[0][:BATCH]
    assert records[1].ticket_row["sample_epochs"] == EPOCHS * N


def test_a_tweaked_retraining_of_a_rewound_ticket_also_trains_steps_k_to_t(trainings):
    cfg = cfg_for(5)
    cfg = cfg.replace(retrain=dataclasses.replace(cfg.retrain, tweaks="label-smoothing"))
    run_local(prepare(cfg), lambda record: None)
    starts = [t.steps[0][0] for t in trainings]
    assert starts == [0, 0, 5, 5]  # level 0 and its retraining, level 1 and its retraining
    assert trainings[3].steps == trainings[0].steps[5:]


def test_level_0_is_a_training_to_k_then_one_from_k_with_a_fresh_optimizer():
    """open_lth's level 0 under rewinding: pre-training to step k, then level 0 from k, each with its own
    optimizer; so the dense model is what a new optimizer makes of theta_k over steps k..T. With augmentation
    on, the stream of steps 0..k-1 (permutations and augmentation draws) must be skipped exactly."""
    cfg = cfg_for(17)
    p = prepare(cfg)
    bundle = dataclasses.replace(p.bundle, augment=AugmentSpec(crop_padding=1, hflip=True))
    first = make_full_trainer(cfg, bundle)
    out = first.run(p.ctx.theta0, None, 0, False, capture_step=17)
    after = make_full_trainer(cfg, bundle)
    again = after.run(out.captured, None, 1, False)  # level 1 from theta_k, dense
    assert all(np.array_equal(v, after.state()[n]) for n, v in first.state().items())
    assert again.metrics["acc_final"] == out.metrics["acc_final"]
    momentum_kept = make_full_trainer(cfg_for(17, "restart"), bundle)
    momentum_kept.run(p.ctx.theta0, None, 0, False, capture_step=17)
    assert not all(np.array_equal(v, momentum_kept.state()[n]) for n, v in first.state().items())


def test_run_ids_name_the_schedule_only_where_it_changes_the_training():
    def old_id(flat):  # the run id of the same settings before rewind_schedule existed
        return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:12]

    late = {"method": "imp", "rewind_step": 10}
    assert RunConfig.from_flat({**late, "rewind_schedule": "restart"}).run_id() == old_id(late)
    assert RunConfig.from_flat(late).run_id() == old_id({**late, "rewind_schedule": "continue"})
    assert RunConfig.from_flat({"method": "imp", "rewind_schedule": "restart"}).run_id() == old_id({"method": "imp"})


def test_a_runs_row_from_before_the_setting_reproduces_as_restart():
    from colt_ray.results.commands import ticket_command

    old = RunConfig.from_flat({"method": "imp", "rewind_step": 10, "rewind_schedule": "restart"})
    row = {**old.recorded_flat(), "rewind_schedule": None}  # the column read as null from an older file
    command = ticket_command({"run_id": old.run_id(), **row}, out="o")
    assert "--rewind-step 10" in command and "--rewind-schedule restart" in command
    new = RunConfig.from_flat({"method": "imp", "rewind_step": 10})
    assert "--rewind-schedule" not in ticket_command({"run_id": new.run_id(), **new.recorded_flat()}, out="o")


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--method", "jackpot", "--rewind-schedule", "restart"], "rewind-schedule: is a COLT/IMP setting"),
        (["--method", "imp", "--rewind-schedule", "later"], "rewind-schedule"),
    ],
)
def test_bad_rewind_schedule_is_one_line_exit_2_nothing_written(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert cli.main(["ticket", "--dataset", "digits", "--epochs", "0", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert "restart" in err or "IMP" in err
    assert not out.exists()
