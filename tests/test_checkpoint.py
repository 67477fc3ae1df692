"""A sweep trial's checkpoint (``parallel/sweep/state.py``): masks at one bit per weight, theta_0 never stored
(rebuilt from the config), and a resumed run that continues exactly as the uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch

from colt_ray.core.config import RunConfig, TicketConfig
from colt_ray.core.tickets.io import FORMAT, load_ticket, save_ticket
from colt_ray.core.tickets.search import prepare, run_local
from colt_ray.parallel.sweep.state import Totals, load_state, save_state


def small_cfg(**ticket) -> RunConfig:
    d = RunConfig()
    return d.replace(
        recipe=dataclasses.replace(d.recipe, epochs=1),
        ticket=TicketConfig(**{"cycles": 2, "shards": 2, **ticket}),
        resources=dataclasses.replace(d.resources, progress=False),
    )


def collect(cfg, resume=None):
    prepared, records = prepare(cfg), []
    run_local(prepared, records.append, resume)
    return prepared, records


def test_colt_checkpoint_holds_packed_masks_and_no_weights_and_resumes_bit_identically(tmp_path):
    cfg = small_cfg()
    prepared, whole = collect(cfg)
    save_state(str(tmp_path), whole[0], Totals(), {}, theta0=prepared.ctx.theta0)
    assert sorted(os.listdir(tmp_path)) == ["masks.npz", "state.json"]  # no theta.npz: theta_0 is rebuilt
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["version"] == 2 and state["theta"] == "theta0"
    with np.load(tmp_path / "masks.npz") as f:
        assert all(f[k].dtype == np.uint8 for k in f.files)  # one bit per weight
    loaded = load_state(str(tmp_path)).resume
    assert loaded.theta is None and loaded.mask == whole[0].mask
    assert loaded.proposals == whole[0].proposals
    again = prepare(cfg)
    loaded.theta = again.ctx.theta0  # what a resumed trial does
    resumed = []
    run_local(again, resumed.append, loaded)
    assert [r.cycle for r in resumed] == [1, 2]
    assert all(a.mask == b.mask for a, b in zip(resumed, whole[1:]))
    assert [r.ticket_row["acc_best"] for r in resumed] == [r.ticket_row["acc_best"] for r in whole[1:]]


def test_a_version_1_checkpoint_still_loads(tmp_path):
    cfg = small_cfg()
    prepared, whole = collect(cfg)
    r = whole[0]
    np.savez(tmp_path / "mask.npz", **r.mask.to_numpy())
    np.savez(tmp_path / "theta.npz", **r.theta)
    for i, p in enumerate(r.proposals):
        np.savez(tmp_path / f"proposal-{i:04d}.npz", **p.to_numpy())
    state = {"version": 1, "run_id": r.run_id, "cycle": 0, "done": False, "proposals": len(r.proposals),
             "totals": {}, "metrics": {}}  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(state))
    loaded = load_state(str(tmp_path)).resume
    assert loaded.mask == r.mask and loaded.proposals == r.proposals
    assert all(np.array_equal(loaded.theta[k], v) for k, v in r.theta.items())


def test_ticket_files_store_the_mask_at_one_bit_per_weight_and_read_format_1(tmp_path):
    from safetensors.torch import save_file

    prepared, whole = collect(small_cfg(cycles=1))
    r = whole[-1]
    save_ticket(tmp_path / "t2.safetensors", r.theta, r.mask, {"arch": "conv2"})
    t2 = load_ticket(tmp_path / "t2.safetensors")
    assert t2.mask == r.mask and FORMAT == "colt_ray.ticket/2"
    packed = sum(-(-v.numel() // 8) for _, v in r.mask.items())
    assert os.path.getsize(tmp_path / "t2.safetensors") < sum(v.nbytes for v in r.theta.values()) + packed + 4096
    # format 1 (bool masks), as earlier versions wrote it
    tensors = {f"theta/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in r.theta.items()}
    tensors.update({f"mask/{k}": v for k, v in r.mask.items()})
    meta = {"format": "colt_ray.ticket/1", "meta": json.dumps({"arch": "conv2"}),
            "order": json.dumps({"theta": list(r.theta), "mask": r.mask.names()})}  # fmt: skip
    save_file(tensors, str(tmp_path / "t1.safetensors"), metadata=meta)
    t1 = load_ticket(tmp_path / "t1.safetensors")
    assert t1.mask == r.mask and all(np.array_equal(t1.theta[k], v) for k, v in r.theta.items())


def test_theta0_is_stored_once_per_run_and_export_makes_a_standalone_ticket(tmp_path, capsys):
    from colt_ray.cli import main

    out = tmp_path / "out"
    args = ["ticket", "--method", "colt", "--backend", "local", "--epochs", "1", "--cycles", "2", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    (run_dir,) = (out / "tickets").iterdir()
    files = sorted(p.name for p in run_dir.iterdir())
    assert files == ["cycle-0000.safetensors", "cycle-0001.safetensors", "cycle-0002.safetensors", "theta0.safetensors"]
    theta_bytes = (run_dir / "theta0.safetensors").stat().st_size
    assert all((run_dir / f).stat().st_size < theta_bytes / 4 for f in files[:3])  # masks only, one bit per weight
    ticket = load_ticket(run_dir / "cycle-0002.safetensors")  # follows the reference to theta0.safetensors
    theta0 = load_ticket(run_dir / "cycle-0000.safetensors").theta
    assert all(np.array_equal(ticket.theta[k], v) for k, v in theta0.items())

    alone = tmp_path / "alone.safetensors"
    assert main(["export", str(run_dir / "cycle-0002.safetensors"), str(alone)]) == 0
    (run_dir / "theta0.safetensors").unlink()
    exported = load_ticket(alone)  # no theta0 file anywhere near it
    assert exported.mask == ticket.mask and all(np.array_equal(exported.theta[k], v) for k, v in theta0.items())
    capsys.readouterr()
    assert main(["transfer", str(run_dir / "cycle-0002.safetensors"), "--dataset", "synthetic"]) == 2
    assert "keeps its weights in theta0.safetensors" in capsys.readouterr().err
