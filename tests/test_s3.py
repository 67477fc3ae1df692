"""Results in object storage, against a real S3 API: moto's server on 127.0.0.1, reached through the standard
AWS environment variables (AWS_ENDPOINT_URL and keys), as a user's s3:// storage would be.

A ``colt-ray ticket`` run writes its Parquet and every ticket into the bucket (nothing under a local
directory named ``s3:``), ``colt-ray report`` reads them back from the URI, and ``colt-ray transfer`` trains a
ticket read from the bucket.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("moto", reason="moto[server] is a dev dependency (pip install -e '.[dev]')")
boto3 = pytest.importorskip("boto3")

import test_sweep  # noqa: E402

ray_tag = test_sweep.ray_tag  # the fixture: a private RAY_TMPDIR whose processes are killed afterwards

BUCKET = "colt-ray-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 (stopped by its process id afterwards) and the environment that points
    boto3 and pyarrow at it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("moto's S3 server did not start")
                time.sleep(0.2)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        yield {**os.environ, **env}, client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def colt_ray(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colt_ray", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_ticket_report_and_transfer_through_s3(s3_env, tmp_path):
    env, client = s3_env
    out = f"s3://{BUCKET}/runs/imp"
    run = colt_ray(
        ["ticket", "--method", "imp", "--dataset", "digits", "--arch", "lenet300", "--epochs", "1", "--cycles", "2",
         "--backend", "local", "--no-progress", "--out", out],
        env, tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    stored = keys(client, "runs/imp/")
    tickets = [k for k in stored if k.startswith("runs/imp/tickets/") and "/cycle-" in k]
    assert len(tickets) == 3  # cycles 0, 1, 2: every ticket is in the bucket
    assert sum(k.endswith("/theta0.safetensors") for k in stored) == 1  # theta_0 once per run
    assert any(k.startswith("runs/imp/cycles/") for k in stored) and any(k.startswith("runs/imp/runs/") for k in stored)
    assert not any(".tmp-" in k for k in stored)  # written whole, then moved into place
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*")), "a file landed on local disk"

    report = colt_ray(["report", out], env, tmp_path)  # written next to the results: into the bucket
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Best ticket per (method, dataset, arch)" in report.stdout
    written = keys(client, "runs/imp/report/")
    assert "runs/imp/report/report.md" in written and "runs/imp/report/accuracy_vs_sparsity.png" in written
    body = client.get_object(Bucket=BUCKET, Key="runs/imp/report/report.md")["Body"].read().decode()
    assert (
        "Best ticket per (method, dataset, arch)" in body
        and "![accuracy_vs_sparsity](accuracy_vs_sparsity.png)" in body
    )
    png = client.get_object(Bucket=BUCKET, Key="runs/imp/report/accuracy_vs_sparsity.png")["Body"].read()
    assert png.startswith(b"\x89PNG")
    local = colt_ray(["report", out, "--out", str(tmp_path / "report"), "--format", "csv"], env, tmp_path)
    assert local.returncode == 0 and (tmp_path / "report" / "best_tickets.csv").exists(), local.stderr[-2000:]

    ticket = f"s3://{BUCKET}/{tickets[-1]}"
    moved = colt_ray(["transfer", ticket, "--dataset", "synthetic", "--epochs", "1", "--no-progress"], env, tmp_path)
    assert moved.returncode == 0, moved.stderr[-2000:]
    result = json.loads(moved.stdout.strip().splitlines()[-1])
    assert result["ticket"] == ticket and result["sparsity"] == pytest.approx(0.36, abs=1e-3)

    alone = f"s3://{BUCKET}/exported/ticket.safetensors"  # theta_0 inside, read from the run's theta0 file
    exported = colt_ray(["export", ticket, alone], env, tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert keys(client, "exported/") == ["exported/ticket.safetensors"]
    size = client.head_object(Bucket=BUCKET, Key="exported/ticket.safetensors")["ContentLength"]
    small = client.head_object(Bucket=BUCKET, Key=tickets[-1])["ContentLength"]
    assert size > 4 * small


def test_a_missing_ticket_in_the_bucket_is_one_line_exit_2(s3_env, tmp_path):
    env, _ = s3_env
    done = colt_ray(["transfer", f"s3://{BUCKET}/no/such.safetensors", "--dataset", "synthetic"], env, tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert f"ticket: no such file s3://{BUCKET}/no/such.safetensors" in done.stderr


@pytest.mark.slow
def test_a_sweep_on_s3_survives_an_interruption_and_resumes_with_every_cycle_once(
    s3_env, tmp_path, ray_tag, monkeypatch
):
    import signal

    from test_sweep import check_one_ticket_row_per_trial_cycle, kill_tagged, tiny_space, wait_for, write_space

    from colt_ray.results.reader import load_results

    env, client = s3_env
    env = {**env, "RAY_TMPDIR": ray_tag}
    space = write_space(tmp_path, tiny_space("s3resume", budget={"num_samples": 3, "max_concurrent": 1}))
    cmd = [sys.executable, "-m", "colt_ray", "sweep", space, "--storage", f"s3://{BUCKET}/sweeps", "--quiet"]
    cmd += ["--address", "local"]  # its own Ray: workers that inherit this environment (the bucket's endpoint)
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path)  # fmt: skip
        try:
            # a trial's checkpoint file (tune/resume/trial_<id>.npz) and Tune's snapshot are in the bucket
            wait_for(lambda: any("/resume/trial_" in k for k in keys(client, "sweeps/s3resume/tune/"))
                     and any("/experiment_state-" in k for k in keys(client, "sweeps/s3resume/tune/")), 300,
                     "a checkpoint in the bucket", proc)  # fmt: skip
            wait_for(lambda: "sweeps/s3resume/trials.parquet" in keys(client, "sweeps/s3resume/"), 120,
                     "the live trials table in the bucket", proc)  # fmt: skip
            uri = f"s3://{BUCKET}/sweeps/s3resume"
            live = subprocess.run([sys.executable, "-m", "colt_ray", "status", uri], env=env, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            assert live.returncode == 0 and live.stdout.startswith(f"sweep s3resume at {uri} (updated "), live
            assert "trials: 3 planned; " in live.stdout and re.search(r"\b[01] running", live.stdout), live.stdout
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_tagged(ray_tag)
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for k, v in env.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)  # pyarrow in this process reads the bucket too
    res = load_results(f"s3://{BUCKET}/sweeps/s3resume")
    assert len(res.trials) == 3 and set(res.trials["status"]) == {"completed"}
    check_one_ticket_row_per_trial_cycle(res)
    final = subprocess.run([sys.executable, "-m", "colt_ray", "status", f"s3://{BUCKET}/sweeps/s3resume"], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert final.returncode == 0 and "(finished)" in final.stdout and "3 done (3 completed" in final.stdout, final
    stored = keys(client, "sweeps/s3resume/tickets/")
    for run_id in res.trials["run_id"]:
        assert {f"sweeps/s3resume/tickets/{run_id}/cycle-{c:04d}.safetensors" for c in range(3)} <= set(stored)
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*")), "a file landed on local disk"
