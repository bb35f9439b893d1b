"""Stage artefacts shared across trials and sweeps: the CycleGAN and SRResNet pre-training.

A sweep is a small DAG: CycleGAN (once per distinct CycleGAN config) -> SRResNet pre-training (once per
distinct pre-training config) -> the SRGAN (GAN-phase) trials. Which stages a trial needs, and the key
of each, come from the stage table (:mod:`csrgan.train.stages`); each lives in
``<storage>/_stages/<stage>-<key>/`` (:class:`csrgan.storage.SweepLayout`), laid out like any stage run
(:mod:`csrgan.train.launch`) plus::

    stage.json        key, stage, status, final metrics, config excerpt, timings, csrgan version,
                      and for the degradation stage its quality-gate verdict (``quality``)
    .lock             a file lock: one builder per key, others wait and then reuse

A build runs where the caller runs it (a trial process, a Ray task), through the launcher.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from csrgan import __version__
from csrgan.config import ExperimentConfig
from csrgan.storage import STAGES_DIR, SweepLayout
from csrgan.train.degradation import judge_stage, require_usable
from csrgan.train.launch import inside_ray_task, launch
from csrgan.train.stages import get_stage

__all__ = [
    "STAGES_DIR",
    "StageDivergedError",
    "StageOutcome",
    "StageRef",
    "build_shared_stages",
    "check_degradation",
    "ensure_stage",
    "shared_stages",
    "stage_ref",
]


class StageDivergedError(RuntimeError):
    """A shared stage produced non-finite losses: every trial that depends on it is ``diverged``."""


@dataclass(frozen=True)
class StageRef:
    stage: str
    key: str
    dir: Path

    @property
    def final(self) -> Path:
        return self.dir / "final"

    @property
    def info_path(self) -> Path:
        return self.dir / "stage.json"

    def info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self) -> bool:
        info = self.info()
        return bool(info) and info.get("status") == "finished" and self.final.is_dir()


@dataclass(frozen=True)
class StageOutcome:
    ref: StageRef
    reused: bool
    info: dict[str, Any]


def stage_ref(stage: str, cfg: ExperimentConfig, layout: SweepLayout) -> StageRef:
    key = get_stage(stage).key(cfg)
    return StageRef(stage, key, layout.stage_dir(stage, key))


def shared_stages(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The stages a trial's GAN phase needs, upstream first (``p = 0``: no CycleGAN; no pre-training
    iterations: no pre-training)."""
    return get_stage("gan").inputs(cfg)


def ensure_stage(
    ref: StageRef,
    build: Callable[[Path], dict[str, Any]],
    describe: dict[str, Any] | None = None,
    poll_s: float = 2.0,
) -> StageOutcome:
    """Return the finished stage at ``ref``, building it with ``build(stage_dir)`` if nobody has.

    ``build`` trains into ``stage_dir`` (checkpoints under ``stage_dir/checkpoints`` make an interrupted
    build resume) and returns the final metrics. Concurrent callers for the same key wait on the lock and
    then reuse the result; a failed build leaves no ``finished`` marker, so the next caller retries. A
    diverged build is remembered (it is deterministic: rebuilding would diverge again).
    """
    _raise_if_diverged(ref)
    if ref.is_done():
        return StageOutcome(ref, True, ref.info() or {})
    ref.dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ref.dir / ".lock"), poll_interval=poll_s):
        _raise_if_diverged(ref)
        if ref.is_done():  # someone else built it while we waited
            return StageOutcome(ref, True, ref.info() or {})
        t0 = time.time()
        _write_info(ref, {"status": "running", "started_at": _now(), "pid": os.getpid(), **(describe or {})})
        metrics = build(ref.dir)
        done = {
            "stage": ref.stage,
            "key": ref.key,
            "metrics": metrics,
            "finished_at": _now(),
            **(describe or {}),
        }
        if metrics.get("diverged"):  # trainers stop without a final artefact when a loss goes non-finite
            _write_info(ref, {**done, "status": "diverged"})
            raise StageDivergedError(f"{ref.stage} stage {ref.key} diverged; see {ref.info_path}")
        if not ref.final.is_dir():
            raise RuntimeError(f"{ref.stage} stage {ref.key}: the build finished without writing {ref.final}")
        info = {
            **done,
            "status": "finished",
            "wall_s": round(time.time() - t0, 3),
            "csrgan_version": __version__,
        }
        _write_info(ref, info)
        return StageOutcome(ref, False, info)


def build_shared_stages(
    cfg: ExperimentConfig, layout: SweepLayout, built_by: str = "trial", only: tuple[str, ...] | None = None
) -> dict[str, StageOutcome]:
    """Fetch or build (in this Ray process, :func:`csrgan.train.launch.inside_ray_task`) the shared stages
    of ``cfg`` — or just ``only`` of them — each reading its upstream stages' ``final/``."""
    out: dict[str, StageOutcome] = {}
    for name in shared_stages(cfg):
        if only is not None and name not in only:
            continue
        ref = stage_ref(name, cfg, layout)
        inputs = {up: stage_ref(up, cfg, layout).final for up in get_stage(name).inputs(cfg)}

        def build(d: Path, name: str = name, inputs: dict[str, Path] = inputs) -> dict[str, Any]:
            return launch(name, cfg, d, inputs, inside_ray_task(cfg)).metrics

        section = cfg.cyclegan if name == "cyclegan" else cfg.sr.pretrain
        describe = {name: section.model_dump(mode="json"), "built_by": built_by}
        if name != "cyclegan":
            describe |= {"mix_prob": cfg.sr.mix_prob, "lr_source": cfg.sr.lr_source, "seed": cfg.seed}
        out[name] = ensure_stage(ref, build, describe=describe)
        if name == "cyclegan":
            out[name] = check_degradation(out[name], cfg)
    return out


def check_degradation(outcome: StageOutcome, cfg: ExperimentConfig) -> StageOutcome:
    """Apply the quality gate to a finished degradation stage: record the verdict in its ``stage.json``
    and in the outcome (``info["quality"]``), then refuse a poor stage unless ``cyclegan.accept_poor``
    (:class:`csrgan.train.degradation.PoorStageError`; the stage stays, nothing is lost)."""
    ref = outcome.ref
    quality = judge_stage(ref.final, cfg)
    info = {**outcome.info, "quality": quality}
    if outcome.info.get("quality", {}).get("verdict") != quality["verdict"]:
        _write_info(ref, {**(ref.info() or {}), "quality": quality})
    require_usable(quality, ref.final)
    return StageOutcome(ref, outcome.reused, info)


def _raise_if_diverged(ref: StageRef) -> None:
    info = ref.info()
    if info and info.get("status") == "diverged":
        raise StageDivergedError(f"{ref.stage} stage {ref.key} diverged; see {ref.info_path}")


def _write_info(ref: StageRef, info: dict[str, Any]) -> None:
    tmp = ref.info_path.with_name(".stage.json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    tmp.replace(ref.info_path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
