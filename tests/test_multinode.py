"""Multi-node trials and stopping exactly one cluster (csrgan.cluster.local, ``csrgan cluster``).

Spec:
* ``stop_nodes(TEMP_DIR)`` ends this user's Ray processes of the node(s) started with that temp dir —
  those naming it (or a path in one of its sessions) on their command line or holding a file open in
  one of its sessions — and their children: SIGTERM, SIGKILL after the grace period; it returns what it
  ended. A non-Ray program using the folder, a Ray process of a sibling temp dir and everything under a
  parent folder of several temp dirs are left alone. ``csrgan cluster list`` shows the raylets with their
  temp dirs; ``csrgan cluster stop --temp-dir DIR`` says what it stopped and exits 1 when nothing matched.
* ``resources.placement`` (pack | spread) is the Train worker group's placement strategy. On a real
  cluster on loopback (head 127.0.0.2 with 2 CPUs, worker node 127.0.0.3 with 1 CPU, token auth, private
  temp dirs): ``pack`` puts a 2-worker DDP (gloo) trial on one node; ``spread`` on both. When the worker
  node is killed (SIGKILL of all its processes) mid-run and a replacement node joins, the run resumes
  from its last registered checkpoint (step > 0) and ends bit-for-bit where the uninterrupted run ends.
  Stopping the replacement node by its temp dir leaves the head running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from csrgan.cli.cluster import app as cluster_app
from csrgan.cluster.local import (
    HEAD_IP,
    LocalCluster,
    RayProcess,
    local_nodes,
    node_processes,
    session_tree,
    signal_all,
    stop_nodes,
)
from csrgan.train.checkpoint import load_state

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[1]
NODE2_IP, NODE3_IP = "127.0.0.3", "127.0.0.4"
runner = CliRunner()


# ====================================================================================== fake nodes
class Fakes:
    """Stand-in processes for the selection rules, each in a session of its own; killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        pkg = root / "site-packages" / "ray"  # a "Ray program": a script in a ray package folder
        pkg.mkdir(parents=True)
        self.script = pkg / "fake_daemon.py"
        self.script.write_text(
            "import signal, subprocess, sys, time\n"
            "if '--stubborn' in sys.argv: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "if '--child' in sys.argv: subprocess.Popen(['sleep', '60'])\n"
            "time.sleep(60)\n"
        )

    def daemon(self, key: str, *args: str) -> int:
        """The fake Ray script with ``args`` on its command line."""
        p = subprocess.Popen([sys.executable, str(self.script), *args], start_new_session=True)
        self.procs[key] = p
        return p.pid

    def renamed(self, key: str, title: str, log: Path | None) -> int:
        """``exec -a TITLE``: a process named like a Ray worker, with stdout open in ``log``."""
        out = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "w")  # noqa: SIM115 - the child holds it; closed below
        p = subprocess.Popen(
            ["bash", "-c", f'exec -a "{title}" {sys.executable} -c "import time; time.sleep(60)"'],
            stdout=out,
            start_new_session=True,
        )
        if log is not None:
            out.close()
        self.procs[key] = p
        return p.pid

    def alive(self, key: str) -> bool:
        return self.procs[key].poll() is None

    def wait_started(self) -> None:
        time.sleep(0.5)  # bash exec'd, the children forked

    def kill(self) -> None:
        signal_all(session_tree({p.pid for p in self.procs.values()}), signal.SIGKILL)
        for p in self.procs.values():
            p.wait(timeout=10)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    f = Fakes(tmp_path)
    yield f
    f.kill()


