"""GPU shares exactly as requested, on a joined cluster (``ray.cluster_utils.Cluster``: a 2-CPU head without
GPUs; a node with one logical GPU comes and goes).

This machine has no GPU: every Ray worker of the module runs ``fake_cuda`` first (a ``worker_process_setup_hook``),
so torch there looks like a CUDA build on a GPU machine to our code: CUDA is available unless Ray hid the
GPUs, initialising it is recorded (and fails: there is no device), and memory caps are recorded. The autoscaler
is simulated: the node types it declares are patched in, and the test adds a GPU node once the run asks the
autoscaler for GPUs (through the request that Ray's v1 autoscaler reads).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from test_multinode import small_cfg
from test_sweep import tiny_space, write_space

from colt_ray import cli
from colt_ray.core.data import bundle_arrays
from colt_ray.core.errors import RunError
from colt_ray.core.tickets.search import prepare
from colt_ray.core.tickets.trainer import FULL
from colt_ray.parallel import cluster as cluster_mod
from colt_ray.parallel import gpus
from colt_ray.parallel.actors import ShardTrainer, actor_device, create_actor
from colt_ray.parallel.backend import fit, open_coordinator
from colt_ray.parallel.resources import ActorResources, NodeType
from colt_ray.parallel.sweep.cli import main as sweep_main

GPU_TYPE = NodeType("gpu-worker", {"CPU": 2.0, "GPU": 1.0}, max_count=1)
TICKET = ["ticket", "--method", "colt", "--shards", "2", "--cycles", "1", "--epochs", "1", "--no-progress"]


def fake_cuda() -> None:
    """Torch in this worker as a CUDA build would look to our code (see the module docstring)."""
    import torch

    calls = torch.cuda.fake_calls = {"init": 0, "fractions": []}

    def init() -> None:
        calls["init"] += 1
        raise RuntimeError("fake CUDA: no device on this machine")

    # the machine has a GPU: visible unless Ray hid it (CUDA_VISIBLE_DEVICES="")
    torch.cuda.is_available = lambda: os.environ.get("CUDA_VISIBLE_DEVICES") != ""
    torch.cuda._lazy_init = torch.cuda.init = init
    torch.cuda.is_initialized = lambda: calls["init"] > 0
    torch.cuda.set_per_process_memory_fraction = lambda f, device=None: calls["fractions"].append((f, str(device)))


class Probe(ShardTrainer):
    """A trainer actor that also says what it sees of its GPU."""

    def probe(self) -> dict:
        import torch

        return {
            "device": str(self.device),
            "core_device": self.cfg.resources.device,
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_initialized": torch.cuda.is_initialized(),
            "fractions": torch.cuda.fake_calls["fractions"],
        }


class Lab:
    """The cluster and the GPU nodes added to it."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.gpu_nodes = cluster, []

    def add_gpu_node(self) -> None:
        self.gpu_nodes.append(self.cluster.add_node(num_cpus=2, num_gpus=1))
        self.cluster.wait_for_nodes()

    def remove_gpu_nodes(self) -> None:
        while self.gpu_nodes:
            self.cluster.remove_node(self.gpu_nodes.pop())
        deadline = time.time() + 30
        while ray.cluster_resources().get("GPU", 0) and time.time() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def lab():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(address=c.address, logging_level="ERROR", runtime_env={"worker_process_setup_hook": fake_cuda})
    yield Lab(c)
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def no_gpu(lab):
    lab.remove_gpu_nodes()
    return lab


@pytest.fixture
def declared(monkeypatch):
    """The autoscaler declares a node type with one GPU (at most one such node)."""
    monkeypatch.setattr(cluster_mod, "declared_node_types", lambda: [GPU_TYPE])


def gpu_cfg(**resources):
    cfg = small_cfg()
    return cfg.replace(resources=dataclasses.replace(cfg.resources, gpus_per_shard=0.5, **resources))


