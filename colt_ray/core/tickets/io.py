"""Ticket and weight files, in safetensors (no unpickling on load): every file the core reads or writes.

A ticket file holds the rewind point and the mask of one cycle (``save_ticket``/``load_ticket``);
``load_weights`` reads pre-trained weights for a model (a plain state dict, or a ticket's theta).

Keys are ``theta/<state name>`` (every tensor of the model state, float and buffers) and ``mask/<param>``
(bool). Metadata (strings) records the architecture, input shape, class count, dataset, run and cycle, so
a ticket can be checked against the model it is loaded into before any tensor is touched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from colt_ray.core.errors import ConfigError
from colt_ray.core.pruning import Mask

FORMAT = "colt_ray.ticket/2"  # masks at one bit per weight (``maskbits/<param>`` + shapes in the metadata)
FORMATS = ("colt_ray.ticket/1", FORMAT)  # /1 (bool masks, ``mask/<param>``) is still read
THETA_FORMAT = "colt_ray.theta/1"  # a run's theta_0, stored once (``tickets/<run_id>/theta0.safetensors``)
THETA0_FILE = "theta0.safetensors"
ReadSibling = Callable[[str], bytes]  # a file name in the ticket's directory -> its bytes


@dataclass
class Ticket:
    theta: dict[str, np.ndarray]
    mask: Mask
    meta: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["in_shape"])  # type: ignore[return-value]


def ticket_bytes(
    theta: Mapping[str, np.ndarray], mask: Mask, meta: Mapping[str, Any], theta_ref: Optional[str] = None
) -> bytes:
    """A ticket file's bytes (safetensors): written by the caller wherever its results live (a local file,
    or an object store through ``colt_ray.results.writer.write_bytes_atomic``). With ``theta_ref`` (a file
    name in the ticket's directory, the run's ``theta0.safetensors``) the weights are not repeated: the file
    holds the mask and names the file that holds its rewind point (``theta_file_bytes``)."""
    from safetensors.torch import save

    tensors = {} if theta_ref else {f"theta/{k}": _tensor(v) for k, v in theta.items()}
    bits, shapes = mask.packed()
    tensors.update({f"maskbits/{k}": torch.from_numpy(v) for k, v in bits.items()})
    # safetensors stores keys sorted; the order of the model's state (and of the mask) is kept here
    order = {"theta": list(theta), "mask": mask.names()}
    metadata = {
        "format": FORMAT,
        "meta": json.dumps(dict(meta), sort_keys=True, default=str),
        "order": json.dumps(order),
        "mask_shapes": json.dumps(shapes),
    }
    if theta_ref:
        metadata["theta_ref"] = theta_ref
    return save(tensors, metadata=metadata)


def theta_file_bytes(theta: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a run's ``theta0.safetensors``: the rewind point its ticket files refer to."""
    from safetensors.torch import save

    tensors = {f"theta/{k}": _tensor(v) for k, v in theta.items()}
    return save(tensors, metadata={"format": THETA_FORMAT, "order": json.dumps(list(theta))})


def _tensor(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(v))


