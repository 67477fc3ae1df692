"""A mask is one boolean tensor per prunable weight tensor, plus a few pure functions over masks.

``Mask`` is an ordered, checked value: every entry is a CPU ``torch.bool`` tensor, keys keep the model's
parameter order, and the functions here (density, intersection, vote, overlap) never mutate their inputs.
Inside a process masks are ``{name: numpy bool array}`` too (``to_numpy``/``from_numpy``); between processes
they travel at one bit per weight as a ``PackedMask`` (``pack_mask``/``unpack_mask``), and files store them
packed per tensor (``packed``/``from_packed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


class Mask:
    """An ordered mapping ``parameter name -> bool tensor`` (True = weight kept)."""

    __slots__ = ("_t",)

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        t: dict[str, torch.Tensor] = {}
        for name, v in tensors.items():
            v = torch.as_tensor(v)
            if v.dtype != torch.bool:
                if not bool(((v == 0) | (v == 1)).all()):
                    raise ValueError(f"mask entry {name!r} holds values other than 0 and 1")
                v = v.to(torch.bool)
            t[name] = v.detach().to("cpu").contiguous()
        self._t = t

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, tensors: Mapping[str, torch.Tensor]) -> Mask:
        return cls({n: torch.ones(v.shape, dtype=torch.bool) for n, v in tensors.items()})

    @classmethod
    def from_numpy(cls, arrays: Mapping[str, np.ndarray]) -> Mask:
        return cls({n: torch.from_numpy(np.asarray(a, dtype=bool).copy()) for n, a in arrays.items()})

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {n: v.numpy().copy() for n, v in self._t.items()}

    def packed(self) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
        """The mask at one bit per weight, for files: ``({name: uint8 array}, {name: shape})``."""
        return {n: np.packbits(v.numpy().ravel()) for n, v in self._t.items()}, {
            n: list(v.shape) for n, v in self._t.items()
        }

    @classmethod
    def from_packed(cls, bits: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]]) -> Mask:
        """The inverse of :meth:`packed` (names in the order of ``shapes``)."""
        out = {}
        for n, shape in shapes.items():
            count = int(np.prod(shape)) if len(shape) else 1
            flat = np.unpackbits(np.asarray(bits[n], dtype=np.uint8), count=count)
            out[n] = torch.from_numpy(flat.astype(bool).reshape(tuple(shape)))
        return cls(out)

    # ---- mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def names(self) -> list[str]:
        return list(self._t)

    def items(self):
        return self._t.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or self.names() != other.names():
            return False
        return all(torch.equal(self[n], other[n]) for n in self)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, sparsity={self.sparsity():.4f})"

    # ---- checks -----------------------------------------------------------------------------------
    def check_like(self, other: Mask | Mapping[str, torch.Tensor]) -> None:
        """Raise ValueError unless ``other`` has the same names (in order) and shapes."""
        names = list(other.keys()) if not isinstance(other, Mask) else other.names()
        if names != self.names():
            missing = sorted(set(self.names()) ^ set(names))
            raise ValueError(f"mask names differ: {missing[:5]}")
        for n in self:
            if tuple(self[n].shape) != tuple(other[n].shape):
                raise ValueError(f"mask entry {n!r} has shape {tuple(other[n].shape)}, expected {tuple(self[n].shape)}")

    def check_subset_of(self, previous: Mask) -> None:
        """Raise ValueError if any weight pruned in ``previous`` is kept here (a pruned weight never returns)."""
        previous.check_like(self)
        for n in self:
            if bool((self[n] & ~previous[n]).any()):
                raise ValueError(f"mask entry {n!r} revives weights pruned earlier")

    # ---- measures ---------------------------------------------------------------------------------
    def numel(self, names: Iterable[str] | None = None) -> int:
        return sum(self[n].numel() for n in (self if names is None else names))

    def kept(self, names: Iterable[str] | None = None) -> int:
        return sum(int(self[n].sum()) for n in (self if names is None else names))

    def sparsity(self, names: Iterable[str] | None = None) -> float:
        """Fraction of pruned weights over ``names`` (default: all tensors); 0.0 over an empty set."""
        names = list(self if names is None else names)
        total = self.numel(names)
        return 0.0 if total == 0 else 1.0 - self.kept(names) / total

    def density(self) -> dict[str, float]:
        """Per-tensor fraction of kept weights."""
        return {n: float(v.sum()) / v.numel() for n, v in self.items()}


@dataclass(frozen=True, eq=False)
class PackedMask:
    """A mask at one bit per weight, for sending to another process: every entry flattened and concatenated in
    name order, then ``numpy.packbits``-ed into one uint8 array, with the names and shapes that undo it."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    bits: np.ndarray  # uint8, ceil(numel / 8) bytes

    @property
    def numel(self) -> int:
        return sum(_size(shape) for _, shape in self.shapes)


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def pack_mask(arrays: Mapping[str, np.ndarray | torch.Tensor]) -> PackedMask:
    """``arrays`` (``{name: bool or 0/1 array}``, a ``Mask`` too) at one bit per weight; ValueError for values
    other than 0 and 1."""
    flat = []
    for name in arrays:
        a = np.asarray(arrays[name])
        if a.dtype != np.bool_:
            if not bool(((a == 0) | (a == 1)).all()):
                raise ValueError(f"mask entry {name!r} holds values other than 0 and 1")
            a = a.astype(bool)
        flat.append(a.ravel())
    shapes = tuple((name, tuple(int(s) for s in np.shape(arrays[name]))) for name in arrays)
    bits = np.packbits(np.concatenate(flat)) if flat else np.zeros(0, np.uint8)
    return PackedMask(shapes, bits)


