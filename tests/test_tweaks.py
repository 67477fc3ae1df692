"""Retraining tweaks (ALGORITHMS.md section 3): each does what it says, on models and numbers small enough to
check by hand."""

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from colt_ray.cli import main
from colt_ray.core.config import (
    TWEAKS,
    DataConfig,
    ModelConfig,
    RecipeConfig,
    RunConfig,
    TicketConfig,
    TweaksConfig,
    validate,
)
from colt_ray.core.errors import ConfigError
from colt_ray.core.models import build_model, param_groups, prunable_names
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.search import LocalBackend, make_ticket_trainer, prepare, run_method
from colt_ray.core.tickets.teacher import DistillingTrainer
from colt_ray.core.tickets.trainer import TicketTrainer
from colt_ray.core.train import smoothed_cross_entropy
from colt_ray.core.tweaks import (
    SkipPath,
    add_skip_paths,
    apply_tweaks,
    distillation_loss,
    rescale_to_density,
    retrain_recipe,
    skip_parameter_count,
    swap_activations,
)
from colt_ray.core.tweaks.activations import FACTORIES


def small_cfg(arch="lenet300", tweaks=(), method="imp", dataset="digits", **retrain) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(arch),
        recipe=RecipeConfig(epochs=1, batch_size=64),
        ticket=TicketConfig(method=method, cycles=1),
        retrain=TweaksConfig(tweaks=",".join(tweaks), **retrain),
    ).replace(resources=dataclasses.replace(RunConfig().resources, progress=False))


# ---- soft activations -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [a for a in FACTORIES if a != "relu"])  # the activation registry
@pytest.mark.parametrize("arch", ["conv2", "resnet20"])
def test_every_relu_is_replaced_and_the_state_dict_is_unchanged(name, arch):
    model = build_model(arch, (1, 8, 8), 10, seed=0)
    relus = sum(type(m) is nn.ReLU for m in model.modules())
    keys = list(model.state_dict())
    assert swap_activations(model, name) == relus > 0
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert sum(type(m) is FACTORIES[name] for m in model.modules()) == relus
    assert list(model.state_dict()) == keys
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="activation: unknown 'relu6'; valid: relu, swish, mish, gelu, elu, softplus"):
        swap_activations(nn.Sequential(nn.ReLU()), "relu6")


def test_tost_pswish_and_lisht_by_hand():
    # ToST (LRsI/activations.py): swish_parametric = x * sigmoid(2x) (beta fixed at 2), lisht = x * tanh(x)
    x = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0], dtype=torch.float64)
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    pswish = [v * sig(2.0 * v) for v in x.tolist()]  # -2 * sigmoid(-4) = -0.035972..., 1 * sigmoid(2) = 0.880797...
    lisht = [v * math.tanh(v) for v in x.tolist()]  # 1 * tanh(1) = 0.761594..., and even: f(-x) = f(x)
    assert FACTORIES["pswish"]()(x).tolist() == pytest.approx(pswish, abs=1e-12)
    assert FACTORIES["pswish"]()(torch.tensor([1.0])).item() == pytest.approx(0.8807970779778823, abs=1e-6)
    assert FACTORIES["lisht"]()(x).tolist() == pytest.approx(lisht, abs=1e-12)
    assert FACTORIES["lisht"]()(torch.tensor([-1.0])).item() == pytest.approx(0.7615941559557649, abs=1e-6)
    assert not list(FACTORIES["pswish"]().parameters())  # beta is not learned, as in ToST


# ---- extra skip paths -------------------------------------------------------------------------------


def test_skip_paths_two_per_block_initialised_as_the_reference_and_never_prunable():
    cfg = small_cfg("resnet20", ["skip-paths"])
    plain = build_model("resnet20", (1, 8, 8), 10, seed=0)
    model = apply_tweaks(build_model("resnet20", (1, 8, 8), 10, seed=0), cfg)
    paths = [m for m in model.modules() if isinstance(m, SkipPath)]
    assert len(paths) == 2 * 9  # resnet20: 3 stages x 3 blocks
    # as VITA-Group/ToST: the 1x1 convs start at 1e-4, their BatchNorms at scale 1, shift 0
    assert all(torch.all(p[0].weight == 1e-4) and torch.all(p[1].weight == 1) for p in paths)
    assert all(torch.all(p[1].bias == 0) for p in paths)
    groups = param_groups(model)
    skip_names = [n for n in groups if ".skip1." in n or ".skip2." in n]
    assert skip_names and all(groups[n] == "skip" for n in skip_names)
    assert prunable_names(model, ("conv", "linear", "batchnorm")) == prunable_names(
        plain, ("conv", "linear", "batchnorm")
    )
    assert skip_parameter_count(model) == sum(model.state_dict()[n].numel() for n in skip_names)
    # the stride of a block's first conv is the stride of its first skip path
    block = model.layer2[0]
    assert block.skip1[0].stride == block.conv1.stride == (2, 2) and block.skip2[0].stride == (1, 1)
    # in eval mode with fresh running statistics a path adds 1e-4 x its input: almost the plain network
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(model.eval()(x), plain.eval()(x), atol=1e-3)


