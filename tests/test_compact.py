"""Compaction (``colt-ray compact``, issue 19): compacted and uncompacted directories load into equal tables;
a compaction killed with SIGKILL at any step leaves every row readable exactly once, and a rerun finishes the
job; parts written after a compaction (a resumed sweep) win over the compacted rows; the same on moto S3."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pyarrow.fs as pafs
import pytest
from test_results_io import cycle_rows, layer_rows, run_row

from colt_ray.cli import main
from colt_ray.results import layout
from colt_ray.results.compact import compact
from colt_ray.results.reader import load_results
from colt_ray.results.writer import ResultsWriter

TABLES = ("runs", "cycles", "layers", "trials")
T1 = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)


def write_sweep(out, runs=4, cycles=3, prefix="r"):
    """``runs`` runs of ``cycles`` cycles, one still running, one with an empty layers part, and trials."""
    w = ResultsWriter(out)
    for i in range(runs):
        run_id = f"{prefix}{i}"
        w.write_run(run_row(run_id, status="running"))
        for c in range(cycles):
            w.write_cycle(
                run_id, c, cycle_rows(run_id, c, acc=0.5 + 0.01 * i + 0.001 * c), [] if i == 1 else layer_rows()
            )
        if i != runs - 1:
            w.write_run(run_row(run_id, status="completed", finished_at=T1, cycles_done=cycles - 1))
    w.write_trials([{"sweep": "s", "trial_id": f"t{i}", "run_id": f"{prefix}{i}", "status": "completed",
                     "stopped_early": False, "config_json": "{}"} for i in range(runs)])  # fmt: skip
    return w


def frames(path, filesystem=None):
    res = load_results(path, filesystem)
    return {k: getattr(res, k) for k in TABLES}


def assert_same(a, b):
    for k in TABLES:
        assert list(a[k].columns) == list(b[k].columns), k
        assert list(a[k].dtypes) == list(b[k].dtypes), k
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=k)


def names(out, table):
    return sorted(os.listdir(os.path.join(out, table)))


def test_a_compacted_directory_loads_into_the_same_tables_every_column_and_dtype(tmp_path):
    out = str(tmp_path / "sweep")
    write_sweep(out)
    before = frames(out)
    done = compact(out)
    assert names(out, "cycles") == ["compacted-g000001-0000.parquet"]
    assert names(out, "runs") == names(out, "layers") == ["compacted-g000001-0000.parquet"]
    assert done.tables[f"{out}/cycles"] == (12, 36, 1)  # 4 runs x 3 cycles -> 1 file of 3 rows each
    assert_same(before, frames(out))
    assert before["cycles"].groupby(["run_id", "cycle"]).size().eq(3).all()


def test_compaction_is_idempotent_and_a_rerun_writes_nothing(tmp_path):
    out = str(tmp_path / "sweep")
    write_sweep(out)
    compact(out)
    mtimes = {n: os.stat(os.path.join(out, "cycles", n)).st_mtime_ns for n in names(out, "cycles")}
    assert compact(out).tables == {}
    assert {n: os.stat(os.path.join(out, "cycles", n)).st_mtime_ns for n in names(out, "cycles")} == mtimes


def test_parts_written_after_a_compaction_win_and_the_next_compaction_merges_them(tmp_path):
    out = str(tmp_path / "sweep")
    w = write_sweep(out)
    compact(out)
    # a resumed sweep: the running run r3 finishes, a cycle is redone, a new run starts
    w.write_run(run_row("r3", status="completed", finished_at=T1))
    w.write_cycle("r3", 2, cycle_rows("r3", 2, acc=0.99), layer_rows())
    w.write_cycle("r3", 3, cycle_rows("r3", 3, acc=0.98), layer_rows())
    w.write_run(run_row("r9", status="running"))
    merged = frames(out)
    runs = merged["runs"].set_index("run_id")
    assert runs.loc["r3", "status"] == "completed" and "r9" in runs.index and len(runs) == 5
    tickets = merged["cycles"][merged["cycles"]["shard"].isna()].set_index(["run_id", "cycle"])
    assert tickets.loc[("r3", 2), "acc_best"] == 0.99 and len(tickets) == 4 * 3 + 1
    assert len(merged["layers"][merged["layers"]["run_id"] == "r3"]) == 4 * 2  # 4 cycles x 2 layers, once each
    compact(out)
    assert names(out, "runs") == ["compacted-g000002-0000.parquet"]
    assert_same(merged, frames(out))


def test_trees_of_results_directories_compact_each_directory(tmp_path):
    write_sweep(str(tmp_path / "a"), runs=2, prefix="a")
    write_sweep(str(tmp_path / "b"), runs=2, prefix="b")
    before = frames(str(tmp_path))
    assert main(["compact", str(tmp_path)]) == 0
    assert (
        names(str(tmp_path / "a"), "runs") == names(str(tmp_path / "b"), "runs") == ["compacted-g000001-0000.parquet"]
    )
    assert_same(before, frames(str(tmp_path)))


def _killed_at(out: str, step: int) -> None:
    """Compact ``out``, killing this process with SIGKILL right after its ``step``-th file operation."""
    count = [0]

    def hook(what: str) -> None:
        count[0] += 1
        if count[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    compact(out, stop_after=hook)
    os._exit(0)


def kill_compaction_at(out: str, step: int) -> int:
    """Run a compaction in a forked child killed at ``step``; its exit code (-9 when killed)."""
    child = multiprocessing.get_context("fork").Process(target=_killed_at, args=(out, step))
    child.start()
    child.join(60)
    return child.exitcode


def steps_of(out: str) -> int:
    seen = []
    compact(out, stop_after=seen.append)
    return len(seen)


def test_a_compaction_killed_at_any_step_loses_and_duplicates_nothing_and_a_rerun_finishes(tmp_path, capsys):
    template = str(tmp_path / "template")
    write_sweep(template, runs=3, cycles=2)
    expected = frames(template)
    probe = str(tmp_path / "probe")
    shutil.copytree(template, probe)
    total = steps_of(probe)
    assert total == 3 + 3 + 6 + 6  # per table one file written, then every file it merged removed
    for step in range(1, total, 4):
        out = str(tmp_path / f"kill{step}")
        shutil.copytree(template, out)
        assert kill_compaction_at(out, step) == -signal.SIGKILL
        assert_same(expected, frames(out))  # every row exactly once, half compacted or not
        assert main(["compact", out]) == 0
        assert "nothing to compact" not in capsys.readouterr().out
        assert_same(expected, frames(out))
        for table in layout.TABLE_DIRS:
            assert len(names(out, table)) == 1 and names(out, table)[0].startswith("compacted-g")


def test_a_part_rewritten_during_a_compaction_is_kept_and_wins(tmp_path):
    out = str(tmp_path / "sweep")
    w = write_sweep(out, runs=2, cycles=2)

    def rewrite(what: str) -> None:
        if what.startswith("wrote") and "/runs/" in what:  # after the runs file is written, before removals
            w.write_run(run_row("r1", status="failed", error="lost"))

    done = compact(out, stop_after=rewrite)
    assert done.kept == 1 and "r1.parquet" in names(out, "runs")
    assert frames(out)["runs"].set_index("run_id").loc["r1", "status"] == "failed"


# ---- the same on a real S3 API (moto on 127.0.0.1) --------------------------------------------------------
pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
import test_s3  # noqa: E402

s3_env = test_s3.s3_env  # the module's moto server, stopped by its process id afterwards


def s3_fs(env):
    return pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                             region="us-east-1", scheme="http")  # fmt: skip


KILL_AT = """
import os, signal, sys
import pyarrow.fs as pafs
from colt_ray.results.compact import compact
env, step, count = os.environ, int(sys.argv[2]), [0]
fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                       region="us-east-1", scheme="http")
def hook(what):
    count[0] += 1
    if count[0] == step:
        os.kill(os.getpid(), signal.SIGKILL)
