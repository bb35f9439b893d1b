"""Spec of csrgan.sweep.stages: shared stage artefacts (CycleGAN, SRResNet pre-training) built once.

* a stage is keyed by what changes its result, so trials differing only in GAN-phase settings share it;
* ``ensure_stage`` builds under a file lock and later callers (threads or other processes) reuse it;
* a failed build leaves no ``finished`` marker (the next caller rebuilds, resuming from checkpoints);
* a diverged build is remembered: later callers get ``StageDivergedError`` without rebuilding.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from csrgan.config import ExperimentConfig, validate_config
from csrgan.storage import SweepLayout
from csrgan.sweep.stages import (
    STAGES_DIR,
    StageDivergedError,
    StageOutcome,
    StageRef,
    ensure_stage,
    shared_stages,
    stage_ref,
)


class Builder:
    """A stand-in for a stage trainer: counts calls, writes ``final/`` and returns metrics."""

    def __init__(self, metrics: dict[str, Any] | None = None, sleep: float = 0.0, write_final: bool = True):
        self.calls = 0
        self.metrics = {"unknown/psnr": 24.5} if metrics is None else metrics
        self.sleep = sleep
        self.write_final = write_final
        self.started = threading.Event()

    def __call__(self, stage_dir: Path) -> dict[str, Any]:
        self.calls += 1
        self.started.set()
        time.sleep(self.sleep)
        if self.write_final:
            (stage_dir / "final").mkdir(exist_ok=True)
            (stage_dir / "final" / "generator.pt").write_bytes(b"weights")
        return dict(self.metrics)


def never(stage_dir: Path) -> dict[str, Any]:
    raise AssertionError(f"the stage at {stage_dir} was built again")


@pytest.fixture
def ref(tmp_path: Path) -> StageRef:
    return StageRef("cyclegan", "abc123", tmp_path / STAGES_DIR / "cyclegan-abc123")


# ------------------------------------------------------------------------------------- build and reuse
def test_builds_once_then_reuses(ref: StageRef) -> None:
    build = Builder()
    first = ensure_stage(ref, build, describe={"built_by": "test"}, poll_s=0.01)
    second = ensure_stage(ref, build, poll_s=0.01)
    assert build.calls == 1
    assert isinstance(first, StageOutcome) and not first.reused
    assert second.reused
    assert ref.is_done()
    info = json.loads(ref.info_path.read_text())
    assert info["status"] == "finished"
    assert info["stage"] == "cyclegan" and info["key"] == "abc123"
    assert info["metrics"] == {"unknown/psnr": 24.5}
    assert info["built_by"] == "test"
    assert "csrgan_version" in info and info["wall_s"] >= 0
    assert second.info == info == first.info


def test_build_runs_in_the_stage_folder(ref: StageRef) -> None:
    seen: list[Path] = []

    def build(stage_dir: Path) -> dict[str, Any]:
        seen.append(stage_dir)
        assert json.loads((stage_dir / "stage.json").read_text())["status"] == "running"
        (stage_dir / "final").mkdir()
        return {}

    ensure_stage(ref, build, poll_s=0.01)
    assert seen == [ref.dir]


def test_concurrent_thread_waits_and_reuses(ref: StageRef) -> None:
    build = Builder(sleep=0.5)
    outcomes: dict[str, StageOutcome] = {}

    def call(name: str, fn: Any) -> None:
        outcomes[name] = ensure_stage(ref, fn, poll_s=0.02)

    first = threading.Thread(target=call, args=("first", build))
    first.start()
    assert build.started.wait(10)
    second = threading.Thread(target=call, args=("second", never))
    second.start()
    first.join(10)
    second.join(10)
    assert build.calls == 1
    assert not outcomes["first"].reused
    assert outcomes["second"].reused
    assert outcomes["second"].info["metrics"] == {"unknown/psnr": 24.5}


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from csrgan.sweep.stages import StageRef, ensure_stage

    stage_dir, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def build(d):
        marker.write_text("building")
        time.sleep(1.0)
        (d / "final").mkdir()
        return {"built_by": "child"}

    out = ensure_stage(StageRef("cyclegan", "abc123", stage_dir), build, poll_s=0.02)
    print("reused" if out.reused else "built")
    """
)


def test_concurrent_process_waits_on_the_lock_and_reuses(ref: StageRef, tmp_path: Path) -> None:
    marker = tmp_path / "child-is-building"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ref.dir), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.time() < deadline, "the child never started building"
            time.sleep(0.02)
        assert not ref.is_done()  # the child holds the lock and is still building
        out = ensure_stage(ref, never, poll_s=0.02)
    finally:
        stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert stdout.strip() == "built"
    assert out.reused
    assert out.info["metrics"] == {"built_by": "child"}


# ------------------------------------------------------------------------------------------- failure
def test_failed_build_leaves_no_finished_marker_and_is_retried(ref: StageRef) -> None:
    def crash(stage_dir: Path) -> dict[str, Any]:
        (stage_dir / "checkpoints").mkdir()  # partial progress a retry would resume from
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        ensure_stage(ref, crash, poll_s=0.01)
    assert not ref.is_done()
    assert (ref.info() or {}).get("status") != "finished"

    build = Builder()
    out = ensure_stage(ref, build, poll_s=0.01)  # the lock was released; the next caller rebuilds
    assert build.calls == 1 and not out.reused
    assert (ref.dir / "checkpoints").is_dir()
    assert ref.is_done()


