"""Batch preprocessing on the training device: to float, optional random augmentation, normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from .bundle import AugmentSpec, DatasetBundle


def augment_batch(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Randomly rotate, crop and flip a float batch (N, C, H, W), each sample independently.

    Random numbers are drawn from ``generator`` on its own device (a CPU generator gives the same numbers
    whatever device ``x`` is on) in a fixed order, rotation angles, crop offsets, flip coins, and only for
    the active operations; the result is therefore fully determined by the generator state.
    Empty areas (outside the rotated image, padding) are 0, i.e. black in [0, 1] space.
    """
    n, _, h, w = x.shape
    gdev = generator.device
    if spec.rotation > 0:
        angle = (torch.rand(n, generator=generator, device=gdev, dtype=torch.float64) * 2 - 1) * spec.rotation
        rad = (angle * (math.pi / 180)).to(device=x.device)
        cos, sin = torch.cos(rad), torch.sin(rad)
        zero = torch.zeros_like(cos)
        # rotation in pixel space expressed in affine_grid's normalised coordinates (correct for H != W)
        theta = torch.stack(
            [torch.stack([cos, -sin * (h / w), zero], 1), torch.stack([sin * (w / h), cos, zero], 1)], 1
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = int(spec.crop_padding)
    if p > 0:
        offset = torch.randint(0, 2 * p + 1, (n, 2), generator=generator, device=gdev).to(x.device)
        padded = F.pad(x, (p, p, p, p))
        rows = (offset[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
        cols = (offset[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if spec.hflip:
        flip = (torch.rand(n, generator=generator, device=gdev) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class Preprocess:
    """Turns a raw batch into the model's input: to float (uint8 /255), optional augmentation, normalisation.

    The float is torch's default dtype: float32, unless ``torch.set_default_dtype`` changed it (the float64
    equivalence tests of the batched backend build their models and inputs that way).

    ``device``: if given, batches are moved there first (as uint8, the cheaper transfer); otherwise they stay
    where they are. Augmentation happens only when a generator is passed and ``augment`` is active.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Optional[AugmentSpec] = None,
        device=None,
    ):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels, std {len(self.std)}")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        self.augment = augment if augment is not None else AugmentSpec()
        self.device = torch.device(device) if device is not None else None
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_bundle(cls, bundle: DatasetBundle, augment: bool = True, device=None) -> Preprocess:
        """The bundle's normalisation, with its standard augmentation if ``augment``."""
        return cls(bundle.mean, bundle.std, bundle.augment if augment else None, device=device)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stats"] = {}  # device tensors are rebuilt where the object is used
        return state

    def _mean_std(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if (device, dtype) not in self._stats:
            shape = (1, len(self.mean), 1, 1)
            mean = torch.tensor(self.mean, dtype=dtype, device=device).view(shape)
            std = torch.tensor(self.std, dtype=dtype, device=device).view(shape)
            self._stats[device, dtype] = (mean, std)
        return self._stats[device, dtype]

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``x`` (N, C, H, W) uint8 or float in [0, 1] -> normalised float (the default dtype); ``x`` is never
        modified."""
        if x.ndim != 4 or x.shape[1] != len(self.mean):
            raise ValueError(f"expected a batch (N, {len(self.mean)}, H, W), got {tuple(x.shape)}")
        if self.device is not None and x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        dtype = torch.get_default_dtype()
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        if generator is not None and self.augment.active:
            x = augment_batch(x, self.augment, generator)
        mean, std = self._mean_std(x.device, dtype)
        return (x - mean) / std
