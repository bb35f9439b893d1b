"""Knowing where you are: which cluster a sweep joins, refusing an ambiguous ``auto``, a missing token
named at once, the node in every row.

Spec:
* ``resolve_address("auto")`` finds every cluster this machine runs a node of (raylet / GCS server
  command lines, ``ray_current_cluster`` in the default and private temp dirs): exactly one -> its GCS
  address; several -> ClusterError listing each (address, temp dir) and saying ``--address HOST:PORT``;
  none (or only a stale ``ray_current_cluster``) -> ClusterError saying to start one or pass --address.
  ``RAY_ADDRESS`` wins, as in Ray. Any other address is returned as is.
* ``check_auth`` refuses a cluster that requires a token this process would not send within a second or
  so (``ray.init`` retries 20 s), naming RAY_AUTH_MODE=token, RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH;
  the right token passes.
* ``describe_cluster`` on a real 2-node cluster: its GCS address, 2 nodes, the CPU total, Ray's version,
  the dashboard; ``ClusterSummary.line()`` is the one line a sweep prints.
* ``node_columns`` gives the node of the calling Ray process (127.0.0.3 in a task pinned to the second
  node), None outside Ray; ``node_ip`` / ``node_id`` are nullable string columns of every row.

Real clusters: head 127.0.0.2 + node 127.0.0.3 (cluster A) and a second head (cluster B), all on loopback
with private temp dirs and tokens (:class:`csrgan.cluster.local.LocalCluster`), started once per module.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

from csrgan.cluster import connect_error_hint
from csrgan.cluster.jobs import ClusterError
from csrgan.cluster.local import HEAD_IP, LocalCluster
from csrgan.cluster.where import (
    ClusterAuthError,
    ClusterSummary,
    auth_token,
    check_auth,
    find_clusters,
    node_columns,
    resolve_address,
)
from csrgan.results import ResultsError, ResultsStore

NODE2_IP = "127.0.0.3"
TOKEN_VARS = ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def raylet(gcs: str, temp: str, session: str = "session_x") -> list[str]:
    """A raylet command line as Ray 2.60 writes it (flags that matter, one embedded worker command)."""
    worker = f"python default_worker.py --gcs-address={gcs} --temp-dir={temp}"
    return [
        "/venv/ray/core/src/ray/raylet/raylet",
        "--node_ip_address=127.0.0.2",
        f"--python_worker_command={worker}",
        f"--temp_dir={temp}",
        f"--gcs-address={gcs}",
        f"--session-name={session}",
    ]


def gcs_server(ip: str, port: int, temp: str, session: str = "session_x") -> list[str]:
    return [
        "/venv/ray/core/src/ray/gcs/gcs_server",
        f"--gcs_server_port={port}",
        f"--node-ip-address={ip}",
        f"--session-name={session}",
        f"--session-dir={temp}/{session}",
    ]


@pytest.fixture
def no_ray_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RAY_ADDRESS / auth variables, Ray's default temp dir and HOME in tmp_path (no real token file)."""
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "TMPDIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


# ====================================================================== auto, from command lines (fast)
def test_auto_with_one_cluster_gives_its_address(no_ray_env: Path) -> None:
    procs = [raylet("127.0.0.2:6379", "/tmp/a"), gcs_server("127.0.0.2", 6379, "/tmp/a"), ["bash"], []]
    assert resolve_address("auto", procs) == "127.0.0.2:6379"
    (cand,) = find_clusters(procs)
    assert cand.temp_dirs == {"/tmp/a"} and cand.sources == {"raylet", "gcs_server"} and cand.live
    assert resolve_address("127.0.0.9:1234", procs) == "127.0.0.9:1234"  # explicit: untouched


def test_auto_with_two_clusters_refuses_and_lists_both(no_ray_env: Path) -> None:
    procs = [
        raylet("127.0.0.2:6379", "/tmp/a", "session_a"),
        raylet("127.0.0.2:6379", "/tmp/a2"),  # a second node of the same cluster: still one
        gcs_server("127.0.0.5", 7000, "/tmp/b", "session_b"),  # a head whose raylet is still starting
    ]
    with pytest.raises(ClusterError) as err:
        resolve_address("auto", procs)
    msg = str(err.value)
    assert "2 Ray clusters" in msg and "--address HOST:PORT" in msg
    assert "127.0.0.2:6379 (temp dir /tmp/a, /tmp/a2; session session_a, session_x" in msg
    assert "127.0.0.5:7000 (temp dir /tmp/b; session session_b" in msg


def test_auto_with_no_cluster_or_a_stale_record_says_what_to_do(no_ray_env: Path) -> None:
    with pytest.raises(ClusterError, match="no running Ray cluster found on this machine.*--address"):
        resolve_address("auto", [])
    (no_ray_env / "ray").mkdir()
    (no_ray_env / "ray" / "ray_current_cluster").write_text("127.0.0.2:6379\n")
    with pytest.raises(ClusterError, match=r"only stale entries in ray_current_cluster: 127.0.0.2:6379"):
        resolve_address("auto", [])
    # a record a live node serves is the same candidate, not a second one
    (cand,) = find_clusters([raylet("127.0.0.2:6379", "/tmp/a")])
    assert str(no_ray_env / "ray" / "ray_current_cluster") in cand.sources


