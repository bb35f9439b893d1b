"""The embedded single-node Ray cluster of :func:`csrgan.train.ray_train.ensure_ray` (``address=None``):
every Ray server listens on loopback only, and a driver killed with SIGKILL leaves no Ray process behind.

**Binding (Ray 2.60).** Every server takes its listen address from the *node IP*:

* C++ gRPC servers: GCS, raylet (node manager, object manager), every core worker (driver, tasks, actors,
  Tune trials, Train workers): 127.0.0.1 only when the node IP is exactly ``127.0.0.1``, else ``[::]``;
* dashboard agent gRPC and metrics export (``dashboard/agent.py``, ``reporter_agent.py``), the dashboard's
  and the autoscaler monitor's Prometheus ports (``dashboard/head.py``, ``autoscaler/_private/
  monitor.py``): 127.0.0.1 when ``is_localhost(node_ip)``, else ``0.0.0.0``;
* dashboard agent HTTP: the node IP, plus 127.0.0.1 when they differ; runtime-env agent: the node IP;
* dashboard HTTP (:8265): ``dashboard_host``, 127.0.0.1 (the dashboard must stay on: without it the
  placement groups of stopped trials leak).

But ``ray.init`` turns a node IP of ``127.0.0.1`` into the machine's reachable address
(``services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(``ray_constants.ENABLE_RAY_CLUSTER``; the only other effect is that ``ray start`` refuses extra nodes).
So the cluster starts with node IP :data:`NODE_IP` and :data:`EMBEDDED_ENV` set (where the user has not
set it) while Ray's processes are spawned; they inherit it. Then it is taken out of ``os.environ`` again
so that a later ``ray start``, joined cluster or subprocess of this process is unaffected. Result: all of
the above on 127.0.0.1; nothing had to be disabled. A user who sets the variable to ``1`` gets
:data:`ALIAS_NODE_IP` (127.0.0.2, which Ray keeps as given): connections stay on loopback, listeners do not.

**A killed driver.** GCS, raylet and the dashboard die with the driver (Ray starts them with
``PR_SET_PDEATHSIG``), workers within ~2 s. The dashboard and runtime-env agents notice the raylet's death
at once, then report it to the dead GCS with a hard-coded 60 s timeout
(``process_watcher.report_raylet_error_logs`` -> ``publish_error_to_driver``) and keep listening meanwhile;
``RAY_gcs_rpc_server_reconnect_timeout_s`` only makes them log sooner. So :func:`start` also starts a
*reaper* (this file run as a script, stdlib only). It waits for the driver to exit (``pidfd``), then ends
every process of that session that runs Ray's code and holds a file open in the session's own directory
(``/tmp/ray/session_...``): SIGTERM, then SIGKILL after :data:`REAP_GRACE_S`. It logs them in
``<session>/logs/csrgan_reaper.log``. No other session, so no one else's cluster, is touched. The reaper
also runs when the same process starts its next embedded cluster.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

#: Node IP of the embedded cluster: with it (and :data:`EMBEDDED_ENV`) every server binds 127.0.0.1.
NODE_IP = "127.0.0.1"
#: Node IP when the user forces ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``: any 127.x.y.z other than
#: 127.0.0.1 is taken as given, so connections stay on loopback (listeners then bind all interfaces).
ALIAS_NODE_IP = "127.0.0.2"
#: Set (where unset) while the cluster's processes start; they inherit it.
EMBEDDED_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: Seconds between SIGTERM and SIGKILL for a dead session's leftovers.
REAP_GRACE_S = 1.0

_reaper: subprocess.Popen | None = None  # the reaper of this process's current embedded session


# ------------------------------------------------------------------------------------- starting Ray
@contextlib.contextmanager
def loopback_env() -> Iterator[str]:
    """While the embedded cluster starts: :data:`EMBEDDED_ENV` in ``os.environ`` where the user has not set
    it (setdefault), and the driver's already-imported copy of Ray's flag made to agree. Both are restored
    on exit. Yields the node IP to give ``ray.init``."""
    from ray._common.utils import env_bool
    from ray._private import ray_constants

    added = {k: v for k, v in EMBEDDED_ENV.items() if k not in os.environ}
    os.environ.update(added)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, True)
    try:
        yield ALIAS_NODE_IP if ray_constants.ENABLE_RAY_CLUSTER else NODE_IP
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        for k in added:
            os.environ.pop(k, None)


def start(num_cpus: int | None) -> None:
    """Start the embedded cluster (see the module docstring) and its reaper."""
    import ray

    stop_reaper()  # a previous embedded session of this process is over: clear what it left
    with loopback_env() as node_ip:
        if node_ip != NODE_IP:
            import logging

            logging.getLogger(__name__).warning(
                "%s is set: the embedded Ray cluster uses node IP %s; its connections stay on loopback, "
                "but Ray's servers listen on all interfaces",
                next(iter(EMBEDDED_ENV)),
                node_ip,
            )
        ray.init(
            address="local",
            _node_ip_address=node_ip,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            num_cpus=num_cpus,
            log_to_driver=True,
        )
    if os.path.isdir("/proc"):  # the reaper reads /proc (Linux)
        session_dir = ray._private.worker._global_node.get_session_dir_path()
        start_reaper(session_dir, os.path.dirname(ray.__file__))


def start_reaper(session_dir: str, ray_dir: str) -> None:
    """Start the reaper of ``session_dir`` for this process (its own session: a signal to the driver's
    process group does not reach it; no stdin/stdout, no inherited descriptors)."""
    global _reaper
    _reaper = subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), session_dir, ray_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_reaper() -> None:
    """Make the current reaper clean up its session now and exit (SIGTERM)."""
    global _reaper
    if _reaper is not None and _reaper.poll() is None:
        _reaper.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            _reaper.wait(timeout=10 * REAP_GRACE_S)
    _reaper = None


# ------------------------------------------------------------------------------------- the reaper
def _start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat); None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _is_ray(pid: int, ray_dir: str) -> bool:
    """Runs Ray's code: a renamed worker/agent (``ray::...``, ``ray-dashboard-...``) or a program from
    Ray's package directory (gcs_server, raylet, dashboard.py, monitor.py, log_monitor.py)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    in_ray = any(a.startswith(ray_dir + os.sep) for a in argv)
    return in_ray or argv[0].startswith(("ray::", "ray-dashboard-"))


