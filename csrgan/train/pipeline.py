"""Train stages by hand, one folder per stage — what ``csrgan train`` does, as a library.

One output folder holds every stage of a run: ``OUT/cyclegan/``, ``OUT/pretrain/``, ``OUT/gan/``, each
laid out as :mod:`csrgan.train.launch` describes (``final/``, ``checkpoints/``, ``metrics.jsonl``,
``grids/``, ``run.json``), whichever back-end ran it. The next stage reads the previous one's
``final/`` (``--cyclegan OUT``, the GAN phase's ``init_from``). Running the same command again resumes
each unfinished stage from its newest checkpoint; another config in the same folder is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from csrgan.config import ExperimentConfig
from csrgan.train.degradation import judge_stage, require_usable
from csrgan.train.launch import Backend, InProcess, RayTrainGroup, StageResult, launch

__all__ = ["TrainOptions", "find_artifact", "train_cyclegan_stage", "train_srgan_stages"]


@dataclass(frozen=True)
class TrainOptions:
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
        """``cfg`` with ``resources.workers`` (1 for a local run) and ``gpus_per_worker`` from the options."""
        update: dict[str, Any] = {"workers": max(self.workers, 1)}
        if self.gpus is not None:
            update["gpus_per_worker"] = (cfg.resources.gpus_per_worker or 1.0) if self.gpus else 0.0
        return cfg.model_copy(update={"resources": cfg.resources.model_copy(update=update)})

    def backend(self, cfg: ExperimentConfig) -> Backend:
        if self.workers == 0:
            return InProcess(device="cuda" if self.configure(cfg).resources.gpus_per_worker > 0 else "cpu")
        return RayTrainGroup(address=self.address, num_cpus=self.num_cpus, max_failures=self.max_failures)


def find_artifact(path: str | Path, stage: str) -> Path:
    """The ``final/`` artefact a user points at: an artefact or checkpoint folder itself, a stage folder
    (``OUT/cyclegan``) or a run's output folder (``OUT``). Raises ``FileNotFoundError`` saying where it
    looked."""
    p = Path(path).expanduser()
    candidates = [p, p / "final", p / stage / "final"]
    for c in candidates:
        if (c / "generator.pt").is_file() or (c / "state.pt").is_file():
            return c.resolve()
    if not p.exists():
        raise FileNotFoundError(f"{stage} artefact: {p} does not exist")
    raise FileNotFoundError(
        f"{stage} artefact: no generator.pt/state.pt in any of {', '.join(str(c) for c in candidates)} "
        f"(train the {stage} stage first, or point at its final/ folder)"
    )


def _run(stage: str, cfg: ExperimentConfig, opts: TrainOptions, inputs: dict[str, Path]) -> StageResult:
    cfg = opts.configure(cfg)
    return launch(stage, cfg, opts.out / stage, inputs, opts.backend(cfg))


def train_cyclegan_stage(cfg: ExperimentConfig, opts: TrainOptions) -> StageResult:
    """Stage 1 into ``opts.out/cyclegan``."""
    return _run("cyclegan", cfg, opts, {})


def train_srgan_stages(
    cfg: ExperimentConfig,
    opts: TrainOptions,
    phase: Literal["pretrain", "gan", "both"] = "both",
    cyclegan: str | Path | None = None,
    init_from: str | Path | None = None,
) -> list[StageResult]:
    """Stage 2 into ``opts.out/pretrain`` and/or ``opts.out/gan``; stops after a diverged phase.

    ``cyclegan``: the degradation stage's artefact (any form :func:`find_artifact` accepts); required
    iff ``sr.mix_prob > 0`` with ``sr.lr_source: cyclegan``. A stage that fails its quality gate is
    refused (:class:`csrgan.train.degradation.PoorStageError`) unless ``cyclegan.accept_poor``.
    ``init_from``: the generator that starts the GAN phase; default: this run's
    ``pretrain/final`` (required there when ``sr.pretrain.iters > 0``).
    """
    if phase not in ("pretrain", "gan", "both"):
        raise ValueError(f"phase must be pretrain, gan or both, got {phase!r}")
    p = cfg.sr.mix_prob
    common: dict[str, Path] = {}
    if cfg.sr.uses_degradation_stage():
        if cyclegan is None:
            raise ValueError(
                f"sr.mix_prob is {p} > 0 with sr.lr_source cyclegan, so the SR stages need the degradation "
                "stage: pass --cyclegan DIR (the output of `csrgan train cyclegan`), or set sr.mix_prob=0 "
                "(plain SRGAN) or sr.lr_source=pipeline"
            )
        common["cyclegan"] = find_artifact(cyclegan, "cyclegan")
        require_usable(judge_stage(common["cyclegan"], cfg), common["cyclegan"])
    pretrained = cfg.sr.pretrain.iters > 0
    if phase == "gan" and init_from is None and pretrained:
        find_artifact(opts.out / "pretrain", "pretrain")  # fail before any work
    results: list[StageResult] = []
    if phase in ("pretrain", "both"):
        results.append(_run("pretrain", cfg, opts, dict(common)))
        if results[-1].diverged:
            return results
    if phase in ("gan", "both"):
        inputs = dict(common)
        if init_from is not None or pretrained:
            inputs["pretrain"] = find_artifact(init_from or opts.out / "pretrain", "pretrain")
        results.append(_run("gan", cfg, opts, inputs))
    return results