def test_stop_nodes_ends_exactly_the_temp_dirs_ray_processes(fakes: Fakes, tmp_path: Path) -> None:
    temp, sibling = tmp_path / "t", tmp_path / "t2"  # t2: a name that t is a prefix of
    session = temp / "session_1"
    fakes.daemon("named", f"--temp_dir={temp}", "--child")  # names the temp dir; has a (non-Ray) child
    fakes.daemon("stubborn", f"--log_dir={session}/logs", "--stubborn")  # ignores SIGTERM
    fakes.renamed("worker", "ray::IDLE", session / "logs" / "worker.out")  # holds a session log open
    fakes.renamed("plain", "tail", session / "logs" / "tail.out")  # not Ray: left alone
    fakes.renamed("other", "ray::IDLE", sibling / "session_2" / "logs" / "worker.out")
    fakes.daemon("other2", f"--temp_dir={sibling}")
    fakes.wait_started()

    assert node_processes(tmp_path) == []  # a parent of several temp dirs is no temp dir
    in_session = {p.pid for p in node_processes(session)}
    assert in_session == {fakes.procs["stubborn"].pid, fakes.procs["worker"].pid}
    found = node_processes(temp)
    pids = {p.pid for p in found}
    ours = {fakes.procs[k].pid for k in ("named", "stubborn", "worker")}
    assert ours < pids and len(pids) == 4, found  # + the named daemon's child
    assert {p.name for p in found} == {"fake_daemon.py", "ray::IDLE", "sleep"}

    t0 = time.monotonic()
    stopped = stop_nodes(temp, grace_s=0.5)
    assert {p.pid for p in stopped} == pids and all(isinstance(p, RayProcess) for p in stopped)
    assert time.monotonic() - t0 < 5
    for key in ("named", "worker"):
        assert fakes.procs[key].wait(timeout=5) == -signal.SIGTERM
    assert fakes.procs["stubborn"].wait(timeout=5) == -signal.SIGKILL  # after the grace period
    assert all(fakes.alive(k) for k in ("plain", "other", "other2"))
    assert stop_nodes(temp) == [] and node_processes(temp) == []


def test_cli_lists_nodes_and_stops_one_temp_dir_or_says_nothing_matched(fakes: Fakes, tmp_path: Path) -> None:
    temp = tmp_path / "n"
    session = temp / "session_9"
    flags = [
        f"--node_ip_address={NODE3_IP}",
        f"--temp_dir={temp}",
        f"--session_dir={session}",
        "--gcs-address=127.0.0.4:1",
        "--node_id=abc",
        "--head",
    ]
    raylet = f"{tmp_path}/site-packages/ray/core/raylet"  # a raylet's argv[0]
    script = f'exec -a "{raylet}" {sys.executable} -c "import time; time.sleep(60)" "$@"'
    p = subprocess.Popen(
        ["bash", "-c", script, "x", *flags],
        start_new_session=True,
    )
    fakes.procs["raylet"] = p
    fakes.wait_started()
    mine = [n for n in local_nodes() if n.pid == p.pid]
    assert len(mine) == 1 and (mine[0].ip, mine[0].head, mine[0].session) == (NODE3_IP, True, "session_9")

    listed = runner.invoke(cluster_app, ["list"])
    assert listed.exit_code == 0 and f"{temp}" in listed.output and "session_9" in listed.output
    as_json = json.loads(runner.invoke(cluster_app, ["list", "--json"]).output)
    assert {"ip": NODE3_IP, "temp_dir": str(temp)}.items() <= next(
        n for n in as_json if n["pid"] == p.pid
    ).items()

    res = runner.invoke(cluster_app, ["stop", "--temp-dir", str(temp), "--grace", "1"])
    assert res.exit_code == 0, res.output
    assert f"stopped head node {NODE3_IP} (session session_9)" in res.output
    assert f"ended 1 process(es) of {temp}: " in res.output
    assert p.wait(timeout=5) == -signal.SIGTERM

    again = runner.invoke(cluster_app, ["stop", "--temp-dir", str(temp)])
    assert again.exit_code == 1
    assert f"no Ray process of this user uses --temp-dir {temp}" in again.output
    assert "csrgan cluster list" in again.output


def test_placement_is_a_resource_setting() -> None:
    from csrgan.config import ResourcesConfig

    assert ResourcesConfig().placement == "pack"
    assert ResourcesConfig(placement="spread").placement == "spread"
    with pytest.raises(ValueError, match="placement\n  Input should be 'pack' or 'spread'"):
        ResourcesConfig(placement="STRICT_SPREAD")


