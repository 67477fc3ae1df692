"""Shared test settings: one torch thread so results are bitwise reproducible and tests share 2 cores; Rays on
127.0.0.1 only; the ``no_ray`` fixture for tests of input that must be refused before Ray starts."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# every Ray a test starts (ray.init, cluster_utils, ray start) listens on 127.0.0.1 only, as colt-ray's own
# local Ray does (colt_ray.parallel.cluster.loopback_only); read by Ray at import, and by every process it starts
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if a sweep starts (or joins) Ray: bad input must end before that."""
    from colt_ray.parallel.sweep import driver

    def refuse(address):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(driver, "init_ray", refuse)
