"""One sweep per name: the lease ``STORAGE/NAME/lease.json`` (colt_ray.parallel.sweep.lease).

On a local disk and on S3 (moto's server on 127.0.0.1, whose put_object and delete_object honour If-None-Match
and If-Match): a second sweep is refused with one line naming the first; the holder renews; a lease no longer
renewed (past its TTL) or whose driver is gone from this host is taken over, and its old holder learns it lost;
of two takers of one expired lease exactly one wins. End to end: a second ``colt-ray sweep`` on a running one
exits 2 writing nothing, and after the first is killed ``--resume`` takes its lease over and finishes.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import uuid

import pytest

from colt_ray.core.errors import ConfigError, RunError
from colt_ray.parallel.sweep import lease
from colt_ray.parallel.sweep.lease_stores import open_store

pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
import test_s3  # noqa: E402
import test_sweep  # noqa: E402

s3_env, ray_tag = test_s3.s3_env, test_sweep.ray_tag  # fixtures: moto's S3 server; a private RAY_TMPDIR


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path, monkeypatch):
    """A sweep directory not yet written: under tmp_path, or in moto's bucket (boto3 pointed at it)."""
    if request.param == "local":
        return str(tmp_path / "st" / "sw")
    env, _ = request.getfixturevalue("s3_env")
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    return f"s3://{test_s3.BUCKET}/{uuid.uuid4().hex[:8]}/sw"


def stored(out: str):
    """The lease record at ``out`` as stored, or None."""
    data, _ = open_store(lease.lease_path(out)).read()
    return None if data is None else json.loads(data)


def later(monkeypatch, seconds: float) -> None:
    """Move the clock leases are judged by ``seconds`` on."""
    now = lease.now_s
    monkeypatch.setattr(lease, "now_s", lambda: now() + seconds)


def test_a_second_sweep_is_refused_with_one_line_naming_the_holder(out):
    first = lease.acquire(out, "sw", resume=False)
    try:
        held = stored(out)
        assert held["pid"] == os.getpid() and held["token"] == first.record["token"] and held["ttl_s"] == 60
        for resume in (False, True):  # a --resume too: the first is still running
            with pytest.raises(lease.LeaseHeld) as refused:
                lease.acquire(out, "sw", resume=resume)
            text = str(refused.value)
            assert "\n" not in text and text.startswith(f"name: sweep 'sw' is already running at {out} (host ")
            assert f", pid {os.getpid()}, since {held['started'][:10]} " in text, text
            with pytest.raises(lease.LeaseHeld):
                lease.check_free(out, "sw", resume)  # what plan_sweep asks, before anything else is read
        assert stored(out) == held  # the refusals wrote nothing
    finally:
        first.release()
    assert stored(out) is None
    lease.acquire(out, "sw", resume=False).release()  # free again


def test_a_renewal_rewrites_the_time_and_keeps_the_token(out, monkeypatch):
    held = lease.acquire(out, "sw", resume=False)
    try:
        before = stored(out)
        monkeypatch.setattr(lease, "_now", lambda: "2026-12-04T20:00:00.000+00:00")
        assert held.renew()
        after = stored(out)
        assert after["renewed"] == "2026-12-04T20:00:00.000+00:00" and after["started"] == before["started"]
        assert after["token"] == before["token"]
    finally:
        held.release()


def test_an_expired_lease_is_taken_over_and_its_old_holder_stops(out, monkeypatch, capsys):
    old = lease.acquire(out, "sw", resume=False)
    old._stop.set()  # renewal stops, as on a lost node: the pid runs on (it is this test's), the TTL decides
    later(monkeypatch, 59)
    with pytest.raises(lease.LeaseHeld):
        lease.acquire(out, "sw", resume=True)
    later(monkeypatch, 2)  # 61 s after the last renewal, past the 60 s TTL
    new = lease.acquire(out, "sw", resume=True)
    try:
        assert f"took over the lease of host {old.record['host']}, pid {os.getpid()}" in capsys.readouterr().err
        assert stored(out)["token"] == new.record["token"] != old.record["token"]
        old._stop.clear()
        assert not old.renew() and "taken over by host " in old.lost  # the old holder cannot renew...
        with pytest.raises(RunError, match="taken over by host"):
            old.check_held()  # ...and run_sweep writes no trials after this
        old.release()
        assert stored(out)["token"] == new.record["token"]  # its release leaves the new lease alone
    finally:
        new.release()
    assert stored(out) is None


def test_a_lease_whose_driver_is_gone_from_this_host_is_taken_at_once(out, capsys):
    code = f"from colt_ray.parallel.sweep import lease; lease.acquire({out!r}, 'sw', False); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    dead = stored(out)["pid"]
    assert dead != os.getpid()
    new = lease.acquire(out, "sw", resume=True)  # at once: well inside the 60 s TTL
    new.release()
    assert f"its driver (pid {dead}) is no longer running" in capsys.readouterr().err


def test_of_two_takers_of_one_expired_lease_exactly_one_wins(out):
    store = open_store(lease.lease_path(out))
    assert store.create(b'{"old": 1}') is not None and store.create(b'{"other": 1}') is None
    data, version = store.read()  # both takers read the expired lease, then both swap it
    won = [store.swap(version, b'{"taker": 1}'), store.swap(version, b'{"taker": 2}')]
    assert won[0] is not None and won[1] is None and store.read()[0] == b'{"taker": 1}'
    store.delete(version)  # a stale version deletes nothing
    assert store.read()[0] == b'{"taker": 1}'
    store.delete(won[0])
    assert store.read() == (None, None)


