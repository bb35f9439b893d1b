"""Knowing where you are: which Ray cluster a sweep joins, which node a row comes from.

* :func:`resolve_address` turns ``--address auto`` into one cluster's GCS address. Ray's own ``auto``
  (``ray._private.services.get_ray_address_from_environment`` in 2.60) takes ``RAY_ADDRESS``, else the
  address in ``<temp dir>/ray/ray_current_cluster`` (written by the last ``ray start``, stale once that
  cluster is gone, and only in the default temp dir), else *any* ``--gcs-address`` of a running raylet,
  with a warning at most: with two clusters on one machine it silently joins one. Here every cluster this
  machine runs a node of is a candidate (raylets' ``--gcs-address``, GCS servers' ``--node-ip-address`` +
  ``--gcs_server_port``, ``ray_current_cluster`` of the default and every node's private ``--temp-dir``
  when a live process serves it); more than one is refused with the list.
* :func:`check_auth` asks the cluster's GCS one cheap question (``GetClusterId``, one gRPC round trip,
  milliseconds) with exactly the token ``ray.init`` would send. A cluster that requires token
  authentication answers ``UNAUTHENTICATED`` at once, where ``ray.init`` retries for 20 s and then says
  only "Failed to connect". The error names ``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN`` and
  ``RAY_AUTH_TOKEN_PATH``.
* :func:`prepare_join` = both, plus Ray's rule that ``auto`` switches token mode on when a token is at
  hand (which would be lost once ``auto`` is replaced by an address).
* :func:`describe_cluster` / :meth:`ClusterSummary.line`: the one line a sweep prints once Ray is up.
* :func:`node_columns`: the ``node_ip`` / ``node_id`` row columns of the calling Ray process.

Ray is imported lazily (``node_columns`` outside Ray does not import it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from csrgan.cluster.connect import TOKEN_HOWTO
from csrgan.cluster.jobs import ClusterError

#: The environment variables of Ray's token authentication (client side).
AUTH_ENV_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_TOKEN_PATH = "~/.ray/auth_token"


class ClusterAuthError(ClusterError):
    """The cluster requires token authentication and this process has no (or the wrong) token."""


# ============================================================================ the cluster we are on
@dataclass(frozen=True)
class ClusterSummary:
    """What a driver joined (or started): see :func:`describe_cluster`."""

    address: str
    embedded: bool
    nodes: int
    cpus: float
    gpus: float
    ray_version: str
    dashboard: str | None = None
    session: str | None = None

    def line(self) -> str:
        """``joined Ray cluster 127.0.0.2:6379 (Ray 2.60.0): 2 node(s), 3 CPU, 0 GPU; dashboard http://...``"""
        verb = "started a local Ray cluster" if self.embedded else "joined Ray cluster"
        text = (
            f"{verb} {self.address} (Ray {self.ray_version}): {self.nodes} node(s), "
            f"{self.cpus:g} CPU, {self.gpus:g} GPU"
        )
        return text + (f"; dashboard {self.dashboard}" if self.dashboard else "")


