"""Several nodes on one machine (``ray.cluster_utils.Cluster``): a head without CPUs and two 2-CPU worker
nodes. A run's trainer actors go where its placement group's bundles are; a sweep that loses a worker node
mid-way finishes on the other with every (trial, cycle) row exactly once."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from test_sweep import check_one_ticket_row_per_trial_cycle, tiny_space, write_space

from colt_ray.core.config import RunConfig, TicketConfig
from colt_ray.core.tickets.search import prepare
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.sweep.cli import main as sweep_main
from colt_ray.results.reader import load_results


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=c.address, logging_level="ERROR")
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def small_cfg(**ticket) -> RunConfig:
    d = RunConfig()
    return d.replace(
        recipe=dataclasses.replace(d.recipe, epochs=1),
        ticket=TicketConfig(**{"method": "colt", "shards": 2, "cycles": 1, "eval_tickets": "none", **ticket}),
        resources=dataclasses.replace(d.resources, progress=False, backend="ray"),
    )


def test_shard_actors_go_to_the_nodes_of_their_placement_group_bundles(cluster):
    cfg = small_cfg()
    pg = placement_group([{"CPU": 1.0}, {"CPU": 1.0}], strategy="STRICT_SPREAD")  # one per worker node
    assert pg.wait(timeout_seconds=60)
    try:
        with Coordinator(cfg, placement_group=pg, first_bundle=0, name="spread") as coordinator:
            nodes = ray.get([a.node_id.remote() for a in coordinator.shards.actors])
            where = placement_group_table(pg)["bundles_to_node_id"]
            assert nodes == [where[0], where[1]] and nodes[0] != nodes[1]  # one shard per worker node
            records = []
            coordinator.attach(prepare(cfg)).run(records.append)
            assert [r.cycle for r in records] == [0, 1]
    finally:
        remove_placement_group(pg)


@pytest.mark.slow
def test_a_trainer_lost_with_its_node_and_no_room_elsewhere_ends_the_run_with_an_error_not_a_wait(cluster):
    from colt_ray.parallel.actors import ShardFailedError
    from colt_ray.parallel.backend import open_coordinator

    c, workers = cluster
    blocker = placement_group([{"CPU": 2.0}], strategy="STRICT_PACK")  # one whole worker node
    assert blocker.wait(timeout_seconds=60)
    cfg = small_cfg(cycles=3)
    cfg = cfg.replace(
        recipe=dataclasses.replace(cfg.recipe, epochs=20),
        resources=dataclasses.replace(cfg.resources, start_timeout=5.0),
    )
    box: dict = {}

    def search() -> None:
        try:
            with open_coordinator(cfg) as coordinator:  # gang-scheduled on the other worker node
                box["coordinator"] = coordinator
                coordinator.attach(prepare(cfg)).run(lambda record: None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            box["error"] = exc

    runner, where = threading.Thread(target=search, daemon=True), []
    runner.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and getattr(box.get("coordinator"), "shards", None) is None:
            time.sleep(0.2)
        shards = box["coordinator"].shards
        while time.time() < deadline and shards.in_flight is None:
            time.sleep(0.2)
        where = ray.get([a.node_id.remote() for a in shards.actors])
        lost = next(n for n in workers if n.node_id == where[0])
        c.remove_node(lost)  # its trainers cannot be restarted anywhere: the other node is full
        started = time.time()
        runner.join(timeout=120)
        assert not runner.is_alive(), "the run waits for ever"
        assert time.time() - started < 60
        assert isinstance(box.get("error"), ShardFailedError), box.get("error")
        assert "could not start it again within 5 s" in str(box["error"])
    finally:
        remove_placement_group(blocker)
        workers[:] = [n for n in workers if n.node_id not in set(where)] + [c.add_node(num_cpus=2)]
        c.wait_for_nodes()


@pytest.mark.slow
def test_a_sweep_that_loses_a_worker_node_finishes_with_every_cycle_once(cluster, tmp_path):
    c, workers = cluster
    storage = tmp_path / "st"
    space = tiny_space("nodeloss", budget={"num_samples": 3, "max_concurrent": 2, "max_failures": 3})
    space["fixed"].update(epochs=2, cycles=3)
    args = [write_space(tmp_path, space), "--storage", str(storage), "--quiet"]
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(rc=sweep_main(args)))
    driver.start()
    out = storage / "nodeloss"
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "tune" / "resume").glob("trial_*.npz")):
        time.sleep(0.5)
    assert list((out / "tune" / "resume").glob("trial_*.npz")), "no trial checkpointed"
    spare = c.add_node(num_cpus=2)
    for node in workers:  # both worker nodes lost mid-sweep, every running trial with them
        c.remove_node(node)
    workers[:] = [spare]
    driver.join(timeout=600)
    assert not driver.is_alive() and result.get("rc") == 0
    res = load_results(str(out))
    assert len(res.trials) == 3 and set(res.trials["status"]) == {"completed"}
    check_one_ticket_row_per_trial_cycle(res, cycles=(0, 1, 2, 3))
    assert list((out / "tune").glob("trial_*/error.txt")), "no trial was running on the lost nodes"
