"""COLT's own variants (docs/algorithms.md, "COLT variants"): overlapping shards (``shard_overlap``), shards that
train a full-data training's steps (``shard_steps: match``) and late rewinding to a pre-trained theta_k
(``rewind_step``), plus the critical path each run records. Ray against local: tests/test_parallel.py.

The toy set of the overlap tests: 6 classes x 12 training images (72), 6 x 6 test images, 3 shards. A random
shard holds 4 images of each class (24 = 1/3); at ``shard_overlap`` 2/3 the share of the others' images is
q = (2/3 - 1/3) / (1 - 1/3) = 1/2, so it adds 4 of the 8 others per class: 48 images = 2/3 of 72.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from colt_ray.core.config import DataConfig, ModelConfig, RecipeConfig, RunConfig, TicketConfig
from colt_ray.core.data import AugmentSpec, DatasetBundle, TensorSplit, make_shards, shard_bundle
from colt_ray.core.data.shards import overlap_share
from colt_ray.core.errors import ConfigError
from colt_ray.core.tickets import trainer as trainer_module
from colt_ray.core.tickets.methods import Resume
from colt_ray.core.tickets.search import LocalBackend, prepare, run_local, run_method
from colt_ray.core.train import BaseCallback, lr_factor


def split(labels: list[int]) -> TensorSplit:
    n = len(labels)
    return TensorSplit(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.tensor(labels, dtype=torch.int64))


def toy(train_per_class: int = 12, test_per_class: int = 6, classes: int = 6) -> DatasetBundle:
    labels = list(range(classes))
    return DatasetBundle(
        "toy", classes, (1, 1, 1), split(labels * train_per_class), split(labels * test_per_class), None,
        (0.5,), (0.25,), AugmentSpec(),
    )  # fmt: skip


def per_class(bundle: DatasetBundle, idx: np.ndarray) -> list[int]:
    return np.bincount(bundle.train.y.numpy()[idx], minlength=bundle.num_classes).tolist()


# ---- shard_overlap ---------------------------------------------------------------------------------------
def test_overlap_share_runs_from_disjoint_at_1_over_k_to_everything_at_1():
    assert overlap_share(0.0, 3) == 0.0 and overlap_share(1 / 3, 3) == 0.0 and overlap_share(0.2, 3) == 0.0
    assert overlap_share(2 / 3, 3) == pytest.approx(0.5)
    assert overlap_share(1.0, 3) == 1.0
    assert overlap_share(1.0, 1) == 0.0  # one shard holds everything already


def test_random_shards_with_overlap_hold_their_share_of_every_class():
    b = toy()
    shards = make_shards(b, 3, "random", seed=1, overlap=2 / 3)
    disjoint = make_shards(b, 3, "random", seed=1)
    for s, own in zip(shards, disjoint):
        assert len(s.train_idx) == 48 and per_class(b, s.train_idx) == [8] * 6
        assert set(own.train_idx) <= set(s.train_idx)  # its disjoint part, plus others' images
        assert len(np.unique(s.train_idx)) == len(s.train_idx)  # no image twice within a shard
        assert len(s.test_idx) == 24  # 6 x 6 test images: 2 own + half of the 4 others per class
    assert [len(s.train_idx) for s in make_shards(b, 3, "random", seed=1, overlap=1.0)] == [72] * 3


def test_class_shards_with_overlap_hold_their_classes_and_a_share_of_the_others():
    b = toy()
    for s in make_shards(b, 3, "class", seed=1, overlap=2 / 3):
        own = (2 * s.index, 2 * s.index + 1)  # 6 classes in 3 groups of 2
        counts = per_class(b, s.train_idx)
        assert [counts[c] for c in own] == [12, 12]  # every image of its own classes
        assert [counts[c] for c in range(6) if c not in own] == [6] * 4  # half of each other class
        assert s.classes == tuple(range(6)) and not s.relabel  # a head over every class, labels kept
        sb = shard_bundle(b, s)
        assert sb.num_classes == 6 and sb.full_train_size == 72
        assert torch.equal(sb.train.y, b.train.y[torch.from_numpy(s.train_idx)])


@pytest.mark.parametrize("kind", ["class", "random"])
def test_overlap_shards_are_deterministic_in_the_seed_and_drop_no_example(kind):
    b = toy()
    one = make_shards(b, 3, kind, seed=5, overlap=0.5)
    again = make_shards(b, 3, kind, seed=5, overlap=0.5)
    other = make_shards(b, 3, kind, seed=6, overlap=0.5)
    assert all(np.array_equal(a.train_idx, c.train_idx) for a, c in zip(one, again))
    assert any(not np.array_equal(a.train_idx, c.train_idx) for a, c in zip(one, other))
    for part in ("train_idx", "test_idx"):
        held = np.concatenate([getattr(s, part) for s in one])
        assert set(held) == set(range(72 if part == "train_idx" else 36))
    assert len({tuple(s.train_idx) for s in one}) == 3  # each shard its own subset


@pytest.mark.parametrize("kind", ["class", "random"])
def test_overlap_at_or_below_1_over_k_is_the_papers_disjoint_split(kind):
    b = toy()
    for overlap in (0.0, 1 / 3):
        got, want = make_shards(b, 3, kind, seed=1, overlap=overlap), make_shards(b, 3, kind, seed=1)
        assert [(s.classes, s.relabel, s.train_idx.tolist()) for s in got] == [
            (s.classes, s.relabel, s.train_idx.tolist()) for s in want
        ]


# ---- runs on digits: a recording of every training ---------------------------------------------------------
# digits: 1438 training images; batch 128 -> 12 full-data steps per epoch; class shards of 721 and 717 -> 6 steps
N, BATCH, EPOCHS = 1438, 128, 2
FULL_STEPS = EPOCHS * 12


def colt(**ticket) -> RunConfig:
    cfg = RunConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(arch="lenet300"),
        recipe=RecipeConfig(epochs=EPOCHS, batch_size=BATCH, lr=0.1, schedule="cosine"),
        ticket=TicketConfig(**{"shards": 2, "cycles": 1, **ticket}),
    )
    return cfg.replace(resources=dataclasses.replace(cfg.resources, progress=False, backend="local"))


class Recorder(BaseCallback):
    """One training: its keyword arguments, its starting weights, and every step (global step, lr)."""

    def __init__(self, model, kw):
        self.kw = kw
        self.start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.steps: list[tuple[int, float]] = []

    def on_step_start(self, step, lr, indices):
        self.steps.append((step, lr))


@pytest.fixture
def trainings(monkeypatch):
    recorded: list[Recorder] = []
    real = trainer_module.train

    def recording(model, *args, callbacks=(), **kw):
        recorded.append(Recorder(model, kw))
        return real(model, *args, callbacks=[*callbacks, recorded[-1]], **kw)

    monkeypatch.setattr(trainer_module, "train", recording)
    return recorded


def test_match_trains_each_shard_the_steps_and_schedule_of_a_full_data_training(trainings):
    records = []
    run_local(prepare(colt(shard_steps="match")), records.append)
    full, shard0, shard1 = trainings[:3]  # cycle 0: the dense ticket's evaluation, then the shards
    assert len(full.steps) == FULL_STEPS
    assert len(shard0.steps) == len(shard1.steps) == FULL_STEPS  # 4 passes over a 6-step shard
    assert shard0.steps == full.steps  # the lr of every step: the full-data schedule, stretched over 4 epochs
    recipe = colt().recipe
    assert shard0.steps[12][1] == pytest.approx(0.1 * lr_factor(12, 12, recipe))  # halfway: cosine at 1/2
    rows = {r["shard"]: r for r in records[0].cycle_rows}
    assert rows[0]["sample_epochs"] == 4 * 721 and rows[1]["sample_epochs"] == 4 * 717


def test_epochs_trains_each_shard_its_own_epochs(trainings):
    run_local(prepare(colt()), lambda r: None)
    assert [len(t.steps) for t in trainings[:3]] == [FULL_STEPS, 12, 12]


def test_match_differs_from_epochs_in_the_run_id_only_when_set():
    assert colt(shard_steps="epochs").run_id() == colt().run_id()
    assert colt(shard_overlap=0.0).run_id() == colt().run_id()
    assert len({colt().run_id(), colt(shard_steps="match").run_id(), colt(shard_overlap=0.75).run_id()}) == 3


# ---- rewind_step -----------------------------------------------------------------------------------------
K = 5


def body(state: dict) -> dict:
    """A state without the output layer (a shard trains its own fresh head)."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def test_every_shard_and_ticket_starts_each_round_from_theta_k_at_step_k(trainings):
    p = prepare(colt(rewind_step=K, cycles=2))
    records = []
    run_local(p, records.append)
    pre, rest = trainings[0], trainings[1:]
    assert pre.kw["end_step"] == K and len(pre.steps) == K  # the full-data pre-training, from theta_0
    assert same(pre.start, {k: torch.from_numpy(v) for k, v in p.ctx.theta0.items()})
    theta_k = records[0].theta
    assert all(r.theta is theta_k for r in records)  # the rewind point every ticket file keeps
    assert not same(theta_k, p.ctx.theta0)
    assert len(rest) == 2 * 2 + 3  # cycles 0 and 1: an evaluation and 2 shards each; cycle 2: its evaluation
    for t in rest:
        full = t.kw["desc"].endswith("full")  # a ticket evaluation (else a shard, with its own head)
        start = t.start if full else body(t.start)
        want = {k: torch.from_numpy(v) for k, v in (theta_k if full else body(theta_k)).items()}
        # the trainings start from theta_k (a mask zeroes pruned weights inside train(), after this point)
        assert same(start, want)
        assert t.steps[0][0] == K  # open_lth's continue: steps k..T, the schedule from step k
    cost = {r["shard"]: r["sample_epochs"] for r in records[0].cycle_rows}
    later = {r["shard"]: r["sample_epochs"] for r in records[1].cycle_rows}
    assert cost[0] == later[0] + K * BATCH  # the pre-training, charged once, to cycle 0's shard 0
    assert cost[1] == later[1]