def gpu_space(name: str) -> dict:
    """A tiny sweep on the Ray backend whose trials ask for 0.5-GPU shares (at most 2 trainers: 1 GPU)."""
    space = tiny_space(name, objectives=[{"metric": "sparsity", "mode": "max"}])
    space["fixed"].update(backend="ray", gpus_per_shard=0.5, eval_tickets="none")
    return space


def autoscaler_request() -> list:
    """What the run asked the autoscaler for: the request Ray's v1 autoscaler reads from the GCS."""
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


def written(path) -> list:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


# ---- the node types an autoscaler declares -----------------------------------------------------------
def test_declared_node_types_come_from_the_launchers_config_and_are_none_without_one(lab, tmp_path, monkeypatch):
    missing = tmp_path / "none.yaml"
    monkeypatch.setattr(cluster_mod, "BOOTSTRAP_CONFIG", str(missing))
    assert cluster_mod.declared_node_types() is None  # no GCS cluster config here, no launcher config
    config = {
        "max_workers": 4,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2}, "max_workers": 0},
            "gpu": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 2},
            "cpu": {"resources": {"CPU": 16}},
        },
    }
    missing.write_text(json.dumps(config))  # the launcher writes JSON
    assert cluster_mod.declared_node_types() == [
        NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 2),
        NodeType("cpu", {"CPU": 16.0}, 4),  # no max_workers of its own: the cluster's
    ]


