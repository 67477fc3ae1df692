"""Results layer I/O: layout, schema, atomic writer, reader (pandas / pyarrow / DuckDB / Polars)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import typing
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError
from colt_ray.results import layout, schema
from colt_ray.results.reader import load_results
from colt_ray.results.writer import ResultsWriter, check_writable

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_row(run_id="r1", **over):
    flat = RunConfig().to_flat()
    flat.update(milestones=[3, 6], prune_groups=["conv", "linear"], prune_rate=0.3)
    row = {"run_id": run_id, **flat, "status": "completed", "started_at": T0, "dense_acc": 0.9}
    row.update(over)
    return row


def cycle_rows(run_id="r1", cycle=1, acc=0.8):
    shard = dict(sparsity=0.5, kept_weights=500, prunable_weights=1000, acc_best=0.7, acc_final=0.69,
                 sample_epochs=250, wall_seconds=1.5, finished_at=T0)  # fmt: skip
    ticket = dict(shard, shard=None, acc_best=acc, acc_final=acc - 0.01, overlap=0.75, conv_sparsity=0.4,
                  val_acc_best=None, loss=0.125, sample_epochs=500)  # fmt: skip
    return [ticket, dict(shard, shard=0, loss=0.5), dict(shard, shard=1, loss=0.25)]


def layer_rows():
    return [
        {"layer": "conv1.weight", "group": "conv", "numel": 100, "kept": 40, "density": 0.4, "overlap": 0.5},
        {"layer": "fc.weight", "group": "linear", "numel": 900, "kept": 460, "density": 460 / 900},
    ]


def write_sample(out, run_id="r1"):
    w = ResultsWriter(out)
    w.write_run(run_row(run_id))
    w.write_cycle(run_id, 1, cycle_rows(run_id), layer_rows())
    return w


# ---- layout ---------------------------------------------------------------------------------------------
def test_layout_names_every_file(tmp_path):
    out = str(tmp_path)
    assert layout.runs_part(out, "abc") == f"{out}/runs/abc.parquet"
    assert layout.cycles_part(out, "abc", 3) == f"{out}/cycles/abc-c0003.parquet"
    assert layout.layers_part(out, "abc", 12) == f"{out}/layers/abc-c0012.parquet"
    assert layout.ticket_path(out, "abc", 2) == f"{out}/tickets/abc/cycle-0002.safetensors"
    assert layout.trials_path(out) == f"{out}/trials.parquet"
    assert layout.cycles_part("s3://bkt/sweep/", "abc", 1) == "s3://bkt/sweep/cycles/abc-c0001.parquet"
    assert layout.runs_part(f"file://{out}", "abc") == f"{out}/runs/abc.parquet"
    with pytest.raises(ValueError, match="safe file name"):
        layout.runs_part(out, "../evil")
    assert not layout.is_result_file(layout.tmp_name("x/cycles/abc-c0001.parquet"))


# ---- schema ---------------------------------------------------------------------------------------------
def test_every_runconfig_flat_field_has_a_typed_runs_column():
    flat = RunConfig().to_flat()
    scalar = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    optional = {
        "data_root",
        "address",
        "allow_cpu_fallback",
        "prune_rate",
        "vote",
        "cycles",
        "target_sparsity",
        "max_acc_drop",
    }
    for name, default in flat.items():
        assert name in schema.RUNS.names, f"config field {name} has no RUNS column"
        f = schema.RUNS.field(name)
        assert f.nullable == (name in optional), name
        if isinstance(default, list):
            assert pa.types.is_list(f.type), name
        elif default is not None:
            assert f.type == scalar[type(default)], name
    assert schema.RUNS.field("milestones").type == pa.list_(pa.int64())
    assert schema.RUNS.field("prune_groups").type == pa.list_(pa.string())
    hints = typing.get_type_hints(dataclasses.fields(RunConfig)[0].default_factory)
    assert "data_root" in hints  # the hints the schema is built from resolve


def test_writer_rejects_unknown_key_and_names_it(tmp_path):
    w = ResultsWriter(tmp_path)
    with pytest.raises(ValueError, match="'learning_rate'"):
        w.write_run(run_row(learning_rate=0.1))
    rows = cycle_rows()
    rows[1]["acc"] = 0.5
    with pytest.raises(ValueError, match="unknown column 'acc'"):
        w.write_cycle("r1", 1, rows, [])
    with pytest.raises(ValueError, match="non-nullable column 'sparsity'"):
        w.write_cycle("r1", 1, [{k: v for k, v in cycle_rows()[0].items() if k != "sparsity"}], [])
    with pytest.raises(ValueError, match="'kept_weights'"):
        w.write_cycle("r1", 1, [dict(cycle_rows()[0], kept_weights="many")], [])
    with pytest.raises(ValueError, match="status 'done'"):
        w.write_run(run_row(status="done"))
    assert not any(layout.is_result_file(n) for _, _, ns in os.walk(tmp_path) for n in ns)


# ---- round trip -----------------------------------------------------------------------------------------
def test_round_trip_pandas_pyarrow_duckdb_keep_types_values_nulls(tmp_path):
    write_sample(tmp_path)
    res = load_results(tmp_path)
    run = res.runs.iloc[0]
    assert run["run_id"] == "r1" and run["schema_version"] == schema.SCHEMA_VERSION
    assert list(run["milestones"]) == [3, 6] and list(run["prune_groups"]) == ["conv", "linear"]
    assert run["prune_rate"] == 0.3 and run["vote"] is pd_na() and run["started_at"] == T0
    assert str(res.runs["started_at"].dtype) == "datetime64[us, UTC]"
    assert run["colt_ray_version"] and run["python_version"] and run["finished_at"] is pd_nat()
    c = res.cycles
    assert list(c["shard"].astype("object").where(c["shard"].notna(), None)) == [None, 0, 1]
    assert str(c["shard"].dtype) == "Int32" and str(c["sample_epochs"].dtype) == "Int64"
    ticket = res.tickets().iloc[0]
    assert (ticket["acc_best"], ticket["overlap"], ticket["loss"], ticket["sample_epochs"]) == (0.8, 0.75, 0.125, 500)
    assert c["val_acc_best"].isna().all() and c["overlap"].isna().tolist() == [False, True, True]
    assert list(res.layers["layer"]) == ["conv1.weight", "fc.weight"]
    assert res.layers["overlap"].isna().tolist() == [False, True]

    t = pq.read_table(layout.cycles_part(tmp_path, "r1", 1))
    assert t.schema.field("finished_at").type == pa.timestamp("us", tz="UTC")
    assert t.column("shard").to_pylist() == [None, 0, 1]
    assert t.column("finished_at").to_pylist()[0] == T0
    r = pq.read_table(layout.runs_part(tmp_path, "r1")).to_pylist()[0]
    assert r["milestones"] == [3, 6] and r["vote"] is None and r["target_sparsity"] is None

    import duckdb

    con = duckdb.connect()
    got = con.execute(
        "SELECT shard, acc_best, val_acc_best, epoch_us(finished_at), typeof(finished_at) "
        f"FROM read_parquet('{tmp_path}/cycles/*.parquet') ORDER BY shard NULLS FIRST"
    ).fetchall()
    assert [g[0] for g in got] == [None, 0, 1] and got[0][1] == 0.8 and got[0][2] is None
    assert got[0][3] == int(T0.timestamp()) * 10**6 + T0.microsecond and got[0][4] == "TIMESTAMP WITH TIME ZONE"
    runs = con.execute(
        f"SELECT milestones, prune_groups, vote FROM read_parquet('{tmp_path}/runs/*.parquet')"
    ).fetchall()
    assert runs == [([3, 6], ["conv", "linear"], None)]


def pd_na():
    import pandas as pd

    return pd.NA


def pd_nat():
    import pandas as pd

    return pd.NaT


def test_polars_reads_the_files(tmp_path):
    import polars as pl

    write_sample(tmp_path)
    df = pl.read_parquet(f"{tmp_path}/cycles/*.parquet")
    assert sorted(df["shard"].to_list(), key=lambda x: -1 if x is None else x) == [None, 0, 1]


def test_filesystem_and_file_uri_outputs_round_trip(tmp_path):
    import pyarrow.fs as pafs

    w = ResultsWriter(str(tmp_path / "viafs"), filesystem=pafs.LocalFileSystem())
    w.write_run(run_row("fsrun"))
    w.write_cycle("fsrun", 0, cycle_rows("fsrun", 0), layer_rows())
    ResultsWriter(f"file://{tmp_path}/viauri").write_run(run_row("urirun"))
    assert list(load_results(tmp_path / "viafs", filesystem=pafs.LocalFileSystem()).runs["run_id"]) == ["fsrun"]
    assert len(load_results(str(tmp_path / "viafs")).cycles) == 3
    assert list(load_results(f"file://{tmp_path}/viauri").runs["run_id"]) == ["urirun"]
    assert not [n for _, _, ns in os.walk(tmp_path) for n in ns if layout.TMP_MARK in n]


def test_trials_round_trip_and_config_expansion(tmp_path):
    cfg = {"method": "imp", "lr": 0.1, "status": "x"}
    rows = [
        {"sweep": "s", "trial_id": "t1", "run_id": "r1", "status": "stopped_early", "stopped_early": True,
         "config_json": json.dumps(cfg), "objective": 0.5},
        {"sweep": "s", "trial_id": "t2", "run_id": None, "status": "failed", "stopped_early": False,
         "config_json": "{}"},
    ]  # fmt: skip
    w = write_sample(tmp_path)
    w.write_trials(rows)
    res = load_results(tmp_path)
    assert list(res.trials["trial_id"]) == ["t1", "t2"] and res.trials["pareto"].isna().all()
    wide = res.trials_config()
    assert wide.loc[0, "lr"] == 0.1 and wide.loc[0, "method"] == "imp" and wide.loc[0, "config_status"] == "x"
    with pytest.raises(ValueError, match="status 'weird'"):
        w.write_trials([dict(rows[0], status="weird")])


# ---- atomicity ------------------------------------------------------------------------------------------
def test_leftover_tmp_file_of_a_killed_writer_is_ignored(tmp_path):
    write_sample(tmp_path)
    for d in ("runs", "cycles", "layers"):
        (tmp_path / d / "r1-c0002.parquet.tmp-xyz").write_bytes(b"PAR1 half written")
    (tmp_path / "runs" / "r2.parquet.tmp-abc").write_bytes(b"")
    res = load_results(tmp_path)
    assert list(res.runs["run_id"]) == ["r1"] and set(res.cycles["cycle"]) == {1}
    assert all(layout.TMP_MARK not in f for f in res.files)


def test_writer_killed_mid_rewrite_keeps_the_old_file_and_no_partial_one(tmp_path):
    write_sample(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from colt_ray.results.writer import ResultsWriter
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_results_io import cycle_rows, layer_rows
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die after the temp file is written
        ResultsWriter({str(tmp_path)!r}).write_cycle("r1", 1, cycle_rows(acc=0.99), layer_rows())
    """)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = [n for n in os.listdir(tmp_path / "layers") if layout.TMP_MARK in n]
    assert len(leftovers) == 1  # the killed writer left its temporary file...
    res = load_results(tmp_path)  # ...which the reader ignores: the old (run, cycle) is intact
    assert len(res.cycles) == 3 and res.tickets()["acc_best"].tolist() == [0.8]


