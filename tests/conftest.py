"""Shared test settings: one torch thread so results are bitwise reproducible and tests share 2 cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
