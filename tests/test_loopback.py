"""A Ray that colt-ray starts on this machine listens on loopback addresses only (issue 24, item 1).

Each test runs the real command in a subprocess under a private RAY_TMPDIR, lists the listening TCP sockets of
every process carrying that tag (the driver, the GCS, the raylet, the agents, the workers) while it runs, and
asserts that each is bound to 127.0.0.1 (or ::1, or ::ffff:127.0.0.1), never to a wildcard or an external
address.
"""

import ipaddress
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
import test_sweep
from test_sweep import REPO, tagged_pids, tiny_space, write_space

ray_tag = test_sweep.ray_tag  # the fixture: a private RAY_TMPDIR, its processes killed afterwards


def listening(pids: list[int]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pids``."""
    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.name(), conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def watch_sockets(cmd: list[str], tag: str, cwd, timeout: float = 240) -> tuple[set, subprocess.CompletedProcess]:
    """Run ``cmd`` to its end, sampling the listening sockets of its Ray processes every 0.2 s."""
    env = {**os.environ, "RAY_TMPDIR": tag, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    seen: set = set()
    with open(os.path.join(tag, "log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            seen |= listening([proc.pid, *tagged_pids(tag)])
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"{' '.join(cmd)} still running after {timeout}s")
    with open(os.path.join(tag, "log")) as f:
        output = f.read()
    return seen, subprocess.CompletedProcess(cmd, proc.returncode, output, "")


def check_loopback(seen: set, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:]
    names = {name for name, _, _ in seen}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), seen  # Ray was watched
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_loopback_address_check():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not any(is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"))


@pytest.mark.slow
def test_a_ray_run_listens_on_loopback_only(tmp_path, ray_tag):
    cmd = [sys.executable, "-m", "colt_ray", "ticket", "--method", "colt", "--shards", "2", "--backend", "ray"]
    cmd += ["--dataset", "digits", "--arch", "lenet300", "--epochs", "1", "--cycles", "1", "--no-progress"]
    seen, result = watch_sockets([*cmd, "--out", str(tmp_path / "out")], ray_tag, tmp_path)
    check_loopback(seen, result)


@pytest.mark.slow
def test_a_sweep_listens_on_loopback_only(tmp_path, ray_tag):
    space = write_space(tmp_path, tiny_space("loopback", budget={"num_samples": 2, "max_concurrent": 2}))
    cmd = [sys.executable, "-m", "colt_ray", "sweep", space, "--storage", str(tmp_path / "sweeps"), "--quiet"]
    seen, result = watch_sockets(cmd, ray_tag, tmp_path)
    check_loopback(seen, result)


def test_a_stale_ray_address_is_one_line_exit_2_fast_and_writes_nothing(tmp_path):
    """A RAY_ADDRESS left from a stopped Ray (issue 24, item 3): Ray would retry it for minutes."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "colt_ray", "ticket", "--method", "colt", "--shards", "2", "--backend", "ray"]
    t0 = time.time()
    done = subprocess.run([*cmd, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.time() - t0 < 30, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "unset RAY_ADDRESS" in done.stderr, done.stderr
    assert f"no Ray answers at 127.0.0.1:{port}" in done.stderr and not (tmp_path / "out").exists()


def readme_recipe() -> str:
    """The README's "start Ray once" recipe, as printed: the bash block that runs `ray start --head`."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = f.read().split("```bash\n")[1:]
    (recipe,) = [b.split("```")[0] for b in blocks if "ray start --head --port 6379 --num-cpus" in b]
    return recipe


@pytest.mark.slow
def test_the_readme_recipe_runs_verbatim_on_loopback_with_token_auth(tmp_path, ray_tag):
    """Pasted as it stands (the port made free, `...` filled with a tiny run): the head listens on loopback
    only with token authentication on, the runs join it, and the shell ends with RAY_ADDRESS unset."""
    port = free_port()
    recipe = readme_recipe().replace("6379", str(port))
    tiny = "--dataset digits --arch lenet300 --epochs 1 --cycles 1 --no-progress --out " + str(tmp_path / "out")
    recipe = recipe.replace(
        "colt-ray ticket --method colt --shards 2 ...", f"colt-ray ticket --method colt --shards 2 {tiny}"
    )
    recipe = recipe.replace("ray stop\n", f"python -c 'import test_loopback as t; t.check_head({port})'\nray stop\n")
    script = "set -e\n" + recipe + 'test -z "${RAY_ADDRESS:-}" && echo RECIPE-DONE\n'
    env = {**os.environ, "RAY_TMPDIR": ray_tag, "PYTHONPATH": f"{REPO}:{os.path.dirname(__file__)}"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(key, None)
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and "RECIPE-DONE" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "done: run" in done.stdout and "InvalidAuthToken" not in done.stderr, done.stderr[-3000:]
    assert "HEAD-ON-LOOPBACK" in done.stdout, done.stdout[-2000:]
    assert "Token authentication is enabled" in done.stdout + done.stderr  # the head requires its token


def check_head(port: int) -> None:
    """Inside the recipe, before `ray stop`: every listening socket of the head's GCS and raylet (those of this
    RAY_TMPDIR) is on loopback, the GCS among them at the recipe's port."""
    tag = os.environ["RAY_TMPDIR"]
    mine = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] in ("gcs_server", "raylet") and p.environ().get("RAY_TMPDIR") == tag:
                mine.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    seen = listening(mine)
    assert seen and all(is_loopback(ip) for _, ip, _ in seen), seen
    assert any(p == port for _, _, p in seen), seen
    print("HEAD-ON-LOOPBACK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_refused_auth_token_is_one_line_naming_the_fix_fast_and_writes_nothing(tmp_path, ray_tag):
    """A head with token authentication on: a wrong token, and no token at all, each end in one line that
    says which and how to fix it, within seconds (Ray's client retried for ~20 s, a log line per try), exit 2,
    nothing written; the head's own token joins (checked by the probe, before Ray's client starts)."""
    port, token = free_port(), "a" * 64
    head_env = {**os.environ, "RAY_TMPDIR": ray_tag, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    start = [ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false"]
    started = subprocess.run(start, env=head_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    cmd = [sys.executable, "-m", "colt_ray", "ticket", "--dataset", "digits", "--epochs", "1", "--cycles", "1"]
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.update(RAY_TMPDIR=ray_tag, RAY_ADDRESS=f"127.0.0.1:{port}", HOME=str(home))
    cases = {"wrong": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "b" * 64}, "none": {}}
    for case, extra in cases.items():
        out = tmp_path / case
        t0 = time.time()
        done = subprocess.run(
            [*cmd, "--out", str(out)], env={**base, **extra}, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 2 and time.time() - t0 < 15, (case, done.stderr[-2000:])
        err = done.stderr.strip()
        assert err.count("\n") == 0 and "InvalidAuthToken" not in err, (case, err)
        assert f"the Ray cluster at 127.0.0.1:{port} refused to authenticate this machine" in err, err
        assert ("is not the cluster's" if case == "wrong" else "sent no token") in err and "ray get-auth-token" in err
        assert not out.exists()
    # the head's own token passes the probe (in a process of its own: Ray reads the token at import)
    probe = f"from colt_ray.parallel import cluster; cluster.check_token('127.0.0.1:{port}'); print('TOKEN-OK')"
    env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ok = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "TOKEN-OK" in ok.stdout, ok.stderr[-2000:]
