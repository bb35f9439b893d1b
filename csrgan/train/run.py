"""Run the training stages — CycleGAN, SRResNet pre-training, SRGAN — locally or under Ray Train.

One output folder holds every stage of a ``csrgan train`` run, one sub-folder per stage::

    OUT/cyclegan/   OUT/pretrain/   OUT/gan/

and in each stage folder:

* ``run.json``: what the stage was trained with (a resumed stage must match it, see
  :class:`StageMismatchError`).
* Local (``--workers 0``, :class:`csrgan.train.context.LocalContext`): ``final/`` (the finished
  stage's artefact: ``generator.pt`` + ``generator.json``, plus the full state for SR stages),
  ``checkpoints/step_XXXXXXXX/``, ``metrics.jsonl``, ``grids/``.
* Ray Train (``storage_path=OUT``, ``name=<stage>``): Ray's checkpoints ``step_XXXXXXXX/`` directly in
  the stage folder (the SR stages' last one is ``final/``), and rank 0's ``out_dir`` ``artifacts/``
  with ``final/``, ``metrics.jsonl`` and ``grids/``.

:func:`final_of` / :func:`find_artifact` know both layouts; the next stage reads the artefact
(``--cyclegan OUT`` / the GAN phase's ``init_from``). Running the same command again resumes each
unfinished stage from its newest checkpoint. :func:`call_stage` is the single place that maps a stage
name to its trainer; Ray workers (:mod:`csrgan.train.ray_train`) and local runs both go through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from csrgan.config import ExperimentConfig, cyclegan_stage_key, pretrain_stage_key, stable_hash
from csrgan.train.context import LocalContext, TrainContext

__all__ = [
    "FINAL_DIR",
    "STAGES",
    "RunResult",
    "StageMismatchError",
    "call_stage",
    "final_of",
    "find_artifact",
    "run_stage_local",
    "train_cyclegan_stage",
    "train_srgan_stages",
]

Stage = Literal["cyclegan", "pretrain", "gan"]
STAGES: tuple[str, ...] = ("cyclegan", "pretrain", "gan")
FINAL_DIR = "final"
ARTIFACTS_DIR = "artifacts"  # Ray runs: rank 0's out_dir inside the Train run folder
RUN_FILE = "run.json"
_EXTRA_KEYS = {"cyclegan": set(), "pretrain": {"cyclegan_g"}, "gan": {"cyclegan_g", "init_from"}}


class StageMismatchError(ValueError):
    """A stage folder holds a run of a different config: resuming it would mix two experiments."""


@dataclass
class RunResult:
    """What a finished stage left behind (local or Ray).

    ``run_dir``: the stage folder; ``final``: its ``final/`` artefact (None if the stage was skipped or
    diverged); ``checkpoint``: the newest checkpoint; ``metrics``: rank 0's last report (or the
    trainer's return value); ``artifacts``: where ``metrics.jsonl`` and grids are.
    """

    stage: str
    name: str
    run_dir: str
    artifacts: str
    checkpoint: str | None
    metrics: dict[str, Any]
    final: str | None = None

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get("diverged", 0))

    @property
    def skipped(self) -> bool:
        return bool(self.metrics.get("skipped", 0))


# ----------------------------------------------------------------------------------------- dispatch
def _opt_path(v: Any) -> Path | None:
    return None if v is None else Path(v)


def call_stage(
    stage: str, cfg: ExperimentConfig, ctx: TrainContext, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Run ``stage``'s trainer on ``ctx``: the one mapping from stage names to trainer calls.

    ``extra``: ``cyclegan_g`` (the CycleGAN ``final/`` folder; pretrain/gan with ``sr.mix_prob > 0``)
    and ``init_from`` (the generator that starts the GAN phase). Unknown keys are errors.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    unknown = sorted(set(extra) - _EXTRA_KEYS[stage])
    if unknown:
        raise ValueError(
            f"stage {stage!r}: unexpected inputs {unknown}; allowed: {sorted(_EXTRA_KEYS[stage])}"
        )
    if stage == "cyclegan":
        from csrgan.train.cyclegan import train_cyclegan

        return train_cyclegan(cfg, ctx)
    from csrgan.train.srgan import train_sr

    return train_sr(
        cfg,
        ctx,
        stage,  # type: ignore[arg-type]
        init_from=_opt_path(extra.get("init_from")),
        cyclegan_g=_opt_path(extra.get("cyclegan_g")),
    )


# ----------------------------------------------------------------------------------------- artefacts
def _artifact_candidates(p: Path, stage: str) -> list[Path]:
    # local layout: <stage dir>/final; Ray layout: <stage dir>/artifacts/final (rank 0's out_dir)
    return [
        p,
        p / FINAL_DIR,
        p / ARTIFACTS_DIR / FINAL_DIR,
        p / stage / FINAL_DIR,
        p / stage / ARTIFACTS_DIR / FINAL_DIR,
    ]


def _is_artifact(p: Path) -> bool:
    return (p / "generator.pt").is_file() or (p / "state.pt").is_file()


def find_artifact(path: str | Path, stage: str) -> Path:
    """The ``final/`` artefact a user points at: an artefact/checkpoint folder itself, a stage folder
    (``OUT/cyclegan``, local or Ray layout) or a run's output folder (``OUT``). Raises
    ``FileNotFoundError`` saying where it looked."""
    p = Path(path).expanduser()
    candidates = _artifact_candidates(p, stage)
    for c in candidates:
        if _is_artifact(c):
            return c.resolve()
    if not p.exists():
        raise FileNotFoundError(f"{stage} artefact: {p} does not exist")
    raise FileNotFoundError(
        f"{stage} artefact: no generator.pt/state.pt in any of {', '.join(str(c) for c in candidates)} "
        f"(train the {stage} stage first, or point at its final/ folder)"
    )


def _resume_key(cfg: ExperimentConfig, stage: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes a stage's result, and nothing else: what must not change between a
    stage's first run and its resumption (evaluation settings, ``*_every`` and resources other than
    ``workers`` may). CycleGAN and pre-training use the sweep's stage keys."""
    if stage == "cyclegan":
        return {"stage": stage, "stage_key": cyclegan_stage_key(cfg)}
    if stage == "pretrain":
        return {"stage": stage, "stage_key": pretrain_stage_key(cfg), "inputs": dict(extra)}
    sr = cfg.sr.model_dump(mode="json", exclude={"eval_every", "checkpoint_every"})
    data = cfg.data.model_dump(mode="json", exclude={"test_sets", "cache"})
    return {
        "stage": stage,
        "seed": cfg.seed,
        "data": data,
        "sr": sr,
        "weights": cfg.weights.model_dump(mode="json"),
        "workers": cfg.resources.workers,
        "inputs": dict(extra),
    }


