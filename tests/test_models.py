"""Model zoo: every arch builds and runs, fit checks, seeded determinism, heads and parameter groups."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from colt_ray.core import models as models_pkg
from colt_ray.core.errors import ConfigError
from colt_ray.core.models import (
    MODELS,
    BasicBlock,
    build_model,
    check_fits,
    head_module,
    param_groups,
    prunable_names,
    replace_head,
)

torch.set_num_threads(1)

ALL_ARCHS = [
    "conv2", "conv3", "conv4", "conv6", "lenet300", "mobilenetv2",
    "resnet18", "resnet20", "resnet34", "vgg16", "vgg19",
]  # fmt: skip
DATASET_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
CHEAP_AT_64 = ["lenet300", "conv3", "conv6", "resnet20"]


def logits(model: nn.Module, shape) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, *shape))


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_registry_holds_exactly_the_documented_archs():
    assert MODELS.names() == ALL_ARCHS
    for name in ALL_ARCHS:
        spec = MODELS.get(name)
        assert spec.name == name and spec.min_size >= 1 and spec.description


def _fitting_cases():
    for arch in ALL_ARCHS:
        for shape in DATASET_SHAPES:
            if shape[1] >= MODELS.get(arch).min_size:
                yield arch, shape
    for arch in CHEAP_AT_64:
        yield arch, (3, 64, 64)


@pytest.mark.parametrize("arch,shape", list(_fitting_cases()))
def test_arch_gives_logits_for_each_dataset_shape_it_fits(arch, shape):
    model = build_model(arch, shape, num_classes=7, seed=0)
    assert logits(model, shape).shape == (2, 7)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_arch_runs_a_training_mode_forward_at_its_min_size(arch):
    n = MODELS.get(arch).min_size
    model = build_model(arch, (3, n, n), num_classes=5, seed=0).train()
    out = model(torch.randn(2, 3, n, n))
    assert out.shape == (2, 5)
    out.sum().backward()


@pytest.mark.parametrize("arch", [a for a in ALL_ARCHS if MODELS.get(a).min_size > 1])
def test_arch_below_its_min_size_is_rejected(arch):
    n = MODELS.get(arch).min_size
    with pytest.raises(ConfigError, match=f"needs at least {n}x{n}"):
        check_fits(arch, (3, n - 1, n))


def test_vgg16_on_digits_raises_config_error_naming_arch_and_size():
    with pytest.raises(ConfigError) as err:
        build_model("vgg16", (1, 8, 8), num_classes=10, seed=0)
    assert err.value.field == "arch"
    assert str(err.value) == "arch: vgg16 does not fit input 1x8x8 of this dataset: needs at least 32x32"


def test_check_fits_passes_silently_when_the_input_is_big_enough():
    assert check_fits("vgg16", (3, 32, 32)) is None
    assert check_fits("lenet300", (1, 8, 8)) is None


def test_unknown_arch_raises_config_error_listing_valid_names():
    with pytest.raises(ConfigError) as err:
        build_model("alexnet", (3, 32, 32), num_classes=10, seed=0)
    assert err.value.field == "arch"
    assert "'alexnet'" in str(err.value)
    assert all(name in str(err.value) for name in ALL_ARCHS)


def test_same_seed_gives_bit_identical_parameters_and_different_seed_differs():
    a = build_model("resnet20", (3, 32, 32), 10, seed=3)
    b = build_model("resnet20", (3, 32, 32), 10, seed=3)
    c = build_model("resnet20", (3, 32, 32), 10, seed=4)
    assert params_equal(a, b)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_build_model_leaves_the_callers_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("conv2", (1, 8, 8), 10, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_replace_head_changes_outputs_is_seeded_and_leaves_the_body_alone():
    model = build_model("conv2", (1, 8, 8), 10, seed=0)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    replace_head(model, 3, seed=5)
    head = head_module(model)
    assert isinstance(head, nn.Linear) and head.out_features == 3 and head.in_features == 256
    assert logits(model, (1, 8, 8)).shape == (2, 3)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in body.items())

    twin = build_model("conv2", (1, 8, 8), 10, seed=0)
    replace_head(twin, 3, seed=5)
    assert torch.equal(head_module(twin).weight, head.weight) and torch.equal(head_module(twin).bias, head.bias)
    replace_head(twin, 3, seed=6)
    assert not torch.equal(head_module(twin).weight, head.weight)


def test_head_module_follows_head_name():
    model = build_model("lenet300", (1, 8, 8), 10, seed=0)
    assert model.head_name == "fc" and head_module(model) is model.fc


def test_lenet300_default_groups_are_the_two_hidden_linear_weights():
    model = build_model("lenet300", (1, 8, 8), 10, seed=0)
    groups = param_groups(model)
    assert list(groups) == [name for name, _ in model.named_parameters()]
    assert groups["fc.weight"] == "output" and groups["fc.bias"] == "bias"
    assert prunable_names(model, ("conv", "linear")) == ["layers.1.weight", "layers.3.weight"]
    assert prunable_names(model, ("linear", "output")) == ["layers.1.weight", "layers.3.weight", "fc.weight"]


def test_conv2_default_groups_are_conv_weights_and_hidden_linear_weights():
    model = build_model("conv2", (1, 8, 8), 10, seed=0)
    assert prunable_names(model, ("conv", "linear")) == [
        "features.0.weight", "features.2.weight", "classifier.0.weight", "classifier.2.weight",
    ]  # fmt: skip
    assert prunable_names(model, ["conv"]) == ["features.0.weight", "features.2.weight"]


def test_resnet20_groups_cover_shortcut_convs_and_batchnorm_gammas():
    model = build_model("resnet20", (3, 32, 32), 10, seed=0)
    groups = param_groups(model)
    assert groups["layer2.0.shortcut.0.weight"] == "conv"
    assert groups["layer2.0.shortcut.1.weight"] == "batchnorm"
    assert groups["bn1.bias"] == "bias"
    gammas = prunable_names(model, ["batchnorm"])
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(gammas) == len(bns) == 1 + 9 * 2 + 2
    assert all(name.endswith(".weight") and groups[name] == "batchnorm" for name in gammas)
    assert len(prunable_names(model, ["conv"])) == 1 + 9 * 2 + 2


def test_mobilenetv2_depthwise_convs_are_in_the_conv_group():
    model = build_model("mobilenetv2", (3, 8, 8), 10, seed=0)
    assert param_groups(model)["layers.0.conv2.weight"] == "conv"
    assert model.layers[0].conv2.groups == 32


def test_never_prune_module_is_skip_and_never_prunable():
    model = build_model("resnet20", (3, 32, 32), 10, seed=0)
    extra = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
    extra.never_prune = True
    model.layer1[0].extra = extra
    groups = param_groups(model)
    assert [groups[f"layer1.0.extra.{k}"] for k in ("0.weight", "0.bias", "1.weight", "1.bias")] == ["skip"] * 4
    every = prunable_names(model, ["conv", "linear", "output", "batchnorm", "bias", "skip"])
    assert not any(".extra." in name for name in every)
    assert "layer1.0.conv1.weight" in every and not any(groups[n] in ("bias", "skip") for n in every)


def test_groups_survive_torch_prune_and_parametrize_renaming():
    from torch.nn.utils import parametrize, prune

    model = build_model("conv2", (1, 8, 8), 10, seed=0)
    prune.identity(model.features[0], "weight")
    parametrize.register_parametrization(model.fc, "weight", nn.Identity())
    groups = param_groups(model)
    assert groups["features.0.weight_orig"] == "conv"
    assert groups["fc.parametrizations.weight.original"] == "output"


def test_unknown_group_is_a_config_error():
    model = build_model("lenet300", (1, 8, 8), 10, seed=0)
    with pytest.raises(ConfigError, match="valid: conv, linear, output, batchnorm"):
        prunable_names(model, ["convs"])


def test_resnet_blocks_expose_the_basic_block_layout():
    model = build_model("resnet20", (3, 32, 32), 10, seed=0)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    for b in blocks:
        assert isinstance(b.act1, nn.ReLU) and isinstance(b.act2, nn.ReLU) and isinstance(b.shortcut, nn.Sequential)
    assert len(model.layer1[0].shortcut) == 0
    assert [type(m) for m in model.layer2[0].shortcut] == [nn.Conv2d, nn.BatchNorm2d]


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_relu_is_a_module_that_forward_uses(arch):
    n = MODELS.get(arch).min_size
    model = build_model(arch, (3, n, n), 4, seed=0)
    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    called = set()
    for m in relus:
        m.register_forward_hook(lambda mod, inp, out: called.add(id(mod)))
    logits(model, (3, n, n))
    assert relus and called == {id(m) for m in relus}


def test_model_sources_use_no_functional_or_inplace_relu():
    for path in Path(models_pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "F.relu" not in text and "inplace=True" not in text and "relu_(" not in text, path.name


# ---- weight initialisation (--init) ---------------------------------------------------------------------
def _weights(init: str, seed: int = 3):
    from colt_ray.core.models import build_model

    model = build_model("lenet300", (1, 28, 28), 10, seed=seed, init=init)
    return {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform", "pytorch"])
def test_each_init_draws_every_layer_with_the_std_of_its_formula(init):
    """Per layer, on a fixed seed: mean ~ 0 and std against the formula (kaiming: sqrt(2 / fan_in), as open_lth's
    torch.nn.init defaults; pytorch: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)); kaiming_normal is Gaussian
    (|w| never bounded as the uniform ones are)."""
    for name, w in _weights(init).items():
        fan_in = w.shape[1]
        expected = math.sqrt(2 / fan_in) if init != "pytorch" else 1 / math.sqrt(3 * fan_in)
        assert abs(float(w.mean())) < 4 * expected / math.sqrt(w.numel()), name
        assert float(w.std()) == pytest.approx(expected, rel=0.1 if w.numel() < 5000 else 0.02), name
        bound = float(w.abs().max()) / expected
        assert (bound > 2.5) if init == "kaiming_normal" else (bound <= math.sqrt(3) + 1e-6), (name, bound)


def test_orthogonal_and_binary_inits_and_the_default_is_the_layers_own():
    for name, w in _weights("orthogonal").items():
        rows = w.reshape(w.shape[0], -1)
        small = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
        assert torch.allclose(small, torch.eye(small.shape[0]), atol=1e-4), name
    for name, w in _weights("binary").items():
        assert torch.unique(w.abs()).numel() == 1, name  # sign(w) x the layer's std
    from colt_ray.core.models import build_model

    plain = build_model("lenet300", (1, 28, 28), 10, seed=3).state_dict()
    named = build_model("lenet300", (1, 28, 28), 10, seed=3, init="pytorch").state_dict()
    assert all(torch.equal(plain[k], named[k]) for k in plain)
    assert not torch.equal(_weights("kaiming_normal")["layers.1"], _weights("pytorch")["layers.1"])
    assert torch.equal(
        _weights("kaiming_normal", 5)["layers.1"], _weights("kaiming_normal", 5)["layers.1"]
    )  # same seed


def test_init_is_a_setting_in_the_run_id_and_a_bad_name_lists_the_valid_ones():
    from colt_ray.core.config import ModelConfig, RunConfig, validate
    from colt_ray.core.errors import ConfigError

    assert RunConfig().run_id() == RunConfig(model=ModelConfig(init="pytorch")).run_id()  # old ids stay
    assert RunConfig(model=ModelConfig(init="kaiming_normal")).run_id() != RunConfig().run_id()
    with pytest.raises(ConfigError, match="init: unknown 'xavier'; valid: pytorch, kaiming_normal"):
        validate(RunConfig(model=ModelConfig(init="xavier")))