def session_processes(session_dir: str, ray_dir: str) -> dict[int, int]:
    """pid -> start time of this user's live Ray processes holding a file open under ``session_dir``."""
    prefix = os.path.realpath(session_dir) + os.sep
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid() or not _is_ray(pid, ray_dir):
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    if (started := _start_time(pid)) is not None:
                        found[pid] = started
                    break
    return found


def reap(session_dir: str, ray_dir: str, grace: float = REAP_GRACE_S) -> dict[int, int]:
    """End the Ray processes of ``session_dir`` (SIGTERM, SIGKILL after ``grace`` s); returns them."""
    procs = session_processes(session_dir, ray_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, started in procs.items():
            if _start_time(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_start_time(p) == t for p, t in procs.items()):
            time.sleep(0.05)
    return procs


def _wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` (the reaper's parent) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):  # no pidfd (old kernel): poll for being re-parented
        while os.getppid() == pid:
            time.sleep(0.5)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _reaper_main(argv: list[str]) -> None:
    """``embedded.py DRIVER_PID SESSION_DIR RAY_DIR``: wait for the driver to exit (or SIGTERM), reap."""
    driver, session_dir, ray_dir = int(argv[0]), argv[1], argv[2]
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the driver's terminal is the driver's business
    with contextlib.suppress(_Stop):
        if os.getppid() == driver:
            _wait_for_exit(driver)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reaped = reap(session_dir, ray_dir)
    if reaped:
        log = os.path.join(session_dir, "logs", "csrgan_reaper.log")
        with contextlib.suppress(OSError), open(log, "a") as f:
            f.write(f"{time.strftime('%F %T')} driver {driver} gone; ended pids {sorted(reaped)}\n")


if __name__ == "__main__":
    _reaper_main(sys.argv[1:])