def test_skip_paths_are_added_after_the_blocks_batchnorms():
    model = apply_tweaks(build_model("resnet20", (1, 8, 8), 10, seed=0), small_cfg("resnet20", ["skip-paths"]))
    block = model.layer2[0].train()
    x = torch.randn(4, 16, 8, 8)
    torch.manual_seed(0)
    got = block(x)
    for m in block.modules():  # the forward pass above moved the running statistics; the same step again
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    mid = block.act1(block.bn1(block.conv1(x)) + block.skip1[1](block.skip1[0](x)))
    want = block.act2(block.bn2(block.conv2(mid)) + block.shortcut(x) + block.skip2[1](block.skip2[0](mid)))
    assert torch.allclose(got, want, atol=1e-6)
    # in training mode the path's BatchNorm (scale 1) divides the 1e-4 conv output by sqrt(var + eps): the path
    # contributes from the first step (about 1/sqrt(eps) = 316x the conv output here), unlike a BN scale of 1e-4
    assert float(block.skip1(x).detach().std()) > 100 * float(block.skip1[0](x).detach().std())


def test_skip_paths_on_an_architecture_without_residual_blocks_is_refused():
    with pytest.raises(ConfigError, match="tweaks: skip-paths needs residual blocks; conv2 has none"):
        add_skip_paths(build_model("conv2", (1, 8, 8), 10, seed=0), "conv2")


def test_skip_paths_stay_dense_out_of_masks_and_count_in_sparsity_all():
    cfg = small_cfg("resnet20", ["skip-paths"], dataset="synthetic")
    records = []
    prepared = prepare(cfg)
    backend = LocalBackend(prepared)
    run_method(prepared, backend.callables(), records.append)
    last = records[-1]
    assert last.cycle == 1 and last.mask.sparsity() == pytest.approx(0.2, abs=1e-3)
    assert not any("skip" in n for n in last.mask) and not any("skip" in n for n in prepared.ctx.groups)
    assert last.ticket_row["prunable_weights"] == sum(last.mask[n].numel() for n in last.mask)
    assert not any(".skip" in k for k in last.theta)  # rewind points are the plain model's
    model = backend.retrainer.model  # the tweaked retraining model
    trained = {n: p for n, p in model.named_parameters() if ".skip" in n and n.endswith("0.weight")}
    assert trained and all(bool((p != 0).all()) for p in trained.values())  # dense after masked training
    assert any(not torch.all(p == 1e-4) for p in trained.values())  # and they did learn
    # sparsity_all by hand: pruned weights over every parameter of the retrained ticket: the plain network's
    # (heads, BatchNorm and the unpruned groups included) plus its skip paths
    plain = sum(p.numel() for p in build_model("resnet20", prepared.bundle.in_shape, 10, seed=0).parameters())
    total = plain + skip_parameter_count(model)
    assert skip_parameter_count(model) > 0 and total == sum(p.numel() for p in model.parameters())
    pruned = last.mask.numel() - last.mask.kept()
    assert last.ticket_row["sparsity_all"] == pytest.approx(pruned / total, abs=1e-12)
    assert last.ticket_row["sparsity_all"] < last.ticket_row["sparsity"]


# ---- tweaks apply only to ticket retraining ---------------------------------------------------------

ALL_TWEAKS = {"tweaks": "label-smoothing,distill,density-rescale", "activation": "swish"}


