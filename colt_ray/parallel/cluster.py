"""Starting or joining Ray, and what the connected cluster is (joined or local, the node types its autoscaler
may add), kept light (Ray and the config only, no torch), so that the command line can start Ray while the heavy
modules import."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Any, Optional

import ray

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError, one_line
from colt_ray.parallel.resources import NodeType, local_num_cpus

PRELOAD = "colt_ray.parallel.actors"  # what every trainer actor imports first (torch, the core)
# Ray's switch for its single-machine mode (the default on macOS and Windows): with it off, every process of a
# local Ray (GCS, raylet, agents, workers, this driver) binds 127.0.0.1 instead of all interfaces and the node
# IP, because Ray's node IP then resolves to the loopback address (ray._private.services.get_node_ip_address).
# Read from the environment by each Ray process at import, and by this one through ray_constants.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, *, detect: bool = False) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``; with ``detect``, also a cluster started by ``ray start`` on this
    machine), else start a local Ray with ``num_cpus`` (default: the machine's), quietly. Does nothing if Ray
    is up already (a test, a Tune trial). True when this call connected or started it."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "local":
        address = None
    elif address is None and detect:
        address = _running_cluster()
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}
    if address:
        check_answers(address)
        send_token_if_any()
        check_token(address)
        if on_loopback(address):  # a `ray start` head on 127.0.0.1: this driver must listen there too to join it
            loopback_only()
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:  # unreachable, refused, or its auth token missing
            raise ConfigError("address", f"cannot join the Ray cluster at {address}: {one_line(exc, 300)}") from None
    else:  # "local" explicitly: with no address Ray itself would join a `ray start` cluster and then refuse num_cpus
        # the workers Ray starts with it import the trainers' modules (torch) while Ray is still starting, so an
        # actor created next finds them loaded (Ray's preload_python_modules, read by the raylet from the env)
        os.environ.setdefault("RAY_preload_python_modules", PRELOAD)
        loopback_only()
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def loopback_only() -> None:
    """Make the local Ray this process starts next listen on 127.0.0.1 only: a local Ray open on every interface
    accepts work from anyone who can reach the machine (Ray's security guidance: never expose it to untrusted
    networks). Set for this process (Ray reads the switch at call time) and for every process Ray starts from
    it (they inherit the environment)."""
    from ray._private import ray_constants

    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


CONNECT_SECONDS = 5.0  # how long a Ray's address may take to accept a connection before it counts as gone


def check_answers(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A ConfigError (one line) unless something accepts a connection at ``address`` within ``timeout``: Ray
    itself would retry a dead address for minutes (a ``RAY_ADDRESS`` left over from a stopped Ray)."""
    if address == "auto":
        return  # found on this machine by _running_cluster, or by ray.init, which fails fast when none is
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    env = (
        " (from $RAY_ADDRESS: `unset RAY_ADDRESS` to start a local Ray)"
        if address == os.environ.get("RAY_ADDRESS")
        else ""
    )
    raise ConfigError("address", f"no Ray answers at {address}{env}: {reason}")


TOKEN_FILE = "~/.ray/auth_token"  # where `ray start` (and `ray get-auth-token --generate`) keep the token


def send_token_if_any() -> None:
    """Join with token authentication when this machine has a Ray token and ``RAY_AUTH_MODE`` is unset: a
    `ray start` head turns token authentication on by itself when that file exists (Ray 2.5x), and a client
    that does not send the token is refused after some 20 s of retries. A cluster without authentication
    accepts a client that sends one."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or os.path.isfile(os.path.expanduser(TOKEN_FILE))
    ):
        os.environ["RAY_AUTH_MODE"] = "token"  # for this process and every process it starts
        try:  # Ray's core read its config when ray was imported: refresh it, as Ray's own token set-up does
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        except Exception:  # noqa: BLE001 - a private API: the variable still reaches the processes Ray starts
            pass


def check_token(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A ConfigError (one line, in milliseconds) when the Ray at ``address`` refuses this process's
    authentication token: Ray's own client retries for some 20 s, printing a line per try, before it gives up
    with a message that does not say why. Asks the GCS for its cluster id (one gRPC call, with the token Ray
    would send); any other outcome is left to ``ray.init``, which reports it."""
    if address == "auto" or "://" in address:
        return
    try:
        import grpc
        from ray._raylet import AuthenticationTokenLoader
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # a Ray without token authentication: nothing to check
        return
    loader = AuthenticationTokenLoader.instance()
    sent = os.environ.get("RAY_AUTH_MODE") == "token" and loader.has_token()
    metadata = tuple(loader.get_token_for_http_header().items()) if sent else ()
    host, port = _host_port(address)
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=timeout)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
    if sent:
        fix = (
            "the token this machine sent ($RAY_AUTH_TOKEN, else the file at $RAY_AUTH_TOKEN_PATH, else "
            f"{TOKEN_FILE}) is not the cluster's: set RAY_AUTH_TOKEN to what `ray get-auth-token` prints on its head"
        )
    else:
        fix = (
            "it has token authentication on and this machine sent no token: `export RAY_AUTH_MODE=token "
            "RAY_AUTH_TOKEN=...` with what `ray get-auth-token` prints on its head"
        )
    raise ConfigError("address", f"the Ray cluster at {address} refused to authenticate this machine: {fix}")


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``ray://host:port`` (Ray's default ports when none is given)."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 or rest.startswith("[") else ("", "", "")
    host = (host or rest).strip("[]")
    return host, int(port) if port.isdigit() else (10001 if scheme == "ray" else 6379)


