"""Ray nodes on this machine: start a loopback multi-node cluster, list the nodes, stop exactly one of them.

``ray stop`` ends every Ray process of the machine, whoever started it. Here a node is known by its
*temp dir* (``ray start --temp-dir=DIR``; Ray's default is ``/tmp/ray``): every Ray program of a node
names that folder, or its session folder ``DIR/session_*``, on its command line (gcs_server, raylet,
dashboard, agents, log monitor, workers as they start), or holds its log files open in it (workers and
agents once they renamed themselves ``ray::...``). :func:`stop_nodes` ends those processes and their
children (a job's entrypoint runs under the node's job supervisor): SIGTERM, then SIGKILL after a grace
period. Processes of other users and non-Ray programs that merely read the folder are left alone. Two
nodes started with the same temp dir share it, and are stopped together.

:class:`LocalCluster` starts real multi-node clusters on one machine (tests, demos): each node is one
``ray start`` run in a new session with a private temp dir, on its own loopback IP (head 127.0.0.2,
workers 127.0.0.3, ...; Ray would turn 127.0.0.1 into the machine's address), with the dashboard on
127.0.0.1 and token authentication with a private token. Stopping it ends that session's processes and
those of its temp dirs, nothing else.

Linux only (``/proc``); standard library only: no Ray import.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TEMP_DIR",
    "HEAD_IP",
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "RayProcess",
    "local_nodes",
    "node_processes",
    "session_tree",
    "signal_all",
    "stop_nodes",
]

#: Ray's temp dir when ``ray start`` / ``ray.init`` is given none.
DEFAULT_TEMP_DIR = "/tmp/ray"
#: The head's node IP: a loopback address Ray keeps as given (it rewrites 127.0.0.1).
HEAD_IP = "127.0.0.2"
#: Seconds between SIGTERM and SIGKILL.
GRACE_S = 5.0


class LocalClusterError(RuntimeError):
    """A local node could not be started, or a stop found nothing to stop."""


@dataclass(frozen=True)
class RayProcess:
    """One process of a node: ``name`` is its program (``raylet``, ``gcs_server``, ``ray::IDLE`` ...)."""

    pid: int
    started: int  # start time in clock ticks since boot: tells a reused pid from the process
    name: str


# ------------------------------------------------------------------------------------------------ /proc
def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process, from ``/proc``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[1]), int(fields[3]))
    return out


def _descendants(roots: Iterable[int], table: Mapping[int, tuple[int, int]]) -> set[int]:
    found = set(roots)
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in table.items() if ppid in found and pid not in found}
        found |= kids
        grew = bool(kids)
    return found


def _ancestors() -> set[int]:
    """This process and its ancestors: never signalled (``csrgan cluster stop`` may run inside a job)."""
    out, pid = set(), os.getpid()
    table = proc_table()
    while pid > 1 and pid not in out:
        out.add(pid)
        pid = table.get(pid, (0, 0))[0]
    return out


def session_tree(sids: Iterable[int]) -> set[int]:
    """Processes in the given sessions plus their descendants (a job's entrypoint runs in a session of
    its own under the job supervisor), never this process or its ancestors."""
    table = proc_table()
    wanted = set(sids)
    return _descendants({pid for pid, (_, sid) in table.items() if sid in wanted}, table) - _ancestors()


def _start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``; None when the process is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def signal_all(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each pid that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a for a in raw.decode(errors="replace").split("\0") if a]


def _is_ray(argv: list[str]) -> bool:
    """A Ray program: a binary or script from a ``ray`` package folder, ``python -m ray...``, or a
    worker/agent that renamed itself (``ray::...``, ``ray-dashboard-...``)."""
    if not argv:
        return False
    if argv[0].startswith(("ray::", "ray-dashboard-")):
        return True
    sep = os.sep
    return any(f"{sep}ray{sep}" in a for a in argv[:3]) or any(a.startswith("ray.") for a in argv[1:3])


def _roots(temp_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """The temp dir as given (made absolute) and resolved: Ray writes what it was given."""
    given = os.path.abspath(os.fspath(temp_dir)).rstrip(os.sep) or os.sep
    return tuple(dict.fromkeys([given, os.path.realpath(given)]))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    """``path`` is the temp dir itself or lies in one of its sessions (``ROOT/session_*/...``); when a root
    is a session folder, anything in it. A parent folder of several temp dirs (``/tmp``) matches none."""
    for root in roots:
        if path == root:
            return True
        if not path.startswith(root.rstrip(os.sep) + os.sep):
            continue
        if os.path.basename(root).startswith("session_"):
            return True
        if path[len(root.rstrip(os.sep)) + 1 :].split(os.sep, 1)[0].startswith("session_"):
            return True
    return False


def _names_folder(argv: list[str], roots: tuple[str, ...]) -> bool:
    """Some argument (``--flag=PATH`` or ``PATH``) is the temp dir or a path in it."""
    return any(_under(a.split("=", 1)[-1], roots) for a in argv)


def _holds_file_in(pid: int, roots: tuple[str, ...]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if _under(os.readlink(f"/proc/{pid}/fd/{fd}"), roots):
                return True
    return False


def _name(argv: list[str]) -> str:
    if not argv:
        return "?"
    if argv[0].startswith(("ray::", "ray-dashboard-")):
        return argv[0].split(" (")[0].strip()
    if "-m" in argv[1:3] and argv.index("-m") + 1 < len(argv):
        return argv[argv.index("-m") + 1]  # python -m ray.util.client.server
    script = next((a for a in argv[1:3] if a.endswith(".py")), None)
    return os.path.basename(script or argv[0])


# ----------------------------------------------------------------------------------------- finding nodes
def node_processes(temp_dir: str | os.PathLike[str]) -> list[RayProcess]:
    """This user's Ray processes of the node(s) started with ``temp_dir`` (see the module docstring), with
    their descendants; never this process or its ancestors. ``temp_dir`` may also be one session folder."""
    roots = _roots(temp_dir)
    uid, skip = os.getuid(), _ancestors()
    table = proc_table()
    matched = set()
    for pid in table:
        try:
            if pid in skip or os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        argv = _argv(pid)
        if _is_ray(argv) and (_names_folder(argv, roots) or _holds_file_in(pid, roots)):
            matched.add(pid)
    out = []
    for pid in sorted(_descendants(matched, table) - skip):
        started = _start_time(pid)
        if started is not None:
            out.append(RayProcess(pid, started, _name(_argv(pid))))
    return out


def _alive(procs: Iterable[RayProcess]) -> list[RayProcess]:
    return [p for p in procs if _start_time(p.pid) == p.started]


def terminate(procs: list[RayProcess], grace_s: float = GRACE_S, hard: bool = False) -> list[RayProcess]:
    """SIGTERM (SIGKILL at once when ``hard``), then SIGKILL whatever is still there after ``grace_s``.
    Signals a pid only while it is still the same process. Returns those that outlived SIGKILL (none,
    unless they belong to another user)."""
    first = signal.SIGKILL if hard else signal.SIGTERM
    signal_all([p.pid for p in _alive(procs)], first)
    deadline = time.monotonic() + (0 if hard else grace_s)
    while time.monotonic() < deadline and _alive(procs):
        time.sleep(0.1)
    signal_all([p.pid for p in _alive(procs)], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(procs):
        time.sleep(0.05)
    return _alive(procs)


def stop_nodes(
    temp_dir: str | os.PathLike[str], *, grace_s: float = GRACE_S, hard: bool = False
) -> list[RayProcess]:
    """Stop the node(s) started with ``temp_dir`` and nothing else; returns the processes it ended
    (empty: nothing used that temp dir). ``hard``: SIGKILL at once, as a lost machine would.

    Looks again after each round (a raylet may spawn workers while it stops) for up to three rounds.
    Raises :class:`LocalClusterError` when some process survived SIGKILL.
    """
    stopped: dict[int, RayProcess] = {}
    for _ in range(3):
        procs = node_processes(temp_dir)
        if not procs:
            break
        survivors = terminate(procs, grace_s, hard)
        if survivors:
            raise LocalClusterError(
                f"could not stop {', '.join(f'{p.name} (pid {p.pid})' for p in survivors)} of {temp_dir}"
            )
        stopped.update({p.pid: p for p in procs})
    return sorted(stopped.values(), key=lambda p: p.pid)


@dataclass(frozen=True)
class LocalNode:
    """A Ray node running on this machine, as its raylet's command line says."""

    pid: int  # the raylet's
    ip: str
    head: bool
    temp_dir: str
    session_dir: str
    gcs_address: str
    node_id: str

    @property
    def session(self) -> str:
        return os.path.basename(self.session_dir)