def test_build_without_artefact_is_an_error_and_is_retried(ref: StageRef) -> None:
    with pytest.raises(RuntimeError, match="without writing"):
        ensure_stage(ref, Builder(write_final=False), poll_s=0.01)
    assert not ref.is_done()
    build = Builder()
    assert not ensure_stage(ref, build, poll_s=0.01).reused
    assert build.calls == 1


def test_finished_marker_without_artefact_is_rebuilt(ref: StageRef) -> None:
    ensure_stage(ref, Builder(), poll_s=0.01)
    (ref.final / "generator.pt").unlink()
    ref.final.rmdir()
    assert not ref.is_done()
    build = Builder()
    assert not ensure_stage(ref, build, poll_s=0.01).reused
    assert build.calls == 1


# ------------------------------------------------------------------------------------------ divergence
def test_diverged_build_raises_and_is_not_rebuilt(ref: StageRef) -> None:
    build = Builder(metrics={"diverged": 1, "step": 7})
    with pytest.raises(StageDivergedError, match="abc123"):
        ensure_stage(ref, build, poll_s=0.01)
    assert (ref.info() or {})["status"] == "diverged"
    assert not ref.is_done()
    with pytest.raises(StageDivergedError, match="diverged"):
        ensure_stage(ref, never, poll_s=0.01)
    assert build.calls == 1


def test_diverged_build_without_artefact_raises_diverged_and_is_not_rebuilt(ref: StageRef) -> None:
    """What train_cyclegan / train_sr return on a non-finite loss: ``{"diverged": 1, ...}``, no final/."""
    build = Builder(metrics={"diverged": 1, "step": 7}, write_final=False)
    with pytest.raises(StageDivergedError):
        ensure_stage(ref, build, poll_s=0.01)
    assert (ref.info() or {}).get("status") == "diverged"
    with pytest.raises(StageDivergedError):
        ensure_stage(ref, never, poll_s=0.01)
    assert build.calls == 1


def test_diverged_zero_flag_is_a_normal_finish(ref: StageRef) -> None:
    out = ensure_stage(ref, Builder(metrics={"diverged": 0, "unknown/psnr": 20.0}), poll_s=0.01)
    assert out.info["status"] == "finished"


# ---------------------------------------------------------------------------------------------- keys
def cfg(tmp_path: Path, **sr: Any) -> ExperimentConfig:
    return validate_config(
        {
            "name": "stages",
            "storage": str(tmp_path / "storage"),
            "data": {"demo": {"dir": str(tmp_path / "demo")}},
            "cyclegan": {"iters": 10},
            "sr": {"patch_size": 16, "mix_prob": 1.0, "pretrain": {"iters": 5}, **sr},
        }
    )


def layout(tmp_path: Path) -> SweepLayout:
    return SweepLayout(tmp_path / "storage", "sweep")


def test_stage_ref_layout(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    r = stage_ref("pretrain", c, layout(tmp_path))
    assert r.stage == "pretrain"
    assert r.dir == tmp_path / "storage" / "_stages" / f"pretrain-{r.key}"
    assert r.final == r.dir / "final" and r.info_path == r.dir / "stage.json"
    assert r.info() is None and not r.is_done()


@pytest.mark.parametrize(
    "gan",
    [{"adv_weight": 1e-2}, {"lr": 3e-5}, {"iters": 7}, {"content": {"type": "l1", "weight": 2.0}}],
    ids=lambda g: next(iter(g)),
)
def test_gan_phase_settings_share_both_stages(tmp_path: Path, gan: dict[str, Any]) -> None:
    a, b = cfg(tmp_path), cfg(tmp_path, gan=gan)
    for stage in ("cyclegan", "pretrain"):
        assert stage_ref(stage, a, layout(tmp_path)) == stage_ref(stage, b, layout(tmp_path))


def test_mix_prob_shares_the_cyclegan_but_not_pretraining(tmp_path: Path) -> None:
    a, b = cfg(tmp_path, mix_prob=1.0), cfg(tmp_path, mix_prob=0.5)
    assert stage_ref("cyclegan", a, layout(tmp_path)) == stage_ref("cyclegan", b, layout(tmp_path))
    assert stage_ref("pretrain", a, layout(tmp_path)).key != stage_ref("pretrain", b, layout(tmp_path)).key


def test_cyclegan_and_pretrain_keys_never_share_a_folder(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert stage_ref("cyclegan", c, layout(tmp_path)).dir != stage_ref("pretrain", c, layout(tmp_path)).dir


def test_a_trial_shares_the_cyclegan_only_when_p_positive(tmp_path: Path) -> None:
    assert shared_stages(cfg(tmp_path, mix_prob=0.0)) == ("pretrain",)
    assert shared_stages(cfg(tmp_path, mix_prob=0.01)) == ("cyclegan", "pretrain")
    assert shared_stages(cfg(tmp_path, mix_prob=1.0)) == ("cyclegan", "pretrain")


def test_a_trial_shares_the_degradation_stage_only_when_it_reads_it(tmp_path: Path) -> None:
    """``sr.lr_source`` pipeline or paired never needs the learned degradation, whatever p is."""
    assert shared_stages(cfg(tmp_path, lr_source="pipeline")) == ("pretrain",)
    paired = cfg(tmp_path).model_dump(mode="json")
    paired["data"]["train_lr"] = str(tmp_path / "lr")
    paired["sr"]["lr_source"] = "paired"
    assert shared_stages(validate_config(paired)) == ("pretrain",)


def test_a_trial_shares_pretraining_only_when_it_has_iterations(tmp_path: Path) -> None:
    assert "pretrain" in shared_stages(cfg(tmp_path))
    assert shared_stages(cfg(tmp_path, pretrain={"iters": 0})) == ("cyclegan",)
