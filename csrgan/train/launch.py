"""The one way to run a training stage: :func:`launch` with one of three back-ends.

``launch(stage, cfg, out_dir, inputs, backend, reporter)`` looks the stage up in the stage table
(:mod:`csrgan.train.stages`), checks its inputs against the config, claims ``out_dir`` (``run.json``:
a folder holds one stage of one config, so a rerun resumes and a different config is refused) and
runs the stage's per-worker loop on the back-end:

* :class:`InProcess` — this process (``csrgan train --workers 0``, tests, a GPU box without Ray);
* :class:`RayTrainGroup` — a Ray Train worker group (DDP, gloo on CPU, NCCL on GPU);
* :class:`TuneTrial` — inside a Ray Tune trial: 1 worker runs in the trial's process, N workers as a
  worker group; either way every report also reaches Tune (ASHA, Optuna).

Callers watch a run through a :class:`csrgan.train.context.Reporter` they hand down (the sweep's
Parquet rows); nothing here knows who is watching. Every back-end leaves the same folder::

    out_dir/run.json                 what this folder was claimed for
    out_dir/checkpoints/step_XXXXXXXX/state.pt   the newest two
    out_dir/final/                   state.pt + generator.pt + generator.json (the stage's artefact)
    out_dir/metrics.jsonl            every report, grids/ every evaluation's comparison PNGs
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from csrgan.config import ExperimentConfig, stable_hash
from csrgan.train.context import CHECKPOINTS_DIR, LocalContext, ReporterFactory
from csrgan.train.loop import FINAL_DIR
from csrgan.train.stages import Stage, get_stage

__all__ = [
    "Backend",
    "InProcess",
    "RayTrainGroup",
    "StageMismatchError",
    "StageJob",
    "StageResult",
    "TuneTrial",
    "final_of",
    "inside_ray_task",
    "latest_checkpoint_of",
    "launch",
]

RUN_FILE = "run.json"


class StageMismatchError(ValueError):
    """A stage folder holds a run of a different config: resuming it would mix two experiments."""


@dataclass
class StageResult:
    """What a stage run left behind: ``out_dir`` (its folder), ``final`` (the artefact, None if the stage
    was skipped or diverged), ``checkpoint`` (the newest) and ``metrics`` (rank 0's last report)."""

    stage: str
    out_dir: Path
    final: Path | None
    checkpoint: Path | None
    metrics: dict[str, Any]

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get("diverged", 0))

    @property
    def skipped(self) -> bool:
        return bool(self.metrics.get("skipped", 0))


# ------------------------------------------------------------------------------------------ back-ends
@dataclass(frozen=True)
class StageJob:
    """One stage run, as a back-end receives it: the stage, its config, folder, inputs and reporter."""

    stage: Stage
    cfg: ExperimentConfig
    out_dir: Path
    inputs: Mapping[str, Path]
    reporter: ReporterFactory | None = None


class Backend(Protocol):
    def run(self, job: StageJob) -> dict[str, Any]:
        """Run the job's loop; returns rank 0's last report."""
        ...


