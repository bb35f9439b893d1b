"""Object storage as a sweep's storage, against a real S3-protocol server on loopback (moto, server mode).

Spec:
* ``storage: s3://...`` is accepted by the config and the preflight, which probes the store with a
  write and names the URI when it cannot write (no bucket, wrong endpoint); other schemes are refused.
* The mirror-and-sync primitives move a run folder to the store and back byte for byte, skip checkpoints
  being written (``*.tmp``), and delete from the store the checkpoints the trainer pruned.
* The stage cache builds a stage exactly once when two processes race for it — on the store (lease
  object) and on a local folder (file lock) alike — and a build taken over from a builder that died
  resumes from the checkpoints that builder uploaded.
* A sweep on s3:// writes the same rows as the same sweep on a local folder, even when its driver is
  killed with SIGKILL mid-sweep and resumed: no row is lost or duplicated, and every artefact a row
  names is in the bucket.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tiny_experiment import tiny, wait_for

from csrgan.config import validate_config
from csrgan.storage import SweepLayout, check_storage
from csrgan.storage.remote import FolderSync, Remote

REPO = Path(__file__).resolve().parents[1]
CSRGAN = [sys.executable, "-m", "csrgan.cli.app"]


@pytest.fixture(autouse=True)
def _private_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own mirror root (inherited by the processes it starts)."""
    monkeypatch.setenv("CSRGAN_STORAGE_CACHE", str(tmp_path / "mirror"))


# ------------------------------------------------------------------------------------------ the policy
def test_object_store_uris_are_storage_and_other_schemes_are_not() -> None:
    check_storage("s3://bucket/results")
    check_storage("gs://bucket/results")
    with pytest.raises(ValueError, match="unsupported scheme"):
        check_storage("hdfs://namenode/results")


def test_the_layout_works_in_a_mirror_and_names_the_store(s3_bucket, tmp_path: Path) -> None:
    uri = s3_bucket.uri("runs")
    layout = SweepLayout.of(uri, "sweep1")
    assert layout.remote is not None and layout.root.is_relative_to(tmp_path / "mirror")
    assert layout.root.name == "driver"  # outside Ray: the driver's mirror
    assert layout.results_root == uri
    assert layout.results_uri.startswith(f"s3://{s3_bucket.name}/runs/sweep1?")
    assert layout.rel(layout.trial_dir("t1")) == "sweep1/_trials/t1"


def test_preflight_probes_the_store_and_names_it(s3_bucket) -> None:
    from csrgan.preflight import _storage_problems

    assert _storage_problems(s3_bucket.uri("ok")) == []
    # the probe is gone (pyarrow leaves an empty "ok/" marker object for the folder)
    assert [k for k in s3_bucket.object_keys() if not k.endswith("/")] == []
    missing = s3_bucket.uri("x").replace(s3_bucket.name, "no-such-bucket-csrgan")
    (problem,) = _storage_problems(missing)
    assert problem.startswith("storage: storage s3://no-such-bucket-csrgan/x") and "cannot write" in problem


# ------------------------------------------------------------------------------------- mirror and sync
def test_folder_sync_round_trip_skips_partial_and_mirrors_pruning(s3_bucket, tmp_path: Path) -> None:
    remote = Remote(s3_bucket.uri("root"))
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000005").mkdir(parents=True)
    (run / "checkpoints" / "step_00000005" / "state.pt").write_bytes(b"five")
    (run / "checkpoints" / "step_00000010.tmp").mkdir()
    (run / "checkpoints" / "step_00000010.tmp" / "state.pt").write_bytes(b"half-written")
    (run / "metrics.jsonl").write_text('{"step": 5}\n')
    sync = FolderSync(remote, run, "sw/_trials/t1")
    assert sync() == 2
    assert sync() == 0  # nothing changed: nothing sent
    assert [k for k in s3_bucket.object_keys("root/") if not k.endswith("/")] == [
        "root/sw/_trials/t1/checkpoints/step_00000005/state.pt",
        "root/sw/_trials/t1/metrics.jsonl",
    ]
    # the trainer finishes step 10 and prunes step 5: the store follows
    (run / "checkpoints" / "step_00000010.tmp").rename(run / "checkpoints" / "step_00000010")
    for p in (run / "checkpoints" / "step_00000005").iterdir():
        p.unlink()
    (run / "checkpoints" / "step_00000005").rmdir()
    assert sync() == 1
    assert [k for k in s3_bucket.object_keys("root/sw/_trials/t1/checkpoints/") if not k.endswith("/")] == [
        "root/sw/_trials/t1/checkpoints/step_00000010/state.pt"
    ]
    # another node pulls the folder byte for byte
    other = tmp_path / "other"
    assert FolderSync(remote, other, "sw/_trials/t1").pull() == 2
    assert (other / "checkpoints" / "step_00000010" / "state.pt").read_bytes() == b"half-written"
    assert (other / "metrics.jsonl").read_text() == '{"step": 5}\n'