def _claim_stage_dir(stage_dir: Path, cfg: ExperimentConfig, stage: str, extra: Mapping[str, Any]) -> None:
    """Write ``run.json``, or check that the existing one describes the same run."""
    key = _resume_key(cfg, stage, extra)
    digest = stable_hash(key)
    path = stage_dir / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StageMismatchError(
                f"{path}: not valid JSON ({exc}); delete it or use another --out"
            ) from None
        if old.get("hash") != digest:
            raise StageMismatchError(
                f"{stage_dir} holds a {stage} run of a different config (run.json hash {old.get('hash')}, "
                f"this config {digest}); resuming would mix two experiments. Use another --out, or delete "
                f"{stage_dir} to start over."
            )
        return
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"hash": digest, **key}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def final_of(stage_dir: str | Path) -> str | None:
    """A stage folder's finished ``final/`` artefact (local or Ray layout), or None."""
    for c in (Path(stage_dir) / FINAL_DIR, Path(stage_dir) / ARTIFACTS_DIR / FINAL_DIR):
        if (c / "generator.pt").is_file():
            return str(c)
    return None


# ------------------------------------------------------------------------------------------- runners
def run_stage_local(
    stage: str,
    cfg: ExperimentConfig,
    out_dir: str | Path,
    extra: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> RunResult:
    """Run ``stage`` in this process (no Ray) with a :class:`LocalContext` writing to ``out_dir``.

    Resumes from ``out_dir/checkpoints`` when a previous run left one there.
    """
    from csrgan.data.layout import resolve_data

    cfg = resolve_data(cfg)
    ctx = LocalContext(Path(out_dir), device=torch.device(device))
    metrics = call_stage(stage, cfg, ctx, dict(extra or {}))
    latest = ctx.latest_checkpoint()
    return RunResult(
        stage=stage,
        name=Path(out_dir).name,
        run_dir=str(ctx.out_dir),
        artifacts=str(ctx.out_dir),
        checkpoint=None if latest is None else str(latest),
        metrics=dict(metrics),
        final=final_of(ctx.out_dir),
    )


@dataclass(frozen=True)
class Launch:
    """Where and how stages run. ``workers == 0``: this process, no Ray; otherwise Ray Train with
    ``workers`` DDP workers (``address`` None = an embedded loopback cluster of ``num_cpus``).
    ``gpus``: True = one GPU per worker (local: ``cuda``), False = CPU only, None = as the config says
    (``resources.gpus_per_worker``)."""

    out: Path
    workers: int = 0
    gpus: bool | None = None
    address: str | None = None
    num_cpus: int | None = None
    max_failures: int = 2

    def configure(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` with ``resources.workers`` (1 for a local run) and ``gpus_per_worker`` from this launch."""
        update: dict[str, Any] = {"workers": max(self.workers, 1)}
        if self.gpus is not None:
            update["gpus_per_worker"] = (cfg.resources.gpus_per_worker or 1.0) if self.gpus else 0.0
        return cfg.model_copy(update={"resources": cfg.resources.model_copy(update=update)})

    def device(self, cfg: ExperimentConfig) -> str:
        """The local run's device: ``cuda`` when GPUs are asked for (here or in the config)."""
        return "cuda" if self.configure(cfg).resources.gpus_per_worker > 0 else "cpu"


def _run(stage: str, cfg: ExperimentConfig, launch: Launch, extra: dict[str, Any]) -> RunResult:
    stage_dir = (launch.out / stage).resolve()
    cfg = launch.configure(cfg)
    _claim_stage_dir(stage_dir, cfg, stage, extra)
    if launch.workers == 0:
        return run_stage_local(stage, cfg, stage_dir, extra, device=launch.device(cfg))
    from csrgan.train.ray_train import run_stage

    return run_stage(
        stage,
        cfg,
        storage_path=launch.out.resolve(),
        name=stage,
        extra=extra,
        max_failures=launch.max_failures,
        address=launch.address,
        num_cpus=launch.num_cpus,
    )


def train_cyclegan_stage(cfg: ExperimentConfig, launch: Launch) -> RunResult:
    """Stage 1 into ``launch.out/cyclegan``."""
    return _run("cyclegan", cfg, launch, {})


def train_srgan_stages(
    cfg: ExperimentConfig,
    launch: Launch,
    phase: Literal["pretrain", "gan", "both"] = "both",
    cyclegan: str | Path | None = None,
    init_from: str | Path | None = None,
) -> list[RunResult]:
    """Stage 2 into ``launch.out/pretrain`` and/or ``launch.out/gan``; stops after a diverged phase.

    ``cyclegan``: the CycleGAN artefact (any form :func:`find_artifact` accepts); required iff
    ``sr.mix_prob > 0``. ``init_from``: the generator that starts the GAN phase; default: this run's
    ``pretrain/final`` (required there when ``sr.pretrain.iters > 0``).
    """
    if phase not in ("pretrain", "gan", "both"):
        raise ValueError(f"phase must be pretrain, gan or both, got {phase!r}")
    p = cfg.sr.mix_prob
    if p > 0 and cyclegan is None:
        raise ValueError(
            f"sr.mix_prob is {p} > 0, so the SR stages need the CycleGAN generator: pass --cyclegan DIR "
            "(the output of `csrgan train cyclegan`), or set sr.mix_prob=0 for plain SRGAN"
        )
    common: dict[str, Any] = {}
    if p > 0:
        common["cyclegan_g"] = str(find_artifact(cyclegan, "cyclegan"))  # type: ignore[arg-type]
    if phase == "gan" and init_from is None and cfg.sr.pretrain.iters > 0:
        # Fail before any work: the GAN phase alone needs a finished pre-training.
        find_artifact(launch.out / "pretrain", "pretrain")
    results: list[RunResult] = []
    if phase in ("pretrain", "both"):
        res = _run("pretrain", cfg, launch, dict(common))
        results.append(res)
        if res.diverged:
            return results
    if phase in ("gan", "both"):
        extra = dict(common)
        if init_from is not None:
            extra["init_from"] = str(find_artifact(init_from, "pretrain"))
        elif cfg.sr.pretrain.iters > 0:
            extra["init_from"] = str(find_artifact(launch.out / "pretrain", "pretrain"))
        results.append(_run("gan", cfg, launch, extra))
    return results
