"""The stage table: every training stage, its per-worker loop, its inputs and the key of its result.

CSR-GAN is three stages, each a :class:`Stage`::

    cyclegan  (learn the degradation G: bicubic LR -> real LR,   needs nothing
               cyclegan.learner; final/ has G + cached G(x))
    pretrain  (SRResNet, pixel loss)                       needs cyclegan's final/ when sr.mix_prob > 0
                                                           and sr.lr_source is cyclegan
    gan       (SRGAN, content + adversarial loss)          the same, and pretrain's generator when it
                                                           trains

An SR phase in ``sr.joint.phases`` (``cfg.sr.joint_in(phase)``) runs the joint loop
(:mod:`csrgan.train.joint`: the degradation G keeps training with the SR network, starting from
cyclegan's final/) instead of the two-stage one; its inputs are the same.

A stage's **key** (:mod:`csrgan.train.keys`) hashes everything that changes its result and nothing
else: the sweep shares a stage between every trial with the same key, and a checkpoint written under
another key is refused on resume.

Everything that launches stages asks this table (:func:`get_stage`), never a hard-coded list:
:mod:`csrgan.train.launch` (run one stage), :mod:`csrgan.train.pipeline` (``csrgan train``) and the
sweep's stage cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from csrgan.config import ExperimentConfig
from csrgan.train.context import TrainContext
from csrgan.train.cyclegan import train_cyclegan
from csrgan.train.dsgan import train_dsgan
from csrgan.train.joint import joint_problem, train_joint
from csrgan.train.keys import cyclegan_key, gan_key, pretrain_key
from csrgan.train.srgan import train_sr

__all__ = ["STAGES", "Stage", "StageError", "get_stage"]

Inputs = Mapping[str, Path]
LoopFn = Callable[[ExperimentConfig, TrainContext, Inputs], dict[str, Any]]


class StageError(ValueError):
    """An unknown stage, or inputs that do not fit the stage and config. The message is user-facing."""


@dataclass(frozen=True)
class Stage:
    """One training stage. ``loop`` is the per-worker function (run on every rank of a group)."""

    name: str
    loop: LoopFn
    inputs: Callable[[ExperimentConfig], tuple[str, ...]]  # upstream stages whose final/ it reads
    key: Callable[[ExperimentConfig], str]
    trains: Callable[[ExperimentConfig], bool]  # False: the config gives it no iterations
    role: Literal["degradation", "sr"]  # what its final/ generator is
    optional: tuple[str, ...] = ()  # inputs it may take beyond the needed ones
    problem: Callable[[ExperimentConfig], str | None] = lambda cfg: None  # why the config can't run it

    def check_inputs(self, cfg: ExperimentConfig, given: Mapping[str, Any]) -> dict[str, Path]:
        """``given`` must hold the inputs this config needs (as paths), and no others but ``optional``;
        and the stage must be able to run this config at all (:attr:`problem`)."""
        problem = self.problem(cfg)
        if problem is not None:
            raise StageError(f"stage {self.name!r}: {problem}")
        need = self.inputs(cfg)
        missing = [k for k in need if given.get(k) is None]
        extra = sorted(k for k, v in given.items() if v is not None and k not in need + self.optional)
        if missing or extra:
            why = _why_inputs(cfg)
            raise StageError(
                f"stage {self.name!r} with this config takes input(s) {list(need) or 'none'}"
                + (f"; missing {missing}" if missing else "")
                + (f"; not used: {extra}" if extra else "")
                + (f" ({why})" if why else "")
            )
        return {k: Path(v) for k, v in given.items() if v is not None}


def _why_inputs(cfg: ExperimentConfig) -> str:
    p, src, pre = cfg.sr.mix_prob, cfg.sr.lr_source, cfg.sr.pretrain.iters
    used = "" if cfg.sr.uses_degradation_stage() else "not "
    return (
        f"sr.mix_prob={p:g}, sr.lr_source={src}: the degradation stage is {used}used; sr.pretrain.iters={pre}"
    )


# ----------------------------------------------------------------------------------------------- loops
def _cyclegan_loop(cfg: ExperimentConfig, ctx: TrainContext, inputs: Inputs) -> dict[str, Any]:
    """The degradation learner ``cyclegan.learner`` names."""
    if cfg.cyclegan.learner == "cyclegan":
        return train_cyclegan(cfg, ctx)
    return train_dsgan(cfg, ctx)


def _sr_loop(phase: Literal["pretrain", "gan"]) -> LoopFn:
    """The SR phase's loop: joint with the degradation G when ``cfg.sr.joint_in(phase)``, else two-stage."""

    def loop(cfg: ExperimentConfig, ctx: TrainContext, inputs: Inputs) -> dict[str, Any]:
        train = train_joint if cfg.sr.joint_in(phase) else train_sr
        return train(cfg, ctx, phase, init_from=inputs.get("pretrain"), cyclegan_g=inputs.get("cyclegan"))

    loop.__name__ = f"train_{phase}"
    return loop


def _uses_cyclegan(cfg: ExperimentConfig) -> tuple[str, ...]:
    return ("cyclegan",) if cfg.sr.uses_degradation_stage() else ()


STAGES: dict[str, Stage] = {
    "cyclegan": Stage(
        "cyclegan",
        _cyclegan_loop,
        lambda cfg: (),
        cyclegan_key,
        lambda cfg: cfg.cyclegan.iters > 0,
        "degradation",
    ),
    "pretrain": Stage(
        "pretrain",
        _sr_loop("pretrain"),
        _uses_cyclegan,
        pretrain_key,
        lambda cfg: cfg.sr.pretrain.iters > 0,
        "sr",
        problem=joint_problem,
    ),
    "gan": Stage(
        "gan",
        _sr_loop("gan"),
        lambda cfg: _uses_cyclegan(cfg) + (("pretrain",) if cfg.sr.pretrain.iters > 0 else ()),
        gan_key,
        lambda cfg: cfg.sr.gan.iters > 0,
        "sr",
        optional=("pretrain",),  # any generator to start from, also without a pre-training stage
        problem=joint_problem,
    ),
}


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r}; known: {', '.join(STAGES)}") from None
