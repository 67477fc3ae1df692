"""Deterministic fault injection for Ray tests: a worker setup hook that kills the actor process at a named
cycle of a named ``ShardTrainer`` method, or makes a sweep trial raise after a named cycle (``"sink"``), once,
when the test has armed it (no sleeps racing the work).

``ray.init(runtime_env={"worker_process_setup_hook": kill_hook(folder)})`` installs it in every worker of the
session; it does nothing until ``arm(folder, "evaluate", 0)`` drops a marker. The first call of that method at
that cycle claims the marker (an atomic rename, so exactly one process takes it) and the process exits, as a
node's OOM killer or a crash would end it; Ray restarts the actor and retries the call.
"""

from __future__ import annotations

import os

MARKER = "{method}-{cycle}"  # the armed kill's file in the hook's folder; ``.taken`` once it went off
SINK_LOG = "sink.log"  # every sweep trial's cycles as its sink took them, one "trial_id cycle" line each
TEACHER_LOG = "teacher.log"  # one "pid" line per distillation teacher trained in a worker


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

        from colt_ray.core.tickets import teacher

        train_teacher = teacher.DistillingTrainer.train_teacher

        @functools.wraps(train_teacher)
        def counted(self, *args, **kwargs):
            """Every teacher a worker trains, logged (``teacher.log``): a run on Ray trains one, whoever evaluates."""
            with open(os.path.join(folder, TEACHER_LOG), "a") as fh:
                fh.write(f"{os.getpid()}\n")
            return train_teacher(self, *args, **kwargs)

        teacher.DistillingTrainer.train_teacher = counted

        from colt_ray.parallel.sweep import trainable

        sink_call = trainable.TrialSink.__call__

        @functools.wraps(sink_call)
        def sink(self, record):
            """A sweep trial's sink: each call logged (``sink.log``: trial id, cycle); armed, the trial raises
            once its cycle's results, checkpoint file and report are done, as a bug after a cycle would."""
            sink_call(self, record)
            trial_id = record.run_id.rsplit("-", 1)[-1]
            with open(os.path.join(folder, SINK_LOG), "a") as fh:
                fh.write(f"{trial_id} {record.cycle}\n")
            marker = os.path.join(folder, MARKER.format(method="sink", cycle=record.cycle))
            try:
                os.rename(marker, marker + ".taken")
            except OSError:
                return
            raise RuntimeError(f"injected fault after cycle {record.cycle}")

        trainable.TrialSink.__call__ = sink

    return install


def arm(folder: str, method: str, cycle: int) -> None:
    """Kill the next process that calls ``ShardTrainer.<method>`` at ``cycle`` (``"sink"``: make the next sweep
    trial that finishes ``cycle`` raise)."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, MARKER.format(method=method, cycle=cycle)), "w").close()


def taken(folder: str, method: str, cycle: int) -> bool:
    """Whether an armed kill went off."""
    return os.path.exists(os.path.join(folder, MARKER.format(method=method, cycle=cycle) + ".taken"))


def sink_calls(folder: str) -> dict[str, list[int]]:
    """trial id -> the cycles its sink took, in order, over every attempt."""
    calls: dict[str, list[int]] = {}
    path = os.path.join(folder, SINK_LOG)
    if os.path.exists(path):
        for line in open(path).read().splitlines():
            trial_id, cycle = line.split()
            calls.setdefault(trial_id, []).append(int(cycle))
    return calls


def teacher_trainings(folder: str) -> int:
    """How many distillation teachers the session's workers have trained so far."""
    path = os.path.join(folder, TEACHER_LOG)
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0
