"""Every named choice of the extension points (optimizers, schedules, pruning budgets, tweaks, sweep metrics)
comes from one registry entry: an entry added here (and taken out again) is at once a choice of its setting,
listed by ``--help`` and ``colt-ray ticket --list``, accepted by validation and the sweep YAML checks, and
used by a training; taken out, it is refused with a message naming the field and the valid names."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from colt_ray.cli import main
from colt_ray.core.config import DataConfig, PruneConfig, RecipeConfig, RunConfig, TweaksConfig, setting_of, validate
from colt_ray.core.data import load_dataset
from colt_ray.core.errors import ConfigError
from colt_ray.core.models import build_model
from colt_ray.core.optim import OPTIMIZERS, OptimizerSpec
from colt_ray.core.pruning import Mask, prune
from colt_ray.core.pruning.budgets import BUDGETS, Budget
from colt_ray.core.schedules import SCHEDULES, Schedule
from colt_ray.core.seeds import generator
from colt_ray.core.train import BaseCallback, train
from colt_ray.core.tweaks import TWEAKS, Tweak, apply_tweaks, retrain_recipe
from colt_ray.core.validation import check_value
from colt_ray.parallel.sweep.metrics import METRICS, Metric
from colt_ray.parallel.sweep.parse import parse_spec
from colt_ray.parallel.sweep.state import Totals
from colt_ray.parallel.sweep.trainable import cycle_metrics
from colt_ray.results.schema import TRIALS


@contextlib.contextmanager
def registered(registry, entry):
    """``entry`` in ``registry`` for the block only."""
    registry.add(entry.name, entry)
    try:
        yield entry
    finally:
        registry.remove(entry.name)


def ticket_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["ticket", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def listing(capsys) -> str:
    assert main(["ticket", "--list"]) == 0
    return capsys.readouterr().out


def refused(field: str, **sections) -> str:
    with pytest.raises(ConfigError) as err:
        validate(RunConfig(**sections))
    assert err.value.field == field
    return str(err.value)


class Frozen:
    """An optimizer that counts its steps and never moves a weight."""

    steps = 0

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        Frozen.steps += 1


FROZEN = OptimizerSpec("frozen", "counts steps, moves nothing", lambda params, r: Frozen(params, r.lr), lambda r: 0)


def test_a_new_optimizer_is_one_entry_used_end_to_end(capsys, tmp_path):
    recipe = RecipeConfig(optimizer="frozen", epochs=1)
    assert refused("optimizer", recipe=recipe) == "optimizer: unknown 'frozen'; valid: sgd, adam"
    with registered(OPTIMIZERS, FROZEN):
        assert setting_of("optimizer").allowed() == ("sgd", "adam", "frozen")
        assert "optimizer: sgd, adam, frozen (default: sgd)" in ticket_help(capsys)
        assert "frozen  counts steps, moves nothing" in listing(capsys)
        validate(RunConfig(recipe=recipe))
        # no stacked step: the batched backend refuses it, naming the optimizers it has one for
        batched = dataclasses.replace(RunConfig().resources, backend="batched")
        assert "sgd, adam only" in refused("optimizer", recipe=recipe, resources=batched)

        bundle = load_dataset(DataConfig(dataset="digits"), seed=0)
        model = build_model("lenet300", bundle.in_shape, bundle.num_classes, seed=1)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        Frozen.steps = 0
        result = train(model, bundle, dataclasses.replace(recipe, batch_size=256), generator=generator(0, "t"))
        assert Frozen.steps == result.steps == math.ceil(len(bundle.train) / 256)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

        out = tmp_path / "run"
        args = ["ticket", "--dataset", "digits", "--arch", "lenet300", "--epochs", "1", "--cycles", "1"]
        assert main([*args, "--backend", "local", "--optimizer", "frozen", "--no-progress", "--out", str(out)]) == 0
        assert Frozen.steps > result.steps  # the run's trainings stepped it too
    assert "frozen" not in OPTIMIZERS and setting_of("optimizer").allowed() == ("sgd", "adam")


class LearningRates(BaseCallback):
    def __init__(self):
        self.lrs = []

    def on_step_start(self, step, lr, indices):
        self.lrs.append(lr)


def test_a_new_schedule_is_one_entry_used_end_to_end(capsys):
    # lr x 0.5 from the first milestone on: a schedule that needs milestones, as step does
    half = Schedule(
        "halve-at", "lr x 0.5 from milestones[0] on", lambda s, spe, r: 0.5 if s / spe >= r.milestones[0] else 1.0, True
    )
    recipe = RecipeConfig(schedule="halve-at", epochs=2, warmup_epochs=0.0, lr=0.1, batch_size=512, milestones=(1,))
    assert refused("schedule", recipe=recipe).startswith("schedule: unknown 'halve-at'; valid: constant, step,")
    with registered(SCHEDULES, half):
        assert setting_of("schedule").allowed()[-1] == "halve-at"
        assert "multistep, cosine, halve-at (default: cosine)" in ticket_help(capsys)
        assert "halve-at   lr x 0.5 from milestones[0] on" in listing(capsys)
        validate(RunConfig(recipe=recipe))
        no_milestones = dataclasses.replace(recipe, milestones=())
        assert "schedule 'halve-at' needs at least one milestone" in refused("milestones", recipe=no_milestones)

        bundle = load_dataset(DataConfig(dataset="digits"), seed=0)
        model = build_model("lenet300", bundle.in_shape, bundle.num_classes, seed=1)
        seen = LearningRates()
        train(model, bundle, recipe, generator=generator(0, "t"), callbacks=[seen])
        per_epoch = math.ceil(len(bundle.train) / 512)
        assert seen.lrs == [0.1] * per_epoch + [0.05] * per_epoch
    assert "halve-at" not in setting_of("schedule").allowed()


def test_a_new_budget_is_one_entry_that_prune_follows(capsys):
    # prunes only the first tensor (a budget that spends the whole round on one layer)
    first = Budget("first-only", "the first tensor only", lambda alive, f: [([next(iter(alive))], f)])
    prune_cfg = PruneConfig(budget="first-only")
    assert refused("budget", prune=prune_cfg) == "budget: unknown 'first-only'; valid: global, layerwise"
    with registered(BUDGETS, first):
        assert "pruning budget: global, layerwise, first-only (default: global)" in ticket_help(capsys)
        assert "first-only  the first tensor only" in listing(capsys)
        validate(RunConfig(prune=prune_cfg))
        scores = {"a": torch.tensor([4.0, 1.0, 3.0, 2.0]), "b": torch.tensor([0.1, 0.2])}
        kept = prune(scores, Mask.ones_like(scores), 0.5, budget="first-only")
        assert kept["a"].tolist() == [True, False, True, False] and kept["b"].tolist() == [True, True]
        # the global budget would have taken b's two small weights first
        assert prune(scores, Mask.ones_like(scores), 0.5)["b"].tolist() == [False, False]
    with pytest.raises(ConfigError, match="budget: unknown 'first-only'"):
        prune(scores, Mask.ones_like(scores), 0.5, budget="first-only")


def test_a_new_tweak_is_one_entry_whose_hooks_the_retraining_calls(capsys):
    calls = []
    tenth = Tweak(
        "lr-tenth",
        "tickets retrained at a tenth of --lr",
        recipe=lambda r, cfg: dataclasses.replace(r, lr=r.lr / 10),
        model=lambda model, cfg: calls.append(type(model).__name__),
    )
    cfg = RunConfig(retrain=TweaksConfig(tweaks="label-smoothing,lr-tenth"))
    assert refused("tweaks", retrain=cfg.retrain).startswith("tweaks: unknown 'lr-tenth'; valid: label-smoothing,")
    with registered(TWEAKS, tenth):
        assert "skip-paths, distill, density- rescale, lr-tenth (default: none)" in ticket_help(capsys)
        assert "lr-tenth         tickets retrained at a tenth of --lr" in listing(capsys)
        validate(cfg)
        check_value("tweaks", "lr-tenth,distill", "search.tweaks.values[0]")  # the sweep YAML check
        recipe = retrain_recipe(cfg)
        assert recipe.lr == pytest.approx(RecipeConfig().lr / 10) and recipe.label_smoothing == 0.1
        apply_tweaks(torch.nn.Sequential(torch.nn.ReLU()), cfg)
        assert calls == ["Sequential"]
    with pytest.raises(ConfigError, match=r"^search.tweaks.values\[0\]: unknown 'lr-tenth'"):
        check_value("tweaks", "lr-tenth,distill", "search.tweaks.values[0]")


def test_a_former_tweak_name_is_still_read_and_never_listed(capsys):
    check_value("tweaks", "rescale-init")
    assert RunConfig(retrain=TweaksConfig(tweaks="rescale-init")).retrain.names == ("density-rescale",)
    assert "rescale-init" not in listing(capsys)


def space(objective: str) -> dict:
    return {
        "name": "t",
        "fixed": {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 2},
        "search": {"prune_rate": {"float": [0.1, 0.4]}},
        "objectives": [{"metric": objective}],
    }


def test_a_new_sweep_metric_is_one_entry_reported_and_selectable(capsys):
    drop = Metric(
        "acc_drop", "min", "acc_best - acc_final of the ticket", lambda t, totals: t["acc_best"] - t["acc_final"]
    )
    with pytest.raises(ConfigError, match=r"^objectives\[0\].metric: unknown metric 'acc_drop'; valid: val_acc, acc,"):
        parse_spec(space("acc_drop"))
    with registered(METRICS, drop):
        spec = parse_spec(space("acc_drop"))
        assert spec.objectives[0].mode == "min"  # the entry's direction is the objective's default
        assert "acc_drop                 min: acc_best - acc_final of the ticket" in listing(capsys)
        row = {"sparsity": 0.2, "acc_best": 0.75, "acc_final": 0.5, "val_acc_best": None}
        record = type("Record", (), {"ticket_row": row, "cycle": 1, "done": False})()
        assert cycle_metrics(record, Totals(), None, "r")["acc_drop"] == 0.25
    # a test-set metric still needs allow_test_selection, as the entry says
    with pytest.raises(ConfigError, match=r"acc is measured on the test set.*use val_acc with"):
        parse_spec(space("acc"))


def test_every_metric_column_is_a_trials_column():
    columns = [m.column for m in map(METRICS.get, METRICS) if m.column]
    assert columns and set(columns) <= set(TRIALS.names)


def test_the_command_line_checks_registry_names_without_importing_torch():
    code = (
        "import sys; from colt_ray.core.config import RunConfig, RecipeConfig, validate\n"
        "try:\n    validate(RunConfig(recipe=RecipeConfig(optimizer='sgdd')), registries=False)\n"
        "except ValueError as e:\n    print(e)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["optimizer: unknown 'sgdd'; valid: sgd, adam", "False"], out.stderr


# ---- the docs list what the registries hold -------------------------------------------------------------
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def doc(name: str) -> str:
    with open(os.path.join(DOCS, name)) as f:
        return f.read()


def test_the_metrics_table_of_docs_sweeps_is_the_registry():
    text = doc("sweeps.md")
    table = text[text.index("**Metrics**") :].split("\n\n")[1]
    documented = {}
    for row in table.splitlines()[2:]:  # after the header and its rule
        names, mode = row.split("|")[1:3]
        documented.update({n: mode.strip() for n in re.findall(r"`(\w+)`", names)})
    assert documented == {n: METRICS.get(n).mode for n in METRICS}


def test_docs_algorithms_describes_every_tweak_and_budget():
    # optimizers and schedules are documented by their entries' help (--help, --list) alone
    text = doc("algorithms.md")
    tweaks = text[text.index("## 3. Retraining tweaks") : text.index("## 4.")]
    assert [n for n in TWEAKS if f"`{n}`" not in tweaks] == []
    assert [n for n in BUDGETS if f"`{n}`" not in text] == []
