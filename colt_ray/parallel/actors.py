"""Trainer actors: ``ShardTrainer`` (a plain class), the one factory that makes it remote, and two pools.

A pool is "some trainers of a run": ``RayPool`` holds one actor per trainer and trains them concurrently;
``LocalPool`` holds the same plain objects in this process (unit tests, debugging). Both take theta, the data
and the mask as objects returned by ``put`` (an ``ObjectRef`` on Ray, the object itself locally) and return
the trainers' ``TrainOutcome``s in index order. Nothing device-resident crosses a process.

Data reach a trainer by reference: the driver loads the dataset once and puts its arrays in the object
store; a shard trainer gets a reference to its own shard's rows only (the full-data trainer, the full set), and
builds its view of them on its first call (zero-copy on a node; a restarted actor rebuilds it on its retried
call). A shard trainer fetches the full set only if it evaluates a ticket after the mask chain (see
``EvalScheduler``). Masks travel packed at one bit per weight (``PackedMask``), both ways. No trainer opens
the data root.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from colt_ray.core.config import RunConfig
from colt_ray.core.data import bundle_from_arrays
from colt_ray.core.errors import RunError
from colt_ray.core.pruning import Mask, PackedMask, pack_mask, unpack_mask
from colt_ray.core.tickets.search import make_full_trainer, make_shard_trainer, make_ticket_trainer, shard_trainer
from colt_ray.core.tickets.teacher import DistillingTrainer, Teacher, keeps_teacher
from colt_ray.core.tickets.trainer import FULL, TrainOutcome
from colt_ray.parallel.resources import ActorResources

MaskRef = Any  # a put PackedMask (None: dense)
# [reference to (or the) bundle arrays, the trainer's Shard(s) to cut from them, or None when the arrays are
# the trainer's own: the full set of the full-data trainer, a shard's rows (a list of them, stacked shards)]
Data = list
POLL_SECONDS = 0.1  # how often a waiting pool asks whether the run was stopped
WATCH_SECONDS = 2.0  # how often a waiting pool asks Ray whether the actors it waits on are alive


class ShardFailedError(RunError):
    """A trainer actor died more often than its restart budget allows; the run cannot continue."""


def writable(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays from the object store are read-only views; a copy of those that are, for code that writes."""
    return {k: v if v.flags.writeable else v.copy() for k, v in arrays.items()}


def fetch(source: Any) -> Any:
    """The value behind ``source``: an ``ObjectRef`` resolved, anything else as it is (a ``LocalPool``'s)."""
    return ray.get(source) if isinstance(source, ray.ObjectRef) else source


def source_key(source: Any) -> Any:
    return source.hex() if isinstance(source, ray.ObjectRef) else id(source)


def unpacked(mask: Optional[PackedMask]) -> Optional[Mask]:
    return Mask.from_numpy(unpack_mask(mask)) if mask is not None else None


def packed_outcome(outcome: TrainOutcome) -> TrainOutcome:
    """``outcome`` with its proposal at one bit per weight, for the way back (``Coordinator`` unpacks it)."""
    if outcome.mask is None:
        return outcome
    return dataclasses.replace(outcome, mask=pack_mask(outcome.mask))


def unwrap_remote_error(exc: RayTaskError) -> BaseException:
    """The error a remote call raised, as itself (one line), not wrapped in Ray's traceback."""
    return exc.cause if isinstance(exc.cause, Exception) else exc


def gpu_share(cfg: RunConfig, index: Any) -> float:
    """The GPU share the trainer actor of ``index`` reserved (``resources.shard_resources``): one shard's, or
    that of each of the stacked shards it trains."""
    return cfg.resources.gpus_per_shard * (len(index) if isinstance(index, tuple) else 1)


