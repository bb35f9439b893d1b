"""The SR trainer (CSR-GAN stage 2): SRResNet pre-training and SRGAN, as one per-worker loop function.

:func:`train_sr` runs one phase of Ledig et al. 2017 on the trainer's context (Ray Train worker, or a
single process with :class:`csrgan.train.context.LocalContext`):

* ``"pretrain"`` (stage A, "SRResNet"): generator only, pixel loss (``sr.pretrain.loss``), Adam.
* ``"gan"`` (stage B, "SRGAN"): generator (from ``init_from``, the pretrain artefact) + discriminator;
  ``L_G = content.weight * content + adv_weight * adversarial + pixel_weight * MSE`` and the
  discriminator's ``-log D(HR) - log(1 - D(SR))`` (or LSGAN), Adam with ``sr.gan.lr``.

Training LR (both phases): the dataset's LR patch of the HR patch (MATLAB bicubic, or ``data.train_lr``),
replaced per sample with probability ``sr.mix_prob`` (the report's *p*) by the frozen CycleGAN
``G(bicubic LR)`` (:class:`LRSource`). ``p = 1`` is CSR-GAN, ``p = 0`` plain SRGAN (G never built).

Batches: ``sr.batch_size`` is **per worker** (Ray Train convention; the global batch is
``batch_size * workers``). Learning rates are constant (the config has no schedule).

Determinism and exact resume. A checkpoint (``state.pt``, loaded with ``weights_only=True``) holds the
models, both optimisers, the step, and *per rank* the global RNG states and the :class:`LRSource`
generator state (gathered to rank 0 with ``all_gather_object`` under DDP). The data position is the
step itself: :class:`csrgan.train.sampling.IterationSampler` makes every batch a pure function of
``(seed, step, rank)``. Networks (and an explicitly random VGG) are built right after
``torch.manual_seed(seed)``, identically on every rank and in every process, before a checkpoint is
restored. No GradScaler exists because AMP here is bf16, whose exponent range is fp32's.

Under DDP (``ctx.prepare_model``) parameters stay identical on all ranks; BatchNorm running statistics
are per rank when the context disables buffer broadcasting (csrgan's Ray context does), and rank 0's
are the ones checkpointed and used for evaluation. Reported training losses are rank 0's.

Events: after step ``s`` an evaluation runs when ``s % eval_every == 0`` and a checkpoint is written when
``s % checkpoint_every == 0``; the last step does both, and its checkpoint is the final artefact
``out_dir/final/`` (full state + ``generator.pt`` + ``generator.json``). Each event is ONE
``ctx.report`` on every rank (a barrier under Ray Train); only rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from csrgan.config import ExperimentConfig
from csrgan.models.srgan import SRGANDiscriminator, SRResNet
from csrgan.train.checkpoint import capture_rng, load_state, restore_rng, save_state, step_dir_name
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.sampling import IterationSampler, make_batch

__all__ = [
    "FORMAT",
    "GENERATOR_CONFIG_FILE",
    "GENERATOR_FILE",
    "LRSource",
    "SRStep",
    "build_sr_generator",
    "derive_seed",
    "generator_config",
    "load_sr_generator",
    "receptive_radius",
    "save_sr_generator",
    "train_sr",
]

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "gan"]
PHASES: tuple[str, ...] = ("pretrain", "gan")
FORMAT = "csrgan-sr-v1"
GENERATOR_FILE = "generator.pt"
GENERATOR_CONFIG_FILE = "generator.json"
FINAL_DIR = "final"

# Stream tags for derive_seed: independent random streams per purpose.
_TAG_LR_SOURCE = 0x4C52  # "LR"
_TAG_GLOBAL = 0x474C  # "GL"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. ``(seed, rank, tag)``) via numpy's SeedSequence hashing."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------ generator
def generator_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The SRResNet constructor arguments for ``cfg`` (written as ``generator.json``)."""
    m = cfg.sr.model
    return {
        "arch": "SRResNet",
        "in_ch": 3,
        "channels": m.channels,
        "n_blocks": m.n_blocks,
        "scale": cfg.data.scale,
        "global_bicubic_skip": m.global_bicubic_skip,
    }


