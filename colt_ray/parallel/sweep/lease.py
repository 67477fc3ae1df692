"""One sweep per name: the lease ``STORAGE/NAME/lease.json``.

A sweep takes the lease before Ray starts or anything is written, renews it every ``COLT_RAY_LEASE_RENEW``
seconds from a background thread, and removes it when it ends (an error and Ctrl-C too). The file says who holds
it: a token, the host, the driver's pid, when it started and when it last renewed, and the TTL it keeps.

Another ``colt-ray sweep`` on the same storage and name refuses (one line naming the holder, exit 2) while the
lease is live: renewed less than its TTL ago, and, on the holder's own host, its pid still running. A lease that
is no longer live (the owner killed, its node lost) is taken over by the next sweep, which is ``--resume``, as a
new sweep on an existing name is refused anyway. Taking over is a compare-and-swap on the lease as it was read
(:mod:`lease_stores`), so of two sweeps taking over at once exactly one wins.
"""

from __future__ import annotations

import _thread
import datetime as dt
import json
import os
import secrets
import socket
import threading
import time
from typing import Any, Optional

from colt_ray.core.errors import ConfigError, RunError, one_line, stderr_line
from colt_ray.parallel.sweep.lease_stores import open_store
from colt_ray.results import layout

LEASE_FILE = "lease.json"
TTL_ENV, RENEW_ENV = "COLT_RAY_LEASE_TTL", "COLT_RAY_LEASE_RENEW"
DEFAULT_TTL_S = 60.0  # a driver stalled or cut off this long loses its sweep to a --resume
DEFAULT_RENEW_S = 10.0  # several renewals per TTL: one slow write to an object store does not lose it


class LeaseHeld(ConfigError):
    """Another sweep holds the lease of this storage and name (exit 2, nothing written)."""


def lease_times() -> tuple[float, float]:
    """``(ttl, renew period)`` in seconds, from ``COLT_RAY_LEASE_TTL`` / ``COLT_RAY_LEASE_RENEW`` (defaults 60
    and 10, or a third of a shorter TTL); a one-line ConfigError unless ``0 < renew < ttl``."""
    ttl = _seconds(TTL_ENV, DEFAULT_TTL_S)
    renew = _seconds(RENEW_ENV, min(DEFAULT_RENEW_S, ttl / 3))
    if renew >= ttl:
        raise ConfigError(RENEW_ENV, f"must be shorter than {TTL_ENV} ({ttl:g} s), got {renew:g}")
    return ttl, renew


def _seconds(env: str, default: float) -> float:
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86400:
        raise ConfigError(env, f"seconds between 0 and 86400, got {raw!r}")
    return value


def lease_path(out: str) -> str:
    """``OUT/lease.json``."""
    return layout.path_at(out, LEASE_FILE)


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def now_s() -> float:
    """The clock leases are judged by (tests move it on)."""
    return time.time()


def _age(stamp: str) -> float:
    return now_s() - dt.datetime.fromisoformat(stamp).timestamp()


def why_not_live(held: Optional[dict]) -> Optional[str]:
    """Why the lease record ``held`` no longer binds (its pid ended on this host, or it was not renewed within
    its TTL, or it cannot be read), or None when it is live."""
    try:
        if held["host"] == socket.gethostname() and not pid_running(int(held["pid"])):
            return f"its driver (pid {held['pid']}) is no longer running"
        age = _age(held["renewed"])
        if age > float(held["ttl_s"]):
            return f"it was last renewed {age:.0f} s ago, past its {float(held['ttl_s']):g} s TTL"
    except (KeyError, TypeError, ValueError):
        return "it cannot be read"
    return None


def holder_text(held: dict) -> str:
    """``host H, pid P, since 2026-12-04 18:40:01 UTC``."""
    since = held.get("started")
    try:
        since = dt.datetime.fromisoformat(since).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        pass
    return f"host {held.get('host')}, pid {held.get('pid')}, since {since}"


def _decode(data: Optional[bytes]) -> Optional[dict]:
    if data is None:
        return None
    try:
        held = json.loads(data)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def refusal(out: str, name: str, held: dict, resume: bool) -> LeaseHeld:
    """The one-line error for a sweep that finds ``held`` live."""
    try:
        renewed = f"; lease renewed {_age(held['renewed']):.0f} s ago"
    except (KeyError, TypeError, ValueError):
        renewed = ""
    then = (
        "--resume takes it over once that driver has stopped"
        if resume
        else "wait for it to end (then --resume continues it), or choose another --name"
    )
    return LeaseHeld(
        "name",
        f"sweep {name!r} is already running at {out} ({holder_text(held)}{renewed}); {then}",
    )


