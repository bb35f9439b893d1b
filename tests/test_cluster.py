"""Sweeps beyond one machine: storage every node sees, sweeps as Ray Jobs, a real two-node cluster.

Spec:
* ``check_shared_storage`` refuses a storage folder that some node of a multi-node cluster cannot see,
  naming the folder and those nodes; a single-node cluster is not checked.
* ``plan_submission`` validates the experiment here and builds the job: the project is the job's
  ``working_dir`` (without .venv, .git, results, data ...), the entrypoint is ``csrgan sweep FILE
  --address auto`` with the ``--set`` overrides; paths that would mean something else on the cluster
  (relative storage, relative data outside the upload) are refused before anything is sent.
* Every Jobs API request carries the cluster's token; without one, submission stops with a message.
* On a real two-node cluster on this machine (head 127.0.0.2, worker 127.0.0.3 with resource
  ``node2``, private temp dirs, private token): ``csrgan sweep --address HOST:PORT`` joins it and its
  trials run on both nodes, with results in the shared storage; ``csrgan submit`` runs the same sweep
  as a Ray Job that SUCCEEDS with complete Parquet rows; killing the worker node mid-sweep retries the
  trial that ran there and the sweep still completes.
* Nothing started here talks to an address outside 127.0.0.0/8 (a watcher reads /proc/net/* for the
  sockets of every process we started, all test long).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tiny_experiment
import yaml
from typer.testing import CliRunner

from csrgan import cluster as C
from csrgan.cluster.jobs import _is_excluded
from csrgan.cluster.local import LocalCluster, free_ports, session_tree, signal_all
from csrgan.cluster.storage import _probe_on_node
from csrgan.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
HEAD_IP, NODE2_IP = "127.0.0.2", "127.0.0.3"
KEY = ["trial_id", "phase", "step", "test_set"]


# ====================================================================================== experiment files
def tiny(name: str, storage: Path, demo: Path, **sections: Any) -> dict[str, Any]:
    """The shared tiny experiment with p = 0 (no CycleGAN) and two GAN learning rates: two 1-CPU trials
    that must land on different 1-CPU nodes."""
    return tiny_experiment.tiny(
        name,
        storage,
        demo,
        **{
            "sr": {"mix_prob": 0.0},
            "search": {
                "method": "grid",
                "metric": {"name": "unknown/psnr"},
                "parameters": {"sr.gan.lr": {"values": [1e-4, 2e-4]}},
                "seeds": [0],
            },
            **sections,
        },
    )


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


# ============================================================================== unit: storage visibility
NODES = [
    C.NodeRef("a" * 56, "10.0.0.1", "head"),
    C.NodeRef("b" * 56, "10.0.0.2", "gpu-1"),
    C.NodeRef("c" * 56, "10.0.0.3", "gpu-2"),
]


def fake_probe(visible: dict[str, bool]):
    """A per-node visibility function in the probe's shape; records what it was asked."""
    asked: list[tuple[str, Path, str]] = []

    def probe(nodes, marker: Path, token: str) -> dict[str, str | None]:
        assert marker.read_text() == token  # the driver wrote its marker before asking
        out = {}
        for n in nodes:
            asked.append((n.node_id, marker, token))
            out[n.node_id] = None if visible[n.ip] else f"the driver's marker {marker} does not exist there"
        return out

    probe.asked = asked  # type: ignore[attr-defined]
    return probe


def test_storage_seen_by_every_node_passes_and_leaves_nothing(tmp_path: Path) -> None:
    probe = fake_probe({n.ip: True for n in NODES})
    C.check_shared_storage(tmp_path / "results", nodes=NODES, probe=probe)
    assert [a[0] for a in probe.asked] == [n.node_id for n in NODES]
    assert list((tmp_path / "results").iterdir()) == []  # the marker folder is removed


def test_node_local_storage_is_refused_naming_path_and_nodes(tmp_path: Path) -> None:
    probe = fake_probe({"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": False})
    root = tmp_path / "results"
    with pytest.raises(C.StorageError) as err:
        C.check_shared_storage(root, nodes=NODES, probe=probe)
    msg = str(err.value)
    assert f"storage {root} is not shared by every node" in msg
    assert "2 of 3 node(s)" in msg
    assert "10.0.0.2 (node bbbbbbbbbbbb, host gpu-1)" in msg and "10.0.0.3" in msg
    assert "10.0.0.1" not in msg  # the node that sees it is not blamed
    assert "--storage" in msg and "shared filesystem" in msg
    assert not (root / C.CHECK_DIR).exists()