@pytest.mark.parametrize("method", ["imp", "colt"])
def test_tweaks_never_change_the_masks_only_the_retrained_tickets(method):
    def run(**retrain):
        cfg = small_cfg("conv2", method=method).replace(
            ticket=TicketConfig(method=method, cycles=2, shards=2), retrain=TweaksConfig(**retrain)
        )
        records = []
        prepared = prepare(cfg)
        run_method(prepared, LocalBackend(prepared).callables(), records.append)
        return records

    plain, tweaked = run(), run(**ALL_TWEAKS)
    assert [r.mask for r in tweaked] == [r.mask for r in plain]  # masks from plain IMP / COLT, bit for bit
    for p, t in zip(plain, tweaked):
        assert t.ticket_row["acc_best"] != p.ticket_row["acc_best"] or t.ticket_row["loss"] != p.ticket_row["loss"]
        shards_p = [r for r in p.cycle_rows if r["shard"] is not None]
        shards_t = [r for r in t.cycle_rows if r["shard"] is not None]
        assert [r["acc_best"] for r in shards_t] == [r["acc_best"] for r in shards_p]  # shard trainings: plain
    if method == "imp":  # each level: the plain training that finds the next mask, plus the tweaked retraining
        assert [r.ticket_row["sample_epochs"] for r in tweaked] == [2 * r.ticket_row["sample_epochs"] for r in plain]


# every retraining tweak with non-default values of every setting it reads (the activation: a tweak of its own)
TWEAK_SETTINGS = {
    "label-smoothing": {"tweak_label_smoothing": 0.3},
    "distill": {"distill_temperature": 2.0, "distill_weight": 0.5, "distill_reduction": "batchmean"},
    "density-rescale": {},
    "skip-paths": {},
    "activation": {"activation": "swish"},
}


def test_the_tweak_table_covers_every_tweak_and_every_tweak_setting():
    assert set(TWEAK_SETTINGS) == {*TWEAKS, "activation"}
    read = {k for settings in TWEAK_SETTINGS.values() for k in settings}
    assert read == {f.name for f in dataclasses.fields(TweaksConfig)} - {"tweaks"}


@pytest.mark.parametrize(
    "tweak, recipe_smoothing",
    [*((t, 0.0) for t in sorted(TWEAK_SETTINGS)), ("label-smoothing", 0.2)],
    ids=[*sorted(TWEAK_SETTINGS), "label-smoothing-over-a-smoothed-recipe"],
)
def test_masks_never_depend_on_a_retraining_tweak_or_its_settings(tweak, recipe_smoothing):
    """IMP's masks with a tweak and each setting it reads at a non-default value equal, bit for bit, those of
    the same run without the tweak; with the recipe's own label smoothing on both sides too (it is every
    training's, the mask search's included; the tweak's alpha is tweak_label_smoothing)."""
    arch = "resnet20" if tweak == "skip-paths" else "conv2"

    def masks(**retrain):
        cfg = small_cfg(arch, method="imp", **retrain)
        cfg = cfg.replace(
            ticket=TicketConfig(method="imp", cycles=2),
            recipe=dataclasses.replace(cfg.recipe, label_smoothing=recipe_smoothing),
        )
        records = []
        prepared = prepare(cfg)
        run_method(prepared, LocalBackend(prepared).callables(), records.append)
        return [r.mask for r in records], records[-1].ticket_row["acc_best"]

    settings = dict(TWEAK_SETTINGS[tweak])
    tweaks = [] if tweak == "activation" else [tweak]
    (plain, plain_acc), (tweaked, tweaked_acc) = masks(), masks(tweaks=tweaks, **settings)
    assert tweaked == plain
    assert tweaked_acc != plain_acc or tweak == "density-rescale"  # the tickets were retrained otherwise


def test_imp_level_reports_the_tweaked_retraining_of_its_ticket():
    cfg = small_cfg("lenet300", ["label-smoothing"]).replace(ticket=TicketConfig(method="imp", cycles=1))
    prepared = prepare(cfg)
    backend = LocalBackend(prepared)
    records = []
    run_method(prepared, backend.callables(), records.append)
    assert backend.retrainer is not backend.full
    assert backend.full.recipe.label_smoothing == 0.0 and backend.retrainer.recipe.label_smoothing == 0.1
    # the level-1 ticket retrained alone with the tweaks gives the level's reported accuracy
    again = make_ticket_trainer(cfg, prepared.bundle).run(records[1].theta, records[1].mask, 1, False).metrics
    assert records[1].ticket_row["acc_best"] == again["acc_best"]


# ---- label smoothing --------------------------------------------------------------------------------


def test_label_smoothed_loss_equals_the_hand_computed_value():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    # log_softmax = x - log(e^2 + e + 1) = [-0.407606, -1.407606, -2.407606]; soft labels [0.9, 0.05, 0.05]
    expected = 0.9 * 0.407606 + 0.05 * 1.407606 + 0.05 * 2.407606
    assert float(smoothed_cross_entropy(logits, torch.tensor([0]), 0.1)) == pytest.approx(expected, abs=1e-5)


