"""Autoscaling clusters: "one trial fits" is checked against the node types the autoscaler may launch.

Spec:
* On a fixed cluster (no autoscaler) :func:`csrgan.cluster.capacity.cluster_capacity` is what is up now
  and ``check_fits`` behaves as before (a plain resources dict still works).
* With an autoscaler, ``cluster_capacity`` also lists the node types it may launch (name, resources per
  node, max workers), read from the autoscaler's config, even while no worker is up.
* ``check_fits`` passes a trial that fits a launchable node type, with a line saying what is waited
  for; a trial larger than every node type is refused naming the node types and the ``resources.*``
  fields.
* End to end, on Ray's fake multi-node autoscaling provider (loopback only: head 127.0.0.2, launched
  workers 127.0.0.3, ...): a cluster that starts with a 0-CPU head and NO worker runs a tiny csrgan
  sweep to completion; its trial ran on the node the autoscaler added.

The provider below is Ray's ``FakeMultiNodeProvider`` with one change: the nodes it launches get a
loopback node IP of their own (Ray's would take the machine's outward address). ``ray start --head``
imports it from this file (``provider.type: external``), so this module must stay importable without
csrgan's heavy imports at its top.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csrgan.cluster.local import free_ports, session_tree  # stdlib only: light to import

try:  # only ray and the standard library here: the autoscaler process imports this module
    from ray.autoscaler._private.fake_multi_node.node_provider import (
        FAKE_HEAD_NODE_ID,
        FakeMultiNodeProvider,
    )
except ImportError:  # pragma: no cover - ray is a dependency
    FakeMultiNodeProvider = object  # type: ignore[assignment,misc]
    FAKE_HEAD_NODE_ID = "f" * 51 + "00000"

HEAD_IP = "127.0.0.2"
TESTS = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


# ================================================================== the fake provider, on loopback
class LoopbackFakeProvider(FakeMultiNodeProvider):  # type: ignore[misc,valid-type]
    """Ray's fake multi-node provider whose n-th launched node listens on 127.0.0.(2+n)."""

    def _create_node_with_resources_and_labels(  # noqa: ANN001, ANN202 - Ray's signature
        self, node_config, tags, count, resources, labels
    ):
        import ray
        from ray._private import ray_constants
        from ray.autoscaler.tags import (
            NODE_KIND_WORKER,
            STATUS_UP_TO_DATE,
            TAG_RAY_NODE_KIND,
            TAG_RAY_NODE_NAME,
            TAG_RAY_NODE_STATUS,
            TAG_RAY_USER_NODE_TYPE,
        )

        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            next_id = self._next_hex_node_id()
            params = ray._private.parameter.RayParams(
                node_ip_address=f"127.0.0.{2 + self._next_node_id}",
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0),
                num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": next_id,
                    "RAY_CLOUD_INSTANCE_ID": next_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                },
            )
            node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            all_tags = {
                TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                TAG_RAY_USER_NODE_TYPE: node_type,
                TAG_RAY_NODE_NAME: next_id,
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                **tags,
            }
            self._nodes[next_id] = {"tags": all_tags, "node": node}


