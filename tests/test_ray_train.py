"""Ray Train integration (csrgan.train.ray_train, the launcher's RayTrainGroup back-end): real DDP workers
on an embedded loopback cluster.

Each test costs ~30-60 s of Ray start-up and worker-group overhead on 2 cores, so there are few of them
and they share one cluster (module fixture, shut down afterwards). Run them one file at a time.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.io import write_image
from csrgan.train.checkpoint import load_state
from csrgan.train.launch import RayTrainGroup, launch


@pytest.fixture(autouse=True)
def _fast_report_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's worker result queue holds ONE report, drained when the controller polls (every 2 s by
    default): each report blocks training until then. Poll faster, so a test's many tiny reports don't
    cost 2 s each (the variable is propagated from the driver to the controller)."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="module")
def ray_cluster() -> object:
    import ray

    from csrgan.train.ray_train import ensure_ray

    if ray.is_initialized():  # another module's session: start ours on loopback with known resources
        ray.shutdown()
    resources = ensure_ray(None, num_cpus=2)
    yield resources
    ray.shutdown()


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 70 * np.sin(xx / 6.0 + seed)[..., None] * np.cos(yy / 9.0)[..., None] * np.array(
        [1, 0.5, -0.5]
    )
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def _config(root: Path, iters: int, every: int, workers: int = 2, test_sets: bool = True) -> ExperimentConfig:
    for i in range(4):
        write_image(root / "train" / f"{i}.png", _image(64, 64, i))
    write_image(root / "test" / "t.png", _image(48, 40, 10))
    return validate_config(
        {
            "name": "ray-tiny",
            "data": {
                "train_hr": str(root / "train"),
                "test_sets": [{"name": "synth", "hr": str(root / "test")}] if test_sets else [],
            },
            "sr": {
                "generator": {"channels": 8, "n_blocks": 1},
                "mix_prob": 0.0,
                "batch_size": 2,
                "patch_size": 32,
                "pretrain": {"iters": iters, "lr": 1e-3},
                "eval_every": every,
                "checkpoint_every": every,
            },
            "eval": {"metrics": ["psnr", "ssim"], "grid_images": 1},
            "resources": {"workers": workers, "cpus_per_worker": 1},
        }
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.slow
def test_two_ddp_workers_pretrain_report_and_checkpoint(tmp_path: Path, ray_cluster: object) -> None:
    cfg = _config(tmp_path, iters=30, every=10)
    out = tmp_path / "runs" / "pretrain"

    res = launch("pretrain", cfg, out, backend=RayTrainGroup())

    # rank 0's reports reached Ray and the run's metrics log
    assert res.metrics["step"] == 30 and res.metrics["diverged"] == 0
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20, 30]
    losses = [r["loss/pixel"] for r in rows]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(math.isfinite(r["synth/psnr"]) for r in rows)
    # both ranks ran: the checkpoint holds one RNG/LR-source state per rank, gathered over DDP, and
    # the epoch counter advanced by the global batch (2 workers x 2 samples of 4 images per step)
    assert res.checkpoint is not None
    state = load_state(res.checkpoint)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    assert rows[0]["epoch"] == pytest.approx(10 * 2 * 2 / 4)
    # the layout of an in-process run: Ray persisted checkpoints/step_* (the newest two), rank 0 wrote final/
    assert res.checkpoint == (out / "checkpoints" / "step_00000030").resolve()
    assert (out / "checkpoints" / "step_00000020" / "state.pt").is_file()
    assert not (out / "checkpoints" / "step_00000010").exists()
    assert res.final == (out / "final").resolve() and (res.final / "generator.pt").is_file()
    assert not (out / ".staging").exists()


def _train_worker_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    # An explicit address: with another Ray instance on the machine, auto-detection refuses to pick one.
    actors = list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    return [a.pid for a in actors]


def _registered_step(run_dir: Path) -> int:
    """Step of the newest checkpoint Ray Train has *registered* (its controller's snapshot on storage).

    A checkpoint folder on disk is not enough: the controller collects reports when it polls the
    workers (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, default 2 s), and a worker killed before that poll
    takes its unregistered reports with it.
    """
    try:
        snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    latest = snap.get("latest_checkpoint_result") or {}
    return int((latest.get("metrics") or {}).get("step", 0))


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_restarts_from_the_last_checkpoint(tmp_path: Path, ray_cluster: object) -> None:
    """SIGKILL one DDP worker mid-run (like an OOM kill): Ray Train restarts the group (FailureConfig)
    and the trainer continues from the newest registered checkpoint instead of step 0."""
    every, iters = 5, 200
    cfg = _config(tmp_path, iters=iters, every=every, test_sets=False)
    out = tmp_path / "runs" / "killed"
    run_dir = out / "checkpoints"  # Ray Train's run folder
    killed: dict[str, int] = {}
    errors: list[BaseException] = []

    def killer() -> None:
        try:
            deadline = time.time() + 240
            while time.time() < deadline and _registered_step(run_dir) < 2 * every:
                time.sleep(0.05)
            registered = _registered_step(run_dir)
            pids = _train_worker_pids()
            os.kill(pids[-1], signal.SIGKILL)
            killed.update(pid=pids[-1], registered=registered)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    res = launch("pretrain", cfg, out, backend=RayTrainGroup(max_failures=1))
    thread.join(timeout=5)

    assert not errors, f"killer thread failed: {errors!r}"
    assert killed, "no worker was killed"
    rows = _rows(out / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    # the first report after the restart says where it continued from (steps since then may repeat)
    restarts = [i for i, r in enumerate(rows) if "resumed_from" in r]
    assert len(restarts) == 1, f"expected exactly one restart, got steps {steps}"
    before, after = steps[: restarts[0]], steps[restarts[0] :]
    resumed_from = rows[restarts[0]]["resumed_from"]
    assert resumed_from >= killed["registered"] >= 2 * every, f"resumed from {resumed_from}: {steps}"
    assert resumed_from in before  # a step that had been checkpointed before the kill
    assert after == list(range(resumed_from + every, iters + 1, every))
    assert res.metrics["step"] == iters and res.final is not None


@pytest.mark.ray
@pytest.mark.slow
def test_workers_that_cannot_fit_fail_fast_with_a_clear_message(tmp_path: Path, ray_cluster: object) -> None:
    from csrgan.train.ray_train import RayResourceError

    cfg = _config(tmp_path, iters=2, every=1, workers=3)
    t0 = time.time()
    with pytest.raises(RayResourceError, match=r"3 worker\(s\) x 1.0 CPU = 3 CPUs, but the cluster has 2"):
        launch("pretrain", cfg, tmp_path / "runs" / "too-big", backend=RayTrainGroup())
    assert time.time() - t0 < 10


# --------------------------------------------------------------------------------- without a cluster
def test_ddp_options_never_sync_buffers_in_forward() -> None:
    """G and D are wrapped separately and D runs several times per step: a buffer broadcast in each
    forward would break autograd and make rank-0-only evaluation a one-sided collective."""
    from csrgan.train.ray_train import ddp_kwargs

    kw = ddp_kwargs()
    assert kw.get("forward_sync_buffers", kw.get("broadcast_buffers")) is False
    assert kw["find_unused_parameters"] is False


def test_num_cpus_is_refused_for_an_existing_cluster() -> None:
    from csrgan.train.ray_train import ensure_ray

    with pytest.raises(ValueError, match="num_cpus=2 applies only to an embedded cluster"):
        ensure_ray("auto", num_cpus=2)
