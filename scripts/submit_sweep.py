#!/usr/bin/env python3
"""Submit a sweep to a running Ray cluster with ``ray job submit``, then say how to follow it.

    python scripts/submit_sweep.py search_spaces/quick.yaml --address http://HEAD:8265 --storage s3://bucket/sweeps

The job ships this project as its working directory (``--working-dir .``; .gitignore'd files and the
top-level ``sweeps/``, ``results/`` and ``.venv/`` stay home) with a runtime env that pip-installs the
project's light dependencies at the versions installed here (torch and Ray come with the cluster's image;
``--install none`` skips pip where the image has everything). Its entrypoint is ``python -m colt_ray sweep
SPACE --storage ... --name ...``. A local ``--storage`` path is made absolute here: it must be a filesystem
every node sees (or use a URI such as ``s3://``). Extra arguments after ``--`` go to ``colt-ray sweep``
(e.g. ``-- --num-samples 32``). ``--smoke-test`` prints the command without submitting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# heavy packages the cluster image provides; everything else the project needs is pip-installed per job
IMAGE_PACKAGES = ("torch", "torchvision", "ray", "matplotlib")
# gitignore syntax, as Ray reads it: a leading "/" anchors a pattern to the project root, so "/results" drops the
# top-level results directory but keeps the package's colt_ray/results/ (unanchored, it dropped both)
EXCLUDES = [".git", "/.venv", "/sweeps", "/results", "**/__pycache__", "*.parquet", "*.safetensors"]


def job_pip_packages(root: str = ROOT, pin: bool = True) -> list[str]:
    """The project's dependencies (pyproject.toml) minus those the cluster image provides; with ``pin``, each
    at the version installed here (the one the submitter ran and tested), else its declared range."""
    return [_pinned(d) if pin else d for d in _declared(root)]


def _pinned(requirement: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    base = re.split(r"[<>=!~ ;]", requirement, maxsplit=1)[0]  # the name, with any [extras]
    try:
        return f"{base}=={version(base.split('[')[0])}"
    except PackageNotFoundError:
        return requirement  # not installed here: the declared range


def _declared(root: str) -> list[str]:
    """The project's dependencies (pyproject.toml) minus those the cluster image provides."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader in the standard library
        return [
            "optuna>=3.4",
            "pyyaml>=6",
            "safetensors>=0.4",
            "scikit-learn>=1.2",
            "pyarrow>=14",
            "pandas>=2.0",
            "tqdm>=4.60",
        ]
    with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    return [d for d in deps if re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() not in IMAGE_PACKAGES]


def runtime_env(install: str, root: str = ROOT, s3: bool = False) -> dict:
    """The job's runtime env: the project as working dir (+ pip dependencies unless ``install == "none"``; with
    ``s3``, boto3 too: a sweep on s3:// takes its lease with S3's conditional writes)."""
    env: dict = {"excludes": EXCLUDES}
    if install == "deps":
        extra = [_pinned("boto3>=1.36")] if s3 else []
        env["pip"] = {"packages": job_pip_packages(root) + extra, "pip_check": False}
    return env


def storage_arg(storage: str) -> str:
    """A URI unchanged; a local path made absolute (the job runs in a copy of the working dir)."""
    return storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))


def sweep_name(space: str, name: Optional[str]) -> str:
    """``--name`` or the YAML's ``name`` (the file is parsed and checked here, so bad YAML fails before submitting)."""
    sys.path.insert(0, ROOT)
    from colt_ray.parallel.sweep.parse import load_spec

    return load_spec(space).with_overrides(name=name).name


def build_command(args: argparse.Namespace, name: str, submission_id: str) -> list[str]:
    """The ``ray job submit`` command line."""
    space = os.path.relpath(os.path.abspath(args.space), ROOT)  # the job runs in its copy of ROOT
    entry = shlex.split(args.entrypoint) + [
        space,
        "--storage",
        storage_arg(args.storage),
        "--name",
        name,
        *args.sweep_args,
    ]
    return [
        args.ray,
        "job",
        "submit",
        "--address",
        args.address,
        "--submission-id",
        submission_id,
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps(runtime_env(args.install, s3=args.storage.startswith("s3://"))),
        *([] if args.wait else ["--no-wait"]),
        "--",
        *entry,
    ]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="submit_sweep.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("space", metavar="SPACE.yaml", help="search space file (inside the project, so the job has it)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
        help="the cluster's dashboard (job server) address",
    )
    p.add_argument("--storage", default="sweeps", help="results root: a path every node sees, or a URI (s3://...)")
    p.add_argument("--name", default=None, help="sweep name (default: the YAML's)")
    p.add_argument(
        "--install",
        choices=("deps", "none"),
        default="deps",
        help="deps: pip-install the project's light dependencies in the job's runtime env; none: the image has them",
    )
    p.add_argument("--entrypoint", default="python -m colt_ray sweep", help="the sweep command run by the job")
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends (exit status = job's)")
    p.add_argument("--ray", default="ray", help="the ray executable")
    p.add_argument("--smoke-test", action="store_true", help="print the submit command, submit nothing")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.sweep_args = extra  # after --: more arguments for colt-ray sweep
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Submit (or with ``--smoke-test`` print) the job; print how to follow it and where results land."""
    args = parse_args(argv)
    if not os.path.abspath(args.space).startswith(ROOT + os.sep):
        print(
            f"submit_sweep: error: space: {args.space} must be inside {ROOT} (the job gets the project's files only)",
            file=sys.stderr,
        )
        return 2
    try:
        name = sweep_name(args.space, args.name)
    except ValueError as exc:  # ConfigError: bad YAML, unknown key ... (one line)
        print(f"submit_sweep: error: {exc}", file=sys.stderr)
        return 2
    submission_id = f"colt-ray-{name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    cmd = build_command(args, name, submission_id)
    print("$ " + shlex.join(cmd), flush=True)
    if args.smoke_test:
        return 0
    rc = subprocess.call(cmd, cwd=ROOT)
    results = f"{storage_arg(args.storage).rstrip('/')}/{name}"
    print(
        f"job: {submission_id}\n"
        f"follow its logs:  {args.ray} job logs -f {submission_id} --address {args.address}\n"
        f"status / stop:    {args.ray} job status {submission_id} --address {args.address}  |  "
        f"{args.ray} job stop {submission_id} --address {args.address}\n"
        f"results land in:  {results}/ (trials.parquet, runs/, cycles/, layers/, tickets/)\n"
        f"resume if the job dies: python scripts/submit_sweep.py {args.space} --address {args.address} "
        f"--storage {args.storage} --name {name} -- --resume",
        flush=True,
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
