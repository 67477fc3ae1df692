"""The end-to-end Ray benchmark's smoke path runs (in its own processes: each run starts and stops its own Ray)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_parallel_smoke_test_runs_and_finds_identical_results():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_parallel.py"), "--smoke-test"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for line in ("speed-up ray vs local", "COLT / IMP wall time", "fixed cost of --backend ray"):
        assert line in out.stdout
    assert out.stdout.count("masks identical: True; ticket accuracies equal: True") == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_startup_measures_each_part_both_ways():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_startup.py"), "--repeats", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {line[:22].strip(): line[22:].split() for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {"exit (whole process)", "ray.init", "actors", "ray stop"}
    assert all(len(r) == 3 and float(r[0][:-1]) > 0 and float(r[1][:-1]) > 0 for r in rows.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_sweep_overhead_smoke_test_counts_snapshots_and_overhead(tmp_path):
    import json

    figures = tmp_path / "figures.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sweep_overhead.py"), "--smoke-test", "--json", str(figures)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (row,) = json.loads(figures.read_text())
    assert row["trials"] == row["completed"] == 3 and row["training_cpu_s"] > 0
    assert row["snapshots"] >= 2 and row["snapshot_bytes_total"] >= row["last_experiment_state_bytes"] > 0
    assert "overhead/trial CPU-s" in out.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sweep_overhead.py"), "--trials", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--trials" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_bench_scale_report_smoke_test_times_both_layouts_locally_and_on_s3():
    pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "report", "--smoke-test"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    local, s3 = [line for line in out.stdout.splitlines() if line.startswith(("  local", "  s3"))]
    assert "'parts': 29" in local and "'compacted files': 4" in local  # 4 runs + 12 + 12 parts + trials -> 3 + 1
    requests = [int(n) for n in re.findall(r", (\d+)\)", s3)]
    assert len(requests) == 2 and requests[1] < requests[0]  # compacted: fewer requests than the 29 parts
