"""What every degradation learner (stage 1) shares: data, evaluation, fidelity and the cached LR.

The two learners (``cyclegan.learner``) are :class:`csrgan.train.cyclegan.CycleGANLoop` (junyanz's
CycleGAN) and :class:`csrgan.train.dsgan.DSGANLoop` (frequency separation). Both subclass
:class:`DegradationLoop`, which owns:

* **data** — domain X: the bicubic LR crop aligned with a random HR patch of ``data.train_hr`` (cut
  from the bicubic LR of the whole image, so no resize-border artefacts); domain Y: random crops of
  ``data.real_lr``; random flips/transposes; stateless sampling (each step's patches depend only on
  ``(seed, step, rank)``);
* **evaluation** — report Table 2 on "real" test sets (:func:`csrgan.evaluation.evaluate_translation`)
  plus the unpaired fidelity of :mod:`csrgan.fidelity` on the training images (``fidelity/*``) and its
  gate verdict (``fidelity/poor``: 1.0 or 0.0);
* **the artefact** — ``final/`` gets, besides ``G``: ``lr/<v>/<stem>.png``, the real-like LR of every
  training image, made **once, on the whole bicubic LR image** (so every pixel saw its real context;
  ``G`` applied to small patches behaves differently, docs/degradation.md), ``cache_variants`` times
  for a ``G`` with a noise input (``v = 0 .. K-1``, each from its own seed), and ``fidelity.json``
  (the metrics, the verdict and its thresholds). The SR stage crops its patches from these images
  (:class:`csrgan.data.datasets.CachedLR`), aligned with the HR, and never runs ``G`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csrgan.config import ExperimentConfig
from csrgan.data.datasets import ImageFolder, PairedPatchDataset, UnpairedPatchDataset
from csrgan.data.io import list_images, to_tensor, to_uint8, write_image
from csrgan.fidelity import FIDELITY_KEYS, fidelity, gate
from csrgan.models.artifacts import GeneratorSpec
from csrgan.models.cyclegan import init_weights
from csrgan.registry import DEGRADATION_CRITICS, DEGRADATION_GENERATORS
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.keys import cyclegan_key
from csrgan.train.loop import TrainLoop, derive_seed, evaluating
from csrgan.train.sampling import IterationSampler

__all__ = [
    "FIDELITY_FILE",
    "LR_CACHE_DIR",
    "PHASE",
    "DegradationLoop",
    "PoorStageError",
    "apply_generator",
    "generator_spec",
    "judge_stage",
    "lr_cache_dirs",
    "read_fidelity",
    "require_usable",
]

PHASE = "cyclegan"
LR_CACHE_DIR = "lr"
FIDELITY_FILE = "fidelity.json"
#: "weights" report value: no degradation learner loads a pretrained backbone.
WEIGHTS_PROVENANCE = "none (degradation learner: no pretrained backbones)"

# Independent random streams, derived from (cfg.cyclegan.seed, stream[, rank]).
STREAM_X, STREAM_Y, STREAM_POOL_Y, STREAM_POOL_X, STREAM_CACHE = range(5)


def generator_spec(cfg: ExperimentConfig, **meta: Any) -> GeneratorSpec:
    """The spec of this experiment's G (``cyclegan.generator`` at ``data.scale``) for ``generator.json``."""
    g = cfg.cyclegan.generator
    return GeneratorSpec("degradation", g.type, g.kwargs(), cfg.data.scale, dict(meta))


