"""Stage keys: a hash of everything that changes a stage's result, and nothing else.

Evaluation settings, ``*_every`` and resources other than ``workers`` (the data shards depend on it)
may change without changing a key. The sweep shares a stage between every trial with the same key
(``<storage>/_stages/<stage>-<key>``), and a checkpoint written under another key is refused on
resume. Keys are versioned (``cyclegan-v3``): bump the version when a stage's code changes what it
computes or writes.

Not in the degradation stage's key: its quality gate and ``accept_poor`` (they judge a finished stage,
they do not change it; the gate is re-applied with the current thresholds on every reuse).
"""

from __future__ import annotations

from typing import Any

from csrgan.config import ExperimentConfig, stable_hash

__all__ = ["cyclegan_key", "gan_key", "lr_source_key", "pretrain_key"]


def _data_key(cfg: ExperimentConfig, *fields: str) -> dict[str, Any]:
    d = cfg.data
    return {"demo": d.demo and d.demo.model_dump(), "scale": d.scale, **{f: getattr(d, f) for f in fields}}


_NOT_IN_KEY = {"eval_every", "checkpoint_every", "gate", "accept_poor"}


def cyclegan_key(cfg: ExperimentConfig) -> str:
    """The degradation stage's data (bicubic X from ``train_hr``, real Y), its section, the workers."""
    return stable_hash(
        {
            "stage": "cyclegan-v3",
            "data": _data_key(cfg, "train_hr", "real_lr"),
            "cyclegan": cfg.cyclegan.model_dump(mode="json", exclude=_NOT_IN_KEY),
            "workers": cfg.resources.workers,
        }
    )


def lr_source_key(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """What the non-bicubic training LR is: the degradation stage's key, the pipeline's id, or the
    paired folder (None at ``p = 0``: then only bicubic LR is used)."""
    sr = cfg.sr
    if sr.mix_prob == 0:
        return None
    if sr.lr_source == "cyclegan":
        return {"cyclegan": cyclegan_key(cfg)}
    if sr.lr_source == "pipeline":
        from csrgan.data.degradations import default_pipeline, load_pipeline

        pipe = default_pipeline() if sr.pipeline is None else load_pipeline(sr.pipeline)
        return {"pipeline": pipe.id}
    return {"paired": cfg.data.train_lr}


def pretrain_key(cfg: ExperimentConfig) -> str:
    """SRResNet pre-training. ``mix_prob`` and the LR source count from the first step; with ``p = 0``
    no LR source is an input."""
    return stable_hash(
        {
            "stage": "pretrain-v3",
            "seed": cfg.seed,
            "data": _data_key(cfg, "train_hr"),
            "lr_source": lr_source_key(cfg),
            "mix_prob": cfg.sr.mix_prob,
            "generator": cfg.sr.generator.model_dump(mode="json"),
            "pretrain": cfg.sr.pretrain.model_dump(mode="json"),
            "ema": cfg.sr.ema and cfg.sr.ema.model_dump(mode="json"),  # the exported G is the EMA
            "joint": cfg.sr.joint.model_dump(mode="json") if cfg.sr.joint_in("pretrain") else None,
            "batch_size": cfg.sr.batch_size,
            "patch_size": cfg.sr.patch_size,
            "workers": cfg.resources.workers,
        }
    )


def gan_key(cfg: ExperimentConfig) -> str:
    """The GAN phase: the whole SR section (pre-training included), its data, weights, workers."""
    return stable_hash(
        {
            "stage": "gan-v3",
            "seed": cfg.seed,
            "data": cfg.data.model_dump(mode="json", exclude={"test_sets", "cache"}),
            "lr_source": lr_source_key(cfg),
            "sr": cfg.sr.model_dump(mode="json", exclude={"eval_every", "checkpoint_every"}),
            "weights": cfg.weights.model_dump(mode="json"),
            "workers": cfg.resources.workers,
        }
    )
