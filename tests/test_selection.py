"""One selection rule for every method (issue 21, item 3) and the paper's sparsity figure (item 6).

Every method's ticket rows carry the same accuracy columns with the same meaning, computed from the per-epoch
history of the training (or, for a jackpot, the score search) that produced the row:

* ``acc_final``: the test accuracy after the last epoch;
* ``acc_best``: the best test accuracy over the epochs;
* ``val_acc_best``: the best validation accuracy over the epochs;
* ``test_acc_at_best_val``: the test accuracy of the first epoch with that validation accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import colt_ray.core.tickets.jackpot as jackpot_module
import colt_ray.core.tickets.trainer as trainer_module
from colt_ray.core.config import (
    DataConfig,
    JackpotConfig,
    ModelConfig,
    RecipeConfig,
    RunConfig,
    TicketConfig,
    TweaksConfig,
)
from colt_ray.core.data import Preprocess
from colt_ray.core.models import build_model, layer_weight_count
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.io import Ticket
from colt_ray.core.tickets.records import mask_summary
from colt_ray.core.tickets.search import prepare, run_local
from colt_ray.core.tickets.specs import METHODS
from colt_ray.core.tickets.transfer import transfer
from colt_ray.core.train import train as real_train

COLUMNS = ("val_acc_best", "test_acc_at_best_val", "acc_best", "acc_final")
EPOCHS = 4


def rule(history: list[dict]) -> dict:
    """The selection columns from a per-epoch history, as the docs state them."""
    accs, vals = [h["acc"] for h in history], [h["val_acc"] for h in history]
    first_best_val = vals.index(max(vals))
    return {
        "val_acc_best": max(vals),
        "test_acc_at_best_val": accs[first_best_val],
        "acc_best": max(accs),
        "acc_final": accs[-1],
    }


def test_the_rule_by_hand():
    history = [{"acc": 0.5, "val_acc": 0.6}, {"acc": 0.7, "val_acc": 0.8}, {"acc": 0.9, "val_acc": 0.8}]
    history.append({"acc": 0.6, "val_acc": 0.7})
    # best validation 0.8 first at epoch 2 (test 0.7), not epoch 3 (test 0.9); the best test 0.9; the last 0.6
    assert rule(history) == {"val_acc_best": 0.8, "test_acc_at_best_val": 0.7, "acc_best": 0.9, "acc_final": 0.6}


@pytest.fixture
def histories(monkeypatch):
    """Every training of the run, in order, as ``(desc, history)``: the trainers' and the jackpot search's."""
    seen: list[tuple[str, list[dict]]] = []

    def recording(*args, **kwargs):
        result = real_train(*args, **kwargs)
        seen.append((kwargs.get("desc", "train"), [dict(h) for h in result.history]))
        return result

    monkeypatch.setattr(trainer_module, "train", recording)
    monkeypatch.setattr(jackpot_module, "train", recording)
    return seen


def base_cfg(**ticket) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits", val_fraction=0.2),
        model=ModelConfig("lenet300"),
        recipe=RecipeConfig(epochs=EPOCHS, batch_size=64, lr=0.1),
        ticket=TicketConfig(**ticket),
    ).replace(resources=dataclasses.replace(RunConfig().resources, progress=False))


def ticket_rows(cfg: RunConfig) -> list[dict]:
    records: list = []
    run_local(prepare(cfg), records.append)
    return [row for r in records for row in r.cycle_rows]


def run_colt():
    return ticket_rows(base_cfg(method="colt", cycles=1, shards=2))


def run_imp():
    return ticket_rows(base_cfg(method="imp", cycles=1))


def run_imp_tweaked():
    cfg = base_cfg(method="imp", cycles=1).replace(retrain=TweaksConfig(tweaks="label-smoothing"))
    return ticket_rows(cfg)


def run_jackpot():
    # a score lr large enough for the masks to move on this tiny data (tests/test_jackpot.py)
    cfg = base_cfg(method="jackpot", target_sparsity=0.8).replace(
        jackpot=JackpotConfig(search_epochs=EPOCHS, score_lr=1.0)
    )
    return ticket_rows(cfg)


def run_transfer():
    records: list = []
    prepared = prepare(base_cfg(method="imp", cycles=1, eval_tickets="none"))
    run_local(prepared, records.append)
    last = records[-1]
    meta = {"arch": "lenet300", "in_shape": list(prepared.bundle.in_shape), "dataset": "digits"}
    outcome = transfer(Ticket(last.theta, last.mask, meta), base_cfg(method="imp"))
    return [{"shard": None, "cycle": 0, **outcome.metrics}]


# how each row's training is named in its trainer (``TicketTrainer.label``, the jackpot search's ``desc``)
def _desc(method: str, row: dict) -> str:
    if method == "jackpot" and row["cycle"] == 1:
        return "cycle 1 jackpot search"
    who = "full" if row["shard"] is None else f"shard {row['shard']}"
    return f"cycle {row['cycle']} {who}"


RUNS = {
    "colt": run_colt,
    "imp": run_imp,
    "imp+label-smoothing": run_imp_tweaked,  # the row reports the tweaked retraining, recorded after the plain one
    "jackpot": run_jackpot,
    "transfer": run_transfer,
}


def test_every_method_has_a_case():
    assert set(METHODS) <= set(RUNS)


@pytest.mark.parametrize("case", list(RUNS))
def test_every_methods_rows_select_by_the_same_rule_from_the_per_epoch_history(case, histories):
    rows = RUNS[case]()
    method = case.split("+")[0]
    checked = 0
    for row in rows:
        if not row.get("evaluated", True):
            continue
        desc = _desc(method, row)
        history = [h for d, h in histories if d == desc][-1]  # the last training of that name made the row
        assert len(history) == EPOCHS, (case, desc)
        expected = rule(history)
        assert {c: row[c] for c in COLUMNS} == expected, (case, desc)
        checked += 1
    assert checked >= (1 if method == "transfer" else 2)  # the dense row and a sparse one at least


def test_a_jackpots_ticket_is_the_selected_epochs_and_reproduces_test_acc_at_best_val(histories):
    cfg = base_cfg(method="jackpot", target_sparsity=0.8).replace(
        jackpot=JackpotConfig(search_epochs=EPOCHS, score_lr=1.0)
    )
    records: list = []
    prepared = prepare(cfg)
    run_local(prepared, records.append)
    jackpot = records[1]
    history = [h for d, h in histories if d == "cycle 1 jackpot search"][-1]
    vals = [h["val_acc"] for h in history]
    model = build_model("lenet300", prepared.bundle.in_shape, 10, seed=0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in jackpot.theta.items()})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in jackpot.mask:
                p.mul_(jackpot.mask[n])
    b = prepared.bundle
    prep = Preprocess(b.mean, b.std, None)
    acc = int((model.eval()(prep(b.test.x)).argmax(1) == b.test.y).sum()) / len(b.test)
    val = int((model(prep(b.val.x)).argmax(1) == b.val.y).sum()) / len(b.val)
    assert (val, acc) == (max(vals), jackpot.ticket_row["test_acc_at_best_val"])


# ---- the COLT paper's sparsity figure -----------------------------------------------------------------


def test_sparsity_weights_counts_every_linear_conv_and_batchnorm_weight_by_hand():
    # conv 2x1x3x3 = 18 weights (+2 biases), BatchNorm 2 weights (+2 shifts), Linear 8 -> 3 = 24 (+3 biases)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    assert layer_weight_count(model) == 18 + 2 + 24
    conv, lin = torch.ones(2, 1, 3, 3, dtype=torch.bool), torch.ones(3, 8, dtype=torch.bool)
    conv.view(-1)[:6] = False
    lin.view(-1)[:4] = False  # 10 weights pruned
    params = sum(p.numel() for p in model.parameters())
    summary = mask_summary(Mask({"0.weight": conv, "3.weight": lin}), {}, params, layer_weight_count(model))
    assert summary["sparsity"] == pytest.approx(10 / 42)  # over the masked tensors
    assert summary["sparsity_weights"] == pytest.approx(10 / 44)  # the COLT code's prune rate / 100
    assert summary["sparsity_all"] == pytest.approx(10 / 51)  # over every parameter


def test_a_runs_rows_record_sparsity_weights():
    records: list = []
    run_local(prepare(base_cfg(method="imp", cycles=1, eval_tickets="none")), records.append)
    row = records[-1].ticket_row
    # lenet300 on digits (8x8): hidden 64x300 + 300x100 (prunable), head 100x10 (dense); 20% of 49,200 pruned
    pruned = round(0.2 * (64 * 300 + 300 * 100))
    assert row["prunable_weights"] - row["kept_weights"] == pruned == 9840
    assert row["sparsity_weights"] == pytest.approx(pruned / (64 * 300 + 300 * 100 + 100 * 10))
    assert np.isclose(row["sparsity"], 0.2)