def receptive_radius(model_cfg: Mapping[str, Any]) -> int:
    """Receptive-field radius (LR px) of an SRResNet: the ``overlap`` that makes tiling exact.

    9x9 head (4) + two 3x3 per residual block (2 each) + 3x3 body tail (1) + one 3x3 up-conv per x2
    octave, the k-th at scale 2**k (2**-k LR px) + 9x9 tail at the output scale (4/scale). The optional
    bicubic skip (radius 2) is smaller. Paper size (16 blocks, x4): 39.5 -> 40.
    """
    scale = int(model_cfg["scale"])
    octaves = scale.bit_length() - 1
    radius = 4 + 2 * int(model_cfg["n_blocks"]) + 1 + sum(2.0**-k for k in range(octaves)) + 4 / scale
    return math.ceil(max(radius, 2.0))


def build_sr_generator(model_cfg: Mapping[str, Any]) -> SRResNet:
    """An :class:`SRResNet` from a :func:`generator_config` dict."""
    if model_cfg.get("arch") != "SRResNet":
        raise ValueError(f"generator config: arch must be 'SRResNet', got {model_cfg.get('arch')!r}")
    kwargs = {k: v for k, v in model_cfg.items() if k != "arch"}
    try:
        return SRResNet(**kwargs)
    except TypeError as exc:
        raise ValueError(f"generator config {dict(model_cfg)} does not fit SRResNet: {exc}") from None


