"""Where a sweep's lease file lives, with the compare-and-swap the lease needs (:mod:`lease`).

Every store has the same four operations on one small file, each all or nothing:

* ``read()``: ``(bytes, version)``, or ``(None, None)`` when there is no lease file;
* ``create(data)``: the new version, or None when a lease file exists already (someone else won);
* ``swap(version, data)``: replace the file only if it is still at ``version``; the new version, or None;
* ``delete(version)``: remove it only if it is still at ``version``.

On a local disk the version is the file's bytes and every operation holds an exclusive ``flock`` on a lock file
beside it (the kernel drops the lock of a killed process, so a dead owner never leaves the lock held); the
file itself is written to a temporary name and renamed, so a reader without the lock never sees half of it.
On S3 the version is the object's ETag and the operations are conditional requests (``If-None-Match: *`` to
create, ``If-Match: <etag>`` to swap and delete), atomic in the service. Other ``pyarrow.fs`` stores (GCS,
HDFS) get a plain check-then-write: it refuses a second sweep started seconds later, but two started in the
same instant may both win (docs/sweeps.md says so).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Any, Optional
from urllib.parse import urlparse

from colt_ray.core.errors import ConfigError, one_line
from colt_ray.results import layout

LOCK_FILE = ".lease.lock"


class LocalStore:
    """The lease file on a local (or NFS) disk, and its lock file, both removed with the lease (and the
    directories this store created for them, if nothing else was put there)."""

    def __init__(self, path: str):
        self.path = path
        self.lock_path = os.path.join(os.path.dirname(path), LOCK_FILE)
        self._created: list[str] = []

    def _make_dirs(self) -> None:
        missing, d = [], os.path.dirname(self.path)
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._created += [m for m in reversed(missing) if m not in self._created]

    @contextmanager
    def _locked(self):
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # no directory yet, or a releaser just removed it
                self._make_dirs()
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the lock file may have been removed (by a release) while this one waited for it
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def read(self) -> tuple[Optional[bytes], Optional[bytes]]:
        """The lease's bytes (their own version), or ``(None, None)``."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None, None
        return data, data

    def create(self, data: bytes) -> Optional[bytes]:
        """Write the lease unless one exists."""
        with self._locked():
            if os.path.exists(self.path):
                return None
            self._write(data)
        return data

    def swap(self, version: bytes, data: bytes) -> Optional[bytes]:
        """Replace the lease if it still holds ``version``."""
        with self._locked():
            if self.read()[0] != version:
                return None
            self._write(data)
        return data

    def delete(self, version: bytes) -> None:
        """Remove the lease if it still holds ``version``, then its lock file (a waiter sees it gone and opens a
        new one) and the directories created for them that hold nothing else."""
        with self._locked():
            if self.read()[0] != version:
                return
            os.remove(self.path)
            os.remove(self.lock_path)
        for d in reversed(self._created):
            try:
                os.rmdir(d)  # only ever an empty directory
            except OSError:
                break

    def _write(self, data: bytes) -> None:
        from colt_ray.results.writer import write_bytes_atomic

        write_bytes_atomic(os.path.dirname(self.path), (os.path.basename(self.path),), data)


# what S3 answers when a condition does not hold: 412, or 409 while another conditional write is in flight
LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class S3Store:
    """The lease object on S3 (or an S3-compatible store honouring conditional writes), through boto3, which
    reads the same environment as pyarrow's S3 (``AWS_ENDPOINT_URL``, keys, region)."""

    def __init__(self, uri: str):
        try:
            import boto3
        except ImportError:
            raise ConfigError(
                "storage", "an s3:// storage needs boto3 for the sweep's lease: pip install 'colt_ray[s3]'"
            ) from None
        parsed = urlparse(uri)
        self.bucket, self.key = parsed.netloc, parsed.path.lstrip("/")
        self.client = boto3.client("s3")
        if "IfMatch" not in self.client.meta.service_model.operation_model("PutObject").input_shape.members:
            raise ConfigError("storage", "this boto3 has no S3 conditional writes, which the sweep's lease needs: "
                              "pip install -U 'boto3>=1.36'")  # fmt: skip

    def _lost(self, error: Any) -> bool:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code in LOST_RACE or status in LOST_RACE

    def read(self) -> tuple[Optional[bytes], Optional[str]]:
        """The lease's bytes and ETag, or ``(None, None)``."""
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise OSError(f"cannot read s3://{self.bucket}/{self.key}: {one_line(e)}") from None
        return got["Body"].read(), got["ETag"]

    def _put(self, data: bytes, **condition: str) -> Optional[str]:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)["ETag"]
        except ClientError as e:
            if self._lost(e) or e.response.get("Error", {}).get("Code") == "NoSuchKey":
                return None
            raise OSError(f"cannot write s3://{self.bucket}/{self.key}: {one_line(e)}") from None

    def create(self, data: bytes) -> Optional[str]:
        """Put the lease if no object has its key (``If-None-Match: *``)."""
        return self._put(data, IfNoneMatch="*")

    def swap(self, version: str, data: bytes) -> Optional[str]:
        """Put the lease if the object still has ETag ``version`` (``If-Match``)."""
        return self._put(data, IfMatch=version)

    def delete(self, version: str) -> None:
        """Delete the lease if it still has ETag ``version``: S3's conditional delete, or where the store (or
        botocore) has none, a look at the ETag first (only a takeover in that instant could be lost)."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
            return
        except ParamValidationError:
            pass
        except ClientError as e:
            if self._lost(e) or e.response.get("Error", {}).get("Code") == "NoSuchKey":
                return
            if e.response.get("Error", {}).get("Code") not in ("NotImplemented", "InvalidArgument"):
                raise OSError(f"cannot delete s3://{self.bucket}/{self.key}: {one_line(e)}") from None
        if self.read()[1] == version:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


class FsStore:
    """The lease file on another ``pyarrow.fs`` store: check, then write (not atomic between two writers)."""

    def __init__(self, uri: str):
        self.uri = uri

    def read(self) -> tuple[Optional[bytes], Optional[bytes]]:
        """The lease's bytes (their own version), or ``(None, None)``."""
        from colt_ray.results.writer import read_file_bytes

        try:
            data = read_file_bytes(self.uri)
        except ConfigError:
            return None, None
        return data, data

    def create(self, data: bytes) -> Optional[bytes]:
        """Write the lease unless one exists."""
        return None if self.read()[0] is not None else self._write(data)

    def swap(self, version: bytes, data: bytes) -> Optional[bytes]:
        """Replace the lease if it still holds ``version``."""
        return self._write(data) if self.read()[0] == version else None

    def delete(self, version: bytes) -> None:
        """Remove the lease if it still holds ``version``."""
        if self.read()[0] == version:
            fs, path = layout.resolve(self.uri)
            fs.delete_file(path)

    def _write(self, data: bytes) -> bytes:
        from colt_ray.results.writer import put_bytes

        fs, path = layout.resolve(self.uri)
        put_bytes(fs, path, data)
        return data


def open_store(path: str) -> Any:
    """The store of the lease file at ``path`` (a local path, ``s3://bucket/key`` or another pyarrow URI)."""
    if not layout.is_uri(path):
        return LocalStore(layout.local_path(path))
    if path.startswith("s3://"):
        return S3Store(path)
    return FsStore(path)