# ----------------------------------------------------------------------------------- the stage cache
def _race_build(storage: str, counter: str, started: Any, out: Any) -> None:
    """One racer: ensure the same stage, with a slow build that counts itself."""
    from csrgan.storage import SweepLayout
    from csrgan.sweep.stages import StageRef, ensure_stage

    layout = SweepLayout.of(storage, "race")
    if layout.remote is not None:  # each racer works in its own mirror, like drivers on two machines
        layout = SweepLayout(layout.root.parent / f"racer-{os.getpid()}", "race", layout.remote)
    folder = layout.stage_dir("pretrain", "k1")
    ref = StageRef("pretrain", "k1", folder, layout.remote, layout.rel(folder))

    def build(d: Path) -> dict[str, Any]:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(2.0)
        (d / "final").mkdir(parents=True, exist_ok=True)
        (d / "final" / "generator.pt").write_bytes(b"weights")
        return {"psnr": 1.0}

    started.wait()
    outcome = ensure_stage(ref, build, notify=None, poll_s=0.2)
    out.put((outcome.reused, (ref.final / "generator.pt").read_bytes()))


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_two_racing_builders_build_a_shared_stage_once(where: str, s3_bucket, tmp_path: Path) -> None:
    storage = s3_bucket.uri("st") if where == "s3" else str(tmp_path / "folder")
    counter = tmp_path / "builds.txt"
    ctx = mp.get_context("spawn")
    started, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race_build, args=(storage, str(counter), started, out)) for _ in range(2)]
    for p in procs:
        p.start()
    started.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(counter.read_text().split()) == 1  # one build
    assert sorted(r[0] for r in results) == [False, True]  # one built, the other reused it
    assert all(r[1] == b"weights" for r in results)  # both hold the artefact in their own mirror
    if where == "s3":
        keys = s3_bucket.object_keys("st/")
        assert "st/_stages/pretrain-k1/final/generator.pt" in keys
        assert "st/_stages/pretrain-k1/stage.json" in keys
        assert "st/_stages/pretrain-k1/.lease" not in keys  # released
        body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="st/_stages/pretrain-k1/stage.json")
        info = json.loads(body["Body"].read())
        assert info["status"] == "finished"


