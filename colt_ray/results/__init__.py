"""Results layer: atomic Parquet tables per run/cycle, a reader for one run or a whole sweep, and the report.

Imports are lazy (``from colt_ray.results import load_results`` loads only what it needs); nothing here
imports torch. The report function lives at ``colt_ray.results.report.report`` (the module shares its name).
See ``docs/results.md`` for the layout and every column.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "colt_ray.results.schema",
    "ResultsWriter": "colt_ray.results.writer",
    "check_writable": "colt_ray.results.writer",
    "Results": "colt_ray.results.reader",
    "load_results": "colt_ray.results.reader",
    "ReportOutput": "colt_ray.results.report",
    "report_main": "colt_ray.results.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'colt_ray.results' has no attribute {name!r}")
