"""Stage keys: a hash of everything that changes a stage's result, and nothing else.

Evaluation settings, ``*_every`` and resources other than ``workers`` (the data shards depend on it)
may change without changing a key. The sweep shares a stage between every trial with the same key
(``<storage>/_stages/<stage>-<key>``), and a checkpoint written under another key is refused on
resume. Keys are versioned (``cyclegan-v2``): bump the version when a stage's code changes what it
computes or writes.
"""

from __future__ import annotations

from typing import Any

from csrgan.config import ExperimentConfig, stable_hash

__all__ = ["cyclegan_key", "gan_key", "pretrain_key"]


def _data_key(cfg: ExperimentConfig, *fields: str) -> dict[str, Any]:
    d = cfg.data
    return {"demo": d.demo and d.demo.model_dump(), "scale": d.scale, **{f: getattr(d, f) for f in fields}}


def cyclegan_key(cfg: ExperimentConfig) -> str:
    """The CycleGAN's data (bicubic X from ``train_hr``, real Y), its section, the workers."""
    return stable_hash(
        {
            "stage": "cyclegan-v2",
            "data": _data_key(cfg, "train_hr", "real_lr"),
            "cyclegan": cfg.cyclegan.model_dump(mode="json", exclude={"eval_every", "checkpoint_every"}),
            "workers": cfg.resources.workers,
        }
    )


def pretrain_key(cfg: ExperimentConfig) -> str:
    """SRResNet pre-training. ``mix_prob`` counts: the LR source matters from the first step; with
    ``p = 0`` the CycleGAN is not an input."""
    return stable_hash(
        {
            "stage": "pretrain-v2",
            "seed": cfg.seed,
            "data": _data_key(cfg, "train_hr", "train_lr"),
            "cyclegan": cyclegan_key(cfg) if cfg.sr.mix_prob > 0 else None,
            "mix_prob": cfg.sr.mix_prob,
            "generator": cfg.sr.generator.model_dump(mode="json"),
            "pretrain": cfg.sr.pretrain.model_dump(mode="json"),
            "batch_size": cfg.sr.batch_size,
            "patch_size": cfg.sr.patch_size,
            "workers": cfg.resources.workers,
        }
    )


def gan_key(cfg: ExperimentConfig) -> str:
    """The GAN phase: the whole SR section (pre-training included), its data, weights, workers."""
    return stable_hash(
        {
            "stage": "gan-v2",
            "seed": cfg.seed,
            "data": cfg.data.model_dump(mode="json", exclude={"test_sets", "cache"}),
            "cyclegan": cyclegan_key(cfg) if cfg.sr.mix_prob > 0 else None,
            "sr": cfg.sr.model_dump(mode="json", exclude={"eval_every", "checkpoint_every"}),
            "weights": cfg.weights.model_dump(mode="json"),
            "workers": cfg.resources.workers,
        }
    )