def test_ray_address_wins_over_auto(no_ray_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.7:6379")
    two = [raylet("127.0.0.2:6379", "/tmp/a"), raylet("127.0.0.3:6379", "/tmp/b")]
    assert resolve_address("auto", two) == "127.0.0.7:6379"


def test_token_is_looked_up_in_rays_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("fromhome\n")
    (tmp_path / "tok").write_text("fromfile")
    env = {"HOME": str(home)}
    assert auth_token(env) == ("fromhome", "~/.ray/auth_token")
    assert auth_token({**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")})[0] == "fromfile"
    both = {**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"), "RAY_AUTH_TOKEN": "fromenv"}
    assert auth_token(both) == ("fromenv", "RAY_AUTH_TOKEN")
    missing = auth_token({**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "nope")})
    assert missing[0] is None and "no such file" in missing[1]  # no fallback to ~/.ray, as in Ray


def test_connect_error_hint_names_every_token_variable() -> None:
    for exc in (ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"), RuntimeError("token")):
        msg = connect_error_hint("10.0.0.1:6379", exc)
        assert all(v in msg for v in TOKEN_VARS) and "~/.ray/auth_token" in msg


def test_summary_line() -> None:
    s = ClusterSummary("127.0.0.2:6379", False, 2, 3.0, 0.0, "2.60.0", "http://127.0.0.1:8265")
    assert s.line() == (
        "joined Ray cluster 127.0.0.2:6379 (Ray 2.60.0): 2 node(s), 3 CPU, 0 GPU; dashboard http://127.0.0.1:8265"
    )
    local = ClusterSummary("127.0.0.1:50001", True, 1, 2.0, 1.0, "2.60.0")
    assert local.line() == "started a local Ray cluster 127.0.0.1:50001 (Ray 2.60.0): 1 node(s), 2 CPU, 1 GPU"


# ============================================================================== node columns in rows
def _row(**extra: Any) -> dict[str, Any]:
    return {
        "seed": 0,
        "phase": "gan",
        "step": 10,
        "test_set": "bicubic",
        "psnr": 30.0,
        "wall_s": 1.0,
        "device_s": 1.0,
        "config_hash": "h",
        "protocol": "p",
        "weights": "w",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    }


def test_rows_carry_the_node_as_nullable_strings(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("t1", [_row(node_ip="127.0.0.3", node_id="ab" * 28)], status="finished")
    store.write_trial("t2", [_row()], status="finished")  # outside Ray: nulls
    df = store.read().sort_values("trial_id")
    assert list(df.node_ip.astype(object).where(df.node_ip.notna(), None)) == ["127.0.0.3", None]
    assert df.node_id.iloc[0] == "ab" * 28
    schema = pq.read_schema(tmp_path / "s" / "trial-t2.parquet")
    assert str(schema.field("node_ip").type) == "string" and schema.field("node_id").nullable
    with pytest.raises(ResultsError, match="node_ip must be a string or None"):
        store.write_trial("t3", [_row(node_ip=127)], status="finished")


def test_node_columns_outside_ray_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever earlier tests left initialised
    assert node_columns() == {"node_ip": None, "node_id": None}
    monkeypatch.delitem(sys.modules, "ray")  # Ray not even imported: not imported for this
    assert node_columns() == {"node_ip": None, "node_id": None} and "ray" not in sys.modules


# ========================================================================= real clusters on loopback
@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """Cluster A: head 127.0.0.2 + node 127.0.0.3; cluster B: a second head. Stopped even on failure."""
    a, b = LocalCluster(), LocalCluster()  # each in a new short folder under /tmp (Ray's socket paths)
    try:
        a.start_head()
        a.add_node("node2", NODE2_IP, resources={"node2": 1})
        b.start_head()
        yield a, b
    finally:
        for rc in (a, b):
            with contextlib.suppress(Exception):  # stop both even if one fails; leftovers() tells
                rc.stop()
        deadline = time.monotonic() + 10  # killed processes linger as zombies until reaped
        while (left := a.leftovers() | b.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not left, f"Ray processes left running: {sorted(left)}"


JOIN = """
import json, sys, time
import ray
from csrgan.cluster.where import describe_cluster, node_columns, prepare_join

t0 = time.time()
address = prepare_join(sys.argv[1])
checked = time.time() - t0
ray.init(address=address, logging_level="ERROR")

@ray.remote(num_cpus=0, resources={"node2": 0.01})
def on_node2():
    return node_columns()

s = describe_cluster(sys.argv[1])
print(json.dumps({"line": s.line(), "nodes": s.nodes, "cpus": s.cpus, "address": s.address,
                  "session": s.session, "checked_s": checked, "driver": node_columns(),
                  "node2": ray.get(on_node2.remote(), timeout=120)}))
"""


@pytest.fixture(scope="module")
def joined(clusters: tuple[LocalCluster, LocalCluster]) -> dict[str, Any]:
    """A driver that joined cluster A (in its own process: ray.init state stays out of pytest)."""
    a, _ = clusters
    env = {**a.run_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", JOIN, a.gcs_address], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.ray
def test_describe_cluster_on_a_real_two_node_cluster(
    clusters: tuple[LocalCluster, LocalCluster], joined: dict[str, Any]
) -> None:
    a, _ = clusters
    assert joined["address"] == a.gcs_address and joined["nodes"] == 2 and joined["cpus"] == 2.0
    assert joined["line"] == (
        f"joined Ray cluster {a.gcs_address} (Ray {ray.__version__}): 2 node(s), 2 CPU, 0 GPU; "
        f"dashboard {a.dashboard}"
    )
    assert joined["session"] and (a.temp_dir("head") / joined["session"]).is_dir()
    assert joined["checked_s"] < 15  # the token check with the right token passes, without retries


@pytest.mark.slow
@pytest.mark.ray
def test_node_columns_name_the_node_the_task_ran_on(joined: dict[str, Any]) -> None:
    assert joined["driver"]["node_ip"] == HEAD_IP  # a driver on this machine joins via the head's IP
    assert joined["node2"]["node_ip"] == NODE2_IP
    node2_id = joined["node2"]["node_id"]
    assert isinstance(node2_id, str) and len(node2_id) == 56 and node2_id != joined["driver"]["node_id"]


@pytest.mark.slow
@pytest.mark.ray
def test_auto_refuses_two_real_clusters_and_lists_both(
    clusters: tuple[LocalCluster, LocalCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    a, b = clusters
    with pytest.raises(ClusterError) as err:  # other people's clusters may be listed too: still ambiguous
        resolve_address("auto")
    msg = str(err.value)
    assert "--address HOST:PORT" in msg
    for rc in (a, b):
        assert f"{rc.gcs_address} (temp dir {rc.temp_dir('head')}" in msg
    assert str(a.temp_dir("node2")) in msg  # the worker node's private temp dir, on cluster A's line
    assert msg.count(a.gcs_address) == 1


@pytest.mark.slow
@pytest.mark.ray
def test_missing_or_wrong_token_is_refused_at_once_naming_the_variables(
    clusters: tuple[LocalCluster, LocalCluster], no_ray_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = clusters
    t0 = time.monotonic()
    with pytest.raises(ClusterAuthError) as err:  # RAY_AUTH_MODE unset: Ray would send no token
        check_auth(a.gcs_address)
    took = time.monotonic() - t0
    msg = str(err.value)
    assert all(v in msg for v in TOKEN_VARS) and "RAY_AUTH_MODE is unset" in msg and a.gcs_address in msg
    assert took < 15, f"the refusal took {took:.1f} s"  # ray.init alone retries for 20 s

    monkeypatch.setenv("RAY_AUTH_TOKEN", a.token)  # the right token, but not sent without the mode
    with pytest.raises(ClusterAuthError, match="only RAY_AUTH_MODE=token is missing"):
        check_auth(a.gcs_address)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    check_auth(a.gcs_address)  # accepted: no error
    with pytest.raises(ClusterAuthError, match="refused the token from RAY_AUTH_TOKEN"):
        check_auth(b.gcs_address)  # another cluster's token
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    with pytest.raises(ClusterAuthError, match="RAY_AUTH_MODE=token is set but no token was found"):
        check_auth(a.gcs_address)


@pytest.mark.slow
@pytest.mark.ray
def test_csrgan_sweep_refuses_ambiguous_auto_and_a_missing_token_before_any_trial(
    clusters: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    """The user's command, end to end: exit 2 with the reason, nothing trained, no Tune state."""
    import yaml
    from tiny_experiment import tiny

    a, b = clusters
    demo = tmp_path / "demo"
    from csrgan.data.demo import build_demo

    build_demo(demo, seed=0)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(tiny("where", tmp_path / "results", demo)))
    base = {k: v for k, v in a.run_env().items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env = {**base, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "csrgan.cli.app", "sweep", str(cfg), "--address"]

    auto = subprocess.run([*cmd, "auto"], env=env, capture_output=True, text=True, timeout=180)
    assert auto.returncode == 2, auto.stdout[-2000:] + auto.stderr[-2000:]
    said = auto.stdout + auto.stderr
    assert "--address auto is ambiguous" in said and a.gcs_address in said and b.gcs_address in said

    t0 = time.monotonic()
    token = subprocess.run([*cmd, a.gcs_address], env=env, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0
    said = token.stdout + token.stderr
    assert token.returncode == 2, said[-3000:]
    assert "requires token authentication" in said and all(v in said for v in TOKEN_VARS)
    assert took < 60, f"took {took:.0f} s"  # the command's own start-up included; Ray alone retries 20 s
    assert not (tmp_path / "results" / "where" / "_tune").exists()