def save_ticket(path: str | os.PathLike, theta: Mapping[str, np.ndarray], mask: Mask, meta: Mapping[str, Any]) -> None:
    """Write a ticket to a local ``path`` atomically: a temporary file in the same directory, then rename."""
    data = ticket_bytes(theta, mask, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Read a local ticket file (and the run's theta_0 file it refers to, beside it); a missing, corrupt or
    foreign file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ticket", f"no such file {path}")

    def sibling(ref: str) -> bytes:
        other = path.parent / ref
        if not other.is_file():
            raise ConfigError("ticket", f"{path} keeps its weights in {ref}, which is not beside it ({other})")
        return other.read_bytes()

    return ticket_from_bytes(path.read_bytes(), str(path), sibling)


def ticket_from_bytes(data: bytes, name: str, sibling: Optional[ReadSibling] = None) -> Ticket:
    """Parse a ticket file's bytes (``name`` says where they came from, for errors). ``sibling`` reads the
    file a ticket refers to for its weights (its run's theta_0), by name, from the ticket's directory."""
    from safetensors.torch import load

    try:
        metadata = _safetensors_metadata(data)
        if metadata.get("format") not in FORMATS:
            raise ConfigError("ticket", f"{name} is not a colt_ray ticket (format {metadata.get('format')!r})")
        tensors = load(data)
        meta, order = json.loads(metadata["meta"]), json.loads(metadata["order"])
        shapes = json.loads(metadata["mask_shapes"]) if "mask_shapes" in metadata else None
    except ConfigError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged header or body
        raise ConfigError("ticket", f"{name} is corrupt or unreadable: {str(exc).splitlines()[0][:200]}") from None
    try:
        ref = metadata.get("theta_ref")
        if ref:
            if sibling is None:
                raise ConfigError("ticket", f"{name} keeps its weights in {ref} beside it; read it with its directory")
            tensors.update(_theta_file(sibling(ref), f"{name} -> {ref}"))
        theta = {k: tensors[f"theta/{k}"].numpy() for k in order["theta"]}
        if shapes is None:  # format /1: bool masks
            mask = Mask({k: tensors[f"mask/{k}"] for k in order["mask"]})
        else:
            bits = {k: tensors[f"maskbits/{k}"].numpy() for k in order["mask"]}
            mask = Mask.from_packed(bits, {k: shapes[k] for k in order["mask"]})
    except KeyError as exc:
        raise ConfigError("ticket", f"{name} is corrupt: tensor {exc.args[0]!r} is missing") from None
    return Ticket(theta, mask, meta)


def _theta_file(data: bytes, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        if _safetensors_metadata(data).get("format") != THETA_FORMAT:
            raise ConfigError("ticket", f"{name} is not a colt_ray theta file")
        return load(data)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("ticket", f"{name} is corrupt or unreadable: {str(exc).splitlines()[0][:200]}") from None


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise ValueError("file too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError(f"header length {n} does not fit a {len(data)}-byte file")
    return dict(json.loads(data[8 : 8 + n]).get("__metadata__") or {})


def check_ticket_fits(ticket: Ticket, model: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """ConfigError unless every tensor of the ticket (except ``skip`` names) matches the model's shapes."""
    state = model.state_dict()
    for name, value in ticket.theta.items():
        if name in skip:
            continue
        if name not in state:
            raise ConfigError("ticket", f"ticket of arch {ticket.arch} has tensor {name!r} that this model lacks")
        if tuple(state[name].shape) != tuple(value.shape):
            raise ConfigError(
                "ticket",
                f"ticket tensor {name} has shape {tuple(value.shape)}, model needs {tuple(state[name].shape)} "
                f"(ticket made for {ticket.arch} on {'x'.join(map(str, ticket.in_shape))} inputs)",
            )
    missing = [n for n in state if n not in ticket.theta and n not in skip]
    if missing:
        raise ConfigError("ticket", f"ticket lacks tensor {missing[0]!r} of the model")


def load_weights(path: str | os.PathLike, model: torch.nn.Module, arch: str) -> dict[str, np.ndarray]:
    """Read pre-trained weights for ``model``: a safetensors state dict, or a colt_ray ticket file (its theta;
    a jackpot run's cycle-0 ticket holds its pre-trained weights). ConfigError("pretrained", ...) if missing,
    unreadable, or not matching the architecture (names and shapes)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError("pretrained", f"no such file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            is_ticket = (f.metadata() or {}).get("format") in FORMATS
            # a ticket is read below, with the run's theta_0 file when it refers to one
            tensors = {} if is_ticket else {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # safetensors raises several types for a damaged header or body
        why = str(exc).splitlines()[0][:200]
        raise ConfigError("pretrained", f"{path} is not a readable safetensors file: {why}") from None
    if is_ticket:
        try:
            theta = load_ticket(path).theta
        except ConfigError as e:
            raise ConfigError("pretrained", e.message) from None
        tensors = {k: torch.from_numpy(v) for k, v in theta.items()}
    state = model.state_dict()
    check_matches(tensors, state, f"{path} does not match arch {arch}")
    return {k: tensors[k].to(state[k].dtype).numpy() for k in state}


def check_matches(tensors: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str) -> None:
    """ConfigError("pretrained", ...) unless ``tensors`` has exactly ``state``'s names and shapes."""
    extra = [k for k in tensors if k not in state]
    missing = [k for k in state if k not in tensors]
    bad: Optional[str] = None
    if missing:
        bad = f"it lacks tensor {missing[0]!r}"
    elif extra:
        bad = f"it has tensor {extra[0]!r} that the model lacks"
    else:
        wrong = [k for k in state if tuple(tensors[k].shape) != tuple(state[k].shape)]
        if wrong:
            k = wrong[0]
            bad = f"tensor {k} has shape {tuple(tensors[k].shape)}, the model needs {tuple(state[k].shape)}"
    if bad:
        raise ConfigError("pretrained", f"{what}: {bad}")