def race(out: str, go, done, results) -> None:
    go.wait()
    try:
        held = lease.acquire(out, "sw", resume=True)
        results.put(("won", os.getpid()))
    except lease.LeaseHeld:
        results.put(("refused", os.getpid()))
        return
    done.wait()  # keep the lease live (this pid running) until every racer has tried
    held.release()


def test_racing_takeovers_on_a_local_disk_one_process_wins(tmp_path, monkeypatch):
    out = str(tmp_path / "st" / "sw")
    gone = lease.acquire(out, "sw", resume=False)
    gone._stop.set()
    record = {**gone.record, "host": "a-lost-node", "renewed": "2026-01-01T00:00:00.000+00:00"}
    gone.store.swap(gone.version, json.dumps(record).encode())  # its node lost long ago
    ctx = multiprocessing.get_context("fork")
    go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    racers = [ctx.Process(target=race, args=(out, go, done, results)) for _ in range(4)]
    for p in racers:
        p.start()
    go.set()
    got = sorted(results.get(timeout=60) for _ in racers)
    done.set()
    for p in racers:
        p.join(timeout=30)
    assert [outcome for outcome, _ in got] == ["refused"] * 3 + ["won"]
    assert stored(out) is None  # the winner released it


def test_renewal_settings_are_checked(monkeypatch):
    monkeypatch.setenv(lease.TTL_ENV, "3")
    assert lease.lease_times() == (3.0, 1.0)  # a third of a short TTL
    monkeypatch.setenv(lease.RENEW_ENV, "5")
    with pytest.raises(ConfigError, match=r"COLT_RAY_LEASE_RENEW: must be shorter than COLT_RAY_LEASE_TTL \(3 s\)"):
        lease.lease_times()
    monkeypatch.setenv(lease.TTL_ENV, "soon")
    with pytest.raises(ConfigError, match="COLT_RAY_LEASE_TTL: seconds between 0 and 86400, got 'soon'"):
        lease.lease_times()


# ---- end to end: colt-ray sweep ----------------------------------------------------------------------------------
def files_of(root) -> dict:
    """Every file under ``root``: relative path -> (size, mtime_ns)."""
    found = {}
    for where, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(where, name))
            found[os.path.relpath(os.path.join(where, name), root)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.slow
def test_a_second_sweep_on_a_running_one_refuses_and_resume_takes_over_a_killed_one(tmp_path, ray_tag):
    space = test_sweep.tiny_space("leased", budget={"num_samples": 1, "max_concurrent": 1, "max_failures": 1})
    space["fixed"]["cycles"] = 1
    storage, out = tmp_path / "st", tmp_path / "st" / "leased"
    cmd = [sys.executable, "-m", "colt_ray", "sweep", test_sweep.write_space(tmp_path, space), "--storage",
           str(storage), "--quiet", "--address", "local"]  # fmt: skip
    env = {**os.environ, "RAY_TMPDIR": ray_tag, lease.TTL_ENV: "20", lease.RENEW_ENV: "1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # running: its lease and Tune's experiment (what --resume restores) are written
        test_sweep.wait_for(
            lambda: (out / "lease.json").exists() and glob.glob(str(out / "tune" / "experiment_state-*.json")),
            120, "the first sweep's lease and experiment", first,
        )  # fmt: skip
        os.killpg(first.pid, signal.SIGSTOP)  # frozen, so any file that changes now is the second's
        assert first.poll() is None, "the first sweep ended before it could be stopped"
        before = files_of(tmp_path)
        other_tag = f"{ray_tag}-second"
        for extra in ([], ["--resume"]):
            second = subprocess.run(cmd + extra, env={**env, "RAY_TMPDIR": other_tag}, capture_output=True,
                                    text=True, timeout=120)  # fmt: skip
            assert second.returncode == 2, second.stderr[-2000:]
            (line,) = second.stderr.splitlines()
            assert line.startswith(f"colt-ray: error: name: sweep 'leased' is already running at {out} (host "), line
            assert f", pid {first.pid}, since " in line, line
        assert files_of(tmp_path) == before and not os.path.exists(other_tag)  # nothing written, no Ray started
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    test_sweep.kill_tagged(ray_tag)
    assert json.loads((out / "lease.json").read_text())["pid"] == first.pid  # the killed driver's lease is left

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "took over the lease of host " in resumed.stderr, resumed.stderr[-3000:]
    assert f"its driver (pid {first.pid}) is no longer running" in resumed.stderr, resumed.stderr[-3000:]
    assert not (out / "lease.json").exists() and not (out / ".lease.lock").exists()  # released at the end
    from colt_ray.results.reader import load_results

    trials = load_results(str(out)).trials
    assert len(trials) == 1 and set(trials["status"]) == {"completed"}, trials


def test_a_resume_removes_the_temporary_files_killed_writers_left_and_keeps_every_result(tmp_path):
    from colt_ray.parallel.sweep.orphans import drop_temp_files

    out = tmp_path / "sweep"
    for d in ("runs", "cycles", "layers"):
        (out / d).mkdir(parents=True)
        (out / d / "r1-c0000.parquet").write_bytes(b"part")
    (out / "cycles" / "r1-c0001.parquet.tmp-1a2b3c").write_bytes(b"cut short")
    (out / "trials.parquet.tmp-4d5e6f").write_bytes(b"cut short")
    (out / "trials.parquet").write_bytes(b"table")
    assert drop_temp_files(str(out)) == 2
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["cycles/r1-c0000.parquet", "layers/r1-c0000.parquet", "runs/r1-c0000.parquet", "trials.parquet"]
