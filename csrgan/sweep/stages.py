"""Stage artefacts shared across trials and sweeps: the CycleGAN and SRResNet pre-training.

A sweep is a small DAG: CycleGAN (once per distinct CycleGAN config) -> SRResNet pre-training (once per
distinct pre-training config) -> the SRGAN (GAN-phase) trials. Each stage is keyed by a hash of
everything that affects its result (:func:`csrgan.config.cyclegan_stage_key`,
:func:`csrgan.config.pretrain_stage_key`) and lives in ``<storage>/_stages/<kind>-<key>/``:

    stage.json        key, kind, status, final metrics, config excerpt, timings, csrgan version
    final/            the artefact (generator weights + json)
    checkpoints/      full training state, so an interrupted stage resumes instead of restarting
    .lock             a file lock: one builder per key, others wait and then reuse

The leading underscore keeps ``_stages`` out of ``pd.read_parquet(<storage>/<sweep>)``. Stage builds run
where the caller runs them (a trial process, a Ray task); this module only knows keys, folders and locks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from csrgan import __version__
from csrgan.config import ExperimentConfig, cyclegan_stage_key, pretrain_stage_key

StageKind = Literal["cyclegan", "pretrain"]
STAGES_DIR = "_stages"


@dataclass(frozen=True)
class StageRef:
    kind: StageKind
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


def stage_ref(kind: StageKind, cfg: ExperimentConfig, storage_root: Path) -> StageRef:
    key = cyclegan_stage_key(cfg) if kind == "cyclegan" else pretrain_stage_key(cfg)
    return StageRef(kind, key, Path(storage_root) / STAGES_DIR / f"{kind}-{key}")


def needs_cyclegan(cfg: ExperimentConfig) -> bool:
    """p = 0 trials never touch a CycleGAN."""
    return cfg.sr.mix_prob > 0


def needs_pretrain(cfg: ExperimentConfig) -> bool:
    return cfg.sr.pretrain.iters > 0


def ensure_stage(
    ref: StageRef,
    build: Callable[[Path], dict[str, Any]],
    describe: dict[str, Any] | None = None,
    poll_s: float = 2.0,
) -> StageOutcome:
    """Return the finished stage at ``ref``, building it with ``build(stage_dir)`` if nobody has.

    ``build`` trains into ``stage_dir`` (checkpoints under ``stage_dir/checkpoints`` make an interrupted
    build resume) and returns the final metrics. Concurrent callers for the same key wait on the lock and
    then reuse the result; a failed build leaves no ``finished`` marker, so the next caller retries.
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
        if metrics.get("diverged"):  # trainers stop without a final artefact when a loss goes non-finite
            _write_info(
                ref,
                {
                    "kind": ref.kind,
                    "key": ref.key,
                    "status": "diverged",
                    "metrics": metrics,
                    "finished_at": _now(),
                    **(describe or {}),
                },
            )
            raise StageDivergedError(f"{ref.kind} stage {ref.key} diverged; see {ref.info_path}")
        if not ref.final.is_dir():
            raise RuntimeError(f"{ref.kind} stage {ref.key}: the build finished without writing {ref.final}")
        info = {
            "kind": ref.kind,
            "key": ref.key,
            "status": "diverged" if metrics.get("diverged") else "finished",
            "metrics": metrics,
            "wall_s": round(time.time() - t0, 3),
            "finished_at": _now(),
            "csrgan_version": __version__,
            **(describe or {}),
        }
        _write_info(ref, info)
        if info["status"] != "finished":
            raise StageDivergedError(f"{ref.kind} stage {ref.key} diverged; see {ref.info_path}")
        return StageOutcome(ref, False, info)


class StageDivergedError(RuntimeError):
    """A shared stage produced non-finite losses: every trial that depends on it is ``diverged``."""


def _raise_if_diverged(ref: StageRef) -> None:
    info = ref.info()
    if info and info.get("status") == "diverged":  # deterministic: rebuilding would diverge again
        raise StageDivergedError(f"{ref.kind} stage {ref.key} diverged; see {ref.info_path}")


def _write_info(ref: StageRef, info: dict[str, Any]) -> None:
    tmp = ref.info_path.with_name(".stage.json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    tmp.replace(ref.info_path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