def default_device(cfg: ExperimentConfig) -> torch.device:
    """``cuda`` when the config asks for GPUs and this machine has one, else ``cpu``."""
    return torch.device("cuda" if cfg.resources.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")


def _to_tune(metrics: dict[str, Any]) -> None:
    import ray.tune

    ray.tune.report(metrics)


@dataclass(frozen=True)
class InProcess:
    """The loop runs here. ``device`` None: :func:`default_device`; ``threads`` None: torch's default
    (a whole machine); ``to_tune``: pass every report on to ``ray.tune.report``."""

    device: str | None = None
    threads: int | None = None
    to_tune: bool = False

    def run(self, job: StageJob) -> dict[str, Any]:
        device = torch.device(self.device) if self.device is not None else default_device(job.cfg)
        forward = _to_tune if self.to_tune else None
        ctx = LocalContext(
            job.out_dir, device=device, reporter=job.reporter, forward=forward, threads=self.threads
        )
        return dict(job.stage.loop(job.cfg, ctx, job.inputs) or {})


@dataclass(frozen=True)
class RayTrainGroup:
    """``resources.workers`` Ray Train workers (:mod:`csrgan.train.ray_train`). ``address`` None: the
    running Ray, or an embedded loopback cluster of ``num_cpus``; ``to_tune``: rank 0's reports reach
    the enclosing Tune trial (``TuneReportCallback``)."""

    address: str | None = None
    num_cpus: int | None = None
    max_failures: int = 2
    to_tune: bool = False

    def run(self, job: StageJob) -> dict[str, Any]:
        from csrgan.train.ray_train import run_worker_group

        callbacks: list[Any] = []
        if self.to_tune:
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
        return run_worker_group(
            job.stage.name,
            job.cfg,
            job.out_dir,
            job.inputs,
            job.reporter,
            max_failures=self.max_failures,
            callbacks=callbacks,
            address=self.address,
            num_cpus=self.num_cpus,
        )


def inside_ray_task(cfg: ExperimentConfig, to_tune: bool = False) -> Backend:
    """The back-end for a process Ray scheduled with one worker's resources (a Tune trial, a stage
    task): the loop runs right here for 1 worker, as a worker group for more."""
    from csrgan.train.ray_train import worker_threads

    if cfg.resources.workers == 1:
        return InProcess(threads=worker_threads(cfg), to_tune=to_tune)
    return RayTrainGroup(to_tune=to_tune)


@dataclass(frozen=True)
class TuneTrial:
    """Inside a Ray Tune trial: :func:`inside_ray_task` with every report passed on to Tune."""

    def run(self, job: StageJob) -> dict[str, Any]:
        return inside_ray_task(job.cfg, to_tune=True).run(job)


# ----------------------------------------------------------------------------------------- the folder
def final_of(out_dir: str | Path) -> Path | None:
    """A stage folder's finished ``final/`` artefact, or None."""
    final = Path(out_dir) / FINAL_DIR
    return final if (final / "generator.pt").is_file() else None


def latest_checkpoint_of(out_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/step_XXXXXXXX`` of a stage folder (whichever back-end wrote it), or None."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return steps[-1] if steps else None


def _input_id(path: Path) -> str:
    """How ``run.json`` names an input: a shared stage's artefact (``.../_stages/<stage>-<key>/final``) by
    its path from ``_stages`` on — its folder name is its identity, wherever the storage is mounted or
    mirrored (object storage: each node's mirror is another folder) — anything else by its full path."""
    parts = Path(path).parts
    if "_stages" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("_stages") :])
    return str(path)


def _claim(out_dir: Path, stage: Stage, cfg: ExperimentConfig, inputs: Mapping[str, Path]) -> None:
    """Write ``run.json``, or check that the existing one describes the same run."""
    named = {k: _input_id(v) for k, v in inputs.items()}
    record = {"stage": stage.name, "key": stage.key(cfg), "inputs": named}
    digest = stable_hash(record)
    before = stable_hash({**record, "inputs": {k: str(v) for k, v in inputs.items()}})  # older run.json
    path = out_dir / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StageMismatchError(
                f"{path}: not valid JSON ({exc}); delete it or use another folder"
            ) from None
        if old.get("hash") not in (digest, before):
            raise StageMismatchError(
                f"{out_dir} holds a {old.get('stage', '?')} run of a different config (run.json hash "
                f"{old.get('hash')}, this config {digest}); resuming would mix two experiments. Use another "
                f"output folder, or delete {out_dir} to start over."
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"hash": digest, **record}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- launch
def launch(
    stage: str,
    cfg: ExperimentConfig,
    out_dir: str | Path,
    inputs: Mapping[str, str | Path | None] | None = None,
    backend: Backend | None = None,
    reporter: ReporterFactory | None = None,
) -> StageResult:
    """Run (or resume) ``stage`` of ``cfg`` into ``out_dir`` on ``backend`` (default :class:`InProcess`).

    ``inputs``: the upstream artefacts this stage needs with this config (``{"cyclegan": final/,
    "pretrain": final/}``; :meth:`Stage.check_inputs` says which). A stage the config gives no
    iterations is skipped (nothing written). Raises :class:`StageMismatchError` when ``out_dir`` holds
    another run, and :class:`csrgan.train.stages.StageError` for wrong inputs.
    """
    from csrgan.data.layout import resolve_data

    spec = get_stage(stage)
    cfg = resolve_data(cfg)
    given = spec.check_inputs(cfg, dict(inputs or {}))
    out = Path(out_dir).expanduser().resolve()
    if not spec.trains(cfg):
        return StageResult(stage, out, None, None, {"skipped": 1, "phase": stage, "step": 0})
    _claim(out, spec, cfg, given)
    metrics = (backend or InProcess()).run(StageJob(spec, cfg, out, given, reporter))
    return StageResult(stage, out, final_of(out), latest_checkpoint_of(out), metrics)