def apply_generator(G: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``G(x)`` of a whole image; a ``G`` with a noise input draws it from a CPU generator seeded ``seed``."""
    if getattr(G, "noise_channels", 0):
        return G(x, generator=torch.Generator().manual_seed(seed))
    return G(x)


def lr_cache_dirs(final: str | Path) -> list[Path]:
    """The variant folders ``final/lr/<v>`` of a degradation stage, in order (error if there are none)."""
    root = Path(final) / LR_CACHE_DIR
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)) \
        if root.is_dir() else []  # fmt: skip
    if not dirs:
        raise FileNotFoundError(
            f"{root}: no cached real-like LR; this degradation stage was made by an older csrgan "
            "(before 0.3) or did not finish; train it again"
        )
    return dirs


def _check_data(cfg: ExperimentConfig) -> None:
    for field in ("train_hr", "real_lr"):
        if getattr(cfg.data, field) is None:
            raise ValueError(
                f"data.{field} is not set: the degradation learner needs bicubic LR from data.train_hr "
                "(domain X) and real LR images in data.real_lr (domain Y); resolve the config with "
                "csrgan.data.layout.resolve_data first when using data.demo"
            )


class DegradationLoop(TrainLoop):
    """A :class:`TrainLoop` for stage 1. Subclasses build :attr:`nets` (exporting :attr:`exported`),
    the optimisers, and :meth:`train_step` (use :meth:`batch`)."""

    def __init__(self, cfg: ExperimentConfig, ctx: TrainContext) -> None:
        cg = cfg.cyclegan
        _check_data(cfg)
        super().__init__(
            cfg, ctx, stage=PHASE, key=cyclegan_key(cfg), seed=cg.seed, iters=cg.iters,
            eval_every=cg.eval_every, checkpoint_every=cg.checkpoint_every,
        )  # fmt: skip
        self._build_data()
        self._reals: list[np.ndarray] | None = None

    def build_generator(self) -> nn.Module:
        """A fresh ``cyclegan.generator`` with junyanz's init, unless it keeps its own (``keeps_init``:
        the residual G must stay the identity at step 0)."""
        g = self.cfg.cyclegan.generator
        net = DEGRADATION_GENERATORS.build(g.type, **g.kwargs(), in_ch=3, out_ch=3)
        return net if getattr(net, "keeps_init", False) else init_weights(net)

    def build_critic(self) -> nn.Module:
        """A fresh ``cyclegan.discriminator`` with junyanz's init."""
        d = self.cfg.cyclegan.discriminator
        return init_weights(DEGRADATION_CRITICS.build(d.type, **d.kwargs(), in_ch=3))

    def stream_seed(self, *stream: int) -> int:
        return derive_seed(self.cfg.cyclegan.seed, *stream)

    def _build_data(self) -> None:
        cg, d, ctx = self.cfg.cyclegan, self.cfg.data, self.ctx
        x_seed, y_seed = self.stream_seed(STREAM_X), self.stream_seed(STREAM_Y)
        assert d.train_hr is not None and d.real_lr is not None  # _check_data
        self.x = PairedPatchDataset(
            d.train_hr, scale=d.scale, patch_size=cg.patch_size * d.scale, lr_dir=None, augment=True,
            cache=d.cache, seed=x_seed,
        )  # fmt: skip
        self.y = UnpairedPatchDataset(
            d.real_lr, patch_size=cg.patch_size, augment=True, cache=d.cache, seed=y_seed
        )
        self.x_sampler = IterationSampler(len(self.x), cg.batch_size, x_seed, ctx.rank, ctx.world_size)
        self.y_sampler = IterationSampler(len(self.y), cg.batch_size, y_seed, ctx.rank, ctx.world_size)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) = (bicubic LR patches, real LR patches) for this rank at ``step``, on the device."""
        x = self.x_sampler.read(self.x, step)["lr"]
        y = self.y_sampler.read(self.y, step)["image"]
        return tuple(  # type: ignore[return-value]
            t.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format) for t in (x, y)
        )

    # ------------------------------------------------------------------------------ skeleton hooks
    def generator_spec(self) -> GeneratorSpec:
        return generator_spec(
            self.cfg, stage=PHASE, key=self.key, step=self.step, seed=self.cfg.cyclegan.seed
        )

    def epoch_at(self, step: int) -> float:
        return self.x_sampler.epoch_at(step)

    def provenance(self) -> str:
        return WEIGHTS_PROVENANCE

    # ---------------------------------------------------------------------------------- evaluation
    def _degrade_training_images(
        self, G: nn.Module, variant: int
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(bicubic LR, uint8 G(bicubic LR)) of every training image, whole-image, for one variant."""
        xs, gs = [], []
        for k in range(self.x.n_images):
            lr, _ = self.x.pair(k)
            seed = self.stream_seed(STREAM_CACHE, variant, k)
            with torch.no_grad():
                g = to_uint8(apply_generator(G, to_tensor(lr).to(self.device), seed))[0]
            xs.append(lr)
            gs.append(g)
        return xs, gs

    def _fidelity(self, xs: list[np.ndarray], gs: list[np.ndarray]) -> dict[str, Any]:
        if self._reals is None:  # read once per run, on the rank that evaluates
            assert self.cfg.data.real_lr is not None
            self._reals = list(ImageFolder(self.cfg.data.real_lr, cache=False))
        fid = fidelity(xs, gs, self._reals)
        g = self.cfg.cyclegan.gate
        return {**fid, **gate(fid, g.min_lowfreq_psnr, g.max_gx_psnr, g.max_hf_w1_ratio)}

    def evaluate(self) -> dict[str, float]:
        """Table 2 for every "real" test set, the unpaired fidelity on the training images, grids."""
        from csrgan.evaluation import evaluate_translation

        with evaluating(self.nets[self.exported]) as G:
            seed = self.stream_seed(STREAM_CACHE, 0)

            def g_fn(t: torch.Tensor) -> torch.Tensor:  # fixed noise: evaluation never draws from the
                return apply_generator(G, t, seed)  # training's random stream

            out = evaluate_translation(g_fn, self.cfg.data.test_sets, self.cfg.data.scale, self.device)
            fid = self._fidelity(*self._pooled(G, self._variants()))
            if self.cfg.eval.grid_images > 0:
                self._write_grids(G)
        out.update({f"fidelity/{k}": float(v) for k, v in fid.items() if isinstance(v, int | float)})
        out["fidelity/poor"] = float(fid["verdict"] == "poor")
        return out

    def _variants(self) -> int:
        """Samples per training image: ``cache_variants`` for a G with a noise input, else 1."""
        noisy = bool(getattr(unwrap(self.nets[self.exported]), "noise_channels", 0))
        return self.cfg.cyclegan.cache_variants if noisy else 1

    def _pooled(self, G: nn.Module, variants: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every variant of every training image, pooled (what the SR stage samples from)."""
        xs, gs = [], []
        for v in range(variants):
            x, g = self._degrade_training_images(G, v)
            xs += x
            gs += g
        return xs, gs

    def export_extra(self, final: Path) -> None:
        """``final/lr/<v>/`` (the cached real-like LR of every training image) and ``fidelity.json``
        (over all variants pooled, the same numbers as the last evaluation's ``fidelity/*``)."""
        names = [p.stem for p in list_images(self.x.hr_dir)]
        variants = self._variants()
        with evaluating(self.nets[self.exported]) as G:
            xs, gs = self._pooled(G, variants)
        n = len(names)
        for v in range(variants):
            for name, g in zip(names, gs[v * n : (v + 1) * n], strict=True):
                write_image(final / LR_CACHE_DIR / str(v) / f"{name}.png", g)
        fid = self._fidelity(xs, gs)
        info = {
            "fidelity": fid,
            "variants": variants,
            "images": len(names),
            "key": self.key,
            "step": self.step,
        }
        (final / FIDELITY_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))

    @torch.no_grad()
    def _write_grids(self, G: nn.Module) -> None:
        """``out_dir/grids/cyclegan_<set>_step<step>.png`` per "real" set: bicubic x | G(x) | real y at LR
        scale, labelled and with per-image PSNR vs x / vs y (:func:`csrgan.grids.degradation_grid`).

        The images rotate with the evaluation (:func:`csrgan.grids.rotation`); G draws the same fixed
        noise as :meth:`evaluate`, so "PSNR vs y" is the image's Table 2 ``g_psnr``.
        """
        from csrgan.data.datasets import TestSet
        from csrgan.data.resize import imresize
        from csrgan.grids import DegradationImage, degradation_grid, eval_round, rotation, run_caption

        scale, seed = self.cfg.data.scale, self.stream_seed(STREAM_CACHE, 0)
        caption = run_caption(self.ctx.out_dir, PHASE, {"learner": self.cfg.cyclegan.learner})
        for ts in self.cfg.data.test_sets:
            if ts.degradation != "real" or ts.hr is None or ts.lr is None:
                continue
            test_set = TestSet(ts.name, hr_dir=ts.hr, lr_dir=ts.lr, scale=scale)
            n = len(test_set) if ts.max_images is None else min(len(test_set), ts.max_images)
            rows = []
            for k in rotation(n, self.cfg.eval.grid_images, eval_round(self.step, self.eval_every)):
                name, real_lr, hr = test_set[k]
                assert hr is not None
                bic = imresize(hr, scale=1.0 / scale)
                g = to_uint8(apply_generator(G, to_tensor(bic).to(self.device), seed))[0]
                rows.append(DegradationImage(name, bic, g, real_lr, f"image {k + 1}/{n}"))
            if rows:
                grid = degradation_grid(rows, scale, f"{ts.name} | step {self.step} | {caption}")
                path = Path(self.ctx.out_dir) / "grids" / f"{PHASE}_{ts.name}_step{self.step}.png"
                write_image(path, grid.image)


def read_fidelity(final: str | Path) -> dict[str, Any] | None:
    """``final/fidelity.json`` of a degradation stage (None when absent)."""
    p = Path(final) / FIDELITY_FILE
    return json.loads(p.read_text()) if p.is_file() else None


class PoorStageError(RuntimeError):
    """The degradation stage failed its quality gate and the experiment did not accept that."""


def judge_stage(final: str | Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """The gate verdict on a finished degradation stage, with the *current* thresholds (``cyclegan.gate``).

    Returns the fidelity metrics plus ``verdict`` (``ok`` | ``poor``), ``reasons``, ``thresholds`` and
    ``accepted_poor`` (True when the stage is poor and ``cyclegan.accept_poor`` is set).
    """
    info = read_fidelity(final)
    if info is None:
        return {
            "verdict": "poor",
            "reasons": [f"no {FIDELITY_FILE}: made before the quality gate existed (csrgan < 0.3)"],
            "accepted_poor": cfg.cyclegan.accept_poor,
        }
    fid = info["fidelity"]
    g = cfg.cyclegan.gate
    verdict = gate(fid, g.min_lowfreq_psnr, g.max_gx_psnr, g.max_hf_w1_ratio)
    keep = {k: v for k, v in fid.items() if k in FIDELITY_KEYS}
    return {**keep, **verdict, "accepted_poor": verdict["verdict"] == "poor" and cfg.cyclegan.accept_poor}


def require_usable(quality: dict[str, Any], final: str | Path) -> None:
    """Raise :class:`PoorStageError` (a user-facing message) for a poor stage that was not accepted."""
    if quality["verdict"] != "poor" or quality["accepted_poor"]:
        return
    raise PoorStageError(
        f"the degradation stage at {Path(final).parent} is POOR: "
        + "; ".join(quality["reasons"])
        + f". SR trained on its output learns a wrong degradation (see {Path(final) / FIDELITY_FILE})."
        " Fix the learner (docs/degradation.md), or set cyclegan.accept_poor: true to use it anyway "
        "(recorded in every result row). Nothing was deleted."
    )