# ---- no GPU and nothing that adds one ------------------------------------------------------------------
def test_joining_a_cluster_without_gpus_or_autoscaler_is_exit_2_and_writes_nothing(no_gpu, tmp_path, capsys):
    assert cluster_mod.joined_cluster()
    out = tmp_path / "out"
    assert cli.main([*TICKET, "--backend", "ray", "--gpus-per-shard", "0.5", "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "colt-ray: error: gpus-per-shard: the Ray cluster has no GPU and declares no autoscaler node type that "
        "adds one for a 0.5-GPU share, and CPU fallback is off (the default on a cluster this command joined); "
        "pass --allow-cpu-fallback to train on the CPU"
    )
    space = gpu_space("gpuless")
    storage = tmp_path / "sweeps"
    assert sweep_main([write_space(tmp_path, space), "--storage", str(storage), "--quiet"]) == 2
    assert "error: gpus-per-shard: the Ray cluster has no GPU" in capsys.readouterr().err
    assert not written(out) and not written(storage)


def test_cpu_fallback_when_asked_says_so_and_drops_the_share(no_gpu):
    said = []
    fitted = fit(gpu_cfg(allow_cpu_fallback=True), said.append)
    assert (fitted.resources.gpus_per_shard, fitted.resources.device) == (0.0, "cpu")
    assert said == ["colt-ray: no GPU in the Ray cluster: training on the CPU instead of 0.5-GPU shares "
                    "(--allow-cpu-fallback)"]  # fmt: skip


# ---- waiting for the autoscaler ------------------------------------------------------------------------
def test_the_wait_for_gpus_ends_with_a_one_line_error_at_the_start_timeout(
    no_gpu, declared, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(gpus, "PROGRESS_SECONDS", 1.0)
    out = tmp_path / "out"
    args = [*TICKET, "--backend", "ray", "--gpus-per-shard", "0.5", "--start-timeout", "3", "--out", str(out)]
    started = time.perf_counter()
    assert cli.main(args) == 2
    assert time.perf_counter() - started < 30
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (
        "colt-ray: no GPU in the Ray cluster: waiting up to 3 s for the autoscaler to add node type gpu-worker "
        "(3 bundles, 1.5 GPU; --allow-cpu-fallback trains on the CPU instead)"
    )
    assert any(line.startswith("colt-ray: still waiting for the autoscaler: 0 of 1.5 GPU after") for line in lines)
    assert lines[-1] == (
        "colt-ray: error: gpus-per-shard: no GPU came up within 3 s: waited for the autoscaler to add node type "
        "gpu-worker for 1.5 GPU in 3 bundles; check the autoscaler, raise --start-timeout, or pass "
        "--allow-cpu-fallback to train on the CPU"
    )
    assert autoscaler_request() == []  # the request is withdrawn
    space = gpu_space("gpuwait")
    storage = tmp_path / "sweeps"
    args = [write_space(tmp_path, space), "--storage", str(storage), "--set", "start_timeout=1", "--quiet"]
    assert sweep_main(args) == 2
    assert "error: gpus-per-shard: no GPU came up within 1 s" in capsys.readouterr().err
    assert not written(out) and not written(storage)


def test_a_run_waits_for_the_autoscaler_and_keeps_its_gpu_share(no_gpu, declared):
    said: list = []
    got: dict = {}

    def run() -> None:  # the run, in a thread: this one plays the autoscaler (Ray adds nodes from the main thread)
        try:
            cfg = gpu_cfg(start_timeout=60.0)  # 2 shards, no evaluator: 2 trainers of 1 CPU, 0.5 GPU
            with open_coordinator(cfg, echo=said.append, name="gpu-wait") as coordinator:
                got["share"] = coordinator.cfg.resources.gpus_per_shard
                got["bundles"] = coordinator.owned_group.bundle_specs
                got["started"] = len(coordinator.shards.ready())  # on the GPU Ray gave them (fake_cuda)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            got["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(b.get("GPU") for b in autoscaler_request()):
        time.sleep(0.2)
    seen = autoscaler_request()
    time.sleep(1.0)  # the autoscaler takes its time
    no_gpu.add_gpu_node()
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in got, got.get("error")
    assert seen == [{"CPU": 1.0, "GPU": 0.5}] * 2
    assert got == {"share": 0.5, "bundles": [{"CPU": 1.0, "GPU": 0.5}] * 2, "started": 2}
    assert said[0].startswith("colt-ray: no GPU in the Ray cluster: waiting up to 60 s for the autoscaler to add "
                              "node type gpu-worker")  # fmt: skip
    assert autoscaler_request() == []


# ---- the device of a trainer actor ---------------------------------------------------------------------
@pytest.fixture
def gpu_node(lab):
    if not ray.cluster_resources().get("GPU"):
        lab.add_gpu_node()
    return lab


def test_an_actor_uses_the_gpu_ray_assigned_and_one_without_a_share_never_touches_cuda(gpu_node):
    capped, uncapped = gpu_cfg(gpu_memory_cap=True), gpu_cfg()
    no_share = small_cfg()  # device auto: a node with CUDA would tempt it
    actors = [
        create_actor(Probe, ActorResources(0.5, 0.5), capped, FULL),
        create_actor(Probe, ActorResources(0.5, 0.5), uncapped, FULL),
        create_actor(Probe, ActorResources(0.5, 0.0), no_share, FULL),
    ]
    try:
        p = prepare(no_share)
        data = ray.put(bundle_arrays(p.bundle))
        ray.get(actors[2].run.remote([data, None], p.ctx.theta0, None, 0, False))  # a whole training on the CPU
        a, b, c = ray.get([actor.probe.remote() for actor in actors])
    finally:
        for actor in actors:
            ray.kill(actor)
    assert a["gpu_ids"] and a["visible"] == ",".join(a["gpu_ids"])
    assert (a["device"], a["core_device"], a["fractions"]) == ("cuda:0", "cuda", [(0.5, "cuda:0")])
    assert (b["device"], b["fractions"]) == ("cuda:0", [])  # no cap unless asked
    assert (c["device"], c["core_device"], c["gpu_ids"], c["cuda_initialized"]) == ("cpu", "cpu", [], False)


def test_a_share_without_an_assigned_gpu_is_an_error_not_a_cpu_run(lab):
    with pytest.raises(RunError, match="reserved 0.5 GPU but Ray assigned it no GPU id"):
        actor_device(0.5)  # this driver holds no GPU
    assert actor_device(0.0).type == "cpu" and actor_device(0.5, "cpu").type == "cpu"