def local_nodes() -> list[LocalNode]:
    """Every Ray node of this user on this machine (one raylet each), sorted by temp dir then IP."""
    out = []
    uid = os.getuid()
    for pid in proc_table():
        argv = _argv(pid)
        if not argv or os.path.basename(argv[0]) != "raylet" or not _is_ray(argv):
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
        session_dir = flags.get("session_dir", "")
        out.append(
            LocalNode(
                pid=pid,
                ip=flags.get("node_ip_address", "?"),
                head="--head" in argv,
                temp_dir=flags.get("temp_dir", os.path.dirname(session_dir)),
                session_dir=session_dir,
                gcs_address=flags.get("gcs-address", flags.get("gcs_address", "?")),
                node_id=flags.get("node_id", "?"),
            )
        )
    return sorted(out, key=lambda n: (n.temp_dir, not n.head, n.ip))


# ------------------------------------------------------------------------------------ a local cluster
def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_bin() -> str:
    here = Path(sys.executable).parent / "ray"
    found = str(here) if here.exists() else shutil.which("ray")
    if found is None:
        raise LocalClusterError("no `ray` command next to this Python or on PATH: install ray[default]")
    return found


class LocalCluster:
    """A real multi-node Ray cluster on this machine, on loopback only, with a private token.

    ``root`` holds one temp dir per node (``root/<name>``; keep it short: Ray's socket paths must fit
    107 characters); None: a new folder under /tmp, removed by :meth:`stop`. ``env`` adds variables
    for every node (e.g. ``RAY_health_check_period_ms``). Usable as a context manager.
    """

    def __init__(self, root: Path | None = None, *, env: Mapping[str, str] | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="csrgan-rc-", dir="/tmp")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(24)
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.sessions: dict[str, int] = {}  # node name -> session id of its `ray start`
        self._ever: dict[str, int] = {}  # every node started, stopped or not: for leftovers()
        self.ips: dict[str, str] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs' python
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",  # no usage report to the internet
            NO_PROXY="127.0.0.0/8,localhost",
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def gcs_address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def temp_dir(self, name: str) -> Path:
        return self.root / name

    def run_env(self) -> dict[str, str]:
        """Environment for a driver/client process on this machine (address not included)."""
        return dict(self.env)

    def _ray_start(self, name: str, args: list[str]) -> None:
        if name in self.sessions:
            raise LocalClusterError(f"node {name!r} is already running")
        log = self.root / f"{name}.start.log"
        with open(log, "w") as out:
            p = subprocess.Popen(
                [_ray_bin(), "start", *args, f"--temp-dir={self.temp_dir(name)}", "--disable-usage-stats"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.sessions[name] = self._ever[name] = p.pid  # the daemons keep this session id
            try:
                rc = p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0:
            self.stop_node(name, grace_s=1)
            raise LocalClusterError(f"`ray start` for {name} failed ({rc}):\n{log.read_text()[-3000:]}")

    @staticmethod
    def _resources(num_cpus: int, resources: Mapping[str, float] | None) -> list[str]:
        return [
            f"--num-cpus={num_cpus}",
            *([f"--resources={json.dumps(dict(resources))}"] if resources else []),
        ]

    def start_head(self, num_cpus: int = 1, resources: Mapping[str, float] | None = None) -> None:
        """Start the head (``head``, :data:`HEAD_IP`) with its dashboard on 127.0.0.1; wait until it is up."""
        args = [
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={free_ports(1)[0]}",
            *self._resources(num_cpus, resources),
        ]
        self._ray_start("head", args)
        self.ips["head"] = HEAD_IP
        self.wait_nodes()

    def add_node(
        self, name: str, ip: str, num_cpus: int = 1, resources: Mapping[str, float] | None = None
    ) -> None:
        """Start a worker node ``name`` on loopback IP ``ip`` (not 127.0.0.1); wait until it is up."""
        args = [
            f"--address={self.gcs_address}",
            f"--node-ip-address={ip}",
            f"--dashboard-agent-listen-port={free_ports(1)[0]}",
            *self._resources(num_cpus, resources),
        ]
        self._ray_start(name, args)
        self.ips[name] = ip
        self.wait_nodes()

    def api(self, path: str) -> Any:
        """GET the dashboard's ``path`` (e.g. ``/api/v0/nodes``) with the token; the JSON answer."""
        req = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {self.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def alive_ips(self) -> set[str]:
        rows = self.api("/api/v0/nodes")["data"]["result"]["result"]
        return {row["node_ip"] for row in rows if row["state"] == "ALIVE"}

    def wait_nodes(self, ips: set[str] | None = None, timeout: float = 60) -> None:
        """Wait until exactly ``ips`` (default: the running nodes' IPs) are the alive nodes."""
        want = set(self.ips.values()) if ips is None else ips
        t0, seen = time.monotonic(), set()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(Exception):  # the dashboard may still be starting
                seen = self.alive_ips()
                if seen == want:
                    return
            time.sleep(0.5)
        raise LocalClusterError(f"cluster nodes alive: {sorted(seen)}, expected {sorted(want)}")

    def pids(self, names: Iterable[str] | None = None) -> set[int]:
        """Live processes of the named nodes (default: all): their sessions and temp dirs."""
        chosen = list(self.sessions if names is None else names)
        found = session_tree({self.sessions[n] for n in chosen if n in self.sessions})
        for n in chosen:
            found |= {p.pid for p in node_processes(self.temp_dir(n))}
        return found

    def leftovers(self) -> set[int]:
        """Live processes of every node this cluster ever started (after :meth:`stop`: none)."""
        found = session_tree(set(self._ever.values()))
        for n in self._ever:
            found |= {p.pid for p in node_processes(self.temp_dir(n))}
        return {p for p in found if _start_time(p) is not None}  # zombies are gone, but for their parent

    def stop_node(self, name: str, grace_s: float = GRACE_S, hard: bool = False) -> list[RayProcess]:
        """Stop one node (``hard``: SIGKILL at once, a lost machine); returns what was ended."""
        sid = self.sessions.pop(name, None)
        self.ips.pop(name, None)
        table = proc_table()
        in_session = [p for p in session_tree({sid} if sid else set()) if p in table]
        extra = [RayProcess(p, t, _name(_argv(p))) for p in in_session if (t := _start_time(p)) is not None]
        survivors = terminate(extra, grace_s, hard)
        stopped = stop_nodes(self.temp_dir(name), grace_s=grace_s, hard=hard)
        if survivors:
            raise LocalClusterError(f"could not stop pids {[p.pid for p in survivors]} of node {name}")
        return sorted({p.pid: p for p in [*extra, *stopped]}.values(), key=lambda p: p.pid)

    def kill_node(self, name: str) -> list[RayProcess]:
        """Lose a node the hard way: SIGKILL its raylet, agents and workers."""
        return self.stop_node(name, hard=True)

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop every node (worker nodes first, so none outlives its head's stop) and remove an own root."""
        for name in sorted(self.sessions, key=lambda n: n == "head"):
            self.stop_node(name, grace_s=grace_s)
        for _ in range(10):  # what was spawned while stopping (a worker, an agent respawn)
            left = self.leftovers()
            if not left:
                break
            signal_all(left, signal.SIGKILL)
            time.sleep(0.5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
