"""The lease (csrgan.storage.lease): one holder per key on a local folder and on a real S3 server (moto on
loopback), with expiry judged on the waiter's own clock and conditional takeover / release.

Every test runs on both backends (``location`` fixture). Races use separate processes released together
from a "go" line on stdin, so the store — not a lock in this process — decides who wins.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from csrgan.storage import lease as lease_mod
from csrgan.storage.lease import Lease, LeaseError, LeaseLostError, acquire, lease_store

KEY = "_stages/pretrain-abc123/.lease"
TTL = 1.0
REPO = Path(__file__).resolve().parents[1]

# A child process: build the store, warm it up, say "ready", wait for "go", then race.
CHILD = r"""
import json, sys, time
import pyarrow.fs as pafs
from csrgan.storage.lease import acquire, lease_store

mode, location, key = sys.argv[1:4]
store = lease_store(location)
store.holder("warmup/.lease")  # imports and the first connection happen before the race
fs, base = pafs.FileSystem.from_uri(location)
print("ready", flush=True)
sys.stdin.readline()

def say(**kw):
    print(json.dumps(kw), flush=True)

if mode == "race":
    lease = store.try_acquire(key, 30.0)
    say(won=lease is not None)  # the winner exits holding it: a late loser cannot win after a release
else:
    lease = acquire(store, key, ttl_s=2.0, poll_s=0.05, on_wait=lambda info: say(waiting=info.owner))
    with lease:
        lease.start_heartbeat()
        fs.create_dir(base + "/stage", recursive=True)
        done = base + "/stage/done"
        if fs.get_file_info(done).type != pafs.FileType.NotFound:
            say(result="reused")
        else:
            counter = base + "/stage/counter"
            old = b""
            if fs.get_file_info(counter).type != pafs.FileType.NotFound:
                with fs.open_input_stream(counter) as f:
                    old = f.read()
            time.sleep(0.8)  # the build
            with fs.open_output_stream(counter) as f:
                f.write(old + lease.owner.encode() + b"\n")
            lease.confirm()
            with fs.open_output_stream(done) as f:
                f.write(b"done")
            say(result="built")
"""


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket").uri("store")


def _race(mode: str, location: str, n: int) -> list[list[dict[str, Any]]]:
    """Start ``n`` children, release them together, return each one's JSON lines."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, location, KEY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n, outs
    return [[json.loads(line) for line in out.splitlines() if line.strip()] for out in outs]


def _read(location: str, rel: str) -> bytes | None:
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(location)
    try:
        with fs.open_input_stream(f"{base}/{rel}") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ (1) race


def test_exactly_one_of_four_racing_processes_acquires(location: str) -> None:
    results = _race("race", location, 4)
    assert sorted(r[0]["won"] for r in results) == [False, False, False, True]
    holder = lease_store(location).holder(KEY)
    assert holder is not None and holder.ttl_s == 30.0
    body = json.loads(_read(location, KEY) or b"{}")
    assert set(body) >= {"owner", "host", "pid", "acquired_at", "renewed_at", "ttl_s"}
    host, pid, nonce = body["owner"].split(":")
    assert (host, int(pid)) == (body["host"], body["pid"]) and len(nonce) == 12


# ------------------------------------------------------------------------------------------- (2) one build


def test_two_racing_builders_build_once(location: str) -> None:
    results = _race("build", location, 2)
    outcomes = sorted(lines[-1]["result"] for lines in results)
    assert outcomes == ["built", "reused"]
    waiter = next(lines for lines in results if lines[-1]["result"] == "reused")
    assert any("waiting" in line for line in waiter), waiter  # it waited on the builder, then reused
    counter = (_read(location, "stage/counter") or b"").decode().splitlines()
    assert len(counter) == 1, counter
    assert lease_store(location).holder(KEY) is None  # released


# ---------------------------------------------------------------------------------- (3) expiry, takeover


def test_stale_holder_is_taken_over_by_exactly_one_waiter(location: str) -> None:
    store = lease_store(location)
    old = store.try_acquire(KEY, TTL)
    assert old is not None
    last_write = time.monotonic()  # the old holder never renews after this
    results: list[tuple[str, Lease | None, float]] = []
    lock = threading.Lock()

    def wait() -> None:
        try:
            # the new lease's ttl is 2 s, so a heartbeat delayed by a busy CI machine cannot let the
            # losing waiter take it over too before its 3 s timeout
            lease = acquire(lease_store(location), KEY, ttl_s=2 * TTL, poll_s=0.05, timeout_s=3 * TTL)
            lease.start_heartbeat()
            outcome: tuple[str, Lease | None, float] = ("won", lease, time.monotonic())
        except TimeoutError:
            outcome = ("timed out", None, time.monotonic())
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(r[0] for r in results) == ["timed out", "won"]
    _, winner, won_at = next(r for r in results if r[0] == "won")
    assert winner is not None
    assert won_at - last_write >= TTL  # not before the token had been still for ttl on the waiter's clock
    assert old.renew() is False and old.lost
    with pytest.raises(LeaseLostError, match="lost"):
        old.confirm()
    assert old.release() is False
    holder = store.holder(KEY)
    assert holder is not None and holder.owner == winner.owner  # the old release left it in place
    assert not winner.lost and winner.renew() is True
    assert winner.release() is True and store.holder(KEY) is None