# ======================================================================= the autoscaling cluster
class FakeAutoscalingCluster:
    """Ray's local autoscaling test cluster (what ``ray.cluster_utils.AutoscalingCluster`` builds),
    started without its ``ray stop --force`` (which would stop every Ray process on the machine): one
    ``ray start --head`` in a new session with a private temp dir, port and token; :meth:`stop` kills
    exactly that session's processes, the nodes the autoscaler launched included."""

    def __init__(self, root: Path, worker_types: dict[str, dict[str, Any]], head_cpus: int = 0) -> None:
        self.root, self.head_cpus = root, head_cpus
        self.gcs_port, self.dashboard_port, self.client_port, self.agent_port = free_ports(4)
        self.sid: int | None = None
        types = {"ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0}}
        types.update(worker_types)
        self.config = {
            "cluster_name": "csrgan-fake",
            "max_workers": sum(t.get("max_workers", 0) for t in worker_types.values()),
            "provider": {
                "type": "external",
                "module": f"{Path(__file__).stem}.LoopbackFakeProvider",
                "gcs_address": self.gcs_address,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": types,
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 5,
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            RAY_FAKE_CLUSTER="1",
            AUTOSCALER_UPDATE_INTERVAL_S="1",
            RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID,  # the provider knows the head by this id
            RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
            # no token: the drivers here run in pytest's process, where Ray read RAY_AUTH_MODE when it
            # was first imported (tests/test_cluster.py covers token clusters); loopback only
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            NO_PROXY="127.0.0.0/8,localhost",
        )

    @property
    def gcs_address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        """For Ray's State API (its own address lookup fails where other clusters run on this machine)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> None:
        cfg_path = self.root / "autoscaling.json"
        cfg_path.write_text(json.dumps(self.config))
        log = self.root / "head.start.log"
        with open(log, "w") as out:
            p = subprocess.Popen(
                [
                    str(VENV_BIN / "ray"), "start", "--head",
                    f"--autoscaling-config={cfg_path}",
                    f"--node-ip-address={HEAD_IP}",
                    f"--port={self.gcs_port}",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={self.client_port}",
                    f"--dashboard-agent-listen-port={self.agent_port}",
                    f"--num-cpus={self.head_cpus}",
                    f"--temp-dir={self.root / 'ray'}",
                    "--disable-usage-stats",
                ],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self.sid = p.pid  # the daemons keep this session id after `ray start` exits
            rc = p.wait(timeout=180)
        if rc != 0:
            raise RuntimeError(f"`ray start` failed ({rc}):\n{log.read_text()[-3000:]}")

    def pids(self) -> set[int]:
        return session_tree([self.sid]) if self.sid is not None else set()

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0), (signal.SIGKILL, 1.0)):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            t0 = time.time()
            while time.time() - t0 < wait and self.pids():
                time.sleep(0.2)
        self.sid = None

    def monitor_log(self) -> str:
        logs = sorted((self.root / "ray").glob("session_*/logs/monitor.*"))
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in logs)


def _short_tmp() -> Path:
    """A short private folder (Ray's socket paths must stay under ~107 characters)."""
    return Path(tempfile.mkdtemp(prefix="csras-", dir="/tmp"))


def _alive() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


@pytest.fixture(scope="module")
def autoscaling_cluster() -> Iterator[FakeAutoscalingCluster]:
    """Connected: a 0-CPU head and one launchable type ``cpu_worker`` (1 CPU, min 0, max 2), none up.
    Stopped at the end (Ray disconnected first), even on failure."""
    import ray

    root = _short_tmp()
    worker = {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}
    cluster = FakeAutoscalingCluster(root, {"cpu_worker": worker})
    try:
        cluster.start()
        ray.init(address=cluster.gcs_address, log_to_driver=False)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# =============================================================================== the rule, no Ray
def _cfg(tmp: Path, **resources: Any):
    from tiny_experiment import tiny

    from csrgan.config import validate_config

    return validate_config(tiny("auto", tmp / "results", tmp / "demo", resources=resources))


CPU_WORKER = ("cpu_worker", {"CPU": 1.0}, 2)
HEAD_0CPU = {"node:__internal_head__": 1.0, "memory": 1e9}


def _capacity(*types: tuple[str, dict[str, float], int], up: tuple[dict[str, float], ...] = (HEAD_0CPU,)):
    from csrgan.cluster.capacity import Capacity, NodeType

    total: dict[str, float] = {}
    for node in up:
        for k, v in node.items():
            total[k] = total.get(k, 0.0) + v
    return Capacity(total, up, tuple(NodeType(n, r, m) for n, r, m in types))


def test_a_fixed_cluster_is_checked_as_before(tmp_path: Path) -> None:
    from csrgan.cluster.capacity import CapacityError, check_fits, trial_fit

    assert check_fits(_cfg(tmp_path), {"CPU": 3.0, "GPU": 0.0}) == 3  # a plain dict, as the CLI passes
    assert trial_fit(_cfg(tmp_path), {"CPU": 3.0}).message is None
    assert check_fits(_cfg(tmp_path, workers=2, cpus_per_worker=1), {"CPU": 6.0}) == 2  # 2 + 1 driver
    with pytest.raises(CapacityError, match=r"one trial needs 2 CPU .*cpus_per_worker=2.* has 1 CPU"):
        check_fits(_cfg(tmp_path, cpus_per_worker=2), {"CPU": 1.0})
    with pytest.raises(CapacityError, match="resources.workers=1"):  # what is up, no node types: fixed
        check_fits(_cfg(tmp_path), _capacity())


def test_a_trial_fitting_a_launchable_type_waits_for_it(tmp_path: Path) -> None:
    from csrgan.cluster.capacity import check_fits, trial_fit

    fit = trial_fit(_cfg(tmp_path), _capacity(CPU_WORKER))
    assert (fit.slots, fit.waiting) == (2, True)  # 2 nodes of 1 CPU may come: 2 trials at once
    assert fit.message == (
        "waiting for the autoscaler: one trial needs 1 CPU, more than the nodes up now have; it may launch "
        "cpu_worker nodes (1 CPU each, up to 2)"
    )
    assert check_fits(_cfg(tmp_path), _capacity(CPU_WORKER)) == 2
    gpu = trial_fit(
        _cfg(tmp_path, gpus_per_worker=1), _capacity(CPU_WORKER, ("gpu", {"CPU": 4, "GPU": 1}, 3))
    )
    assert (
        gpu.slots == 3
        and "1 CPU and 1 GPU" in gpu.message
        and "gpu nodes (4 CPU, 1 GPU each, up to 3)" in (gpu.message)
    )
    up = trial_fit(_cfg(tmp_path), _capacity(CPU_WORKER, up=({**HEAD_0CPU, "CPU": 1.0},)))
    assert not up.waiting and up.slots == 3 and "up to 3 trial(s) at once" in up.message  # 1 up + 2 to come


def test_a_trial_no_node_type_can_hold_is_refused(tmp_path: Path) -> None:
    from csrgan.cluster.capacity import CapacityError, trial_fit

    with pytest.raises(CapacityError) as err:  # 2 CPU in one bundle: two 1-CPU nodes cannot hold it
        trial_fit(_cfg(tmp_path, cpus_per_worker=2), _capacity(CPU_WORKER))
    msg = str(err.value)
    assert "one trial needs 2 CPU and 0 GPU (resources.workers=1 × cpus_per_worker=2" in msg
    assert "cpu_worker nodes (1 CPU each, up to 2)" in msg and "the cluster at most 2 CPU, 0 GPU" in msg
    assert "Lower resources.workers / cpus_per_worker / gpus_per_worker" in msg
    with pytest.raises(CapacityError, match="1 GPU .*at most 2 CPU, 0 GPU"):  # no node type has a GPU
        trial_fit(_cfg(tmp_path, gpus_per_worker=1), _capacity(CPU_WORKER))
    with pytest.raises(CapacityError, match="at most 2 CPU"):  # 2 workers + driver = 3 CPU > 2 nodes
        trial_fit(_cfg(tmp_path, workers=2, cpus_per_worker=1), _capacity(CPU_WORKER))


def test_node_types_are_read_from_an_autoscaler_config() -> None:
    from csrgan.cluster.capacity import Capacity, NodeType, _config_node_types

    config = {
        "max_workers": 3,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "max_workers": 0},
            "small": {"resources": {"CPU": 1}, "min_workers": 1, "max_workers": 2},
            "big": {"resources": {"CPU": 8, "GPU": 1}},  # no max_workers: the cluster's
        },
    }
    types = _config_node_types(config)
    assert types == (NodeType("small", {"CPU": 1.0}, 2, 1), NodeType("big", {"CPU": 8.0, "GPU": 1.0}, 3))
    largest = Capacity({"CPU": 0.0}, ({"CPU": 0.0, "node:__internal_head__": 1.0},), types, 3).largest()
    assert (largest["CPU"], largest["GPU"]) == (10.0, 1.0)  # the cap of 3: 2 small + 1 big


# ================================================================ on Ray's autoscaling test cluster
@pytest.mark.ray
@pytest.mark.slow
def test_capacity_sees_the_launchable_type_while_no_worker_is_up(
    autoscaling_cluster: FakeAutoscalingCluster, tmp_path: Path
) -> None:
    from csrgan.cluster.capacity import CapacityError, cluster_capacity, trial_fit

    cap = cluster_capacity()
    assert len(_alive()) == 1 and cap.resources.get("CPU", 0.0) == 0.0  # the 0-CPU head only
    assert [(t.name, t.resources, t.max_workers) for t in cap.node_types] == [("cpu_worker", {"CPU": 1.0}, 2)]
    assert cap.source.endswith("autoscaling.json") and cap.can_grow
    fit = trial_fit(_cfg(tmp_path), cap)
    assert (
        fit.waiting
        and fit.slots == 2
        and "it may launch cpu_worker nodes (1 CPU each, up to 2)" in fit.message
    )
    with pytest.raises(CapacityError, match=r"cpus_per_worker=2.*cpu_worker nodes \(1 CPU each, up to 2\)"):
        trial_fit(_cfg(tmp_path, cpus_per_worker=2), cap)
    assert len(_alive()) == 1  # reading the config launched nothing


class _NodeWatch:
    """Records when the cluster first had each number of alive nodes (a thread polling Ray's GCS)."""

    def __init__(self) -> None:
        import threading

        self.t0 = time.time()
        self.first_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.first_seen.setdefault(len(_alive()), time.time() - self.t0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_on_a_cluster_with_no_worker_runs_on_the_node_the_autoscaler_adds(
    autoscaling_cluster: FakeAutoscalingCluster, tmp_path: Path
) -> None:
    import pandas as pd
    from ray.util.state import list_actors
    from tiny_experiment import tiny

    from csrgan.config import validate_config
    from csrgan.data.layout import resolve_data
    from csrgan.sweep.driver import run_sweep

    head = [n["NodeID"] for n in _alive()]
    assert len(head) == 1, "the cluster must start with no worker"
    one_trial = {"method": "grid", "metric": {"name": "unknown/psnr"}, "seeds": [0]}
    one_trial["parameters"] = {"sr.mix_prob": {"values": [0.0]}}  # p = 0: no CycleGAN stage to build
    raw = tiny("autoscale", tmp_path / "results", tmp_path / "demo", search=one_trial)
    lines: list[str] = []
    watch = _NodeWatch()
    try:
        outcome = run_sweep(resolve_data(validate_config(raw)), address=autoscaling_cluster.gcs_address,
                            echo=lines.append)  # fmt: skip
    finally:
        watch.stop()
    text = "\n".join(lines)
    assert "waiting for the autoscaler: one trial needs 1 CPU" in text, text
    assert "cpu_worker nodes (1 CPU each, up to 2)" in text, text
    assert outcome.complete and list(outcome.statuses.values()) == ["finished"], text
    rows = pd.read_parquet(tmp_path / "results" / "autoscale")
    assert rows.trial_id.nunique() == 1 and set(rows.status) == {"finished"} and rows.psnr.notna().all()

    nodes = _alive()
    added = [n for n in nodes if n["NodeID"] not in head]
    assert len(nodes) == 2 and len(added) == 1, nodes  # 1 -> 2: the autoscaler added one node ...
    assert added[0]["NodeManagerAddress"] == "127.0.0.3" and added[0]["Resources"].get("CPU") == 1.0
    trials = [
        a
        for a in list_actors(address=autoscaling_cluster.dashboard, detail=True, limit=1000)
        if "ImplicitFunc" in a.class_name
    ]
    assert trials and {a.node_id for a in trials} == {added[0]["NodeID"]}, (
        trials
    )  # ... and the trial ran there
    print(f"\nalive nodes first seen at (s): {watch.first_seen}; sweep {outcome.wall_s:.1f} s")