def test_restart_trains_the_shards_from_theta_k_from_step_0(trainings):
    run_local(prepare(colt(rewind_step=K, rewind_schedule="restart")), lambda r: None)
    assert [t.steps[0][0] for t in trainings[1:]] == [0, 0, 0, 0]


def test_a_resumed_run_keeps_theta_k_and_gives_the_uninterrupted_masks(monkeypatch):
    p = prepare(colt(rewind_step=K, cycles=2))
    whole = []
    run_local(p, whole.append)
    first = whole[0]
    backend = LocalBackend(p).callables()

    def no_pretraining(theta, steps):
        raise AssertionError("a resumed run trains no new theta_k")

    backend.pretrain = no_pretraining
    resumed = []
    resume = Resume(first.cycle, first.mask, first.proposals, first.next_theta)
    run_method(p, backend, resumed.append, resume)
    assert [r.cycle for r in resumed] == [1, 2]
    assert all(r.theta is first.theta for r in resumed)
    assert [r.mask for r in resumed] == [r.mask for r in whole[1:]]


def test_a_rewind_step_past_a_shards_training_is_a_one_line_error():
    with pytest.raises(ConfigError, match="^rewind-step: must be below the 12 steps of a shard training, got 12"):
        prepare(colt(rewind_step=12))
    prepare(colt(rewind_step=12, rewind_schedule="restart"))  # restart trains every shard from step 0
    prepare(colt(rewind_step=12, shard_steps="match"))  # a matched shard trains 24 steps