def test_label_smoothing_tweak_retrains_with_its_own_alpha_and_the_search_keeps_the_recipes():
    assert retrain_recipe(small_cfg()).label_smoothing == 0.0
    assert retrain_recipe(small_cfg(tweaks=["label-smoothing"])).label_smoothing == 0.1
    both = small_cfg(tweaks=["label-smoothing"])
    both = both.replace(
        recipe=dataclasses.replace(both.recipe, label_smoothing=0.2),
        retrain=dataclasses.replace(both.retrain, tweak_label_smoothing=0.3),
    )
    assert retrain_recipe(both).label_smoothing == 0.3  # the tickets' retraining: the tweak's alpha
    assert retrain_recipe(both.search_config()).label_smoothing == 0.2  # the mask search: the recipe's own
    from colt_ray.core.data import load_dataset

    bundle = load_dataset(DataConfig(dataset="digits"), 42)
    assert TicketTrainer.for_full(small_cfg(tweaks=["label-smoothing"]), bundle).recipe.label_smoothing == 0.1


# ---- knowledge distillation -------------------------------------------------------------------------


def test_distillation_loss_equals_the_hand_computed_value():
    student, teacher, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    # T = 2: p_student = softmax([0.5, 0]) = [a, b], p_teacher = [b, a], a = 0.622459, b = 0.377541
    a, b = 0.622459, 0.377541
    kl = b * math.log(b / a) + a * math.log(a / b)  # = (a - b) * 0.5
    ce = math.log(1 + math.exp(-1.0))
    # default "mean", as the reference's nn.KLDivLoss(): the pointwise KL terms averaged over batch x classes
    # (1 x 2 here), so the KL term is the per-sample KL divided by the class count
    got = distillation_loss(student, teacher, target, temperature=2.0, weight=0.9)
    assert float(got) == pytest.approx(0.9 * 4 * kl / 2 + 0.1 * ce, abs=1e-5)
    got = distillation_loss(student, teacher, target, temperature=2.0, weight=0.9, reduction="batchmean")
    assert float(got) == pytest.approx(0.9 * 4 * kl + 0.1 * ce, abs=1e-5)
    assert float(distillation_loss(student, student, target, 5.0, 1.0)) == pytest.approx(0.0, abs=1e-7)


def distilled_run(method, tweaks, monkeypatch, activation="relu", eval_tickets="all"):
    """A 2-cycle run of ``method`` with ``tweaks``; its records, its backend and how many teachers it trained."""
    trained = []
    train_teacher = DistillingTrainer.train_teacher

    def counted(self, *args, **kwargs):
        trained.append(1)
        return train_teacher(self, *args, **kwargs)

    monkeypatch.setattr(DistillingTrainer, "train_teacher", counted)
    cfg = small_cfg("conv2", method=method).replace(
        ticket=TicketConfig(method=method, cycles=2, shards=2, eval_tickets=eval_tickets),
        retrain=TweaksConfig(tweaks=",".join(tweaks), activation=activation),
    )
    prepared = prepare(cfg)
    backend = LocalBackend(prepared)
    records = []
    run_method(prepared, backend.callables(), records.append)
    return prepared, backend, records, len(trained)


def plain_dense(prepared):
    """The teacher by its definition: the run's dense training with the mask search's config (no tweak)."""
    trainer = TicketTrainer.for_full(prepared.cfg.search_config(), prepared.bundle)
    out = trainer.run(prepared.ctx.theta0, None, 0, False)
    return trainer.state(), out.metrics["sample_epochs"]