compact(sys.argv[1], fs, stop_after=hook)
"""


def test_compaction_on_s3_killed_midway_reads_once_and_a_rerun_finishes(s3_env, tmp_path):
    env, client = s3_env
    fs = s3_fs(env)
    root = f"{test_s3.BUCKET}/compact"
    local = str(tmp_path / "local")
    write_sweep(local, runs=3, cycles=2)
    expected = frames(local)
    pafs.copy_files(local, root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    assert_same(expected, frames(root, fs))
    # SIGKILL after step 10: cycles compacted (steps 1-7), layers written (8) and 2 of its 6 parts removed
    killed = subprocess.run([sys.executable, "-c", KILL_AT, root, "10"], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    keys = test_s3.keys(client, "compact/")
    assert "compact/layers/compacted-g000001-0000.parquet" in keys and sum("/layers/r" in k for k in keys) == 4
    assert sum("/runs/r" in k for k in keys) == 3 and not any("/cycles/r" in k for k in keys)
    assert not any(layout.TMP_MARK in k for k in keys)  # whole-object puts: no temporary objects
    assert_same(expected, frames(root, fs))
    compact(root, fs)
    objects = [k.split("/", 1)[1] for k in test_s3.keys(client, "compact/") if not k.endswith("/")]  # no dir markers
    keys = [k for k in objects if k != layout.TRIALS_FILE]
    assert sorted(keys) == ["cycles/compacted-g000001-0000.parquet", "layers/compacted-g000002-0000.parquet",
                            "runs/compacted-g000001-0000.parquet"]  # fmt: skip
    assert_same(expected, frames(root, fs))