def actor_device(share: float, requested: str = "auto") -> torch.device:
    """The device of a trainer actor that reserved ``share`` of a GPU (``requested``: the device setting).

    No share (or ``--device cpu``): the CPU, without asking torch anything about CUDA, so CUDA is never
    initialised. A share: ``cuda:0``. Ray sets CUDA_VISIBLE_DEVICES of an actor that reserved GPUs to the ids
    it assigned (``ray._private.utils.set_visible_accelerator_ids``, checked here), so the first visible device
    is the GPU Ray gave this actor, shared with the other actors it placed on the same GPU. A share without
    an assigned GPU, or with a GPU torch cannot use, is an error, never a silent CPU run."""
    if share <= 0 or requested == "cpu":
        return torch.device("cpu")
    ids = [str(i) for i in ray.get_gpu_ids()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not ids:
        raise RunError(f"this trainer reserved {share:g} GPU but Ray assigned it no GPU id")
    if visible != ",".join(ids):  # e.g. RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES set on the node
        raise RunError(f"Ray assigned GPU {','.join(ids)} but CUDA_VISIBLE_DEVICES is {visible!r}")
    if not torch.cuda.is_available():
        raise RunError(f"Ray assigned GPU {','.join(ids)} to this trainer but torch cannot use CUDA here")
    return torch.device("cuda", 0)


def cap_gpu_memory(share: float, device: torch.device) -> None:
    """``--gpu-memory-cap``: an actor holding a fraction (< 1) of a GPU may use that fraction of its memory."""
    if device.type == "cuda" and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share, device)


