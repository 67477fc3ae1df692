"""What ``scripts/submit_sweep.py`` uploads: the working directory Ray packages for the job, built with Ray's
own packaging code from the exclude patterns the script passes."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from submit_sweep import runtime_env  # noqa: E402

packaging = pytest.importorskip("ray._private.runtime_env.packaging")


def uploaded(tree: pathlib.Path) -> set[str]:
    """The files Ray would upload from ``tree`` as the job's working directory."""
    out = tree.parent / "package.zip"
    packaging.create_package(str(tree), out, include_gitignore=True, excludes=runtime_env("none")["excludes"])
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_the_upload_holds_every_module_of_the_package_and_none_of_the_results(tmp_path):
    tree = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tree / name)
    # what a user's checkout also holds: results and sweeps directories, a virtual environment
    for junk in ("results/run/cycles/part-0.parquet", "sweeps/demo/state.json", ".venv/bin/python", "results/x.txt"):
        (tree / junk).parent.mkdir(parents=True, exist_ok=True)
        (tree / junk).write_text("not for the cluster")
    files = uploaded(tree)
    modules = {str(p.relative_to(tree)) for p in (tree / "colt_ray").rglob("*.py")}
    assert "colt_ray/results/reader.py" in modules and modules <= files, sorted(modules - files)[:3]
    assert {"pyproject.toml", "search_spaces/quick.yaml"} <= files
    leaked = [f for f in files if f.split("/")[0] in ("results", "sweeps", ".venv", ".git")]
    assert not leaked, leaked


def test_the_jobs_pip_list_pins_the_versions_installed_here():
    from importlib.metadata import version

    from submit_sweep import job_pip_packages

    pinned = job_pip_packages()
    assert f"optuna=={version('optuna')}" in pinned and f"pyarrow=={version('pyarrow')}" in pinned
    assert not any(p.split("=")[0] in ("torch", "ray", "torchvision") for p in pinned)  # the cluster image's
    assert all("==" in p for p in pinned)