def test_a_build_taken_over_from_a_dead_builder_resumes_from_its_checkpoints(
    s3_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csrgan.storage.lease import lease_store
    from csrgan.sweep import stages as S

    layout = SweepLayout.of(s3_bucket.uri("st"), "x")
    folder = layout.stage_dir("pretrain", "k2")
    ref = S.StageRef("pretrain", "k2", folder, layout.remote, layout.rel(folder))
    # A builder took the lease, uploaded a checkpoint and died (no renewals, no release).
    dead = lease_store(layout.remote.uri).try_acquire(f"{ref.rel}/.lease", ttl_s=1.0)
    assert dead is not None
    layout.remote.write_bytes(f"{ref.rel}/checkpoints/step_00000003/state.pt", b"step3")
    monkeypatch.setattr(S, "LEASE_TTL_S", 1.0)
    seen: list[list[str]] = []

    def build(d: Path) -> dict[str, Any]:
        seen.append(sorted(p.name for p in (d / "checkpoints").iterdir()))
        (d / "final").mkdir(parents=True, exist_ok=True)
        (d / "final" / "generator.pt").write_bytes(b"w")
        return {}

    lines: list[str] = []
    t0 = time.monotonic()
    outcome = S.ensure_stage(ref, build, notify=lines.append, poll_s=0.2)
    assert not outcome.reused and seen == [["step_00000003"]]
    assert time.monotonic() - t0 < 30
    assert any("waiting" in ln for ln in lines), lines
    assert ref.is_done()


# ------------------------------------------------------------------------------------------- a sweep
KEY = ["param.sr.mix_prob", "phase", "step", "test_set"]
COMPARED = [*KEY, "status", "seed", "psnr", "ssim"]  # config_hash covers name and storage: differs
COMPARED += ["cyclegan_key", "pretrain_key", "checkpoint"]


def _sweep_config(name: str, storage: str, demo: Path) -> dict[str, Any]:
    return tiny(
        name,
        storage,  # type: ignore[arg-type]
        demo,
        sr={"gan": {"iters": 30, "content": {"type": "mse"}}, "eval_every": 10, "checkpoint_every": 10},
        resources={"workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    )


def _comparable(df: pd.DataFrame, sweep: str) -> pd.DataFrame:
    out = df[COMPARED].copy()
    out["checkpoint"] = out["checkpoint"].str.replace(rf"^{sweep}/_trials/[^/]+", "<trial>", regex=True)
    return out.sort_values(KEY).reset_index(drop=True)


@pytest.mark.ray
@pytest.mark.slow
def test_s3_sweep_killed_and_resumed_writes_the_rows_of_a_local_sweep(s3_bucket, tmp_path: Path) -> None:
    from csrgan.data.demo import build_demo
    from csrgan.data.layout import resolve_data
    from csrgan.results import read_results
    from csrgan.sweep.driver import run_sweep

    demo = tmp_path / "demo"
    build_demo(demo, seed=0)
    # 1. The reference: the sweep on a local folder, in this process.
    local = tmp_path / "local"
    outcome = run_sweep(resolve_data(validate_config(_sweep_config("ref", str(local), demo))), num_cpus=2)
    assert outcome.complete
    import ray

    ray.shutdown()
    reference = _comparable(read_results(local / "ref"), "ref")

    # 2. The same sweep on s3://, as `csrgan sweep` in a subprocess, killed -9 mid-way, then resumed.
    uri = s3_bucket.uri("store")
    cfg_path = tmp_path / "s3.yaml"
    cfg_path.write_text(yaml.safe_dump(_sweep_config("obj", uri, demo)))
    results_uri = SweepLayout.of(uri, "obj").results_uri

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*CSRGAN, "sweep", str(cfg_path), "--num-cpus", "2", *extra],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def rows_past(step: int) -> bool:
        try:
            df = read_results(results_uri)
        except (FileNotFoundError, ValueError):
            return False
        gan = df[(df.phase == "gan") & (df.status == "running")]
        return bool((gan.step >= step).any())

    procs: list[subprocess.Popen] = []
    try:
        p = start()
        procs.append(p)
        wait_for(lambda: rows_past(20), 300, "a running trial past step 20 on s3", p)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p = start("--resume")
        procs.append(p)
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    got = read_results(results_uri)
    assert not got.duplicated(["trial_id", "phase", "step", "test_set"]).any()
    assert set(got.status) == {"finished"}
    pd.testing.assert_frame_equal(_comparable(got, "obj"), reference)
    # every artefact a row names is in the bucket; the shared stages and Tune's state live there too
    keys = set(s3_bucket.object_keys("store/"))
    for c in got.checkpoint.dropna().unique():
        assert any(k.startswith(f"store/{c}/") for k in keys), c
    assert any(k.startswith("store/_stages/cyclegan-") and k.endswith("/final/generator.pt") for k in keys)
    assert any(k.startswith("store/obj/_tune/") for k in keys)
    assert "store/obj/_sweep.json" in keys



@pytest.mark.ray
@pytest.mark.slow
def test_optuna_study_on_object_storage_is_a_journal_in_the_bucket(s3_bucket, tmp_path: Path) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from csrgan.data.demo import build_demo
    from csrgan.data.layout import resolve_data
    from csrgan.results import read_results
    from csrgan.sweep.driver import run_sweep

    demo = tmp_path / "demo"
    build_demo(demo, seed=0)
    search = {
        "method": "optuna",
        "metric": {"name": "unknown/psnr", "goal": "maximize"},
        "num_samples": 2,
        "parameters": {"sr.gan.adv_weight": {"uniform": [0.0, 0.01]}},
    }
    uri = s3_bucket.uri("opt")
    raw = tiny("study", uri, demo, search=search, sr={"mix_prob": 0.0})  # type: ignore[arg-type]
    outcome = run_sweep(resolve_data(validate_config(raw)), num_cpus=2)
    import ray

    ray.shutdown()
    assert outcome.complete
    df = read_results(SweepLayout.of(uri, "study").results_uri)
    assert df.trial_id.nunique() == 2 and set(df.status) == {"finished"}
    keys = s3_bucket.object_keys("opt/")
    assert "opt/study/_optuna.journal" in keys and "opt/study/_optuna.db" not in keys
    # the uploaded journal alone holds the study: both trials, with their values
    copy = tmp_path / "journal.log"
    copy.write_bytes(
        s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="opt/study/_optuna.journal")["Body"].read()
    )
    study = optuna.load_study(
        study_name="study", storage=optuna.storages.JournalStorage(JournalFileBackend(str(copy)))
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    assert sorted(t.params["sr.gan.adv_weight"] for t in done) == sorted(
        df.groupby("trial_id")["param.sr.gan.adv_weight"].first()
    )


def test_a_builder_whose_lease_was_taken_over_publishes_nothing(s3_bucket, tmp_path: Path) -> None:
    from csrgan.sweep import stages as S

    layout = SweepLayout.of(s3_bucket.uri("st"), "x")
    folder = layout.stage_dir("pretrain", "k3")
    ref = S.StageRef("pretrain", "k3", folder, layout.remote, layout.rel(folder))
    lease_key = f"st/{ref.rel}/.lease"

    def build(d: Path) -> dict[str, Any]:
        # meanwhile this builder stalled, and another one took the stage over (a new lease object)
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=lease_key, Body=b'{"owner": "other:1:x"}')
        (d / "final").mkdir(parents=True, exist_ok=True)
        (d / "final" / "generator.pt").write_bytes(b"late")
        return {}

    with pytest.raises(S.StageLeaseLost, match="took over"):
        S.ensure_stage(ref, build, notify=None, poll_s=0.2)
    keys = s3_bucket.object_keys(f"st/{ref.rel}/")
    assert f"st/{ref.rel}/final/generator.pt" not in keys  # nothing published
    info = ref.info()
    assert info is not None and info["status"] == "running"  # never "finished"
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=lease_key)["Body"].read()
    assert b"other:1:x" in body  # the new holder's lease is left alone