class RayBar:
    """A training's progress bar drawn in the driver's terminal (Ray's ``tqdm_ray``, which has no postfix:
    the last loss and accuracy go into its description)."""

    def __init__(self, total: int, desc: str, unit: str):
        from ray.experimental.tqdm_ray import tqdm

        self.desc, self.bar = desc, tqdm(total=total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_description(f"{self.desc} " + " ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        self.bar.close()


class ShardTrainer:
    """One trainer of a run, alive for the whole run: COLT shard ``index`` (>= 0), or the full-data trainer
    (``FULL``: IMP's levels, a jackpot, COLT's ticket evaluations). Starts without data (so the process and
    its imports start while the driver loads the data) and builds its trainer on the first call, on the device
    of its GPU share (``actor_device``), which the core gets as the ``device`` setting."""

    def __init__(self, cfg: RunConfig, index: int):
        torch.set_num_threads(cfg.resources.threads)  # same thread count as the local backend: bitwise equal
        share = gpu_share(cfg, index)
        self.device = actor_device(share, cfg.resources.device)
        if cfg.resources.gpu_memory_cap:
            cap_gpu_memory(share, self.device)
        # "cuda" in this process is cuda:0, the GPU Ray assigned (see actor_device)
        cfg = cfg.replace(resources=dataclasses.replace(cfg.resources, device=self.device.type))
        self.cfg, self.index = cfg, index
        if cfg.resources.progress:  # the driver has a terminal (cli.bars_where_watched): bars render there
            from colt_ray.core import train

            train.BAR_FACTORY = RayBar
        self.trainer: Any = None
        self.evaluator: Any = None
        self.kept: Optional[Teacher] = None  # IMP's level 0 trained here: the distillation teacher, kept
        self.bundle: Any = None  # the full-data trainer's bundle (its evaluations retrain on it too)
        self._data_key: Any = None
        self._eval_key: Any = None

    def attach(self, data: Data) -> None:
        """Build this trainer's view of its data (once per data reference)."""
        source, shard = data
        key = source_key(source)
        if key == self._data_key:
            return
        arrays = fetch(source)
        self.bundle = bundle_from_arrays(arrays) if self.index == FULL else None
        self.trainer = self.build(arrays, shard)
        self._data_key = key

    def build(self, arrays: Any, shard: Any) -> Any:
        """This actor's trainer: the full-data trainer, or shard ``self.index``'s over its own rows (``shard``
        None) or over the rows of ``shard`` cut from the full set."""
        if self.index == FULL:
            return make_full_trainer(self.cfg, self.bundle)
        if shard is None:
            return shard_trainer(self.cfg, bundle_from_arrays(arrays), self.index)
        return make_shard_trainer(self.cfg, bundle_from_arrays(arrays), shard)

    def run(
        self,
        data: Data,
        theta: dict[str, np.ndarray],
        mask: Optional[PackedMask],
        cycle: int,
        prune_next: bool = True,
        capture_step: int = 0,
    ) -> TrainOutcome:
        """Train from ``theta`` under ``mask`` (None = dense) and prune if ``prune_next``; the proposal comes
        back packed."""
        self.attach(data)
        mask = unpacked(mask)
        out = self.trainer.run(writable(theta), mask, cycle, prune_next, capture_step)
        if self.index == FULL and keeps_teacher(self.cfg, cycle, mask):
            self.kept = Teacher(self.trainer.state())  # IMP's level 0: the teacher of this actor's retrainings
        return packed_outcome(out)

    def evaluate(
        self,
        data: Data,
        theta: dict[str, np.ndarray],
        mask: Optional[PackedMask],
        cycle: int,
        teacher: Optional[dict[str, np.ndarray]] = None,
    ) -> dict:
        """A ticket retraining (full data, the run's tweaks, nothing pruned). The full-data trainer retrains on
        its own data (with its own trainer unless a retraining tweak makes the retrainer differ); a shard
        trainer fetches the full set and builds the retrainer the first time (it evaluates only once the mask
        chain is over, see ``EvalScheduler``), so it never holds the full set before. ``teacher``: the run's
        distillation teacher (``teacher``'s state, trained once per run), for a retrainer without one."""
        evaluator = self._evaluator(data)
        if isinstance(evaluator, DistillingTrainer) and evaluator.teacher is None:
            if teacher is not None:
                evaluator.set_teacher(Teacher(writable(teacher)))
            elif self.kept is not None:
                evaluator.set_teacher(self.kept)
        return evaluator.run(writable(theta), unpacked(mask), cycle, False, 0).metrics

    def teacher(self, data: Data) -> tuple[dict[str, np.ndarray], Optional[dict]]:
        """The run's distillation teacher, trained here unless this actor's retrainer has it already (from a
        dense retraining that no tweak changes): its weights, for every evaluating actor, and its cost (None
        when a row holds it already), for the row that needs it first (``evaluation.TeacherShare``)."""
        evaluator = self._evaluator(data)
        if evaluator.teacher is None:
            trained = evaluator.train_teacher()
            return trained.state, trained.cost
        return evaluator.teacher.state, None

    def _evaluator(self, data: Data) -> Any:
        """The retrainer of this actor's ticket evaluations, built once per data reference."""
        key = source_key(data[0])
        if self.index == FULL:
            self.attach(data)
        if key != self._eval_key:
            if self.index == FULL and not self.cfg.retrains_apart:
                self.evaluator = self.trainer
            else:
                full = self.bundle if self.index == FULL else bundle_from_arrays(fetch(data[0]))
                self.evaluator = make_ticket_trainer(self.cfg, full)
            self._eval_key = key
        return self.evaluator

    def pid(self) -> int:
        """The process id (tests kill actors; a restarted actor has a new one)."""
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (where its placement-group bundle put it)."""
        return ray.get_runtime_context().get_node_id()


class BatchedShardTrainer(ShardTrainer):
    """Several shards of a run in one actor (``--shards-per-actor M``), trained together as one stacked model
    (``BatchedShards``, docs/batched.md); ``run`` returns one outcome per shard, in shard order."""

    def build(self, arrays: Any, shards: Any) -> Any:
        """The stacked shards ``self.index``: over their own rows (``shards`` None: ``arrays`` is one set of
        rows per shard) or over the rows of ``shards`` cut from the full set."""
        from colt_ray.core.data import shard_bundle
        from colt_ray.core.tickets.batched import BatchedShards

        if shards is None:
            return BatchedShards(self.cfg, [bundle_from_arrays(a) for a in arrays], list(self.index))
        full = bundle_from_arrays(arrays)
        return BatchedShards(self.cfg, [shard_bundle(full, s) for s in shards], [s.index for s in shards])

    def run(
        self,
        data: Data,
        theta: dict[str, np.ndarray],
        mask: Optional[PackedMask],
        cycle: int,
        prune_next: bool = True,
        capture_step: int = 0,
    ) -> list[TrainOutcome]:
        self.attach(data)
        return [packed_outcome(o) for o in self.trainer.train_shards(writable(theta), unpacked(mask), cycle)]


@functools.cache
def _remote_class(cls: type) -> Any:
    return ray.remote(cls)


def create_actor(
    cls: type, resources: ActorResources, *args: Any, strategy: Any = None, name: Optional[str] = None, **kwargs: Any
) -> Any:
    """The one factory: wrap the plain class ``cls`` with ``ray.remote`` and start it with ``resources``.
    ``name`` (``<run_id>/shard-<i>``) shows in the Ray dashboard; a name still held by an actor of an earlier
    run of the same config in this job gets a short suffix."""
    opts = resources.options()
    if strategy is not None:
        opts["scheduling_strategy"] = strategy
    if name is not None:
        opts["name"] = name
    try:
        return _remote_class(cls).options(**opts).remote(*args, **kwargs)
    except ValueError:  # the name is taken (an actor of the same run id, not yet gone)
        if name is None:
            raise
        run, _, who = name.rpartition("/")
        opts["name"] = f"{run}~{uuid.uuid4().hex[:4]}/{who}"
        return _remote_class(cls).options(**opts).remote(*args, **kwargs)


def actor_name(run: str, index: Any) -> str:
    """``<run>/shard-<i>``, ``<run>/shards-<i>-<j>`` (stacked shards) or ``<run>/full`` (the full-data trainer)."""
    if isinstance(index, tuple):
        return f"{run}/shards-{'-'.join(map(str, index))}"
    return f"{run}/full" if index == FULL else f"{run}/shard-{index}"


def trainer_label(index: Any) -> str:
    if isinstance(index, tuple):
        return f"the actor of shards {', '.join(map(str, index))}"
    return "the full-data trainer" if index == FULL else f"shard {index}"


class LocalPool:
    """Trainers as plain objects in this process, one after another."""

    def __init__(self, cfg: RunConfig, indices: Sequence[int], trainer_cls: type = ShardTrainer, **_: Any):
        self.indices = list(indices)
        self.trainers = [trainer_cls(cfg, i) for i in self.indices]

    def put(self, value: Any) -> Any:
        return value

    def ready(self) -> list[int]:
        return [t.pid() for t in self.trainers]

    def run(
        self,
        data: Sequence[Data],
        theta: Any,
        mask: MaskRef,
        cycle: int,
        prune_next: bool,
        capture_step: int = 0,
        stop: Optional[Callable[[], bool]] = None,
    ) -> list[TrainOutcome]:
        return [t.run(d, theta, mask, cycle, prune_next, capture_step) for t, d in zip(self.trainers, data)]

    def submit(self, data: Data, theta: Any, mask: MaskRef, cycle: int) -> Any:
        from colt_ray.core.tickets.methods import Finished

        return Finished(self.trainers[0].evaluate(data, theta, mask, cycle))

    def close(self) -> None:
        self.trainers = []


class RayPool:
    """One ``ShardTrainer`` actor per trainer. In a placement group (a Tune trial), trainer i goes to bundle
    ``first_bundle + i``."""

    def __init__(
        self,
        cfg: RunConfig,
        indices: Sequence[int],
        trainer_cls: type = ShardTrainer,
        *,
        resources: ActorResources,
        placement_group: Optional[PlacementGroup] = None,
        first_bundle: int = 0,
        name: Optional[str] = None,
    ):
        self.indices = list(indices)
        self.restarts = resources.max_restarts
        self.in_flight: Optional[int] = None  # the cycle being trained, for observers (tests)
        self.submitted: list[int] = []  # the cycles whose evaluation was submitted, for observers (tests)
        strategies = bundle_strategies(placement_group, first_bundle, len(self.indices), resources)
        self.actors = [
            create_actor(trainer_cls, resources, cfg, i, strategy=s, name=actor_name(name, i) if name else None)
            for i, s in zip(self.indices, strategies)
        ]
        self.watch = Watchdog(self.actors, cfg.resources.start_timeout)

    def ready(self) -> list[int]:
        """Wait until every actor has started; their process ids. Raises if one cannot start."""
        return [self.get(i, a.pid.remote(), "while starting") for i, a in enumerate(self.actors)]

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def run(
        self,
        data: Sequence[Data],
        theta: Any,
        mask: MaskRef,
        cycle: int,
        prune_next: bool,
        capture_step: int = 0,
        stop: Optional[Callable[[], bool]] = None,
    ) -> Optional[list[TrainOutcome]]:
        """Every actor trains once (``mask``: one reference, put once per cycle and shared by the calls); a dead
        actor is restarted by Ray and its call retried (max_task_retries). Returns None, without waiting for the
        trainings, as soon as ``stop()`` says the run is over."""
        self.in_flight = cycle
        try:
            futures = [a.run.remote(d, theta, mask, cycle, prune_next, capture_step) for a, d in zip(self.actors, data)]
            if not self._wait(futures, stop or (lambda: False), f"in cycle {cycle}"):
                return None
            return [self.get(i, f, f"in cycle {cycle}") for i, f in enumerate(futures)]
        finally:
            self.in_flight = None

    def _wait(self, futures: list, stop: Callable[[], bool], when: str) -> bool:
        """Wait for ``futures`` (one per actor, in order) while polling ``stop`` and watching that their actors
        are alive; False if the run was stopped first."""
        pending = dict(zip(futures, range(len(futures))))
        while pending:
            if stop():
                return False
            _, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            pending = {f: pending[f] for f in waiting}
            self.check_alive(list(pending.values()), when)
        return not stop()

    def check_alive(self, positions: Sequence[int], when: str) -> None:
        """ShardFailedError when Ray has been (re)starting one of these actors for longer than the run's
        ``start_timeout``: a lost node whose actors the cluster has no room to restart is an error, not a wait."""
        position, seconds = self.watch.stalled(positions)
        if position is not None:
            raise ShardFailedError(
                f"{trainer_label(self.indices[position])} was lost {when} and Ray could not start it again "
                f"within {seconds:g} s (its node is gone and the cluster has no room for it; --start-timeout)"
            )

    def get(self, position: int, future: Any, when: str) -> Any:
        index = self.indices[position]
        try:
            while not ray.wait([future], timeout=POLL_SECONDS)[0]:
                self.check_alive([position], when)
            return ray.get(future)
        except RayActorError as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            if getattr(exc, "actor_init_failed", False):  # its __init__ raised: the last line is the error
                raise ShardFailedError(f"{trainer_label(index)} could not start: {lines[-1].strip()}") from None
            raise ShardFailedError(
                f"{trainer_label(index)} died {when} and could not be brought back "
                f"within {self.restarts} restarts ({lines[0]})"
            ) from None
        except RayTaskError as exc:  # an error raised by the training itself: surface it as if local
            raise unwrap_remote_error(exc) from None

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


class Watchdog:
    """Tells which of a pool's actors Ray has failed to (re)start for longer than ``limit`` seconds.

    Ray restarts a dead actor (``max_restarts``) where its placement-group bundle is; when the bundle's node
    is gone and no node has room for it, the actor stays RESTARTING and a call on it waits for ever. Asks the
    GCS (``ray._private.state.actors``: Ray has no public call for one actor's state without its dashboard) at
    most every ``WATCH_SECONDS``; an actor found ALIVE, or DEAD (its call then raises), resets its clock."""

    def __init__(self, actors: list[Any], limit: float):
        self.actors, self.limit = actors, limit
        self.down: dict[int, float] = {}  # actor position -> when it was first seen not alive
        self.asked = time.monotonic()

    def stalled(self, positions: Sequence[int]) -> tuple[Optional[int], float]:
        """The first of ``positions`` down for more than ``limit`` seconds (None if none), and the limit."""
        now = time.monotonic()
        if now - self.asked < WATCH_SECONDS:
            return None, self.limit
        self.asked = now
        for position in positions:
            if actor_state(self.actors[position]) in ("RESTARTING", "PENDING_CREATION"):
                if now - self.down.setdefault(position, now) > self.limit:
                    return position, self.limit
            else:
                self.down.pop(position, None)
        return None, self.limit


def actor_state(actor: Any) -> Optional[str]:
    """Ray's state of ``actor`` (ALIVE, PENDING_CREATION, RESTARTING, DEAD), None when it cannot be read."""
    try:
        return ray._private.state.actors(actor_id=actor._actor_id.hex()).get("State")
    except Exception:  # noqa: BLE001 - a private call: without it the pool waits as Ray does
        return None


def bundle_strategies(pg: Optional[PlacementGroup], first: int, k: int, resources: ActorResources) -> list[Any]:
    """Scheduling strategy per trainer: None outside a placement group, else bundles ``first .. first+k-1``
    of ``pg`` (checked to fit, so a too-small bundle is an error, not a run waiting forever)."""
    if pg is None:
        return [None] * k
    specs = pg.bundle_specs
    if len(specs) < first + k:
        raise ValueError(
            f"placement group has {len(specs)} bundles; this run needs {first + k} "
            "(see colt_ray.parallel.resources.placement_bundles)"
        )
    for i in range(first, first + k):
        if specs[i].get("CPU", 0) < resources.num_cpus or specs[i].get("GPU", 0) < resources.num_gpus:
            raise ValueError(
                f"placement group bundle {i} {specs[i]} cannot hold a trainer asking for "
                f"{resources.num_cpus:g} CPU, {resources.num_gpus:g} GPU"
            )
    return [
        PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_bundle_index=first + i, placement_group_capture_child_tasks=True
        )
        for i in range(k)
    ]