def test_late_renewal_without_takeover_recovers(location: str) -> None:
    """Past its ttl a holder reports `lost` (someone may have taken over); if nobody did, renewing
    proves it and the lease is held again."""
    lease = lease_store(location).try_acquire(KEY, 0.5)
    assert lease is not None and not lease.lost
    time.sleep(0.6)
    assert lease.lost
    assert lease.renew() is True and not lease.lost
    assert lease.release() is True


def test_heartbeat_notices_a_takeover(location: str) -> None:
    store = lease_store(location)
    beats: list[float] = []
    lease = store.try_acquire(KEY, TTL)
    assert lease is not None
    lease.start_heartbeat(on_beat=lambda _: beats.append(time.monotonic()))
    time.sleep(0.5)
    info = store.holder(KEY)
    assert info is not None
    thief = store.take_over(info, TTL)  # as a waiter that judged it expired would
    assert thief is not None
    deadline = time.monotonic() + 2 * TTL
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lease.lost  # the next renewal failed its precondition
    n = len(beats)
    time.sleep(TTL / 2)
    assert len(beats) == n  # on_beat stops once the lease is lost
    assert lease.release() is False
    holder = store.holder(KEY)
    assert holder is not None and holder.owner == thief.owner
    thief.release()


# ------------------------------------------------------------------------------- (4) a live holder stays


def test_renewing_holder_is_never_taken_over_even_with_a_skewed_clock(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(lease_mod, "_wall", lambda: real() - 3600.0)  # its clock says an hour ago
    store = lease_store(location)
    beats: list[int] = []
    holder = store.try_acquire(KEY, TTL)
    assert holder is not None
    holder.start_heartbeat(on_beat=lambda lease: beats.append(1))
    waited: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="still held by"):
        acquire(
            lease_store(location),
            KEY,
            TTL,
            poll_s=0.05,
            on_wait=lambda i: waited.append(i.owner),
            timeout_s=3 * TTL,
        )
    assert time.monotonic() - t0 >= 3 * TTL
    assert waited == [holder.owner]
    assert not holder.lost and len(beats) >= 5
    info = store.holder(KEY)
    assert info is not None and info.owner == holder.owner and info.renewed_at < real() - 3000
    assert holder.release() is True
    again = lease_store(location).try_acquire(KEY, TTL)  # released: free at once, no ttl wait
    assert again is not None
    again.release()


# ---------------------------------------------------------------------------------------------- (5) errors


def test_missing_bucket_names_the_uri(moto_server: Any) -> None:
    uri = (
        f"s3://csrgan-no-such-bucket/p?endpoint_override={moto_server.endpoint}&scheme=http&region=us-east-1"
        "&access_key=csrgan-test&secret_key=csrgan-test-secret"
    )
    with pytest.raises(LeaseError, match="bucket 'csrgan-no-such-bucket' does not exist") as err:
        lease_store(uri).try_acquire(KEY, TTL)
    assert "s3://csrgan-no-such-bucket/p?" in str(err.value) and moto_server.endpoint in str(err.value)
    assert "csrgan-test-secret" not in str(err.value)  # secrets in the query are not echoed


def test_unreachable_endpoint_names_the_uri(moto_server: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"s3://bucket-x/p?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    t0 = time.monotonic()
    with pytest.raises(LeaseError, match="cannot reach the S3 endpoint") as err:
        lease_store(uri).holder(KEY)
    assert uri in str(err.value) and "endpoint_override" in str(err.value)
    assert time.monotonic() - t0 < 15


def test_other_locations_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'hdfs'"):
        lease_store("hdfs://nn/x")
    with pytest.raises(ValueError, match="relative path"):
        lease_store(tmp_path).try_acquire("../escape", TTL)
    with pytest.raises(ValueError, match="ttl_s"):
        lease_store(tmp_path).try_acquire(KEY, 0)
    assert lease_store(f"file://{tmp_path}").location == str(tmp_path.resolve())
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        with pytest.raises(LeaseError, match="pip install google-cloud-storage"):
            lease_store("gs://bucket/prefix")