# ---- critical path -----------------------------------------------------------------------------------------
def test_the_runs_row_records_the_critical_path_and_rounds(tmp_path):
    from colt_ray.runner import ResultsSink

    p = prepare(colt(cycles=2))
    sink = ResultsSink(p, str(tmp_path))
    records = []
    run_local(p, lambda r: (sink(r), records.append(r)))
    slowest = [max(r["wall_seconds"] for r in rec.cycle_rows if r["shard"] is not None) for rec in records[:2]]
    row = sink.run_row("completed")
    assert row["rounds"] == 2
    assert row["critical_path_seconds"] == pytest.approx(sum(slowest) + records[2].ticket_row["wall_seconds"])


def test_ticket_points_carry_the_critical_path_on_k_plus_1_workers():
    import pandas as pd

    from colt_ray.results.tables import _cumulative_compute

    # COLT run "c": cycle 0 shards 3 s and 5 s beside a 10 s dense evaluation; cycle 1 shards 4 s and 2 s, its
    # ticket 7 s; cycle 2 its ticket 6 s. IMP run "i": levels of 2, 3 and 4 s, one after another.
    rows = [("c", 0, None, 10.0), ("c", 0, 0, 3.0), ("c", 0, 1, 5.0), ("c", 1, None, 7.0), ("c", 1, 0, 4.0)]
    rows += [("c", 1, 1, 2.0), ("c", 2, None, 6.0), ("i", 0, None, 2.0), ("i", 1, None, 3.0), ("i", 2, None, 4.0)]
    cycles = pd.DataFrame(rows, columns=["run_id", "cycle", "shard", "wall_seconds"]).assign(sample_epochs=1)
    per = _cumulative_compute(cycles).set_index(["run_id", "cycle"])["critical_path_seconds"]
    assert per.to_dict() == {
        ("c", 0): 10.0,  # nothing before the dense ticket: its own training
        ("c", 1): 5.0 + 7.0,  # the slowest shard of cycle 0, then the ticket
        ("c", 2): 5.0 + 4.0 + 6.0,
        ("i", 0): 2.0,
        ("i", 1): 2.0 + 3.0,
        ("i", 2): 2.0 + 3.0 + 4.0,
    }