def describe_cluster(address: str | None) -> ClusterSummary:
    """The cluster this (initialised) Ray driver is on. ``address`` is what the user asked for: ``None`` or
    ``"local"`` means an embedded cluster was started here; anything else (``auto`` included) a join."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("describe_cluster() needs Ray to be initialised (ray.init / ensure_ray first)")
    ctx = ray.get_runtime_context()
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    try:
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url() or None
    except Exception:  # noqa: BLE001 - the dashboard is optional; only for a message
        url = None
    if url and "://" not in url:
        url = f"http://{url}"
    try:
        session: str | None = ctx.get_session_name()
    except Exception:  # noqa: BLE001 - Ray Client drivers have none
        session = None
    return ClusterSummary(
        address=str(ctx.gcs_address),
        embedded=address in (None, "local"),
        nodes=nodes,
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        ray_version=ray.__version__,
        dashboard=url,
        session=session,
    )


def node_columns() -> dict[str, str | None]:
    """``{"node_ip": ..., "node_id": ...}`` of the calling process's Ray node; both None outside Ray."""
    out: dict[str, str | None] = {"node_ip": None, "node_id": None}
    ray = sys.modules.get("ray")  # never import Ray just to find out it is not running
    if ray is None or not ray.is_initialized():
        return out
    try:
        out["node_id"] = ray.get_runtime_context().get_node_id()
        out["node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - provenance only; a row is still a row without it
        pass
    return out


# ============================================================================ --address auto
@dataclass
class Candidate:
    """One cluster this machine runs a node of (or one recorded in ``ray_current_cluster``)."""

    address: str
    temp_dirs: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    live: bool = False

    def describe(self) -> str:
        bits = [f"temp dir {', '.join(sorted(self.temp_dirs))}"] if self.temp_dirs else []
        bits += [f"session {', '.join(sorted(self.sessions))}"] if self.sessions else []
        bits += [f"from {', '.join(sorted(self.sources))}"]
        return f"{self.address} ({'; '.join(bits)})"


def _flags(cmdline: Iterable[str]) -> dict[str, str]:
    """``--name=value`` flags of a command line, first occurrence wins; ``-`` and ``_`` are the same.

    Arguments are split on spaces too (as Ray does: a raylet's ``--python_worker_command`` embeds the
    worker's whole command line in one argument)."""
    out: dict[str, str] = {}
    for arg in cmdline:
        for word in arg.split(" "):
            if word.startswith("--") and "=" in word:
                name, value = word[2:].split("=", 1)
                out.setdefault(name.replace("_", "-"), value)
    return out


def _from_process(cmdline: list[str]) -> tuple[str, str | None, str | None, str] | None:
    """(address, temp dir, session, kind) of a raylet or GCS server command line, else None."""
    if not cmdline:
        return None
    exe = os.path.basename(cmdline[0])
    flags = _flags(cmdline[1:])
    session = flags.get("session-name") or None
    if "raylet" in exe:  # Ray's own test (services._is_raylet_process)
        address = flags.get("gcs-address", "")
        temp = flags.get("temp-dir") or None
        kind = "raylet"
    elif exe == "gcs_server":
        ip, port = flags.get("node-ip-address"), flags.get("gcs-server-port")
        address = f"{ip}:{port}" if ip and port else ""
        session_dir = flags.get("session-dir")
        temp = str(Path(session_dir).parent) if session_dir else None
        kind = "gcs_server"
    else:
        return None
    if address in ("", "None"):
        return None
    return address, temp, session, kind


def _default_temp_dir(env: Mapping[str, str]) -> str:
    """Ray's default temp dir (``ray._common.utils.get_default_ray_temp_dir``, Linux/macOS)."""
    base = env.get("RAY_TMPDIR") or (env.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray")


def find_clusters(
    cmdlines: Iterable[list[str]] | None = None, env: Mapping[str, str] | None = None
) -> list[Candidate]:
    """Every cluster this machine knows, sorted by address; ``live`` when a raylet/GCS of it runs here.

    ``cmdlines`` defaults to every process's command line (psutil), ``env`` to ``os.environ``."""
    env = os.environ if env is None else env
    found: dict[str, Candidate] = {}
    for cmdline in _process_cmdlines() if cmdlines is None else cmdlines:
        hit = _from_process(cmdline)
        if hit is None:
            continue
        address, temp, session, kind = hit
        cand = found.setdefault(address, Candidate(address))
        cand.live = True
        cand.sources.add(kind)
        if temp:
            cand.temp_dirs.add(temp)
        if session:
            cand.sessions.add(session)
    temp_dirs = {_default_temp_dir(env)} | {t for c in found.values() for t in c.temp_dirs}
    for temp in sorted(temp_dirs):
        recorded = Path(temp) / "ray_current_cluster"
        try:
            address = recorded.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if address:
            cand = found.setdefault(address, Candidate(address))
            cand.sources.add(str(recorded))
    return [found[a] for a in sorted(found)]


def _process_cmdlines() -> list[list[str]]:
    import importlib

    import ray  # noqa: F401 - Ray ships psutil (ray/thirdparty_files); importing Ray puts it on the path

    psutil = importlib.import_module("psutil")

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline")
        if cmdline:
            out.append(list(cmdline))
    return out


def resolve_address(address: str, cmdlines: Iterable[list[str]] | None = None) -> str:
    """``auto`` -> the GCS address of the one cluster on this machine; any other address is returned as is.

    ``RAY_ADDRESS`` (set and not ``auto``) is an explicit choice and wins, as in Ray (inside a Ray Job it
    names the job's cluster). Raises :class:`ClusterError` for none or several live candidates; a
    ``ray_current_cluster`` entry no live process serves is stale and does not count."""
    if address != "auto":
        return address
    env_address = os.environ.get("RAY_ADDRESS", "").strip()
    if env_address and env_address != "auto":
        return env_address
    candidates = find_clusters(cmdlines)
    live = [c for c in candidates if c.live]
    if len(live) == 1:
        return live[0].address
    if len(live) > 1:
        listing = "\n".join(f"  {c.describe()}" for c in live)
        raise ClusterError(
            f"--address auto is ambiguous: this machine runs nodes of {len(live)} Ray clusters:\n{listing}\n"
            "pass the one to join with --address HOST:PORT (or set RAY_ADDRESS)"
        )
    stale = [c.address for c in candidates]
    note = f" (only stale entries in ray_current_cluster: {', '.join(stale)})" if stale else ""
    raise ClusterError(
        f"--address auto: no running Ray cluster found on this machine{note}; start one "
        "(cluster/README.md) or pass --address HOST:PORT of a remote cluster"
    )


# ============================================================================ token authentication
def auth_token(env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The token Ray's client would load, and where it comes from.

    Ray's order (``AuthenticationTokenLoader``): ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
    names (no fallback when that file is missing), else ``~/.ray/auth_token``. Ray sends it only when
    ``RAY_AUTH_MODE=token``."""
    env = os.environ if env is None else env
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    named = env.get("RAY_AUTH_TOKEN_PATH")
    home = Path(env.get("HOME") or Path.home())
    path = Path(named).expanduser() if named else home / ".ray" / "auth_token"
    where = f"RAY_AUTH_TOKEN_PATH={named}" if named else DEFAULT_TOKEN_PATH
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None, f"{where} (no such file)" if named else "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, " + where
    return (token or None), where


def _grpc_target(address: str) -> str | None:
    """``host:port`` of a GCS address to probe; None when there is nothing to probe (Ray Client, TLS)."""
    if "://" in address or address in ("auto", "local") or ":" not in address:
        return None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None  # the probe would need the TLS certificates; ray.init reports on its own
    return address


def _probe(target: str, token: str | None, timeout_s: float) -> str:
    """The gRPC status name of one ``GetClusterId`` call (``OK``, ``UNAUTHENTICATED``, ``UNAVAILABLE``...)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return code.name if code is not None else "UNKNOWN"
    return "OK"


def check_auth(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once to join a cluster that requires a token this process would not send.

    One ``GetClusterId`` round trip with exactly what ``ray.init`` would send. Only ``UNAUTHENTICATED`` is
    an error here; no answer, a refused connection or anything else is left to ``ray.init`` (and
    :func:`csrgan.cluster.connect_error_hint`). Raises :class:`ClusterAuthError`."""
    target = _grpc_target(address)
    if target is None:
        return
    mode = os.environ.get("RAY_AUTH_MODE")
    token, source = auth_token()
    sends = token if (mode or "").lower() == "token" else None
    if _probe(target, sends, timeout_s) != "UNAUTHENTICATED":
        return
    head = f"cannot join the Ray cluster at {address!r}: it requires token authentication"
    if sends:
        raise ClusterAuthError(
            f"{head} and refused the token from {source} (not this cluster's token); " + TOKEN_HOWTO
        )
    if (mode or "").lower() == "token":
        raise ClusterAuthError(
            f"{head}; RAY_AUTH_MODE=token is set but no token was found in {source}; " + TOKEN_HOWTO
        )
    have = "unset" if mode is None else f"{mode!r}"
    hint = ""
    if token and _probe(target, token, timeout_s) == "OK":
        hint = f" (the token in {source} is the right one: only RAY_AUTH_MODE=token is missing)"
    raise ClusterAuthError(f"{head}, and RAY_AUTH_MODE is {have} in this process{hint}; " + TOKEN_HOWTO)


def prepare_join(address: str) -> str:
    """The address to give ``ray.init`` for ``--address ADDRESS``, checked: ``auto`` resolved
    (:func:`resolve_address`), token auth checked (:func:`check_auth`). Raises :class:`ClusterError`.

    For ``auto`` with ``RAY_AUTH_MODE`` unset, Ray itself switches token mode on when a token is at hand
    (``maybe_enable_token_auth_if_token_available``); a resolved address would lose that, so it is done
    here first, exactly as Ray does it."""
    resolved = resolve_address(address)
    if address == "auto" and os.environ.get("RAY_AUTH_MODE") is None and auth_token()[0]:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    check_auth(resolved)
    return resolved