# ================================================================================ a real cluster
def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    wave = 70 * np.sin(xx / 6.0 + seed)[..., None] * np.cos(yy / 9.0)[..., None] * np.array([1, 0.5, -0.5])
    return np.clip(120 + wave + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


ITERS, EVERY = 60, 10


def _config(root: Path, placement: str) -> dict[str, Any]:
    """tests/test_ray_train.py's tiny pre-training (2 workers x 1 CPU), no test sets."""
    from csrgan.data.io import write_image

    for i in range(4):
        write_image(root / "train" / f"{i}.png", _image(64, 64, i))
    return {
        "name": "multinode",
        "data": {"train_hr": str(root / "train"), "test_sets": []},
        "sr": {
            "generator": {"channels": 8, "n_blocks": 1},
            "mix_prob": 0.0,
            "batch_size": 2,
            "patch_size": 32,
            "pretrain": {"iters": ITERS, "lr": 1e-3},
            "eval_every": EVERY,
            "checkpoint_every": EVERY,
        },
        "eval": {"metrics": ["psnr"], "grid_images": 0},
        "resources": {"workers": 2, "cpus_per_worker": 1, "placement": placement},
    }


#: The driver: one 2-worker pre-training on the cluster at argv[3]; prints rank 0's result and, per
#: worker-group attempt (its placement group, in start order), the IPs of the nodes its workers ran on.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import ray
from ray.util.state import list_actors, list_nodes
from csrgan.config import validate_config
from csrgan.train.launch import RayTrainGroup, launch

cfg = validate_config(json.loads(Path(sys.argv[1]).read_text()))
out, address = Path(sys.argv[2]), sys.argv[3]
ray.init(address=address, log_to_driver=False)
t0 = time.time()
res = launch("pretrain", cfg, out, backend=RayTrainGroup(address=address, max_failures=2))
wall = time.time() - t0
gcs = ray.get_runtime_context().gcs_address
ips = {n.node_id: n.node_ip for n in list_nodes(address=gcs, limit=1000)}
groups = {}
mine = [("class_name", "=", "RayTrainWorker"), ("job_id", "=", ray.get_runtime_context().get_job_id())]
for a in list_actors(address=gcs, filters=mine, detail=True, limit=1000):
    groups.setdefault(a.placement_group_id, []).append((a.pid, ips.get(a.node_id, a.node_id)))
attempts = [sorted(ip for _, ip in g) for g in sorted(groups.values(), key=lambda g: min(p for p, _ in g))]
print("RESULT " + json.dumps({"metrics": res.metrics, "attempts": attempts, "wall_s": wall}))
"""


class Run:
    """A driver subprocess in its own session (killed at the end)."""

    def __init__(self, rc: LocalCluster, root: Path, placement: str) -> None:
        root.mkdir(parents=True)
        cfg_file = root / "cfg.json"
        cfg_file.write_text(json.dumps(_config(root, placement)))
        self.out = root / "run"
        self.log = root / "driver.log"
        env = rc.run_env()
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",  # reports are drained at each poll (ray_train.py)
        )
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(cfg_file), str(self.out), rc.gcs_address],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self) -> str:
        return self.log.read_text()[-4000:]

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not end in {timeout:g} s:\n{self.tail()}")
        assert rc == 0, self.tail()
        line = next(ln for ln in reversed(self.log.read_text().splitlines()) if ln.startswith("RESULT "))
        return json.loads(line[len("RESULT ") :])

    def kill(self) -> None:
        signal_all(session_tree({self.proc.pid}), signal.SIGKILL)
        self.proc.wait(timeout=10)

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in (self.out / "metrics.jsonl").read_text().splitlines()]

    def registered_step(self) -> int:
        """Step of the newest checkpoint Ray Train registered (tests/test_ray_train.py's rule)."""
        try:
            snap = json.loads((self.out / "checkpoints" / "checkpoint_manager_snapshot.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return 0
        latest = snap.get("latest_checkpoint_result") or {}
        return int((latest.get("metrics") or {}).get("step", 0))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Head (2 CPUs) + worker node 127.0.0.3 (1 CPU); node failures noticed within ~3 s, not ~15 s."""
    fast = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    rc = LocalCluster(env=fast)
    try:
        t0 = time.monotonic()
        rc.start_head(num_cpus=2)
        rc.add_node("node2", NODE2_IP, num_cpus=1)
        print(f"cluster up in {time.monotonic() - t0:.1f} s")
        yield rc
    finally:
        rc.stop()
        left = rc.leftovers()
        assert not left, f"Ray processes left running: {sorted(left)}"


@pytest.fixture(scope="module")
def packed(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, dict[str, Any]]:
    """The uninterrupted reference run, placement pack."""
    run = Run(cluster, tmp_path_factory.mktemp("pack") / "r", "pack")
    try:
        return run, run.result(timeout=240)
    finally:
        run.kill()


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint states differ (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{where}: keys"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple):
        if not isinstance(b, list | tuple) or len(a) != len(b):
            return [f"{where}: length"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [where]


@pytest.mark.ray
@pytest.mark.slow
def test_pack_puts_both_ddp_workers_on_one_node(packed: tuple[Run, dict[str, Any]]) -> None:
    run, res = packed
    print(f"pack: {res['wall_s']:.1f} s, workers on {res['attempts']}")
    assert res["attempts"] == [[HEAD_IP, HEAD_IP]]  # the only node with room for both
    assert res["metrics"]["step"] == ITERS
    assert [r["step"] for r in run.rows()] == list(range(EVERY, ITERS + 1, EVERY))


@pytest.mark.ray
@pytest.mark.slow
def test_spread_trial_on_two_nodes_resumes_exactly_after_losing_a_node(
    cluster: LocalCluster, packed: tuple[Run, dict[str, Any]], tmp_path: Path
) -> None:
    run = Run(cluster, tmp_path / "r", "spread")
    try:
        t0 = time.monotonic()
        while run.registered_step() < 2 * EVERY:
            assert run.proc.poll() is None, f"the run ended before the node was lost:\n{run.tail()}"
            assert time.monotonic() - t0 < 180, f"no checkpoint registered:\n{run.tail()}"
            time.sleep(0.1)
        registered = run.registered_step()
        killed = cluster.kill_node("node2")
        assert {"raylet", "ray::RayTrainWorker"} <= {p.name.split(".")[0] for p in killed}, killed
        t_kill = time.monotonic()
        cluster.add_node("node3", NODE3_IP, num_cpus=1)  # waits until node2 is seen dead and node3 alive
        t_node3 = time.monotonic() - t_kill
        res = run.result(timeout=300)
        print(
            f"spread: {res['wall_s']:.1f} s; node2 killed {t_kill - t0:.1f} s after start at registered "
            f"step {registered}; node3 up {t_node3:.1f} s after the kill; attempts {res['attempts']}"
        )
    finally:
        run.kill()

    first, *later = res["attempts"]
    assert first == [HEAD_IP, NODE2_IP]  # spread: one worker per node
    assert len(later) >= 1 and all(NODE2_IP not in a for a in later), res["attempts"]
    rows = run.rows()
    restarts = [r for r in rows if "resumed_from" in r]
    assert len(restarts) == 1, [r["step"] for r in rows]
    resumed = restarts[0]["resumed_from"]
    print(f"resumed from step {resumed}")
    assert resumed >= registered >= 2 * EVERY and resumed % EVERY == 0
    assert res["metrics"]["step"] == ITERS

    # exact: rank 0's final nets and optimizers are those of the uninterrupted (packed) run
    ref_run, ref = packed
    assert res["metrics"]["loss/pixel"] == ref["metrics"]["loss/pixel"]
    a, b = load_state(ref_run.out / "final"), load_state(run.out / "final")
    assert not _differences(a["nets"], b["nets"], "nets") + _differences(a["optimizers"], b["optimizers"])
    assert a["step"] == b["step"] == ITERS

    # `csrgan cluster stop` on the replacement node's temp dir: that node goes, the head stays
    head = {p.pid for p in node_processes(cluster.temp_dir("head"))}
    stopped = runner.invoke(cluster_app, ["stop", "--temp-dir", str(cluster.temp_dir("node3"))])
    assert stopped.exit_code == 0, stopped.output
    assert f"stopped worker node {NODE3_IP}" in stopped.output
    cluster.wait_nodes({HEAD_IP}, timeout=30)
    assert head <= {p.pid for p in node_processes(cluster.temp_dir("head"))}