def test_rewriting_a_run_cycle_keeps_exactly_one_copy(tmp_path):
    w = write_sample(tmp_path)
    w.write_cycle("r1", 1, cycle_rows(acc=0.85)[:1], layer_rows()[:1])
    w.write_run(run_row(status="failed", error="boom"))
    res = load_results(tmp_path)
    assert len(res.cycles) == 1 and res.cycles["acc_best"].tolist() == [0.85]
    assert len(res.layers) == 1 and len(res.runs) == 1 and res.runs.loc[0, "error"] == "boom"
    assert sorted(os.listdir(tmp_path / "cycles")) == ["r1-c0001.parquet"]


def test_parallel_writers_of_different_runs_do_not_collide(tmp_path):
    def work(i):
        w = ResultsWriter(tmp_path)
        w.write_run(run_row(f"run{i}"))
        for c in range(3):
            w.write_cycle(f"run{i}", c, cycle_rows(f"run{i}", c), layer_rows())

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    res = load_results(tmp_path)
    assert len(res.runs) == 4 and len(res.cycles) == 4 * 3 * 3 and len(res.layers) == 4 * 3 * 2


# ---- check_writable -------------------------------------------------------------------------------------
def test_check_writable_under_a_regular_file_raises_and_writes_nothing(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not writable") as e:
        check_writable(tmp_path / "file.txt" / "sub")
    assert e.value.field == "out" and "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_check_writable_on_read_only_dir_raises(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_writable(ro / "new")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def test_check_writable_leaves_no_trace(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c")
    check_writable(tmp_path)
    assert os.listdir(tmp_path) == []


