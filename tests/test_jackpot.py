"""Lottery jackpots (ALGORITHMS.md section 4): frozen weights, per-layer budgets, the reference's start scores
and matched-swap rule, BatchNorm statistics of the sparse network, the method's records, pre-trained files and
bad input."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from colt_ray.cli import main
from colt_ray.core.config import (
    DataConfig,
    JackpotConfig,
    ModelConfig,
    PruneConfig,
    RecipeConfig,
    RunConfig,
    TicketConfig,
)
from colt_ray.core.data import Preprocess
from colt_ray.core.models import build_model
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.seeds import generator
from colt_ray.core.tickets.jackpot import (
    JackpotNet,
    first_order_swaps,
    initial_scores,
    matched_swaps,
    search_jackpot,
    topk_mask,
)
from colt_ray.core.tickets.search import make_full_trainer, prepare, run_local
from colt_ray.core.tickets.trainer import state_to_numpy

# The reference's start scores are 1 and 0.99: at its lr 0.1 a mask needs many steps to move, more than one epoch
# of the tiny data here (23 steps), so the tests search with a larger score lr.
SCORE_LR = 1.0


def jackpot_cfg(
    search_epochs=1, sparsity=0.8, budget="global", arch="lenet300", score_lr=SCORE_LR, **jackpot
) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(arch),
        recipe=RecipeConfig(epochs=1, batch_size=64),
        prune=PruneConfig(budget=budget),
        ticket=TicketConfig(method="jackpot", target_sparsity=sparsity),
        jackpot=JackpotConfig(search_epochs=search_epochs, score_lr=score_lr, **jackpot),
    ).replace(resources=dataclasses.replace(RunConfig().resources, progress=False))


@pytest.fixture(scope="module")
def pretrained():
    """A dense lenet300 trained one epoch on digits: (config, trainer, trained state)."""
    cfg = jackpot_cfg()
    prepared = prepare(cfg)
    full = make_full_trainer(cfg, prepared.bundle)  # the jackpot's trainer: cycle 0 captures the trained state
    out = full.run(prepared.ctx.theta0, None, 0, False)
    return cfg, full.trainer, out.captured


def magnitude_mask(trainer, sparsity, budget):
    return prune(magnitude_scores(trainer.weights()), Mask.ones_like(trainer.weights()), sparsity, budget)


def search(cfg, trainer, state, start):
    trainer.load(state)
    return search_jackpot(trainer.model, trainer.bundle, cfg, start, generator=generator(0, "test"))


# ---- selection rules, by hand -----------------------------------------------------------------------


def test_topk_keeps_the_highest_scores_and_the_higher_index_on_ties():
    scores = torch.tensor([[0.5, 0.1, 0.5], [0.9, 0.1, 0.2]])
    assert topk_mask(scores, 2).tolist() == [[False, False, True], [True, False, False]]  # 0.5 tie: index 2 wins
    assert topk_mask(scores, 3).tolist() == [[True, False, True], [True, False, False]]
    assert topk_mask(scores, 5).tolist() == [[True, False, True], [True, True, True]]  # 0.1 tie: index 4 wins
    assert not topk_mask(scores, 0).any()


def test_topk_agrees_with_a_stable_sort_on_heavily_tied_scores():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 50):
        scores = torch.randint(0, 4, (n,), generator=g).float()
        for k in range(n + 1):
            reference = torch.zeros(n, dtype=torch.bool)
            reference[torch.sort(scores, stable=True).indices[n - k :]] = True
            assert torch.equal(topk_mask(scores, k), reference), (scores, k)


def test_scores_start_at_one_for_kept_and_0_99_for_pruned_weights_and_select_the_start_mask():
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.1, -0.5, 0.2], [0.4, -0.05, 0.3]]))
    weights = {"0.weight": net[0].weight}
    start = prune(magnitude_scores(weights), Mask.ones_like(weights), 0.5, "global")
    assert start["0.weight"].tolist() == [[False, True, False], [True, False, True]]  # |w| 0.5, 0.4, 0.3 kept
    jp = JackpotNet(net, start)
    assert jp.scores[0].flatten().tolist() == pytest.approx([0.99, 1.0, 0.99, 1.0, 0.99, 1.0])
    assert torch.equal(initial_scores(start["0.weight"]), jp.scores[0].detach())
    assert torch.equal(topk_mask(jp.scores[0], 3), start["0.weight"])  # the search starts at the magnitude mask


def test_short_restriction_swaps_to_the_top_k_only_when_as_many_enter_as_leave():
    old = torch.tensor([True, True, False, False, False])  # k = 2 kept, 3 pruned: threshold = 3rd smallest score
    # threshold 0.3: weight 2 (0.9) enters, weight 1 (0.1) leaves; one each -> swapped, = the top-2
    scores = torch.tensor([0.5, 0.1, 0.9, 0.2, 0.3])
    assert matched_swaps(old, scores, 2).tolist() == [True, False, True, False, False]
    assert torch.equal(matched_swaps(old, scores, 2), topk_mask(scores, 2))
    # a tie across the boundary (3rd and 4th smallest both 0.3): one would enter (weight 2), two leave (0, 1):
    # the counts differ, so the mask stays; plain top-k would break the tie by index instead
    scores = torch.tensor([0.3, 0.1, 0.9, 0.3, 0.2])
    assert matched_swaps(old, scores, 2).tolist() == old.tolist()
    assert topk_mask(scores, 2).tolist() == [False, False, True, True, False]
    # nobody crosses the threshold; a layer kept whole or pruned whole never changes
    assert matched_swaps(old, torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3]), 2).tolist() == old.tolist()
    assert matched_swaps(torch.ones(3, dtype=torch.bool), torch.tensor([0.1, 0.5, 0.2]), 3).all()
    assert not matched_swaps(torch.zeros(3, dtype=torch.bool), torch.tensor([0.1, 0.5, 0.2]), 0).any()
    # shape is kept
    assert matched_swaps(old.view(1, 5), scores.view(1, 5), 2).shape == (1, 5)


def test_first_order_swaps_accept_only_matched_swaps_that_lower_the_loss():
    old = torch.tensor([True, True, False, False])
    new = torch.tensor([False, False, True, True])  # weights 0, 1 leave; 2, 3 enter
    grad = torch.tensor([0.1, -0.5, -0.3, 0.2])
    # best pair: enter 2 (-0.3) with leave 0 (-0.1): -0.2 < 0 accepted; enter 3 (0.2) with leave 1 (+0.5): rejected
    assert first_order_swaps(old, new, grad).tolist() == [False, True, True, False]
    assert first_order_swaps(old, old, grad).tolist() == old.tolist()


def test_batchnorm_running_stats_follow_the_sparse_network_in_train_mode_with_frozen_affine():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.1, -0.5, 0.2], [0.4, -0.05, 0.3]]))
        net[1].weight.fill_(2.0)
        net[1].bias.fill_(0.5)
    start = Mask({"0.weight": torch.tensor([[False, True, False], [True, False, True]])})
    jp = JackpotNet(net, start).train()
    assert net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0], [2.0, 0.5, -1.0], [1.0, 1.0, 1.0]])
    jp(x).sum().backward()
    h = x @ (net[0].weight * start["0.weight"]).T  # the sparse layer's output, by hand
    bn = net[1]
    assert torch.allclose(bn.running_mean, 0.1 * h.mean(0))  # momentum 0.1 from the initial 0
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * h.var(0, unbiased=True))  # from the initial 1
    assert bn.weight.tolist() == [2.0, 2.0] and bn.bias.tolist() == [0.5, 0.5] and bn.weight.grad is None
    assert jp.scores[0].grad is not None
    jp.eval()  # eval mode: the statistics just collected normalise
    assert not net.training
    expected = net[2]((h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * 2.0 + 0.5)
    assert torch.allclose(jp(x), expected)


# ---- the search ---------------------------------------------------------------------------------------


def test_search_leaves_the_pretrained_weights_bit_identical_and_keeps_each_layers_budget(pretrained):
    cfg, trainer, state = pretrained
    trainer.load(state)
    start = magnitude_mask(trainer, 0.8, "global")
    found, result = search(cfg, trainer, state, start)
    after = state_to_numpy(trainer.model)
    assert all(np.array_equal(after[k], v) for k, v in state.items())
    assert all(p.requires_grad for p in trainer.model.parameters())  # handed back trainable
    assert {n: int(found[n].sum()) for n in found} == {n: int(start[n].sum()) for n in start}
    assert found.sparsity() == pytest.approx(0.8, abs=1e-6)
    assert found != start and result.sample_epochs == len(trainer.bundle.train)


def test_layerwise_budget_gives_the_requested_sparsity_in_every_layer(pretrained):
    cfg, trainer, state = pretrained
    cfg = cfg.replace(prune=PruneConfig(budget="layerwise"))
    trainer.load(state)
    found, _ = search(cfg, trainer, state, magnitude_mask(trainer, 0.9, "layerwise"))
    for name, density in found.density().items():
        assert density == pytest.approx(0.1, abs=1.0 / found[name].numel()), name


@pytest.mark.parametrize("budget", ["global", "layerwise"])
def test_zero_search_epochs_give_exactly_the_magnitude_mask(pretrained, budget):
    cfg, trainer, state = pretrained
    cfg = cfg.replace(jackpot=dataclasses.replace(cfg.jackpot, search_epochs=0), prune=PruneConfig(budget=budget))
    trainer.load(state)
    start = magnitude_mask(trainer, 0.9, budget)
    found, _ = search(cfg, trainer, state, start)
    assert found == start
    # the start scores (1 kept, 0.99 pruned) select that same mask from the per-layer budgets alone
    tops = {n: topk_mask(initial_scores(start[n]), int(start[n].sum())) for n in start}
    assert Mask(tops) == start


SHORT, FIRST_ORDER = {"short_restriction": True}, {"first_order_swaps": True}


@pytest.mark.parametrize("rule", [SHORT, FIRST_ORDER, {**SHORT, **FIRST_ORDER}], ids=["short", "first-order", "both"])
def test_swap_rules_keep_the_budgets(pretrained, rule):
    cfg, trainer, state = pretrained
    cfg = cfg.replace(jackpot=dataclasses.replace(cfg.jackpot, **rule))
    trainer.load(state)
    start = magnitude_mask(trainer, 0.8, "global")
    found, _ = search(cfg, trainer, state, start)
    assert {n: int(found[n].sum()) for n in found} == {n: int(start[n].sum()) for n in start}
    assert found != start  # the rule lets the mask move


# ---- BatchNorm: the jackpot's statistics are the sparse network's ---------------------------------------


def accuracy_of(state, mask, bundle, arch):
    """Test accuracy of ``state`` with the weights ``mask`` prunes set to 0, in eval mode (running stats)."""
    model = build_model(arch, bundle.in_shape, bundle.num_classes, seed=0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in mask:
                p.mul_(mask[n])
        logits = model.eval()(Preprocess(bundle.mean, bundle.std, None)(bundle.test.x))
    return int((logits.argmax(1) == bundle.test.y).sum()) / len(bundle.test)


def test_search_collects_the_sparse_networks_batchnorm_stats_and_the_evaluation_uses_them():
    cfg = jackpot_cfg(search_epochs=1, sparsity=0.95, arch="conv3")
    prepared = prepare(cfg)
    full = make_full_trainer(cfg, prepared.bundle)
    dense = full.run(prepared.ctx.theta0, None, 0, True)
    theta, start = dense.captured, Mask.from_numpy(dense.mask)
    out = full.run(theta, start, 1, False)
    searched, found = out.captured, Mask.from_numpy(out.mask)
    stats = [k for k in theta if "running_" in k or "num_batches_tracked" in k]
    assert len(stats) == 9  # three BatchNorm layers: mean, var and batch count each
    for k, v in theta.items():  # weights and BatchNorm affine bit-identical, running statistics moved
        assert np.array_equal(searched[k], v) != (k in stats), k
    assert {n: int(found[n].sum()) for n in found} == {n: int(start[n].sum()) for n in start}
    assert found.sparsity() == pytest.approx(0.95, abs=1e-5) and found != start
    # the evaluated model holds the searched statistics, and its pruned weights are exactly zero
    model_state = full.model.state_dict()
    assert all(np.array_equal(model_state[k].numpy(), searched[k]) for k in stats)
    params = dict(full.model.named_parameters())
    assert all(bool((params[n][~found[n]] == 0).all()) for n in found)
    # the reported accuracy is that of the frozen weights under the jackpot with the searched statistics
    bundle = prepared.bundle
    acc = accuracy_of(searched, found, bundle, "conv3")
    assert out.metrics["acc_best"] == out.metrics["acc_final"] == acc
    # with the dense network's statistics (the old behaviour) the same 95%-sparse network is far worse
    assert accuracy_of(theta, found, bundle, "conv3") < acc - 0.3


def test_jackpot_ticket_record_holds_the_searched_batchnorm_stats_and_reproduces_its_accuracy():
    cfg = jackpot_cfg(search_epochs=1, sparsity=0.95, arch="conv3")
    records = []
    prepared = prepare(cfg)
    run_local(prepared, records.append)
    jackpot = records[1]
    acc = accuracy_of(jackpot.theta, jackpot.mask, prepared.bundle, "conv3")
    assert jackpot.ticket_row["acc_best"] == acc
    assert not np.array_equal(jackpot.theta["features.1.running_mean"], records[0].theta["features.1.running_mean"])


# ---- the method ---------------------------------------------------------------------------------------


def test_jackpot_run_records_the_dense_model_then_the_jackpot_evaluated_without_training():
    cfg = jackpot_cfg(search_epochs=1, sparsity=0.8)
    records = []
    prepared = prepare(cfg)
    run_local(prepared, records.append)
    assert [r.cycle for r in records] == [0, 1] and records[1].done
    dense, jackpot = records
    assert dense.mask.sparsity() == 0.0 and jackpot.mask.sparsity() == pytest.approx(0.8, abs=1e-6)
    assert all(np.array_equal(jackpot.theta[k], v) for k, v in dense.theta.items())  # frozen
    assert not np.array_equal(dense.theta["layers.1.weight"], prepared.ctx.theta0["layers.1.weight"])  # pre-trained
    # the jackpot's accuracy is that of the frozen weights under the mask
    model = build_model("lenet300", prepared.bundle.in_shape, 10, seed=0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in jackpot.theta.items()})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in jackpot.mask:
                p.mul_(jackpot.mask[n])

    b = prepared.bundle
    acc = int((model.eval()(Preprocess(b.mean, b.std, None)(b.test.x)).argmax(1) == b.test.y).sum()) / len(b.test)
    row = jackpot.ticket_row
    assert row["acc_best"] == row["acc_final"] == acc
    assert row["sample_epochs"] == len(b.train)  # one search epoch, no weight training


def test_pretrained_state_dict_file_is_used_as_is_and_a_jackpot_ticket_file_too(tmp_path):
    model = build_model("lenet300", (1, 8, 8), 10, seed=7)
    path = tmp_path / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    cfg = jackpot_cfg(search_epochs=0, pretrained=str(path))
    records = []
    run_local(prepare(cfg), records.append)
    assert all(np.array_equal(records[0].theta[k], v.numpy()) for k, v in model.state_dict().items())
    assert records[0].ticket_row["sample_epochs"] == 0  # --pretrained: no dense training unless asked
    out = tmp_path / "out"
    assert (
        main(
            [
                "ticket",
                "--method",
                "jackpot",
                "--arch",
                "lenet300",
                "--pretrained",
                str(path),
                "--search-epochs",
                "1",
                "--target-sparsity",
                "0.5",
                "--out",
                str(out),
                "--backend",
                "local",
                "--no-progress",
            ]
        )
        == 0
    )
    ticket0 = next((out / "tickets").glob("*/cycle-0000.safetensors"))
    again = []
    run_local(prepare(jackpot_cfg(search_epochs=0, pretrained=str(ticket0))), again.append)
    assert all(np.array_equal(again[0].theta[k], v.numpy()) for k, v in model.state_dict().items())
    runs = pd.read_parquet(out / "runs")
    assert runs.method.item() == "jackpot" and runs.final_sparsity.item() == pytest.approx(0.5, abs=1e-6)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conv2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "conv2.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build_model("conv2", (1, 8, 8), 10, seed=0).state_dict().items()}, str(path)
    )
    return path


BAD = [
    (["--target-sparsity", "1.0"], "target-sparsity: must be in (0, 1)"),
    (["--target-sparsity", "0"], "target-sparsity: must be in (0, 1)"),
    (
        ["--pretrained", "{conv2}", "--arch", "lenet300"],
        "pretrained: {conv2} does not match arch lenet300: it lacks tensor",
    ),
    (["--pretrained", "/no/such.safetensors"], "pretrained: no such file /no/such.safetensors"),
    (["--search-epochs", "-1"], "search-epochs: must be >= 0"),
    (["--prune-rate", "0.5"], "prune-rate: jackpot prunes once, to --target-sparsity"),
    (["--tweaks", "distill"], "tweaks: retraining tweaks apply when a ticket is retrained; a jackpot never"),
    (["--activation", "swish"], "activation: retraining tweaks apply when a ticket is retrained; a jackpot never"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_jackpot_input_is_one_line_exit_2_and_writes_nothing(extra, message, conv2_file, tmp_path, capsys):
    out = tmp_path / "out"
    extra = [e.replace("{conv2}", str(conv2_file)) for e in extra]
    argv = [
        "ticket",
        "--method",
        "jackpot",
        "--out",
        str(out),
        "--dataset",
        "digits",
        "--backend",
        "local",
        "--no-progress",
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colt-ray: error: ") and "\n" not in err
    assert message.replace("{conv2}", str(conv2_file)) in err
    assert not out.exists()


def test_pretrained_file_with_another_class_count_is_refused(tmp_path, capsys):
    path = tmp_path / "five.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build_model("lenet300", (1, 8, 8), 5, seed=0).state_dict().items()}, str(path)
    )
    out = tmp_path / "out"
    assert (
        main(["ticket", "--method", "jackpot", "--arch", "lenet300", "--pretrained", str(path), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert "tensor fc.weight has shape (5, 100), the model needs (10, 100)" in err and err.count("\n") == 1
    assert not out.exists()


def test_jackpot_settings_need_the_jackpot_method(tmp_path, capsys):
    assert main(["ticket", "--method", "imp", "--search-epochs", "3", "--out", str(tmp_path / "o")]) == 2
    assert "search-epochs: is a jackpot setting; use it with --method jackpot" in capsys.readouterr().err