def unpack_mask(packed: PackedMask) -> dict[str, np.ndarray]:
    """The ``{name: numpy bool array}`` that ``pack_mask`` packed, names in their order; ValueError when the
    bits do not match the shapes."""
    total = packed.numel
    bits = np.asarray(packed.bits)
    if bits.dtype != np.uint8 or bits.ndim != 1 or bits.size != (total + 7) // 8:
        raise ValueError(f"a packed mask of {total} weights needs {(total + 7) // 8} uint8 bytes, got {bits.size}")
    flat = np.unpackbits(bits, count=total).astype(bool)
    out, start = {}, 0
    for name, shape in packed.shapes:
        size = _size(shape)
        out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def intersect(masks: Sequence[Mask]) -> Mask:
    """Keep a weight only if every mask keeps it (COLT's AND)."""
    return vote(masks, len(masks))


def vote(masks: Sequence[Mask], v: int) -> Mask:
    """Keep a weight if at least ``v`` of the masks keep it (v = len(masks) is the AND, v = 1 the OR)."""
    if not masks:
        raise ValueError("vote needs at least one mask")
    if not 1 <= v <= len(masks):
        raise ValueError(f"vote threshold must be in [1, {len(masks)}], got {v}")
    first = masks[0]
    for m in masks[1:]:
        first.check_like(m)
    out = {}
    for n in first:
        count = torch.stack([m[n] for m in masks]).sum(0, dtype=torch.int32)
        out[n] = count >= v
    return Mask(out)


def jaccard(masks: Sequence[Mask], names: Iterable[str] | None = None) -> float:
    """|AND| / |OR| of the kept weights over ``names`` (1.0 when all masks agree; 1.0 if nothing is kept)."""
    names = list(masks[0] if names is None else names)
    inter = union = 0
    for n in names:
        stack = torch.stack([m[n] for m in masks])
        inter += int(stack.all(0).sum())
        union += int(stack.any(0).sum())
    return 1.0 if union == 0 else inter / union


def layer_overlap(masks: Sequence[Mask]) -> dict[str, float]:
    """Per-tensor Jaccard index across the masks."""
    return {n: jaccard(masks, [n]) for n in masks[0]}
