"""What grows with a sweep (issue 19): reading results, driver overhead per trial, bytes moved per trial.

Three parts, each a subcommand with ``--smoke-test``:

* ``report``: ``colt-ray report`` as a user runs it (a whole process) on synthetic sweeps of 60 / 600 / 6,000
  runs x 20 cycles (``scripts/synthetic_results.py``: the project's own writer, no training), uncompacted and
  compacted (``colt-ray compact``, timed too), on a local disk and on a moto S3 server on 127.0.0.1, with the
  number of S3 requests each read makes (moto's request log: one line per request). ``--baseline DIR`` runs
  the same command from another checkout (e.g. a ``git worktree`` of the commit before this work) on the
  uncompacted directories, alternating with this one; medians of ``--repeat`` runs.
* ``sweep``: driver overhead per trial of sweeps of many tiny trials (``scripts/bench_sweep_overhead.py``).
* ``data``: bytes put into the object store per trial and per cycle (``scripts/bench_data_moves.py``).

    python scripts/bench_scale.py report --runs 60,600,6000 --baseline /tmp/colt-base [--s3]
    python scripts/bench_scale.py report --smoke-test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
BUCKET = "bench"
REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) ')  # werkzeug colours its log lines


def colt_ray(args: list[str], checkout: str = REPO, env: Optional[dict] = None) -> tuple[float, str]:
    """Run ``python -m colt_ray ARGS`` from ``checkout``; (wall seconds, stderr). Fails loudly on a non-zero exit."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": checkout}
    t0 = time.perf_counter()
    # run from the checkout: ``-m`` puts the working directory first on sys.path, ahead of PYTHONPATH
    done = subprocess.run(
        [sys.executable, "-m", "colt_ray", *args], env=env, capture_output=True, text=True, cwd=checkout
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"colt-ray {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, done.stderr


def synthetic(work: str, runs: int, cycles: int) -> str:
    """The uncompacted synthetic sweep of ``runs`` x ``cycles`` under ``work`` (written once, then reused)."""
    from synthetic_results import write_sweep

    out = os.path.join(work, f"u{runs}x{cycles}")
    done = os.path.join(work, f".u{runs}x{cycles}.complete")
    if not os.path.exists(done):
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        write_sweep(out, runs, cycles, workers=os.cpu_count() or 1)
        open(done, "w").close()
        print(f"  wrote {runs} x {cycles} synthetic runs in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def compacted_copy(src: str) -> tuple[str, float]:
    """A compacted copy of ``src`` (hard links, then ``colt-ray compact``: its wall time)."""
    dst = src.replace(os.sep + "u", os.sep + "c", 1)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=os.link)
    wall, _ = colt_ray(["compact", dst])
    return dst, wall


def count_files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def time_reports(target: str, sides: dict[str, str], repeat: int, env: Optional[dict] = None, log=None) -> dict:
    """Median wall seconds (and S3 requests, with ``log``) of ``colt-ray report TARGET`` per side, alternating."""
    walls: dict[str, list[float]] = {s: [] for s in sides}
    requests: dict[str, list[int]] = {s: [] for s in sides}
    for _ in range(repeat):
        for side, checkout in sides.items():
            with tempfile.TemporaryDirectory() as out:
                before = log.count() if log else 0
                wall, _ = colt_ray(["report", target, "--out", out], checkout, env)
                walls[side].append(wall)
                if log:
                    requests[side].append(log.count() - before)
    return {s: (statistics.median(walls[s]), statistics.median(requests[s]) if log else None) for s in sides}


class MotoLog:
    """moto's server on 127.0.0.1 with its request log in a file; ``count()`` = requests so far."""

    def __init__(self, path: str):
        self.path = path

    def count(self) -> int:
        with open(self.path, errors="replace") as f:
            return sum(1 for line in f if REQUEST.search(line))


@contextlib.contextmanager
def moto_server(work: str) -> Iterator[tuple[dict, MotoLog]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = os.path.join(work, "moto.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stderr=log)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    try:
        for _ in range(150):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)  # fmt: skip
        yield env, MotoLog(log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def upload(local: str, env: dict, name: str) -> str:
    """Copy a results directory (its table files and trials.parquet) into the bucket; its URI."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="bench", secret_key="bench",
                           region="us-east-1", scheme="http")  # fmt: skip
    pafs.copy_files(local, f"{BUCKET}/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs,
                    use_threads=True)  # fmt: skip
    return f"s3://{BUCKET}/{name}"


def report_part(args: argparse.Namespace) -> int:
    os.makedirs(args.work, exist_ok=True)
    sizes = [int(x) for x in args.runs.split(",")]
    ours = {"this": REPO}
    both = {"baseline": args.baseline, "this": REPO} if args.baseline else ours
    rows = []
    print(f"report at scale: {args.cycles} cycles per run, median of {args.repeat} (alternating), work {args.work}")
    for runs in sizes:
        src = synthetic(args.work, runs, args.cycles)
        dst, compact_wall = compacted_copy(src)
        sides = both if runs <= args.baseline_max_runs else ours
        unc = time_reports(src, sides, args.repeat)
        com = time_reports(dst, ours, args.repeat)
        row = {"runs": runs, "parts": count_files(src), "compacted files": count_files(dst), "compact s": compact_wall}
        row.update({f"uncompacted {s} s": w for s, (w, _) in unc.items()}, **{"compacted s": com["this"][0]})
        rows.append(row)
        print("  local", row, flush=True)
    if args.s3:
        with moto_server(args.work) as (env, log):
            for runs in sizes:
                src = os.path.join(args.work, f"u{runs}x{args.cycles}")
                dst = src.replace(os.sep + "u", os.sep + "c", 1)
                sides = both if runs <= args.baseline_max_runs else ours
                row = {"runs": runs}
                if runs <= args.s3_uncompacted_max_runs:
                    unc = time_reports(upload(src, env, f"u{runs}"), sides, args.repeat, env, log)
                    row.update({f"s3 uncompacted {s} s, requests": v for s, v in unc.items()})
                com = time_reports(upload(dst, env, f"c{runs}"), ours, args.repeat, env, log)
                row["s3 compacted s, requests"] = com["this"]
                print("  s3", row, flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    rp = sub.add_parser("report", help="report time and S3 requests on synthetic sweeps, uncompacted and compacted")
    rp.add_argument("--runs", default="60,600,6000", help="comma-separated sweep sizes (runs)")
    rp.add_argument("--cycles", type=int, default=20)
    rp.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "colt-ray-scale"))
    rp.add_argument("--baseline", default=None, help="another checkout to time on the uncompacted directories")
    rp.add_argument("--baseline-max-runs", type=int, default=600, help="skip the baseline on larger sweeps")
    rp.add_argument("--s3", action="store_true", help="also on a moto S3 server on 127.0.0.1")
    rp.add_argument("--s3-uncompacted-max-runs", type=int, default=600, help="upload uncompacted up to this size")
    rp.add_argument("--repeat", type=int, default=3)
    rp.add_argument("--smoke-test", action="store_true", help="4 runs x 2 cycles, once, with S3")
    for name, module in (("sweep", "bench_sweep_overhead"), ("data", "bench_data_moves")):
        p = sub.add_parser(name, help=f"see scripts/{module}.py", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.part != "report":
        module = __import__("bench_sweep_overhead" if args.part == "sweep" else "bench_data_moves")
        return module.main(args.rest)
    if args.smoke_test:
        args.runs, args.cycles, args.repeat, args.s3 = "4", 2, 1, True
        args.work = tempfile.mkdtemp(prefix="colt-ray-scale-smoke-")
    return report_part(args)


if __name__ == "__main__":
    sys.exit(main())