def save_sr_generator(directory: Path, generator: nn.Module, model_cfg: Mapping[str, Any]) -> Path:
    """Write ``generator.pt`` (state dict) and ``generator.json`` (model config) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (GENERATOR_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in unwrap(generator).state_dict().items()}, tmp)
    tmp.replace(directory / GENERATOR_FILE)
    (directory / GENERATOR_CONFIG_FILE).write_text(
        json.dumps(dict(model_cfg), indent=2) + "\n", encoding="utf-8"
    )
    return directory


def _read_generator(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, model config) from a ``final/`` artefact or a checkpoint directory."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(
            f"SR generator: {path} is not a directory (expected final/ or step_XXXXXXXX/)"
        )
    weights, config_file, state_file = path / GENERATOR_FILE, path / GENERATOR_CONFIG_FILE, path / "state.pt"
    if weights.is_file() and config_file.is_file():
        try:
            model_cfg = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_file}: not valid JSON: {exc}") from None
        return torch.load(weights, map_location="cpu", weights_only=True), model_cfg
    if state_file.is_file():
        state = load_state(path)
        if state.get("format") != FORMAT or "generator" not in state:
            raise ValueError(f"{state_file}: not a csrgan SR checkpoint (format {state.get('format')!r})")
        return state["generator"], dict(state["model_config"])
    raise FileNotFoundError(
        f"SR generator: {path} has neither {GENERATOR_FILE} + {GENERATOR_CONFIG_FILE} nor state.pt"
    )


def load_sr_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The SR generator of a ``final/`` artefact or a checkpoint dir: eval mode, frozen, on ``device``."""
    state, model_cfg = _read_generator(Path(path))
    model = build_sr_generator(model_cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the model config {model_cfg}: {exc}") from None
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------- LR source
def _quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 1/255 grid like :func:`csrgan.data.io.to_uint8`, staying a float tensor."""
    return x.clamp(0, 1).mul(255.0).add(0.5).floor().div(255.0)


class LRSource:
    """Per-sample choice of the training LR: bicubic LR, or w.p. ``mix_prob`` the CycleGAN's ``G(bicubic)``.

    Draws are Bernoulli(``mix_prob``) from an explicit CPU ``torch.Generator`` seeded by
    ``(seed, rank)``; one uniform number per sample is drawn whatever ``mix_prob`` is, so runs with the
    same seed and different ``p`` are coupled (the G-samples of ``p = 0.3`` are a subset of those of
    ``p = 0.5``). ``p = 0`` never calls ``G``; ``p = 1`` always does. ``G`` runs batched on the selected
    samples, under ``no_grad``, on the device of the LR batch. Its output is clamped and rounded to the
    uint8 grid, because every LR the SR network sees at test time is a uint8 image.
    """

    def __init__(
        self,
        mix_prob: float,
        generator_fn: Callable[[torch.Tensor], torch.Tensor] | None,
        seed: int,
        rank: int,
    ) -> None:
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"LRSource: mix_prob must be in [0, 1], got {mix_prob!r}")
        if mix_prob > 0 and generator_fn is None:
            raise ValueError(f"LRSource: mix_prob={mix_prob} > 0 needs the CycleGAN generator G")
        self.mix_prob = float(mix_prob)
        self.generator_fn = generator_fn
        self.rng = torch.Generator(device="cpu")
        self.rng.manual_seed(derive_seed(seed, rank, _TAG_LR_SOURCE))
        self.g_calls = 0

    def draw(self, n: int) -> torch.Tensor:
        """Boolean mask ``(n,)`` (CPU): True where the sample's LR comes from ``G``."""
        return torch.rand(n, generator=self.rng) < self.mix_prob

    def __call__(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr_used, mask)`` for a bicubic LR batch ``(N, 3, h, w)``; ``lr`` itself is not modified."""
        mask = self.draw(lr.shape[0])
        if not bool(mask.any()):
            return lr, mask
        assert self.generator_fn is not None
        index = mask.nonzero().squeeze(1).to(lr.device)
        with torch.no_grad():
            fake = self.generator_fn(lr.index_select(0, index))
        self.g_calls += 1
        if fake.shape != (index.numel(), *lr.shape[1:]):
            raise ValueError(
                f"LRSource: G changed the LR shape {tuple(lr.shape[1:])} -> {tuple(fake.shape[1:])}"
            )
        out = lr.clone()
        out.index_copy_(0, index, _quantise(fake).to(lr.dtype))
        return out, mask

    def state_dict(self) -> dict[str, Any]:
        return {"mix_prob": self.mix_prob, "generator_state": self.rng.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["mix_prob"]) != self.mix_prob:
            raise ValueError(
                f"LRSource: checkpoint has mix_prob={state['mix_prob']}, this run {self.mix_prob}"
            )
        self.rng.set_state(state["generator_state"])


# ----------------------------------------------------------------------------------------- one step
class SRStep:
    """One optimisation step of either phase on a prepared batch; no data loading, no I/O.

    ``G`` and ``D`` are what ``ctx.prepare_model`` returned (DDP-wrapped when distributed). In the
    generator update the adversarial term runs the *unwrapped* discriminator with its parameters
    frozen: those gradients are never used, and keeping D's DDP wrapper out of G's backward means no
    gradient all-reduce for D there. The discriminator update runs real and fake through the wrapper
    with one backward each (BasicSR's order), so every DDP forward is matched by its backward.
    Returns detached losses ``{name: 0-d tensor}`` (no host sync); the caller checks finiteness.
    """

    def __init__(
        self,
        phase: Phase,
        generator: nn.Module,
        opt_g: torch.optim.Optimizer,
        pixel_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        discriminator: nn.Module | None = None,
        opt_d: torch.optim.Optimizer | None = None,
        content_loss: nn.Module | None = None,
        gan_loss: nn.Module | None = None,
        content_weight: float = 1.0,
        adv_weight: float = 1e-3,
        pixel_weight: float = 0.0,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        if phase == "gan" and (
            discriminator is None or opt_d is None or content_loss is None or gan_loss is None
        ):
            raise ValueError("SRStep: the gan phase needs discriminator, opt_d, content_loss and gan_loss")
        self.phase = phase
        self.G, self.opt_g, self.pixel_loss = generator, opt_g, pixel_loss
        self.D, self.opt_d, self.content_loss, self.gan_loss = discriminator, opt_d, content_loss, gan_loss
        self.content_weight, self.adv_weight, self.pixel_weight = content_weight, adv_weight, pixel_weight
        self.amp_dtype = amp_dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def _autocast(self, device: torch.device) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.amp_dtype)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        lr = lr.contiguous(memory_format=self.memory_format)
        hr = hr.contiguous(memory_format=self.memory_format)
        if self.phase == "pretrain":
            with self._autocast(lr.device):
                loss = self.pixel_loss(self.G(lr).float(), hr)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            return {"pixel": loss.detach()}
        return self._gan_step(lr, hr)

    def _gan_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.D is not None and self.opt_d is not None and self.content_loss is not None
        assert self.gan_loss is not None
        d_plain = unwrap(self.D)
        # generator update: content + adversarial (+ pixel)
        d_plain.requires_grad_(False)
        with self._autocast(lr.device):
            sr = self.G(lr)
            sr32 = sr.float()
            content = self.content_loss(sr32, hr)
            adv = self.gan_loss(d_plain(sr).float(), True)
            pixel = F.mse_loss(sr32, hr) if self.pixel_weight > 0 else sr32.new_zeros(())
            total = self.content_weight * content + self.adv_weight * adv + self.pixel_weight * pixel
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        # discriminator update: real -> 1, fake -> 0
        d_plain.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast(lr.device):
            d_real = self.gan_loss(self.D(hr).float(), True)
        d_real.backward()
        with self._autocast(lr.device):
            d_fake = self.gan_loss(self.D(sr.detach()).float(), False)
        d_fake.backward()
        self.opt_d.step()
        return {
            "g_total": total.detach(),
            "content": content.detach(),
            "adv": adv.detach(),
            "pixel": pixel.detach(),
            "d_real": d_real.detach(),
            "d_fake": d_fake.detach(),
        }


# ---------------------------------------------------------------------------------------- helpers
def _gather(ctx: TrainContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, on every rank (a collective under DDP; all ranks must call it)."""
    if ctx.world_size == 1:
        return [obj]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size={ctx.world_size} but torch.distributed is not initialised")
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _any_rank(ctx: TrainContext, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (so all ranks stop at the same step)."""
    if ctx.world_size == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _amp_dtype(cfg: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.resources.amp:
        return None
    if device.type != "cuda":
        warnings.warn(
            f"resources.amp is set but the trainer runs on {device.type}: bf16 autocast is GPU-only here, "
            "training in float32",
            stacklevel=3,
        )
        return None
    return torch.bfloat16


def _build_dataset(cfg: ExperimentConfig) -> Any:
    from csrgan.data.datasets import PairedPatchDataset

    d = cfg.data
    if d.train_hr is None:
        raise ValueError("data.train_hr is not set (resolve the config with csrgan.data.layout.resolve_data)")
    return PairedPatchDataset(
        d.train_hr,
        scale=d.scale,
        patch_size=cfg.sr.patch_size,
        lr_dir=d.train_lr,
        augment=True,
        cache=d.cache,
        seed=cfg.seed,
    )


def _weights_provenance(content_loss: nn.Module | None, lpips: Any, want_lpips: bool) -> str:
    parts = []
    if content_loss is not None and hasattr(content_loss, "provenance"):
        parts.append(str(content_loss.provenance))
    if lpips is not None:
        parts.append(str(lpips.provenance))
    elif want_lpips:
        parts.append("lpips:none (weights missing, eval.lpips.optional)")
    return ";".join(parts) if parts else "none"


def _pixel_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return {"mse": F.mse_loss, "l1": F.l1_loss}[name]


# -------------------------------------------------------------------------------------------- trainer
def train_sr(
    cfg: ExperimentConfig,
    ctx: TrainContext,
    phase: Phase,
    init_from: Path | None = None,
    cyclegan_g: Path | None = None,
) -> dict[str, Any]:
    """Run one SR phase to ``iters`` (resuming from ``ctx.latest_checkpoint()``); returns the final metrics.

    ``init_from``: a ``final/`` artefact or checkpoint directory whose generator starts this phase
    (ignored when resuming). ``cyclegan_g``: the CycleGAN stage's ``final/`` artefact, required iff
    ``sr.mix_prob > 0``. A phase with ``iters: 0`` trains nothing, reports nothing, writes no
    artefact and returns ``{"skipped": 1, ...}``. A non-finite loss ends the run with one report
    ``{"diverged": 1, ...}`` on every rank (no checkpoint, no exception).
    """
    if phase not in PHASES:
        raise ValueError(f"train_sr: phase must be one of {PHASES}, got {phase!r}")
    mix_prob = cfg.sr.mix_prob
    if mix_prob > 0 and cyclegan_g is None:
        raise ValueError(f"sr.mix_prob is {mix_prob} > 0: the CycleGAN generator (cyclegan_g) is required")
    if mix_prob == 0 and cyclegan_g is not None:
        raise ValueError(f"sr.mix_prob is 0 (plain SRGAN) but a CycleGAN generator was given: {cyclegan_g}")
    iters = cfg.sr.pretrain.iters if phase == "pretrain" else cfg.sr.gan.iters
    if iters == 0:
        return {"skipped": 1, "phase": phase, "step": 0}
    if phase == "gan" and cfg.sr.patch_size % 16:
        raise ValueError(
            f"sr.patch_size ({cfg.sr.patch_size}) must be a multiple of 16 for the gan phase: the SRGAN "
            "discriminator has 4 stride-2 convs"
        )
    threads_before = torch.get_num_threads()
    if cfg.resources.threads_per_worker is not None:
        torch.set_num_threads(cfg.resources.threads_per_worker)
    try:
        return _SRRun(cfg, ctx, phase, iters, init_from, cyclegan_g).run()
    finally:
        torch.set_num_threads(threads_before)


class _SRRun:
    """State of one :func:`train_sr` call (kept in an object so the loop reads as a loop)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: TrainContext,
        phase: Phase,
        iters: int,
        init_from: Path | None,
        cyclegan_g: Path | None,
    ) -> None:
        self.cfg, self.ctx, self.phase, self.iters = cfg, ctx, phase, iters
        device = torch.device(ctx.device)
        self.device = device
        self.amp_dtype = _amp_dtype(cfg, device)
        channels_last = cfg.resources.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        # Everything random at construction comes from the config seed, identically on every rank.
        torch.manual_seed(cfg.seed)
        self.model_cfg = generator_config(cfg)
        g_plain = build_sr_generator(self.model_cfg)
        if init_from is not None:
            state, init_cfg = _read_generator(Path(init_from))
            if init_cfg != self.model_cfg:
                raise ValueError(
                    f"init_from {init_from}: generator config {init_cfg} != this run's {self.model_cfg}"
                )
            g_plain.load_state_dict(state, strict=True)
        self.G = ctx.prepare_model(g_plain.to(memory_format=memory_format))
        self.D: nn.Module | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        self.content_loss: nn.Module | None = None
        if phase == "pretrain":
            p = cfg.sr.pretrain
            self.opt_g: torch.optim.Optimizer = torch.optim.Adam(
                self.G.parameters(), lr=p.lr, betas=(0.9, 0.999)
            )
            self.step_fn = SRStep(
                "pretrain",
                self.G,
                self.opt_g,
                _pixel_loss(p.loss),
                amp_dtype=self.amp_dtype,
                channels_last=channels_last,
            )
        else:
            from csrgan.losses import GANLoss, VGGContentLoss

            g = cfg.sr.gan
            d_plain = SRGANDiscriminator(3, cfg.sr.model.d_channels, patch_size=cfg.sr.patch_size)
            self.D = ctx.prepare_model(d_plain.to(memory_format=memory_format))
            if g.content.type == "vgg":
                content: nn.Module = VGGContentLoss(
                    layer=g.content.layer,
                    weights_source=cfg.weights.vgg19,
                    random_init=cfg.weights.random_vgg,
                    criterion="mse",
                    feature_scale=g.content.feature_scale,
                ).to(device)
                self.content_loss = content
            else:
                content = nn.MSELoss() if g.content.type == "mse" else nn.L1Loss()
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=g.lr, betas=(0.9, 0.999))
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=g.lr, betas=(0.9, 0.999))
            self.step_fn = SRStep(
                "gan",
                self.G,
                self.opt_g,
                F.mse_loss,
                discriminator=self.D,
                opt_d=self.opt_d,
                content_loss=content,
                gan_loss=GANLoss(g.gan_mode),
                content_weight=g.content.weight,
                adv_weight=g.adv_weight,
                pixel_weight=g.pixel_weight,
                amp_dtype=self.amp_dtype,
                channels_last=channels_last,
            )

        g_fn = None
        if cfg.sr.mix_prob > 0:
            from csrgan.train.cyclegan import load_generator

            # scale: a G trained on x2 LR does not make x4 LR real-like (load_generator checks it)
            g_fn = load_generator(Path(cyclegan_g), device, scale=cfg.data.scale)  # type: ignore[arg-type]
        self.lr_source = LRSource(cfg.sr.mix_prob, g_fn, cfg.seed, ctx.rank)

        self.dataset = _build_dataset(cfg)
        self.sampler = IterationSampler(
            len(self.dataset), cfg.sr.batch_size, cfg.seed, ctx.rank, ctx.world_size
        )

        self.lpips: Any = None
        want_lpips = "lpips" in cfg.eval.metrics
        if ctx.rank == 0 and cfg.data.test_sets:
            from csrgan.train.evaluation import build_lpips

            self.lpips = build_lpips(cfg.eval, device)
        from csrgan.metrics import PROTOCOL

        self.constant_metrics: dict[str, Any] = {
            "phase": phase,
            "protocol": PROTOCOL.id,
            "weights": _weights_provenance(
                self.content_loss, self.lpips, want_lpips and bool(cfg.data.test_sets)
            ),
        }
        self.step = 0
        self.last_metrics: dict[str, Any] = {}
        # Per-rank randomness used during training (none of the built-in code draws from it, but user
        # losses / future augmentations might): seeded per rank, captured in checkpoints.
        torch.manual_seed(derive_seed(cfg.seed, ctx.rank, _TAG_GLOBAL))
        np.random.seed(derive_seed(cfg.seed, ctx.rank, _TAG_GLOBAL) % 2**32)
        random.seed(derive_seed(cfg.seed, ctx.rank, _TAG_GLOBAL))

    # ---------------------------------------------------------------------------------- checkpoint
    def _state(self) -> dict[str, Any]:
        per_rank = {"rng": capture_rng(), "lr_source": self.lr_source.state_dict()}
        ranks = _gather(self.ctx, per_rank)
        state: dict[str, Any] = {
            "format": FORMAT,
            "phase": self.phase,
            "step": self.step,
            "world_size": self.ctx.world_size,
            "model_config": self.model_cfg,
            "generator": unwrap(self.G).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "ranks": ranks,
            "metrics": dict(self.last_metrics),
        }
        if self.D is not None and self.opt_d is not None:
            state["discriminator"] = unwrap(self.D).state_dict()
            state["opt_d"] = self.opt_d.state_dict()
        return state

    def _restore(self, directory: Path) -> None:
        state = load_state(directory, map_location="cpu")
        where = Path(directory) / "state.pt"
        if state.get("format") != FORMAT:
            raise ValueError(f"{where}: not a csrgan SR checkpoint (format {state.get('format')!r})")
        if state["phase"] != self.phase:
            raise ValueError(f"{where}: checkpoint of phase {state['phase']!r}, this run is {self.phase!r}")
        if state["world_size"] != self.ctx.world_size:
            raise ValueError(
                f"{where}: written by {state['world_size']} workers, this run has {self.ctx.world_size}; "
                "the data shards differ, so it cannot continue exactly"
            )
        if dict(state["model_config"]) != self.model_cfg:
            raise ValueError(
                f"{where}: generator config {state['model_config']} != this run's {self.model_cfg}"
            )
        unwrap(self.G).load_state_dict(state["generator"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.D is not None and self.opt_d is not None:
            unwrap(self.D).load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        mine = state["ranks"][self.ctx.rank]
        restore_rng(mine["rng"])
        self.lr_source.load_state_dict(mine["lr_source"])
        self.step = int(state["step"])
        self.last_metrics = dict(state["metrics"])
        log.info("resumed %s phase from %s at step %d", self.phase, directory, self.step)

    def _write_checkpoint(self, final: bool) -> Path | None:
        state = self._state()  # collective: every rank
        if self.ctx.rank != 0:
            return None
        if final:
            directory = self.ctx.out_dir / FINAL_DIR
            save_state(directory, state)
            save_sr_generator(directory, self.G, self.model_cfg)
        else:
            directory = self.ctx.out_dir / ".staging" / step_dir_name(self.step)
            save_state(directory, state)
        return directory

    # ---------------------------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict[str, float]:
        from csrgan.train.evaluation import evaluate_sr_model

        if self.ctx.rank != 0 or not self.cfg.data.test_sets:
            return {}
        g = unwrap(self.G)
        was_training = g.training
        g.eval()
        try:
            return evaluate_sr_model(
                g,
                self.cfg.data.test_sets,
                self.cfg.data.scale,
                self.cfg.eval.metrics,
                self.lpips,
                self.device,
                tile=self.cfg.eval.tile,
                grid_dir=self.ctx.out_dir / "grids" / self.phase,
                step=self.step,
                grid_images=self.cfg.eval.grid_images,
                overlap=receptive_radius(self.model_cfg),
            )
        finally:
            g.train(was_training)

    # -------------------------------------------------------------------------------------- loop
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = make_batch(self.dataset, self.sampler.batch_indices(step), self.sampler.batch_epochs(step))
        hr = batch["hr"].to(self.device, non_blocking=True)
        lr_bic = batch["lr"].to(self.device, non_blocking=True)
        lr, mask = self.lr_source(lr_bic)
        return lr, hr, mask

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        latest = ctx.latest_checkpoint()
        if latest is not None:
            self._restore(Path(latest))
        every_eval = cfg.sr.eval_every
        every_ckpt = cfg.sr.checkpoint_every
        sums: dict[str, torch.Tensor] = {}
        n_steps, n_g, n_samples = 0, 0, 0
        t0 = time.perf_counter()
        while self.step < self.iters:
            step = self.step  # 0-based index of the batch being trained on
            lr, hr, mask = self._batch(step)
            losses = self.step_fn(lr, hr)
            self.step = step + 1
            for k, v in losses.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            n_steps += 1
            n_g += int(mask.sum())
            n_samples += mask.numel()
            finite = bool(torch.isfinite(torch.stack(list(losses.values()))).all())  # one host sync
            if _any_rank(ctx, not finite):
                return self._diverged(losses)
            is_last = self.step == self.iters
            do_eval = is_last or self.step % every_eval == 0
            do_ckpt = is_last or self.step % every_ckpt == 0
            if not (do_eval or do_ckpt):
                continue
            elapsed = time.perf_counter() - t0
            metrics: dict[str, Any] = {
                **self.constant_metrics,
                "step": self.step,
                "epoch": round(self.sampler.epoch_at(self.step), 6),
                "diverged": 0,
                **{f"loss/{k}": float(v) / n_steps for k, v in sums.items()},
                "mix/g_fraction": n_g / n_samples,
                "time/step_s": elapsed / n_steps,
            }
            if do_eval:
                metrics.update(self._evaluate())
            self.last_metrics = metrics
            directory = self._write_checkpoint(final=is_last) if do_ckpt else None
            ctx.report(metrics, checkpoint_dir=directory)
            if directory is not None and not is_last:
                shutil.rmtree(directory, ignore_errors=True)  # the context has persisted its own copy
            sums, n_steps, n_g, n_samples = {}, 0, 0, 0
            t0 = time.perf_counter()
        if ctx.rank == 0:
            shutil.rmtree(ctx.out_dir / ".staging", ignore_errors=True)
        return dict(self.last_metrics)

    def _diverged(self, losses: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        metrics = {
            **self.constant_metrics,
            "step": self.step,
            "epoch": round(self.sampler.epoch_at(self.step), 6),
            "diverged": 1,
            **{f"loss/{k}": float(v) for k, v in losses.items()},
        }
        log.warning("SR %s phase diverged at step %d (non-finite loss): %s", self.phase, self.step, metrics)
        self.ctx.report(metrics)
        self.last_metrics = metrics
        return dict(metrics)