def same_state(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["colt", "imp"])
def test_the_teacher_is_the_plain_dense_model_trained_once_and_charged_once(method, monkeypatch):
    """With other tweaks on (label smoothing, swish) the teacher is still the plain dense model, as KD-ticket's.
    COLT trains it once, at its first distilled retraining, whose row carries its cost; IMP's level 0 is that
    very training, so IMP trains none and pays nothing more (the level-0 row holds it already)."""
    tweaks = ["distill", "label-smoothing"]
    prepared, backend, records, trained = distilled_run(method, tweaks, monkeypatch, "swish")
    _, _, without, _ = distilled_run(method, ["label-smoothing"], monkeypatch, "swish")
    state, teacher_se = plain_dense(prepared)
    assert same_state(backend.retrainer.teacher.state, state)
    tweaked = make_ticket_trainer(prepared.cfg, prepared.bundle).trainer  # the dense retraining, tweaks on
    tweaked.run(prepared.ctx.theta0, None, 0, False)
    assert not same_state(backend.retrainer.teacher.state, tweaked.state())  # what the teacher was before
    se = [r.ticket_row["sample_epochs"] for r in records]
    se_without = [r.ticket_row["sample_epochs"] for r in without]
    carried = [r.ticket_row["teacher_sample_epochs"] for r in records]
    if method == "colt":
        assert trained == 1 and carried == [None, teacher_se, None]
        assert se == [se_without[0], se_without[1] + teacher_se, se_without[2]]
    else:
        assert trained == 0 and carried == [None, None, None] and se == se_without


def test_a_dense_retraining_no_tweak_changes_is_the_teacher_and_costs_nothing_more(monkeypatch):
    """Distillation alone: COLT's dense ticket evaluation is the plain dense training (no second one); when the
    dense ticket is not evaluated the first evaluated one trains the teacher and carries it."""
    prepared, backend, records, trained = distilled_run("colt", ["distill"], monkeypatch)
    assert trained == 0 and all(r.ticket_row["teacher_sample_epochs"] is None for r in records)
    assert same_state(backend.retrainer.teacher.state, plain_dense(prepared)[0])
    _, _, final, trained = distilled_run("colt", ["distill"], monkeypatch, eval_tickets="final")
    teacher_se = plain_dense(prepared)[1]
    assert trained == 1 and [r.ticket_row["teacher_sample_epochs"] for r in final] == [None, None, teacher_se]
    assert final[2].ticket_row["sample_epochs"] == records[2].ticket_row["sample_epochs"] + teacher_se
    assert final[2].ticket_row["acc_best"] == records[2].ticket_row["acc_best"]  # the same teacher either way


def test_a_trainer_that_never_saw_the_dense_training_trains_the_same_teacher():
    """A resumed run or another actor: the teacher trained afresh equals the run's, bit for bit."""
    cfg = small_cfg(tweaks=["distill"])
    prepared = prepare(cfg)
    backend = LocalBackend(prepared)
    run_method(prepared, backend.callables(), lambda record: None)
    teacher = backend.retrainer.teacher.state
    assert not np.array_equal(teacher["layers.1.weight"], prepared.ctx.theta0["layers.1.weight"])  # trained
    fresh = make_ticket_trainer(cfg, prepared.bundle).train_teacher()
    assert same_state(fresh.state, teacher) and fresh.cost["sample_epochs"] == plain_dense(prepared)[1]


def test_a_distilled_transfer_trains_its_teacher_on_the_new_data_and_carries_its_cost(monkeypatch):
    """A transfer has no dense training of its own: it trains the plain dense teacher on the new dataset (from
    the ticket's theta with the new head) once, and its outcome's cost holds it."""
    from colt_ray.core.data import load_dataset
    from colt_ray.core.tickets.io import Ticket
    from colt_ray.core.tickets.transfer import transfer

    source = prepare(small_cfg("conv2"))
    theta = source.ctx.theta0
    mask = Mask.from_numpy({n: np.random.default_rng(0).random(theta[n].shape) > 0.5 for n in source.ctx.groups})
    ticket = Ticket(theta, mask, {"arch": "conv2", "in_shape": list(source.bundle.in_shape)})
    trained = []
    train_teacher = DistillingTrainer.train_teacher
    monkeypatch.setattr(DistillingTrainer, "train_teacher", lambda *a, **k: trained.append(1) or train_teacher(*a, **k))
    cfg = small_cfg("conv2", ["distill", "label-smoothing"], dataset="synthetic")
    out = transfer(ticket, cfg).metrics
    without = transfer(ticket, small_cfg("conv2", ["label-smoothing"], dataset="synthetic")).metrics
    teacher_se = len(load_dataset(cfg.data, cfg.ticket.seed).train.x) * cfg.recipe.epochs
    assert trained == [1] and out["teacher_sample_epochs"] == teacher_se
    assert out["sample_epochs"] == without["sample_epochs"] + teacher_se


# ---- layer-wise re-scaled initialisation ------------------------------------------------------------