def on_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``, ``ray://host:port``, ``auto``) is a Ray on this machine's loopback
    interface; for ``auto``, the addresses of the clusters ``ray start`` left on this machine."""
    if address == "auto":
        try:
            from ray._private.services import find_gcs_addresses

            hosts = list(find_gcs_addresses())
        except Exception:  # a private API: a cluster that cannot be found is not known to be on loopback
            return False
        return bool(hosts) and all(on_loopback(h) for h in hosts)
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stop_ray(quiet: bool = False) -> None:
    """``ray.shutdown()``, a second sooner when this process started the Ray: Ray stops its processes one after
    another, each given a second to exit on SIGTERM, and its autoscaler monitor always takes that second (its
    SIGTERM handler reports to the GCS, which Ray stopped just before it). A local Ray's monitor has nothing to
    save, so it is killed outright first. Falls back to the plain shutdown if Ray's internals differ.

    ``quiet``: on the way out after an error, what Ray's workers print while they are stopped (a worker still
    starting dumps its stack on SIGTERM, 5-20 lines that the driver forwards) is not shown, so the error stays
    the one line after it."""
    if quiet:
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            stop_ray()
        return
    node = _started_node()
    try:
        if node is not None:
            for info in node.all_processes.get("monitor", []):
                if info.process.poll() is None:
                    info.process.kill()
                    info.process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - a private structure: stop Ray the ordinary way
        pass
    ray.shutdown()


def _running_cluster() -> Optional[str]:
    """ "auto" when a Ray cluster started on this machine with ``ray start`` answers, else None."""
    try:
        from ray._private.services import find_gcs_addresses

        found = list(find_gcs_addresses())
    except Exception:  # a private API: without it, start a local Ray as before
        return None
    for gcs in found:  # a cluster file left by a Ray that was killed names an address nobody answers at
        try:
            check_answers(gcs, timeout=1.0)
            return "auto"
        except ConfigError:
            continue
    return None


def init_for(cfg: RunConfig) -> bool:
    """``init_ray`` for one run: its address, or a local Ray with enough CPUs for all its trainers."""
    return init_ray(cfg.resources.address, local_num_cpus(cfg, os.cpu_count() or 1))


def joined_cluster() -> bool:
    """True when the connected Ray runs apart from this process (``--address``, ``$RAY_ADDRESS``, a ``ray start``
    cluster, a Ray Client, a Tune trial's worker); False for a local Ray this process started (``ray.init()``
    without an address, here or in a test). Read from the driver's node object, which Ray marks ``head`` only
    when ``ray.init`` started the cluster; if that private attribute is gone, the cluster counts as joined (the
    stricter GPU policy)."""
    return _started_node() is None


def _started_node() -> Any:
    """Ray's node object of the Ray this process started (``ray.init`` marks it ``head`` only then), else None;
    None too if that private structure is gone."""
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    return node if getattr(node, "head", False) else None


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written on the head node by the cluster launcher (`ray up`)


def declared_node_types() -> Optional[list[NodeType]]:
    """The worker node types the connected cluster's autoscaler may add, or None when none is declared.

    Two sources, in this order (Ray 2.60 has no public API for them):

    1. the cluster config in the GCS (``ray._private.state.state.get_cluster_config()``: the ``ClusterConfig``
       proto under ``__autoscaler_cluster_config`` in the ``__autoscaler`` KV namespace, with one
       ``NodeGroupConfig`` per type: name, resources, max_count, -1 for no limit). Ray Data and Ray Train read
       it the same way; it is written by platforms that report their autoscaling config (the
       ``ReportClusterConfig`` RPC), while the open-source autoscaler of Ray 2.60 does not write it;
    2. the cluster launcher's config on the head node (``~/ray_bootstrap_config.yaml``: every
       ``available_node_types`` entry except the head's, with its ``resources`` and ``max_workers``): what
       ``ray up`` clusters run their autoscaler from, readable by a driver on the head node (``ray job submit``,
       ``ray attach``). Tune detects an autoscaling cluster from the same file.

    None elsewhere: a ``ray start`` cluster without autoscaler, a local Ray, a KubeRay cluster (its autoscaler
    reads the RayCluster resource, which a driver cannot see here) or a driver off the head node. Callers then
    treat the cluster as one that cannot grow."""
    return _gcs_node_types() or _bootstrap_node_types(os.path.expanduser(BOOTSTRAP_CONFIG))


def _gcs_node_types() -> Optional[list[NodeType]]:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # a private API (or a Ray Client without it): no declared types from here
        return None
    if config is None or not config.node_group_configs:
        return None
    return [
        NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, None if g.max_count < 0 else g.max_count)
        for g in config.node_group_configs
    ]


def _bootstrap_node_types(path: str) -> Optional[list[NodeType]]:
    import yaml  # a Ray dependency

    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            config: Any = yaml.safe_load(f)  # the launcher writes it as JSON, which YAML reads
        types = config.get("available_node_types") or {}
        head, cap = config.get("head_node_type"), config.get("max_workers")
        return [
            NodeType(str(name), {k: float(v) for k, v in (t.get("resources") or {}).items()}, t.get("max_workers", cap))
            for name, t in types.items()
            if name != head
        ] or None
    except (OSError, ValueError, AttributeError, TypeError, yaml.YAMLError):  # unreadable: none declared
        return None
