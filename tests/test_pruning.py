"""Masks and magnitude pruning, checked by hand on small tensors and against torch.nn.utils.prune."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from colt_ray.core.pruning import (
    Mask,
    PackedMask,
    intersect,
    jaccard,
    layer_overlap,
    magnitude_scores,
    pack_mask,
    unpack_mask,
    vote,
)
from colt_ray.core.pruning import prune as prune_scores


def prune(weights, mask, fraction, budget="global"):
    return prune_scores(magnitude_scores(weights), mask, fraction, budget)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_global_prune_of_3x3_removes_the_smallest_magnitudes_by_hand():
    w = {"a": _t([[0.9, -0.1, 0.5], [0.05, -2.0, 0.3], [0.7, 0.2, -0.4]])}
    m = prune(w, Mask.ones_like(w), fraction=1 / 3)  # 3 of 9 go: 0.05, -0.1, 0.2
    expected = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 0, 1]], dtype=torch.bool)
    assert torch.equal(m["a"], expected)


def test_global_budget_shares_one_threshold_across_tensors():
    w = {"a": _t([1.0, 2.0, 3.0, 4.0]), "b": _t([0.1, 0.2, 5.0, 6.0])}
    m = prune(w, Mask.ones_like(w), fraction=0.5)  # 4 of 8: 0.1, 0.2, 1.0, 2.0
    assert m["a"].tolist() == [False, False, True, True]
    assert m["b"].tolist() == [False, False, True, True]


def test_layerwise_budget_prunes_the_same_fraction_of_every_tensor():
    w = {"a": _t([1.0, 2.0, 3.0, 4.0]), "b": _t([10.0, 20.0, 30.0, 40.0])}
    m = prune(w, Mask.ones_like(w), fraction=0.25, budget="layerwise")
    assert m["a"].tolist() == [False, True, True, True]
    assert m["b"].tolist() == [False, True, True, True]


def test_fraction_counts_only_surviving_weights_and_pruned_never_revive():
    w = {"a": _t([0.0, 0.0, 3.0, 1.0, 2.0, 4.0])}
    prev = Mask({"a": torch.tensor([0, 0, 1, 1, 1, 1], dtype=torch.bool)})
    # revived candidates with tiny score must not come back; 0.5 of the 4 survivors = 2 pruned: 1.0, 2.0
    m = prune({"a": _t([9.0, 9.0, 3.0, 1.0, 2.0, 4.0])}, prev, fraction=0.5)
    assert m["a"].tolist() == [False, False, True, False, False, True]
    m.check_subset_of(prev)
    assert prune(w, prev, 0.5)["a"].tolist() == m["a"].tolist()


def test_ties_are_broken_by_tensor_order_then_flat_index():
    w = {"a": _t([1.0, 1.0, 1.0]), "b": _t([1.0, 1.0, 1.0])}
    m = prune(w, Mask.ones_like(w), fraction=0.5)
    assert m["a"].tolist() == [False, False, False]
    assert m["b"].tolist() == [True, True, True]
    again = prune(w, Mask.ones_like(w), fraction=0.5)
    assert m == again


def test_global_prune_equals_torch_global_unstructured_l1_over_two_rounds():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    params = [(net[0], "weight"), (net[2], "weight")]
    weights = {"0.weight": net[0].weight.detach().clone(), "2.weight": net[2].weight.detach().clone()}
    ours = Mask.ones_like(weights)
    for amount in (0.2, 0.35):
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
        ours = prune(weights, ours, amount)
        assert torch.equal(ours["0.weight"], net[0].weight_mask.bool())
        assert torch.equal(ours["2.weight"], net[2].weight_mask.bool())


def test_intersection_vote_and_overlap_by_hand():
    a = Mask({"w": torch.tensor([1, 1, 0, 1], dtype=torch.bool)})
    b = Mask({"w": torch.tensor([1, 0, 0, 1], dtype=torch.bool)})
    c = Mask({"w": torch.tensor([0, 1, 1, 1], dtype=torch.bool)})
    assert intersect([a, b, c])["w"].tolist() == [False, False, False, True]
    assert vote([a, b, c], 2)["w"].tolist() == [True, True, False, True]
    assert vote([a, b, c], 1)["w"].tolist() == [True, True, True, True]
    assert jaccard([a, b]) == pytest.approx(2 / 3)
    assert layer_overlap([a, c]) == {"w": pytest.approx(2 / 4)}


def test_sparsity_density_and_numpy_round_trip():
    m = Mask({"x": torch.tensor([[1, 0], [0, 0]]), "y": torch.tensor([1, 1, 1, 0])})
    assert m.sparsity() == pytest.approx(4 / 8)
    assert m.sparsity(["x"]) == pytest.approx(3 / 4)
    assert m.density() == {"x": 0.25, "y": 0.75}
    assert Mask.from_numpy(m.to_numpy()) == m


def test_bad_masks_are_rejected():
    with pytest.raises(ValueError, match="other than 0 and 1"):
        Mask({"x": torch.tensor([0.0, 0.5])})
    a = Mask({"x": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        a.check_like(Mask({"x": torch.ones(4, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="revives"):
        a.check_subset_of(Mask({"x": torch.tensor([1, 0, 1], dtype=torch.bool)}))
    with pytest.raises(ValueError, match="vote threshold"):
        vote([a, a], 3)


def test_a_mask_packs_to_one_bit_per_weight_and_back_by_hand():
    m = Mask(
        {
            "a": torch.tensor([[True, False, True], [False, False, True]]),  # 6 weights: 101001 00 -> 0b10100100
            "b": torch.ones(9, dtype=torch.bool),  # 9 weights: two bytes, the last 7 bits padding
        }
    )
    bits, shapes = m.packed()
    assert bits["a"].tolist() == [0b10100100] and bits["b"].tolist() == [255, 0b10000000]
    assert shapes == {"a": [2, 3], "b": [9]}
    back = Mask.from_packed(bits, shapes)
    assert back == m and back.names() == ["a", "b"]


def test_a_packed_mask_for_the_wire_is_one_bit_per_weight_by_hand():
    # 3 + 6 = 9 weights, one array: 101 | 110001 -> 0b10111000 0b1 (then 7 bits of padding)
    arrays = {"w": np.array([True, False, True]), "v": np.array([[1, 1, 0], [0, 0, 1]], dtype=np.uint8)}
    packed = pack_mask(arrays)
    assert packed.bits.tolist() == [0b10111000, 0b10000000] and packed.bits.dtype == np.uint8
    assert packed.shapes == (("w", (3,)), ("v", (2, 3))) and packed.numel == 9
    back = unpack_mask(packed)
    assert list(back) == ["w", "v"] and all(a.dtype == np.bool_ for a in back.values())
    assert back["w"].tolist() == [True, False, True] and back["v"].tolist() == [[1, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_masks_round_trip_on_odd_sizes_shapes_and_key_orders(seed):
    rng = np.random.default_rng(seed)
    shapes = {"z.bias": (7,), "a.weight": (3, 5, 1, 1), "scalar": (), "empty": (0, 4), "m.weight": (13, 11)}
    names = list(shapes)
    rng.shuffle(names)  # the order is the caller's, never sorted
    arrays = {n: rng.random(shapes[n]) < 0.3 for n in names}
    packed = pack_mask(arrays)
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert packed.bits.nbytes == (total + 7) // 8  # one bit per weight, one byte of padding at most
    back = unpack_mask(packed)
    assert list(back) == names
    assert all(back[n].shape == shapes[n] and np.array_equal(back[n], arrays[n]) for n in names)
    mask = Mask.from_numpy(arrays)
    assert Mask.from_numpy(unpack_mask(pack_mask(mask))) == mask  # a Mask packs the same as its arrays
    assert pack_mask(mask).bits.tolist() == packed.bits.tolist()


def test_bad_packed_masks_are_rejected_in_one_line():
    assert unpack_mask(pack_mask({})) == {}
    with pytest.raises(ValueError, match="other than 0 and 1"):
        pack_mask({"x": np.array([0, 2])})
    short = PackedMask((("x", (9,)),), np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="9 weights needs 2 uint8 bytes, got 1"):
        unpack_mask(short)