def check_free(out: str, name: str, resume: bool) -> None:
    """Raise :class:`LeaseHeld` if a live lease holds ``out`` (a read only: nothing written); the lease's
    settings are checked here too, before anything starts."""
    lease_times()
    try:
        data, _ = open_store(lease_path(out)).read()
    except OSError as e:
        raise ConfigError("storage", f"cannot read the lease of {out}: {one_line(e)}") from None
    held = _decode(data)
    if held is not None and why_not_live(held) is None:
        raise refusal(out, name, held, resume)


def acquire(out: str, name: str, resume: bool) -> Lease:
    """Take the lease of the sweep directory ``out``: create it, or take over one that is no longer live
    (saying so in one line); :class:`LeaseHeld` when a live one holds it. Start renewing it."""
    ttl, renew = lease_times()
    store = open_store(lease_path(out))
    stamp = _now()
    record = {
        "sweep": name, "token": secrets.token_hex(8), "host": socket.gethostname(), "pid": os.getpid(),
        "started": stamp, "renewed": stamp, "ttl_s": ttl,
    }  # fmt: skip
    data = json.dumps(record).encode()
    for _ in range(5):  # each pass loses only to a writer that changed the lease since it was read
        try:
            current, version = store.read()
            if current is None:
                got = store.create(data)
            else:
                held = _decode(current)
                why = why_not_live(held)
                if why is None:
                    raise refusal(out, name, held, resume)
                got = store.swap(version, data)
                if got is not None:
                    stderr_line(f"sweep {name}: took over the lease of {holder_text(held)}: {why}")
        except OSError as e:
            raise ConfigError("storage", f"cannot take the lease of {out}: {one_line(e)}") from None
        if got is not None:
            return Lease(store, record, got, renew).start()
    held = _decode(store.read()[0]) or {}
    raise refusal(out, name, held, resume) if held else ConfigError("storage", f"cannot take the lease of {out}")


class Lease:
    """A held lease, renewed by a daemon thread until :meth:`release` (also as a context manager)."""

    def __init__(self, store: Any, record: dict, version: Any, renew_s: float):
        self.store, self.record, self.version, self.renew_s = store, record, version, renew_s
        self.lost: Optional[str] = None  # set when another sweep took the lease over
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renewing, name="colt-ray-lease", daemon=True)

    def start(self) -> Lease:
        """Start the renewing thread; returns self."""
        self._thread.start()
        return self

    def renew(self) -> bool:
        """Rewrite the lease with a fresh ``renewed`` time if it is still ours; False (``lost`` set) if not."""
        with self._lock:
            if self.lost or self._stop.is_set():
                return not self.lost
            record = {**self.record, "renewed": _now()}
            got = self.store.swap(self.version, json.dumps(record).encode())
            if got is not None:
                self.record, self.version = record, got
                return True
            held = _decode(self.store.read()[0]) or {}
            self.lost = f"its lease was taken over by {holder_text(held)}" if held else "its lease was removed"
            return False

    def _renewing(self) -> None:
        warned = False
        while not self._stop.wait(self.renew_s):
            try:
                if not self.renew():
                    stderr_line(f"sweep {self.record['sweep']}: {self.lost}; stopping this driver")
                    _thread.interrupt_main()  # as Ctrl-C: Tune stops its trials, run_sweep writes nothing more
                    return
            except Exception as e:  # noqa: BLE001 - a store that fails once (network) is tried again
                if not warned:
                    stderr_line(f"sweep {self.record['sweep']}: could not renew its lease ({one_line(e)}); retrying")
                    warned = True

    def check_held(self) -> None:
        """Raise a one-line RunError if another sweep took the lease over (its results are not ours to write)."""
        if self.lost:
            raise RunError(f"sweep {self.record['sweep']}: {self.lost} (this driver stalled past its TTL)")

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if not self.lost:
                try:
                    self.store.delete(self.version)
                except OSError as e:  # the TTL frees it anyway
                    stderr_line(f"sweep {self.record['sweep']}: could not remove its lease ({one_line(e)})")

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
