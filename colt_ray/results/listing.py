"""Which results files a directory holds: the table folders only, listed one level at a time.

A results directory (one run's ``--out``, a sweep directory) keeps its tables in ``runs/``, ``cycles/`` and
``layers/`` plus ``trials.parquet``; beside them are ``tickets/`` (one file per ticket: thousands in a
sweep), ``tune/``, ``report/`` and small JSON files. The lister never descends into those: it lists a
directory, takes its table folders (listed once each, not recursively) and its ``trials.parquet``, and
recurses only into other folders (a tree of runs or sweeps). On an object store each listing is one request
per 1,000 names, so a sweep directory costs four listings however many tickets it holds.

Each file comes back as a :class:`FileEntry` with its size and modification time, so readers open it without
asking its size again (one request less per file on S3) and compaction removes a part only if it is still
the version it read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.errors import ConfigError
from colt_ray.results import layout

SKIP_DIRS = {layout.TICKETS_DIR, layout.REPORT_DIR, layout.TUNE_DIR}


@dataclass(frozen=True)
class FileEntry:
    """One results file: its path (local, or inside the filesystem), size in bytes, mtime in ns (None: unknown)."""

    path: str
    size: Optional[int]
    mtime_ns: Optional[int]

    @property
    def kind(self) -> Optional[str]:
        return layout.classify(self.path)


def list_results(path: layout.PathLike, filesystem: Any = None) -> tuple[Optional[Any], list[FileEntry]]:
    """``(filesystem or None, every results file under path)``, sorted by path.

    Raises ``ConfigError("results", ...)`` when ``path`` is missing, not a directory or empty."""
    fs, root = layout.resolve(path, filesystem)
    shown = os.fspath(path)
    _check_dir(fs, root, shown)
    found: list[FileEntry] = []
    pending, any_entry = [root], False
    while pending:
        directory = pending.pop()
        for name, is_dir, entry in entries(fs, directory):
            any_entry = True
            if not is_dir:
                if name == layout.TRIALS_FILE:
                    found.append(entry)
            elif name in layout.TABLE_DIRS:
                found.extend(e for n, d, e in entries(fs, entry.path) if not d and layout.is_result_file(n))
            elif name not in SKIP_DIRS and not name.startswith("."):
                pending.append(entry.path)
    if not any_entry:
        raise ConfigError("results", f"{shown} is empty")
    return fs, sorted(found, key=lambda e: e.path)


def _check_dir(fs: Any, root: str, shown: str) -> None:
    if fs is None:
        if not os.path.exists(root):
            raise ConfigError("results", f"{shown} does not exist")
        if not os.path.isdir(root):
            raise ConfigError("results", f"{shown} is not a directory")
        return
    import pyarrow.fs as pafs

    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError("results", f"{shown} does not exist")
    if info.type != pafs.FileType.Directory:
        raise ConfigError("results", f"{shown} is not a directory")


def entries(fs: Any, directory: str) -> list[tuple[str, bool, FileEntry]]:
    """``(name, is a directory, entry)`` for each name in ``directory`` (not recursive; [] if it is missing);
    ``fs`` None for the local disk."""
    if fs is None:
        out = []
        try:
            with os.scandir(directory) as it:
                for d in it:
                    is_dir = d.is_dir()
                    st = None if is_dir else d.stat()
                    out.append((d.name, is_dir, FileEntry(d.path, st and st.st_size, st and st.st_mtime_ns)))
        except FileNotFoundError:  # removed while listed (a compaction, a report)
            return []
        return out
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True, recursive=False))
    return [
        (
            i.base_name,
            i.type == pafs.FileType.Directory,
            FileEntry(i.path, i.size if i.type == pafs.FileType.File else None, i.mtime_ns),
        )
        for i in infos
    ]