def test_a_node_that_gives_no_answer_counts_as_blind(tmp_path: Path) -> None:
    def probe(nodes, marker, token):
        return {NODES[0].node_id: None}  # the other nodes never answered

    with pytest.raises(C.StorageError, match="gave no answer"):
        C.check_shared_storage(tmp_path, nodes=NODES, probe=probe)


def test_single_node_is_not_checked(tmp_path: Path) -> None:
    def probe(*_: Any) -> dict[str, str | None]:
        raise AssertionError("a single node must not be probed")

    C.check_shared_storage(tmp_path / "x", nodes=NODES[:1], probe=probe)
    assert not (tmp_path / "x").exists()


def test_unwritable_storage_is_refused_before_asking_nodes(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(C.StorageError, match="the driver cannot write there"):
        C.check_shared_storage(blocker / "results", nodes=NODES, probe=fake_probe({}))


def test_node_side_probe_waits_for_the_marker_and_replies(tmp_path: Path) -> None:
    marker, reply = tmp_path / "driver", tmp_path / "reply-x"
    assert "does not exist there" in _probe_on_node(str(marker), "t0k", str(reply), wait_s=0.3)
    marker.write_text("other")
    assert "holds another token" in _probe_on_node(str(marker), "t0k", str(reply), wait_s=0.3)
    threading.Timer(0.5, lambda: marker.write_text("t0k")).start()  # appears late, like on NFS
    assert _probe_on_node(str(marker), "t0k", str(reply), wait_s=5) is None
    assert reply.read_text() == "t0k"


# ================================================================================= unit: job submission
@pytest.fixture
def demo_stub(tmp_path: Path) -> Path:
    """A demo folder path (plan_submission only validates the config; nothing is built)."""
    return tmp_path / "demo"


def test_plan_uploads_the_project_and_runs_csrgan_sweep(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "exp" / "tiny.yaml", tiny("planned", tmp_path / "store", demo_stub))
    plan = C.plan_submission(
        cfg, ["sr.gan.iters=20", "eval.metrics=[psnr, ssim]"], python="/opt/py/bin/python"
    )
    try:
        assert plan.staged  # the file is outside the project: staged next to links to the project
        wd = plan.working_dir
        assert plan.runtime_env["working_dir"] == str(wd)
        assert (wd / "csrgan").resolve() == REPO / "csrgan"
        assert (wd / "pyproject.toml").resolve() == REPO / "pyproject.toml"
        for skipped in (".venv", ".git", "results"):
            assert not (wd / skipped).exists()
        assert (wd / "_submit" / "tiny.yaml").read_text() == cfg.read_text()
        assert plan.entrypoint == (
            "/opt/py/bin/python -m csrgan.cli.app sweep _submit/tiny.yaml --address auto "
            "--set sr.gan.iters=20 --set 'eval.metrics=[psnr, ssim]'"
        )
        excludes = plan.runtime_env["excludes"]
        assert {"/.venv", "/.git", "/results", "/.demo-data", "/data"} <= set(excludes)
        assert plan.metadata["csrgan.storage"] == str(tmp_path / "store")
        assert plan.sweep == "planned"
    finally:
        plan.cleanup()
    assert not wd.exists()


def test_plan_for_a_file_in_the_project_uploads_the_project_itself(tmp_path: Path) -> None:
    plan = C.plan_submission(
        REPO / "experiments" / "mix_prob.yaml",
        [
            "data.train_hr=/mnt/div2k/train_HR",
            "data.real_lr=/mnt/div2k/train_LR_unknown",
            "data.train_lr=/mnt/div2k/train_LR_unknown",  # the oracle arm's paired LR
            "data.test_sets=[{name: div2k_unknown, hr: /mnt/d/HR, lr: /mnt/d/LR, degradation: real}]",
        ],
        storage="/mnt/shared/results",
        resume=True,
    )
    assert not plan.staged and plan.working_dir == REPO
    assert plan.entrypoint.startswith(
        "python -m csrgan.cli.app sweep experiments/mix_prob.yaml --address auto"
    )
    assert plan.entrypoint.endswith("--storage /mnt/shared/results --resume")


def test_ray_would_not_upload_the_excluded_folders(tmp_path: Path) -> None:
    """The anchored excludes skip the project's data/ but not the csrgan/data package (Ray's matcher)."""
    excl = C.DEFAULT_EXCLUDES
    assert _is_excluded(Path("data/DIV2K/x.png"), excl)
    assert _is_excluded(Path(".venv/bin/python"), excl)
    assert _is_excluded(Path("csrgan/__pycache__/x.pyc"), excl)
    assert not _is_excluded(Path("csrgan/data/io.py"), excl)
    assert not _is_excluded(Path("experiments/mix_prob.yaml"), excl)


def test_relative_storage_is_refused(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("rel", Path("results"), demo_stub))
    with pytest.raises(C.ClusterError, match=r"storage 'results' is a relative path.*--storage /mnt/shared"):
        C.plan_submission(cfg)
    with pytest.raises(C.ClusterError, match=r"storage '~/results'.*the cluster user's home"):
        C.plan_submission(cfg, storage="~/results")


def test_object_store_storage_is_passed_to_the_job_as_given(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("s3", tmp_path / "s", demo_stub))
    uri = "s3://bucket/results?endpoint_override=10.0.0.5:9000&scheme=http"
    plan = C.plan_submission(cfg, storage=uri)
    assert plan.storage == uri and shlex.split(plan.entrypoint)[-2:] == ["--storage", uri]
    with pytest.raises(C.ClusterError, match="unsupported scheme"):
        C.plan_submission(cfg, storage="hdfs://namenode/results")


def test_relative_data_that_is_not_uploaded_is_refused(tmp_path: Path) -> None:
    with pytest.raises(C.ClusterError) as err:
        C.plan_submission(REPO / "experiments" / "mix_prob.yaml", storage="/mnt/shared/results")
    msg = str(err.value)
    assert "data.train_hr: 'data/DIV2K/DIV2K_train_HR'" in msg and "not uploaded" in msg
    assert "data.test_sets[0].hr (Set5): 'datasets/Set5/HR'" in msg and "does not exist" in msg
    assert "--set data.train_hr=/mnt/shared/" in msg
    with pytest.raises(C.ClusterError, match=r"data.real_lr: '~/lr' .* names a home directory"):
        C.plan_submission(
            REPO / "experiments" / "mix_prob.yaml",
            [
                "data.train_hr=/mnt/d/hr",
                "data.real_lr=~/lr",
                "data.test_sets=[{name: div2k_unknown, hr: /x/hr, lr: /x/lr}]",
            ],
            storage="/mnt/shared/results",
        )
    with pytest.raises(C.ClusterError, match=r"data.demo.dir: '.demo-data' would be built inside the job"):
        C.plan_submission(REPO / "experiments" / "quickstart.yaml", storage="/mnt/shared/results")


def test_invalid_experiment_fails_here_not_on_the_cluster(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("bad", tmp_path / "s", demo_stub))
    with pytest.raises(ConfigError, match=r"sr.mix_prob"):
        C.plan_submission(cfg, ["sr.mix_prob=1.5"])


def test_token_comes_from_env_file_or_default_and_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    with pytest.raises(C.ClusterError, match="no Ray auth token: set RAY_AUTH_TOKEN"):
        C.auth_headers()
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert C.auth_headers() == {"Authorization": "Bearer from-home"}
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert C.auth_headers() == {"Authorization": "Bearer from-path"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert C.auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    with pytest.raises(C.ClusterError, match="cannot read the token file"):
        C.auth_headers()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert C.auth_headers() == {}


def test_jobs_api_needs_the_dashboard_http_address(tmp_path: Path, demo_stub: Path) -> None:
    with pytest.raises(C.ClusterError, match=r"dashboard's HTTP address, e.g. http://HOST:8265"):
        C.job_client("10.0.0.1:6379")


def test_submit_sends_the_plan_and_removes_the_staged_dir(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("sent", tmp_path / "s", demo_stub))
    plan = C.plan_submission(cfg)
    sent: dict[str, Any] = {}

    class FakeClient:
        def submit_job(self, **kw: Any) -> str:
            sent.update(kw)
            assert Path(kw["runtime_env"]["working_dir"]).is_dir()  # still there while uploading
            return "raysubmit_123"

    assert C.submit("http://127.0.0.1:1", plan, client_factory=lambda _: FakeClient()) == "raysubmit_123"
    assert sent["entrypoint"] == plan.entrypoint and sent["metadata"]["csrgan.sweep"] == "sent"
    assert not plan.working_dir.exists()


def test_unreachable_dashboard_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x")
    port = free_ports(1)[0]  # nothing listens there
    with pytest.raises(C.ClusterError, match=rf"cannot reach the Ray dashboard at http://127.0.0.1:{port}"):
        C.job_status(f"http://127.0.0.1:{port}", "raysubmit_1")


def cli_app():
    """``csrgan submit`` and ``csrgan jobs`` mounted as csrgan/cli/app.py mounts them."""
    import typer

    from csrgan.cli import jobs, submit

    app = typer.Typer()
    app.command("submit")(submit.submit)
    app.add_typer(jobs.app, name="jobs")
    return app


def test_cli_dry_run_prints_the_job_and_submits_nothing(tmp_path: Path, demo_stub: Path) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("dry", tmp_path / "s", demo_stub))
    res = CliRunner().invoke(cli_app(), ["submit", str(cfg), "--address", "http://127.0.0.1:1", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "entrypoint: python -m csrgan.cli.app sweep _submit/t.yaml --address auto" in res.output
    env = json.loads(res.output.split("runtime_env: ", 1)[1].split("\nresults ->")[0])
    assert not Path(env["working_dir"]).exists()  # the staged folder is removed again
    assert f"results -> {tmp_path / 's'}/dry" in res.output


def test_cli_errors_are_one_line_with_exit_codes(
    tmp_path: Path, demo_stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny("err", tmp_path / "s", demo_stub))
    app, runner = cli_app(), CliRunner()
    bad = runner.invoke(app, ["submit", str(cfg), "--address", "http://x:1", "--set", "sr.mix_prob=2"])
    assert bad.exit_code == 2 and "sr.mix_prob" in bad.output  # invalid experiment: config error
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    no_token = runner.invoke(app, ["submit", str(cfg), "--address", "http://127.0.0.1:1"])
    assert no_token.exit_code == 1 and "error: no Ray auth token" in no_token.output
    assert "Traceback" not in no_token.output
    gcs = runner.invoke(app, ["jobs", "status", "raysubmit_1", "--address", "10.0.0.1:6379"])
    assert gcs.exit_code == 1 and "http://HOST:8265" in gcs.output


def test_connect_errors_say_what_to_do() -> None:
    auth = RuntimeError("Failed to connect to GCS: InvalidAuthToken: Authentication token is missing")
    msg = C.connect_error_hint("10.0.0.1:6379", auth)
    assert "'10.0.0.1:6379'" in msg and "RAY_AUTH_MODE=token" in msg and "~/.ray/auth_token" in msg
    msg = C.connect_error_hint("auto", ConnectionError("Could not find any running Ray instance."))
    assert "cannot join the Ray cluster at 'auto'" in msg and "Could not find any running" in msg


def test_socket_addresses_are_decoded_like_the_kernel_writes_them() -> None:
    """/proc/net/tcp{,6} store addresses as little-endian 32-bit words in hex."""
    assert str(_addr("0100007F:1F90")) == "127.0.0.1"
    assert _is_local(_addr("0300007F:0050"))
    assert str(_addr("0202000A:0050")) == "10.0.2.2" and not _is_local(_addr("0202000A:0050"))
    assert _is_local(_addr("0000000000000000FFFF00000200007F:1F90"))  # ::ffff:127.0.0.2
    assert not _is_local(_addr("0000000000000000FFFF00000202000A:0050"))  # ::ffff:10.0.2.2
    assert _is_local(_addr("00000000000000000000000001000000:0050"))  # ::1
    assert not _is_local(_addr("B80D0120000000000000000001000000:0050"))  # 2001:db8::1


# ============================================================================ a real two-node cluster
class LocalRayCluster(LocalCluster):
    """The cluster of these tests (:class:`csrgan.cluster.local.LocalCluster`): head on 127.0.0.2 and a
    worker node ``node2`` on 127.0.0.3 with resource ``node2``, 1 CPU each, private temp dirs and token."""

    def add_node2(self) -> None:
        self.add_node("node2", NODE2_IP, num_cpus=1, resources={"node2": 1})

    def ensure_node2(self) -> None:
        if "node2" not in self.sessions:
            self.add_node2()


# ------------------------------------------------------------------------------------- loopback watch
def _addr(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    host = hex_addr.split(":")[0]
    if len(host) == 8:
        return ipaddress.IPv4Address(bytes.fromhex(host)[::-1])
    raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, 32, 8))
    return ipaddress.IPv6Address(raw)


def _is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified  # unspecified: an unconnected UDP socket, no peer


class LoopbackWatch:
    """Samples the TCP/UDP sockets of the given process trees from /proc and records every peer
    outside 127.0.0.0/8 (and ::1). ``seen`` counts connected sockets, so a silent watch fails too."""

    def __init__(self, pids) -> None:  # noqa: ANN001 - a callable returning the pids to watch
        self.pids = pids
        self.violations: set[tuple[int, str, str, str]] = set()
        self.seen: set[tuple[int, str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @staticmethod
    def _sockets() -> dict[str, tuple[str, str, str]]:
        out = {}
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
                    f = line.split()
                    if proto.startswith("tcp") and f[3] == "0A":  # LISTEN: no peer
                        continue
                    out[f[9]] = (proto, f[1], f[2])
        return out

    def sample(self) -> None:
        table = self._sockets()
        for pid in self.pids():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if not target.startswith("socket:["):
                    continue
                entry = table.get(target[8:-1])
                if entry is None:
                    continue
                proto, local, remote = entry
                peer = _addr(remote)
                if peer.is_unspecified:
                    continue
                self.seen.add((pid, proto, remote))
                if not _is_local(peer):
                    self.violations.add(
                        (pid, proto, str(_addr(local)), f"{peer}:{int(remote.split(':')[1], 16)}")
                    )

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sample()
            self._stop.wait(0.5)

    def check(self) -> None:
        self.sample()
        assert self.seen, "the watch saw no connection at all: it is not watching the right processes"
        assert not self.violations, f"traffic outside loopback: {sorted(self.violations)}"


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from csrgan.data.demo import build_demo

    out = tmp_path_factory.mktemp("demo")
    build_demo(out, seed=0)
    return out


class Drivers:
    """Sessions of the driver/client processes a test starts (watched, and killed at the end)."""

    def __init__(self) -> None:
        self.sessions: set[int] = set()
        self._logs: list[Any] = []

    def popen(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        out = open(log, "w")  # noqa: SIM115 - closed in kill(), after the process is gone
        self._logs.append(out)
        p = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.sessions.add(p.pid)
        return p

    def kill(self) -> None:
        signal_all(session_tree(self.sessions), signal.SIGKILL)
        for out in self._logs:
            out.close()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[LocalRayCluster, Drivers, LoopbackWatch]]:
    """Head on 127.0.0.2 + worker node on 127.0.0.3 (1 CPU each), stopped even when a test fails."""
    rc = LocalRayCluster()  # its own short folder under /tmp (Ray's socket paths), removed by stop()
    drivers = Drivers()
    me = os.getpid()
    watch = LoopbackWatch(lambda: rc.pids() | session_tree(drivers.sessions) | {me})
    try:
        with watch:
            rc.start_head()
            rc.add_node2()
            yield rc, drivers, watch
    finally:
        drivers.kill()
        rc.stop()
        left = rc.leftovers()
        assert not left, f"Ray processes left running: {sorted(left)}"


CSRGAN = [sys.executable, "-m", "csrgan.cli.app"]


def _tune_nodes(results_dir: Path) -> dict[str, list[str]]:
    """Per trial: the node IP of each report, in order (Tune writes ``node_ip`` into result.json)."""
    out: dict[str, list[str]] = {}
    for f in sorted((results_dir / "_tune").glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = [r["node_ip"] for r in rows]
    return out


def _tune_steps(results_dir: Path) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for f in sorted((results_dir / "_tune").glob("*/result.json")):
        with contextlib.suppress(ValueError):
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            if rows:
                out[rows[0]["trial_id"]] = [(r["node_ip"], int(r.get("step", -1))) for r in rows]
    return out


def assert_complete(df: pd.DataFrame, gan_steps: list[int]) -> None:
    """Two finished trials, each with its pre-training rows and every GAN evaluation, none twice."""
    statuses = df.groupby("trial_id").status.first()
    assert df.trial_id.nunique() == 2 and set(df.status) == {"finished"}, statuses
    assert not df.duplicated(KEY).any(), df[df.duplicated(KEY, keep=False)][KEY]
    for tid, rows in df.groupby("trial_id"):
        gan = rows[rows.phase == "gan"]
        assert sorted(gan.step.unique()) == gan_steps, (tid, sorted(gan.step.unique()))
        assert set(gan.test_set) == {"bicubic", "unknown"}
        assert len(rows[rows.phase == "pretrain"]) == 2
        assert gan.psnr.notna().all()


def _summary(results_dir: Path) -> str:
    from csrgan.cli.results import app as results_app

    res = CliRunner().invoke(results_app, ["summary", str(results_dir), "--by", "sr.gan.lr"])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.ray
@pytest.mark.slow
def test_storage_check_asks_every_node_of_the_real_cluster(
    ray_cluster: tuple[LocalRayCluster, Drivers, LoopbackWatch], tmp_path: Path
) -> None:
    rc, drivers, watch = ray_cluster
    rc.ensure_node2()
    script = f"""
import json, ray
from pathlib import Path
from csrgan import cluster as C
from csrgan.cluster.storage import _RayProbe
ray.init(address={rc.gcs_address!r})
C.check_shared_storage(Path({str(tmp_path / "shared")!r}))  # same filesystem: passes
nodes = C.alive_nodes()
missing = Path({str(tmp_path / "never-written")!r})
answers = _RayProbe(wait_s=0.5)(nodes, missing, "token")  # every node must answer, here: blind
print(json.dumps({{"ips": sorted(n.ip for n in nodes), "answers": list(answers.values())}}))
"""
    p = drivers.popen([sys.executable, "-c", script], rc.run_env(), tmp_path / "check.log")
    assert p.wait(timeout=120) == 0, (tmp_path / "check.log").read_text()[-3000:]
    out = json.loads((tmp_path / "check.log").read_text().strip().splitlines()[-1])
    assert out["ips"] == [HEAD_IP, NODE2_IP]
    assert len(out["answers"]) == 2 and all("does not exist there" in a for a in out["answers"])
    assert not (tmp_path / "shared" / C.CHECK_DIR).exists()
    watch.check()


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_joins_the_cluster_and_runs_trials_on_both_nodes(
    ray_cluster: tuple[LocalRayCluster, Drivers, LoopbackWatch], tmp_path: Path, demo_dir: Path
) -> None:
    rc, drivers, watch = ray_cluster
    rc.ensure_node2()
    storage = tmp_path / "shared-results"  # one filesystem for both nodes: "shared storage"
    cfg = write_yaml(tmp_path / "two.yaml", tiny("two", storage, demo_dir))
    log = tmp_path / "sweep.log"
    p = drivers.popen([*CSRGAN, "sweep", str(cfg), "--address", rc.gcs_address], rc.run_env(), log)
    assert p.wait(timeout=240) == 0, log.read_text()[-4000:]
    out = log.read_text()
    # it says which cluster it joined: address, nodes, resources, Ray version
    import ray

    joined = f"joined Ray cluster {rc.gcs_address} (Ray {ray.__version__}): 2 node(s), "
    assert joined in out and "up to 2 at once" in out, out[-3000:]

    nodes = _tune_nodes(storage / "two")
    assert len(nodes) == 2
    assert {ips[-1] for ips in nodes.values()} == {HEAD_IP, NODE2_IP}, nodes  # one trial per node
    df = pd.read_parquet(storage / "two")
    assert_complete(df, [5, 10])
    # every row names the node its trial ran on, as Tune placed it
    by_trial = df.groupby("trial_id").node_ip.unique()
    assert all(len(ips) == 1 for ips in by_trial), by_trial
    assert {t: ips[0] for t, ips in by_trial.items()} == {t: ips[-1] for t, ips in nodes.items()}
    assert df.node_id.str.fullmatch(r"[0-9a-f]{56}").all()
    summary = _summary(storage / "two")
    assert "| 0.0001" in summary and "| 0.0002" in summary
    watch.check()


@pytest.mark.ray
@pytest.mark.slow
def test_submitted_sweep_job_succeeds_with_complete_rows(
    ray_cluster: tuple[LocalRayCluster, Drivers, LoopbackWatch],
    tmp_path: Path,
    demo_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rc, drivers, watch = ray_cluster
    rc.ensure_node2()
    app, runner = cli_app(), CliRunner()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8,localhost")

    storage = tmp_path / "shared-results"
    cfg = write_yaml(tmp_path / "exp" / "viajob.yaml", tiny("viajob", storage, demo_dir))

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-cluster-token")
    refused = runner.invoke(app, ["submit", str(cfg), "--address", rc.dashboard])
    assert refused.exit_code == 1
    assert f"the Ray cluster at {rc.dashboard} refused the request" in refused.output

    monkeypatch.setenv("RAY_AUTH_TOKEN", rc.token)
    args = ["submit", str(cfg), "--address", rc.dashboard, "--set", "sr.gan.iters=10", "--wait"]
    res = runner.invoke(app, args)  # --wait: streams the job's logs until it ends
    assert res.exit_code == 0, res.output[-4000:]
    job_id = res.stdout.strip().splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "csrgan sweep viajob: 2 trial(s)" in res.stdout  # the streamed log
    assert f"job {job_id}: SUCCEEDED" in res.output

    info = C.job_status(rc.dashboard, job_id)
    logs = C.job_logs(rc.dashboard, job_id)
    assert str(info.status) == "SUCCEEDED", logs[-4000:]
    assert info.entrypoint.endswith("sweep _submit/viajob.yaml --address auto --set sr.gan.iters=10")
    assert info.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")  # the project was uploaded
    assert "csrgan sweep viajob: 2 trial(s)" in logs

    status = runner.invoke(app, ["jobs", "status", job_id, "--address", rc.dashboard])
    assert status.exit_code == 0 and f"{job_id}: SUCCEEDED" in status.output
    assert f"results: {storage}/viajob" in status.output
    as_json = runner.invoke(app, ["jobs", "status", job_id, "--address", rc.dashboard, "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["status"] == "SUCCEEDED"
    got = runner.invoke(app, ["jobs", "logs", job_id, "--address", rc.dashboard])
    assert got.exit_code == 0 and "csrgan sweep viajob" in got.output
    stop = runner.invoke(app, ["jobs", "stop", job_id, "--address", rc.dashboard])
    assert stop.exit_code == 0 and "had already ended" in stop.output
    unknown = runner.invoke(app, ["jobs", "status", "raysubmit_nope", "--address", rc.dashboard])
    assert unknown.exit_code == 1 and "raysubmit_nope" in unknown.output

    assert_complete(pd.read_parquet(storage / "viajob"), [5, 10])
    assert "| 0.0001" in _summary(storage / "viajob")
    watch.check()


@pytest.mark.ray
@pytest.mark.slow
def test_losing_the_worker_node_mid_sweep_retries_its_trial(
    ray_cluster: tuple[LocalRayCluster, Drivers, LoopbackWatch], tmp_path: Path, demo_dir: Path
) -> None:
    rc, drivers, watch = ray_cluster
    rc.ensure_node2()
    storage = tmp_path / "shared-results"
    raw = tiny(
        "lost",
        storage,
        demo_dir,
        # long enough that the node is lost mid-trial: a tiny trial runs ~10 GAN steps per second here
        sr={"gan": {"iters": 200, "content": {"type": "mse"}}, "eval_every": 10, "checkpoint_every": 10},
    )
    cfg = write_yaml(tmp_path / "lost.yaml", raw)
    log = tmp_path / "sweep.log"
    p = drivers.popen([*CSRGAN, "sweep", str(cfg), "--address", rc.gcs_address], rc.run_env(), log)
    results = storage / "lost"

    def on_node2_with_checkpoint() -> str | None:
        for tid, rows in _tune_steps(results).items():
            if rows and rows[-1][0] == NODE2_IP and rows[-1][1] >= 10:
                return tid
        return None

    t0, victim = time.time(), None
    while victim is None:
        assert p.poll() is None, f"sweep ended before the node was lost:\n{log.read_text()[-3000:]}"
        assert time.time() - t0 < 180, f"no trial reached step 10 on {NODE2_IP}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)
        victim = on_node2_with_checkpoint()
    rc.kill_node("node2")
    assert p.wait(timeout=240) == 0, log.read_text()[-4000:]

    steps = _tune_steps(results)[victim]
    ips = [ip for ip, _ in steps]
    assert ips[0] == NODE2_IP and ips[-1] == HEAD_IP, steps  # retried on the surviving node
    assert steps[-1][1] == 200
    df = pd.read_parquet(results)
    assert_complete(df, list(range(10, 201, 10)))
    meta = json.loads((results / "_sweep.json").read_text())
    assert set(meta["runs"][-1]["statuses"].values()) == {"finished"}
    watch.check()
