"""What crosses the object store, on several nodes (``ray.cluster_utils.Cluster``: a head without CPUs and two
2-CPU workers): a sweep puts its dataset once, a shard actor receives only its shard's rows, masks travel at one
bit per weight, once per cycle; and every mask and metric is the local backend's, bit for bit."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster
from test_parallel import assert_same_records, collect, small_cfg
from test_sweep import write_space

from colt_ray.core.config import DataConfig, RunConfig
from colt_ray.core.data import bundle_arrays, data_key
from colt_ray.core.pruning import PackedMask
from colt_ray.core.tickets.io import load_ticket
from colt_ray.core.tickets.search import prepare, run_local
from colt_ray.parallel.actors import RayPool, ShardTrainer
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.sweep import datasets
from colt_ray.parallel.sweep.cli import main as sweep_main
from colt_ray.parallel.sweep.parse import parse_spec
from colt_ray.results import layout
from colt_ray.results.reader import load_results

FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 4}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    head = {"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_HEALTH}
    c = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(2):
        c.add_node(num_cpus=2)
    ray.init(address=c.address, logging_level="ERROR")
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def write_npz(path) -> str:
    """120 random 8x8 images of 4 classes (the same file every time it is written)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (120, 8, 8), dtype=np.uint8)
    y = np.arange(120) % 4
    np.savez(path, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    return str(path)


# ---- which datasets a sweep can share, no Ray ---------------------------------------------------------------
def spec_of(fixed=None, search=None, **more):
    data = {"name": "s", "fixed": fixed or {}, "search": search or {"lr": {"float": [0.01, 0.1]}}, **more}
    return parse_spec({**data, "objectives": [{"metric": "acc", "mode": "max"}], "allow_test_selection": True})


def test_a_dataset_key_holds_the_data_settings_and_the_seed_only_where_a_validation_split_draws_from_it():
    plain, held = DataConfig(), DataConfig(val_fraction=0.2)
    assert data_key(plain, 1) == data_key(plain, 2) == data_key(DataConfig(download=True), 3)
    assert data_key(held, 1) != data_key(held, 2) and data_key(held, 1) == data_key(held, 1)
    assert data_key(plain, 1) != data_key(DataConfig(augment=False), 1) != data_key(DataConfig(dataset="synthetic"), 1)


def test_the_driver_shares_the_datasets_it_can_enumerate_and_leaves_searched_data_to_the_trials():
    keys = lambda spec: [data_key(c.data, c.ticket.seed) for c in datasets.shared_configs(spec)]  # noqa: E731
    assert len(keys(spec_of())) == 1
    assert len(keys(spec_of(compare=["colt", "imp"], seeds=3))) == 1  # no validation split: the seed is not used
    assert len(keys(spec_of({"val_fraction": 0.2}, compare=["colt", "imp"], seeds=3))) == 3  # one per seed
    assert keys(spec_of(search={"augment": {"choice": [True, False]}})) == []
    assert keys(spec_of({"val_fraction": 0.2}, search={"seed": {"int": [1, 4]}})) == []
    assert len(keys(spec_of(search={"seed": {"int": [1, 4]}}))) == 1


def test_a_dataset_the_driver_cannot_load_is_left_to_the_trials_in_one_line(tmp_path):
    lines = []
    spec = spec_of({"dataset": "npz", "data_root": str(tmp_path / "only-on-the-workers.npz")})
    assert datasets.put_datasets(spec, echo=lines.append) == {}
    assert len(lines) == 1 and "only-on-the-workers.npz" in lines[0] and "each trial loads its own" in lines[0]


# ---- on the cluster ----------------------------------------------------------------------------------------
class Recorder(ShardTrainer):
    """A trainer actor that notes what each call brought it: how many training rows, and the mask's form."""

    def __init__(self, cfg, index):
        super().__init__(cfg, index)
        self.seen: list[tuple] = []

    def run(self, data, theta, mask, cycle, prune_next=True, capture_step=0):
        rows = len(ray.get(data[0])["train"][1])
        self.seen.append(("run", cycle, rows, type(mask).__name__, mask.bits.nbytes))
        return super().run(data, theta, mask, cycle, prune_next, capture_step)

    def evaluate(self, data, theta, mask, cycle, teacher=None):
        self.seen.append(("evaluate", cycle, len(ray.get(data[0])["train"][1]), type(mask).__name__, 0))
        return super().evaluate(data, theta, mask, cycle, teacher)

    def log(self) -> list[tuple]:
        return self.seen


def test_shard_actors_receive_only_their_rows_and_each_cycle_puts_one_packed_mask(cluster, tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    cfg = small_cfg(cycles=2)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, dataset="npz", data_root=write_npz(tmp_path / "d.npz")))
    p = prepare(cfg)
    want = collect(run_local, p)
    shared = ray.put(bundle_arrays(p.bundle))  # as a sweep's driver puts it
    puts: list = []
    real_put = RayPool.put
    monkeypatch.setattr(RayPool, "put", lambda self, value: puts.append(value) or real_put(self, value))
    with Coordinator(cfg, trainer_cls=Recorder, name="moves") as coord:
        got = collect(coord.attach(p, shared).run)
        logs = ray.get([a.log.remote() for a in coord.shards.actors + coord.full.actors])
    assert_same_records(got, want)
    full_rows, shard_rows = len(p.bundle.train), [len(s.train_idx) for s in p.shards]
    assert sum(shard_rows) == full_rows and all(n < full_rows for n in shard_rows)
    for i, log in enumerate(logs[:2]):  # the shard actors: their rows in every training
        assert [e[2] for e in log if e[0] == "run"] == [shard_rows[i]] * 2
        last_run = max(j for j, e in enumerate(log) if e[0] == "run")
        assert all(j > last_run for j, e in enumerate(log) if e[0] == "evaluate")  # the full set only after
    assert {e[2] for e in logs[2]} == {full_rows}  # the evaluator: the full set
    numel = sum(v.numel() for _, v in want[0].mask.items())
    assert {(e[3], e[4]) for log in logs for e in log if e[0] == "run"} == {("PackedMask", (numel + 7) // 8)}
    masks = [v for v in puts if isinstance(v, PackedMask)]
    assert len(masks) == len(got) == 3  # cycles 0, 1, 2: one put each, for the shards and the evaluation
    rows = [v for v in puts if isinstance(v, dict) and "train" in v]
    assert sorted(len(v["train"][1]) for v in rows) == sorted(shard_rows)  # the full set was not put again


@pytest.mark.slow
def test_a_sweep_puts_its_dataset_once_and_its_trials_equal_the_local_backend(cluster, tmp_path, monkeypatch):
    npz = write_npz(tmp_path / "d.npz")
    puts = []

    def put_then_remove(cfg):  # the driver puts the data, then the file is gone: a trial that loads it fails
        puts.append(cfg.data.data_root)
        ref = real(cfg)
        (tmp_path / "d.npz").unlink()
        return ref

    real = datasets.load_and_put
    monkeypatch.setattr(datasets, "load_and_put", put_then_remove)
    space = {
        "name": "moves",
        "fixed": {"dataset": "npz", "data_root": npz, "epochs": 1, "cycles": 1, "cpus_per_shard": 0.5, "seed": 7},
        "search": {"lr": {"logfloat": [0.02, 0.2]}},
        "compare": {"colt": {"shards": 2, "backend": "ray"}, "imp": {"backend": "local"}},
        "objectives": [{"metric": "acc", "mode": "max"}],
        "allow_test_selection": True,
        "budget": {"num_samples": 1, "max_concurrent": 2, "max_failures": 0},
        "sampler": {"seed": 0},
    }
    assert sweep_main([write_space(tmp_path, space), "--storage", str(tmp_path / "st"), "--quiet"]) == 0
    assert puts == [npz]  # one dataset put for the sweep's two trials (a COLT one on Ray, an IMP one local)
    out = str(tmp_path / "st" / "moves")
    res = load_results(out)
    assert sorted(res.trials["status"]) == ["completed", "completed"]
    write_npz(tmp_path / "d.npz")  # the same data back, for the local reference runs
    for trial in res.trials.itertuples():
        flat = json.loads(trial.config_json)
        cfg = RunConfig.from_flat({**flat, "backend": "local"})
        want = collect(run_local, prepare(cfg, run_id=trial.run_id))
        cycles = res.cycles[res.cycles["run_id"] == trial.run_id]
        assert len(cycles) == sum(len(r.cycle_rows) for r in want)
        for record in want:
            assert load_ticket(layout.ticket_path(out, trial.run_id, record.cycle)).mask == record.mask
            for row in record.cycle_rows:
                shard = row["shard"]
                hit = cycles[(cycles["cycle"] == record.cycle) & (cycles["shard"].isna() if shard is None
                              else cycles["shard"] == shard)]  # fmt: skip
                assert len(hit) == 1
                for key in ("sparsity", "kept_weights", "acc_best", "acc_final", "loss", "sample_epochs"):
                    assert same(hit[key].iloc[0], row[key]), (flat["method"], record.cycle, key)


def same(stored, value) -> bool:
    """A Parquet value equals a record's: exactly, or both missing (a ticket not evaluated)."""
    if value is None:
        return stored is None or stored != stored
    return stored == value


# ---- the benchmark's smoke path ----------------------------------------------------------------------------
def test_bench_data_moves_smoke_test_measures_one_packed_mask_per_cycle_and_the_dataset_once(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_data_moves.py"
    spec = importlib.util.spec_from_file_location("bench_data_moves", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--smoke-test", "--trials", "1,10"]) == 0
    lines = {line[:48].strip(): line[48:].split() for line in capsys.readouterr().out.splitlines()}
    assert lines["full dataset put, per sweep of 10 trials"][2] == lines["full dataset put, per sweep of 1 trials"][2]
    assert lines["one mask put"][-1] == "(8.0x)" and lines["mask puts, per cycle"][1] == "1.00"