def test_rescaled_init_multiplies_survivors_by_one_over_sqrt_density():
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2))
    before = [p.detach().clone() for p in model.parameters()]
    kept = torch.tensor([[True, False, False, False], [False, True, False, False]])  # density 0.25
    mask = Mask({"0.weight": kept, "1.weight": torch.ones(2, 2, dtype=torch.bool)})
    assert rescale_to_density(model, mask) == {"0.weight": 2.0}
    assert torch.equal(model[0].weight, before[0] * 2.0)
    assert torch.equal(model[1].weight, before[2])  # dense layer untouched


# ---- config, sweeps and the command line ------------------------------------------------------------


def test_tweaks_are_flat_fields_and_old_run_ids_stay_valid():
    cfg = RunConfig.from_flat({"tweaks": "skip-paths, distill", "activation": "gelu", "distill_weight": 0.5})
    assert cfg.retrain == TweaksConfig("skip-paths, distill", "gelu", 5.0, 0.5)
    assert cfg.retrain.names == ("skip-paths", "distill") and TweaksConfig().names == ()
    assert RunConfig.from_flat(cfg.to_flat()) == cfg
    assert RunConfig().run_id() == hashlib.sha256(b"{}").hexdigest()[:12]
    imp = RunConfig(ticket=TicketConfig(method="imp"))
    assert imp.run_id() == hashlib.sha256(b'{"method": "imp"}').hexdigest()[:12]
    with pytest.raises(ConfigError, match="tweaks: unknown 'dropout'; valid: label-smoothing, skip-paths"):
        validate(small_cfg(tweaks=["dropout"]))


BAD = [
    (["--activation", "relu6"], "activation: unknown 'relu6'; valid: relu, swish"),
    (["--tweaks", "dropout"], "tweaks: unknown 'dropout'; valid: label-smoothing"),
    (["--tweaks", "skip-paths", "--arch", "conv2"], "skip-paths needs residual blocks; conv2 has none"),
    (["--distill-temperature", "0"], "distill-temperature: must be > 0"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_tweak_is_one_line_exit_2_and_writes_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["ticket", "--out", str(out), "--dataset", "digits", "--backend", "local", "--no-progress", *extra]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("colt-ray: error: ") and "\n" not in err and message in err
    assert not out.exists()


def test_cli_runs_imp_with_combined_tweaks_and_records_them(tmp_path):
    out = tmp_path / "out"
    argv = [
        "ticket",
        "--method",
        "imp",
        "--arch",
        "lenet300",
        "--cycles",
        "1",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--tweaks",
        "label-smoothing,rescale-init,distill",
        "--activation",
        "swish",
        "--backend",
        "local",
        "--no-progress",
    ]
    assert main(argv) == 0
    run = pd.read_parquet(out / "runs").iloc[0]
    assert run.tweaks == "label-smoothing,rescale-init,distill" and run.activation == "swish"
    assert run.status == "completed" and run.final_sparsity == pytest.approx(0.2, abs=1e-3)


def test_cli_reports_skip_path_parameters_apart_from_the_pruned_weights(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "ticket",
        "--method",
        "imp",
        "--arch",
        "resnet20",
        "--dataset",
        "synthetic",
        "--cycles",
        "1",
        "--epochs",
        "0",
        "--tweaks",
        "skip-paths",
        "--out",
        str(out),
        "--backend",
        "local",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "skip paths: 31,040 dense parameters, never pruned, not counted in sparsity" in capsys.readouterr().err
    cycles = pd.read_parquet(out / "cycles")
    plain = build_model("resnet20", (1, 8, 8), 10, seed=0)
    assert set(cycles.prunable_weights) == {
        sum(p.numel() for n, p in plain.named_parameters() if n in prunable_names(plain, ("conv", "linear")))
    }


def test_tweaks_are_searchable_settings_of_a_sweep_space():
    from colt_ray.parallel.sweep.checks import check_spec
    from colt_ray.parallel.sweep.parse import parse_spec

    space = {
        "name": "tweaks",
        "fixed": {"dataset": "digits", "arch": "lenet300", "method": "imp", "val_fraction": 0.1},
        "search": {
            "tweaks": {"choice": ["", "label-smoothing", "label-smoothing,distill,rescale-init"]},
            "activation": {"choice": ["relu", "swish", "gelu"]},
            "distill_temperature": {"float": [1.0, 5.0]},
        },
        "objectives": [{"metric": "val_acc", "mode": "max"}],
    }
    check_spec(parse_spec(space))
    space["search"]["tweaks"]["choice"].append("dropout")
    with pytest.raises(ConfigError, match="tweaks: unknown 'dropout'"):
        check_spec(parse_spec(space))