# ---- reader errors --------------------------------------------------------------------------------------
def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as e:
        load_results(tmp_path / "missing")
    assert e.value.field == "results"
    with pytest.raises(ConfigError, match="is empty"):
        load_results(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"holds no colt_ray results \(no runs/\*.parquet\)"):
        load_results(tmp_path)


def test_corrupt_parquet_is_a_config_error_naming_the_file(tmp_path):
    write_sample(tmp_path)
    bad = tmp_path / "cycles" / "r1-c0002.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(ConfigError) as e:
        load_results(tmp_path)
    assert e.value.field == "results" and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_sweep_tree_with_trial_subdirectories_is_read_recursively(tmp_path):
    write_sample(tmp_path / "sweep" / "trial_a", "ra")
    write_sample(tmp_path / "sweep" / "trial_b", "rb")
    (tmp_path / "sweep" / "trial_b" / "tickets" / "rb").mkdir(parents=True)
    (tmp_path / "sweep" / "trial_b" / "tickets" / "rb" / "x.parquet").write_bytes(b"ignored: not a table dir")
    res = load_results(tmp_path / "sweep")
    assert list(res.runs["run_id"]) == ["ra", "rb"] and len(res.cycles) == 6 and len(res.layers) == 4


def test_the_reader_lists_only_the_table_folders_never_tickets_tune_or_report(tmp_path, monkeypatch):
    from colt_ray.results import listing

    write_sample(tmp_path)
    for junk in ("tickets/r1", "tune/trial_1/runs", "report/runs", ".hidden/runs"):
        (tmp_path / junk).mkdir(parents=True)
        (tmp_path / junk / "x.parquet").write_bytes(b"not parquet: never opened")
    listed = []
    real = listing.entries
    monkeypatch.setattr(listing, "entries", lambda fs, d: listed.append(os.path.relpath(d, tmp_path)) or real(fs, d))
    res = load_results(tmp_path)
    assert sorted(listed) == [".", "cycles", "layers", "runs"]  # one listing each, none of the others'
    assert list(res.runs["run_id"]) == ["r1"] and len(res.cycles) == 3


def test_columns_reads_only_those_columns_and_the_keys(tmp_path):
    write_sample(tmp_path)
    res = load_results(tmp_path, columns={"cycles": ["acc_best"], "runs": ["method"]})
    assert list(res.cycles.columns) == ["run_id", "cycle", "shard", "acc_best"]
    assert list(res.runs.columns) == ["run_id", "method"] and len(res.layers.columns) == len(schema.LAYERS)
    with pytest.raises(ValueError, match="cycles has no column 'acc'"):
        load_results(tmp_path, columns={"cycles": ["acc"]})