def test_a_long_build_keeps_its_lease_and_uploads_checkpoints_as_it_goes(
    s3_bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csrgan.sweep import stages as S

    monkeypatch.setattr(S, "LEASE_TTL_S", 1.5)  # renewals (and uploads) every 0.5 s
    layout = SweepLayout.of(s3_bucket.uri("st"), "x")
    folder = layout.stage_dir("pretrain", "k4")
    ref = S.StageRef("pretrain", "k4", folder, layout.remote, layout.rel(folder))
    uploaded: list[bool] = []

    def build(d: Path) -> dict[str, Any]:
        (d / "checkpoints" / "step_00000001").mkdir(parents=True)
        (d / "checkpoints" / "step_00000001" / "state.pt").write_bytes(b"one")
        time.sleep(3.0)  # six renewals: a build many times longer than the lease's lifetime
        uploaded.append(f"st/{ref.rel}/checkpoints/step_00000001/state.pt" in s3_bucket.object_keys("st/"))
        (d / "final").mkdir(parents=True, exist_ok=True)
        (d / "final" / "generator.pt").write_bytes(b"w")
        return {}

    outcome = S.ensure_stage(ref, build, notify=None, poll_s=0.2)
    assert not outcome.reused and ref.is_done()
    assert uploaded == [True]  # the heartbeat had uploaded the checkpoint while the build ran
