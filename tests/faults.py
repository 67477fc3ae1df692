"""Deterministic fault injection for Ray tests: a worker setup hook that kills the actor process at a named
cycle of a named ``ShardTrainer`` method, once, when the test has armed it (no sleeps racing the work).

``ray.init(runtime_env={"worker_process_setup_hook": kill_hook(folder)})`` installs it in every worker of the
session; it does nothing until ``arm(folder, "evaluate", 0)`` drops a marker. The first call of that method at
that cycle claims the marker (an atomic rename, so exactly one process takes it) and the process exits, as a
node's OOM killer or a crash would end it; Ray restarts the actor and retries the call.
"""

from __future__ import annotations

import os

MARKER = "{method}-{cycle}"  # the armed kill's file in the hook's folder; ``.taken`` once it went off


def kill_hook(folder: str):
    """A setup hook (a closure, so Ray ships it by value to workers that cannot import this module)."""

    def install() -> None:
        import functools
        import inspect

        from colt_ray.parallel import actors

        def wrap(name: str):
            original = getattr(actors.ShardTrainer, name)
            signature = inspect.signature(original)

            @functools.wraps(original)
            def wrapped(self, *args, **kwargs):
                cycle = signature.bind(self, *args, **kwargs).arguments["cycle"]
                marker = os.path.join(folder, MARKER.format(method=name, cycle=cycle))
                try:
                    os.rename(marker, marker + ".taken")
                except OSError:
                    return original(self, *args, **kwargs)
                os._exit(1)

            setattr(actors.ShardTrainer, name, wrapped)

        wrap("evaluate")
        wrap("run")

    return install


def arm(folder: str, method: str, cycle: int) -> None:
    """Kill the next process that calls ``ShardTrainer.<method>`` at ``cycle``."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, MARKER.format(method=method, cycle=cycle)), "w").close()


def taken(folder: str, method: str, cycle: int) -> bool:
    """Whether an armed kill went off."""
    return os.path.exists(os.path.join(folder, MARKER.format(method=method, cycle=cycle) + ".taken"))
