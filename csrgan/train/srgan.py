"""The SR trainer (CSR-GAN stage 2): pixel-loss pre-training and the GAN phase, on the shared loop skeleton.

:func:`train_sr` runs one phase of Ledig et al. 2017 (SRGAN) or, by configuration, Wang et al. 2018
(ESRGAN: experiments/esrgan_mix_prob.yaml) on the trainer's context (Ray Train worker, or a single
process with :class:`csrgan.train.context.LocalContext`); :class:`csrgan.train.loop.TrainLoop` owns
cadence, checkpoints, resume, divergence and DDP bookkeeping, so this module holds only SR:

* ``"pretrain"`` (stage A, "SRResNet" / ESRGAN's PSNR-oriented RRDBNet): generator only, pixel loss
  (``sr.pretrain.loss``), Adam.
* ``"gan"`` (stage B): generator (from ``init_from``, the pretrain artefact) + discriminator;
  ``L_G = content.weight * content + adv_weight * adversarial + pixel_weight * pixel`` (``pixel``:
  ``sr.gan.pixel_loss``) and the discriminator's loss (``sr.gan.gan_mode``): ``-log D(HR) - log(1 -
  D(SR))`` for ``vanilla`` (SRGAN), or ESRGAN's relativistic average loss for ``ragan``
  (:class:`csrgan.losses.RelativisticAverageGANLoss`); Adam with ``sr.gan.lr``.

Networks, losses and schedules are built by name (``sr.generator``, ``sr.discriminator``,
``sr.pretrain.loss``, ``sr.gan.content``, ``sr.gan.pixel_loss``, ``sr.*.schedule``; :mod:`csrgan.registry`).

Training LR (both phases): MATLAB bicubic of the HR patch, replaced per sample with probability
``sr.mix_prob`` (the report's *p*) by the LR of ``sr.lr_source`` at the same position
(:class:`csrgan.data.datasets.PairedPatchDataset`): ``cyclegan`` crops the degradation stage's cached
``G(bicubic LR)`` of the whole image (``final/lr/``; ``G`` never runs here), ``pipeline`` applies a
synthetic degradation to the HR patch on the fly (seeded per sample), ``paired`` crops
``data.train_lr``. ``p = 1`` with ``cyclegan`` is CSR-GAN, ``p = 0`` plain SRGAN.

Batches: ``sr.batch_size`` is **per worker** (Ray Train convention; the global batch is
``batch_size * workers``). Learning rates follow each phase's ``schedule`` (:mod:`csrgan.train.schedules`:
``constant`` by default, ``multistep``, ``cosine``), one scheduler per optimiser stepped once per
iteration; every report carries ``lr`` (G's rate for the next update), every row the schedule
(``lr_schedule``).

EMA (``sr.ema``): ``nets["G_ema"]`` (:class:`csrgan.train.ema.ModelEMA`) follows G after every
iteration; it is checkpointed with the other nets, evaluated, and exported as ``final/`` (so the GAN
phase starts from the pre-training's EMA); the raw G stays in the checkpoint as ``nets["G"]``.

Determinism and exact resume: networks (and an explicitly random VGG) are built right after the
construction seed, identically on every rank; the data position is the step
(:class:`csrgan.train.sampling.IterationSampler`), and every per-sample draw (crop, flips, LR source,
pipeline parameters) comes from that sample's own stream, so nothing about the data needs saving.
No GradScaler exists because AMP here is bf16, whose exponent range is fp32's.

Under DDP (``ctx.prepare_model``) parameters stay identical on all ranks; BatchNorm running statistics
are per rank when the context disables buffer broadcasting (csrgan's Ray context does), and rank 0's
are the ones checkpointed and used for evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from csrgan.config import ExperimentConfig
from csrgan.data.datasets import AltLR, CachedLR, PairedPatchDataset, PipelineLR, list_images
from csrgan.data.degradations import default_pipeline, load_pipeline
from csrgan.models.artifacts import GeneratorSpec, build_generator, load_with_spec, read_generator
from csrgan.registry import GAN_LOSSES, LOSSES, SR_DISCRIMINATORS
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.degradation import lr_cache_dirs
from csrgan.train.ema import ModelEMA
from csrgan.train.keys import gan_key, pretrain_key
from csrgan.train.loop import TrainLoop, evaluating, run_loop
from csrgan.train.sampling import IterationSampler
from csrgan.train.schedules import build_schedule, describe, lr_now

__all__ = ["SRLoop", "SRStep", "generator_spec", "lr_source", "train_sr"]

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "gan"]
PHASES: tuple[str, ...] = ("pretrain", "gan")


def generator_spec(cfg: ExperimentConfig, **meta: Any) -> GeneratorSpec:
    """The spec of this experiment's SR generator (``sr.generator`` at ``data.scale``)."""
    g = cfg.sr.generator
    return GeneratorSpec("sr", g.type, g.kwargs(), cfg.data.scale, dict(meta))


# ----------------------------------------------------------------------------------------- one step
class SRStep:
    """One optimisation step of either phase on a prepared batch; no data loading, no I/O.

    ``G`` and ``D`` are what ``ctx.prepare_model`` returned (DDP-wrapped when distributed). In the
    generator update the adversarial term runs the *unwrapped* discriminator with its parameters
    frozen: those gradients are never used, and keeping D's DDP wrapper out of G's backward means no
    gradient all-reduce for D there. The discriminator update runs real and fake through the wrapper
    with one backward each (BasicSR's order), so every DDP forward is matched by its backward.
    ``pixel_loss`` is the pretrain phase's loss and the GAN phase's pixel term; a ``gan_loss`` with
    ``relativistic = True`` (``ragan``) is called as ``generator(real, fake)`` /
    ``discriminator_real`` / ``discriminator_fake`` instead of ``loss(logits, target_is_real)``.
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
        sr, fake_logits, g_losses = self._generator_update(lr, hr)
        d_real, d_fake = self._discriminator_update(hr, sr, fake_logits)
        return {**g_losses, "d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def _generator_update(
        self, lr: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Content + adversarial (+ pixel) step of G; returns ``G(lr)`` and ``C(G(lr))``, detached.

        The adversarial term runs the unwrapped D, frozen. A relativistic loss also needs ``C(HR)``: a
        target here (no graph, no gradient to D; BasicSR detaches it too)."""
        assert self.D is not None and self.content_loss is not None and self.gan_loss is not None
        d_plain = unwrap(self.D)
        d_plain.requires_grad_(False)
        with self._autocast(lr.device):
            sr = self.G(lr)
            sr32 = sr.float()
            content = self.content_loss(sr32, hr)
            fake_logits = d_plain(sr).float()
            if getattr(self.gan_loss, "relativistic", False):
                with torch.no_grad():
                    real_logits = d_plain(hr).float()
                adv = self.gan_loss.generator(real_logits, fake_logits)
            else:
                adv = self.gan_loss(fake_logits, True)
            pixel = self.pixel_loss(sr32, hr) if self.pixel_weight > 0 else sr32.new_zeros(())
            total = self.content_weight * content + self.adv_weight * adv + self.pixel_weight * pixel
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        d_plain.requires_grad_(True)
        losses = {"g_total": total, "content": content, "adv": adv, "pixel": pixel}
        return sr.detach(), fake_logits.detach(), {k: v.detach() for k, v in losses.items()}

    def _discriminator_update(
        self, hr: torch.Tensor, sr: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real, then fake, through D's wrapper with one backward each; returns the two loss terms.

        Standard losses: real -> 1, fake -> 0. Relativistic (BasicSR's order): the real term uses the
        detached mean of ``fake_logits`` (``C(G(lr))`` from the generator update: D has not changed
        since, so these are BasicSR's ``net_d(output).detach()`` without another forward), the fake
        term the detached mean of the real logits just computed."""
        assert self.D is not None and self.opt_d is not None and self.gan_loss is not None
        relativistic = getattr(self.gan_loss, "relativistic", False)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast(hr.device):
            real_logits = self.D(hr).float()
            if relativistic:
                d_real = self.gan_loss.discriminator_real(real_logits, fake_logits)
            else:
                d_real = self.gan_loss(real_logits, True)
        d_real.backward()
        with self._autocast(hr.device):
            fake_now = self.D(sr).float()
            if relativistic:
                d_fake = self.gan_loss.discriminator_fake(real_logits.detach(), fake_now)
            else:
                d_fake = self.gan_loss(fake_now, False)
        d_fake.backward()
        self.opt_d.step()
        return d_real, d_fake


# ------------------------------------------------------------------------------------------ the loop
def _weights_provenance(content_loss: nn.Module | None, lpips: Any, want_lpips: bool) -> str:
    parts = []
    if content_loss is not None and hasattr(content_loss, "provenance"):
        parts.append(str(content_loss.provenance))
    if lpips is not None:
        parts.append(str(lpips.provenance))
    elif want_lpips:
        parts.append("lpips:none (weights missing, eval.lpips.optional)")
    return ";".join(parts) if parts else "none"


def _check_phase(cfg: ExperimentConfig, phase: str, cyclegan_g: Path | None) -> None:
    if phase not in PHASES:
        raise ValueError(f"train_sr: phase must be one of {PHASES}, got {phase!r}")
    p, src = cfg.sr.mix_prob, cfg.sr.lr_source
    if cfg.sr.uses_degradation_stage() and cyclegan_g is None:
        raise ValueError(
            f"sr.mix_prob is {p} > 0 with sr.lr_source 'cyclegan': the degradation stage (cyclegan_g) "
            "is required"
        )
    if not cfg.sr.uses_degradation_stage() and cyclegan_g is not None:
        raise ValueError(
            f"sr.mix_prob={p:g}, sr.lr_source={src!r} does not use the degradation stage, but one was given: "
            f"{cyclegan_g}"
        )
    d_type = cfg.sr.discriminator.type
    if phase == "gan" and d_type == "srgan" and cfg.sr.patch_size % 16:
        raise ValueError(
            f"sr.patch_size ({cfg.sr.patch_size}) must be a multiple of 16 for the gan phase: the SRGAN "
            "discriminator has 4 stride-2 convs"
        )
    if phase == "gan" and d_type == "vgg128" and cfg.sr.patch_size < 32:
        raise ValueError(
            f"sr.patch_size ({cfg.sr.patch_size}) must be >= 32 for sr.discriminator type vgg128: the ESRGAN "
            "discriminator has 5 stride-2 convs"
        )


class SRLoop(TrainLoop):
    """One SR phase as a :class:`TrainLoop`. ``nets``: ``G``, ``D`` in the gan phase, and ``G_ema`` with
    ``sr.ema`` (a :class:`csrgan.train.ema.ModelEMA`); the exported and evaluated net is ``G_ema`` when
    there is one, else ``G``. ``schedulers``: one per optimiser, from the phase's ``schedule``."""

    exported = "G"

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: TrainContext,
        phase: Phase,
        init_from: Path | None = None,
        cyclegan_g: Path | None = None,
    ) -> None:
        _check_phase(cfg, phase, cyclegan_g)
        pretrain = phase == "pretrain"
        super().__init__(
            cfg,
            ctx,
            stage=phase,
            key=pretrain_key(cfg) if pretrain else gan_key(cfg),
            seed=cfg.seed,
            iters=cfg.sr.pretrain.iters if pretrain else cfg.sr.gan.iters,
            eval_every=cfg.sr.eval_every,
            checkpoint_every=cfg.sr.checkpoint_every,
        )
        # Construction order is part of the seed contract: G, then D and the content loss.
        self.nets["G"] = self.prepare(self._generator(init_from))
        self.content_loss: nn.Module | None = None
        self.step_fn = self._pretrain_step() if pretrain else self._gan_step()
        self.ema: ModelEMA | None = None
        if cfg.sr.ema is not None:  # a copy of the phase's initial G (after init_from): no RNG draw
            self.ema = ModelEMA(unwrap(self.nets["G"]), cfg.sr.ema.decay)  # plain, on the device
            self.nets["G_ema"] = self.ema
            self.exported = "G_ema"
        self.dataset = _build_dataset(cfg, cyclegan_g)
        self.sampler = IterationSampler(
            len(self.dataset),
            cfg.sr.batch_size,
            cfg.seed,
            ctx.rank,
            ctx.world_size,
            prefetch=cfg.resources.prefetch,
        )
        self.lpips: Any = None
        if ctx.rank == 0 and cfg.data.test_sets:
            from csrgan.evaluation import build_lpips

            self.lpips = build_lpips(cfg.eval, self.device)
        self._n_g = self._n_samples = self._window_steps = 0

    def _generator(self, init_from: Path | None) -> nn.Module:
        spec = self.generator_spec()
        g = build_generator(spec)
        if init_from is not None:
            state, init_spec = read_generator(init_from)
            if (init_spec.role, init_spec.type, init_spec.args, init_spec.scale) != (
                spec.role,
                spec.type,
                spec.args,
                spec.scale,
            ):
                raise ValueError(f"init_from {init_from}: its generator {init_spec} is not this run's {spec}")
            g.load_state_dict(state, strict=True)
        return g

    def _pretrain_step(self) -> SRStep:
        p = self.cfg.sr.pretrain
        self.optimizers["G"] = torch.optim.Adam(self.nets["G"].parameters(), lr=p.lr, betas=(0.9, 0.999))
        self.schedulers["G"] = build_schedule(p.schedule, self.optimizers["G"], p.iters)
        pixel = LOSSES.build_with(p.loss, {}, self._loss_context())
        return SRStep(
            "pretrain", self.nets["G"], self.optimizers["G"], pixel, amp_dtype=self.amp_dtype,
            channels_last=self.memory_format == torch.channels_last,
        )  # fmt: skip

    def _gan_step(self) -> SRStep:
        cfg, g = self.cfg, self.cfg.sr.gan
        d = cfg.sr.discriminator
        self.nets["D"] = self.prepare(
            SR_DISCRIMINATORS.build(d.type, **d.kwargs(), in_ch=3, patch_size=cfg.sr.patch_size)
        )
        content = LOSSES.build_with(g.content.type, g.content.kwargs(), self._loss_context()).to(self.device)
        if hasattr(content, "provenance"):
            self.content_loss = content
        for name in ("G", "D"):
            self.optimizers[name] = torch.optim.Adam(
                self.nets[name].parameters(), lr=g.lr, betas=(0.9, 0.999)
            )
            self.schedulers[name] = build_schedule(g.schedule, self.optimizers[name], g.iters)
        pixel = LOSSES.build_with(g.pixel_loss, {}, self._loss_context())
        return SRStep(
            "gan", self.nets["G"], self.optimizers["G"], pixel, discriminator=self.nets["D"],
            opt_d=self.optimizers["D"], content_loss=content, gan_loss=GAN_LOSSES.build(g.gan_mode),
            content_weight=g.content.weight, adv_weight=g.adv_weight, pixel_weight=g.pixel_weight,
            amp_dtype=self.amp_dtype, channels_last=self.memory_format == torch.channels_last,
        )  # fmt: skip

    def _loss_context(self) -> dict[str, Any]:
        """What csrgan injects into losses: where the pretrained backbones are (never a silent download)."""
        w = self.cfg.weights
        return {"weights_source": w.vgg19, "random_init": w.random_vgg}

    # ----------------------------------------------------------------------------------- the step
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        batch = self.sampler.read(self.dataset, step)
        hr = batch["hr"].to(self.device, non_blocking=True)
        lr = batch["lr"].to(self.device, non_blocking=True)
        self._n_g += int(batch["alt"].sum())
        self._n_samples += int(batch["alt"].numel())
        losses = self.step_fn(lr, hr)
        self.after_update()
        return losses

    def after_update(self) -> None:
        """After each iteration's optimiser steps: every schedule advances once, the EMA follows G."""
        for sched in self.schedulers.values():
            sched.step()
        if self.ema is not None:
            self.ema.update(self.nets["G"])  # the unwrapped G's parameters: identical on every rank
        self._window_steps += 1

    # ------------------------------------------------------------------------------ skeleton hooks
    def generator_spec(self) -> GeneratorSpec:
        return generator_spec(self.cfg, stage=self.stage, key=self.key, step=self.step, seed=self.cfg.seed)

    def epoch_at(self, step: int) -> float:
        return self.sampler.epoch_at(step)

    def provenance(self) -> str:
        want = "lpips" in self.cfg.eval.metrics and bool(self.cfg.data.test_sets)
        return _weights_provenance(self.content_loss, self.lpips, want)

    def settings(self) -> dict[str, Any]:
        """The phase's learning-rate schedule (:func:`csrgan.train.schedules.describe`) and EMA decay."""
        sr = self.cfg.sr
        spec = sr.pretrain.schedule if self.stage == "pretrain" else sr.gan.schedule
        ema = sr.ema.decay if sr.ema is not None else None
        return {**super().settings(), "lr_schedule": describe(spec), "ema_decay": ema}

    def window_metrics(self) -> dict[str, Any]:
        """``mix/g_fraction``, ``lr`` (G's rate for the next update) and, when the sampler measures it,
        ``time/data_s`` (seconds per step spent waiting for batches)."""
        out: dict[str, Any] = {"mix/g_fraction": self._n_g / self._n_samples} if self._n_samples else {}
        out["lr"] = lr_now(self.schedulers["G"])
        pop_wait = getattr(self.sampler, "pop_wait_s", None)
        if pop_wait is not None:
            waited = float(pop_wait())
            if self._window_steps:
                out["time/data_s"] = waited / self._window_steps
        self._n_g = self._n_samples = self._window_steps = 0
        return out

    def evaluate(self) -> dict[str, float]:
        from csrgan.evaluation import evaluate_sr_model
        from csrgan.grids import eval_round, run_caption

        if not self.cfg.data.test_sets:
            return {}
        sr = self.cfg.sr
        params: dict[str, object] = {"p": float(sr.mix_prob)}
        if sr.mix_prob > 0:  # at p = 0 the LR source is never drawn from
            params["lr_source"] = sr.lr_source
        params["seed"] = self.cfg.seed
        caption = run_caption(self.ctx.out_dir, self.stage, params)
        with evaluating(self.nets[self.exported]) as g:  # the EMA when there is one
            return evaluate_sr_model(
                g,
                self.cfg.data.test_sets,
                self.cfg.data.scale,
                self.cfg.eval.metrics,
                self.lpips,
                self.device,
                tile=self.cfg.eval.tile,
                grid_dir=self.ctx.out_dir / "grids" / self.stage,
                step=self.step,
                grid_images=self.cfg.eval.grid_images,
                caption=caption,
                grid_round=eval_round(self.step, self.eval_every),  # rotates through the test images
            )


def lr_source(cfg: ExperimentConfig, cyclegan_g: Path | None) -> AltLR | None:
    """The non-bicubic training LR of ``sr.lr_source`` (None at ``p = 0``)."""
    sr, d = cfg.sr, cfg.data
    if sr.mix_prob == 0:
        return None
    assert d.train_hr is not None
    hr_paths = list_images(d.train_hr)
    if sr.lr_source == "cyclegan":
        assert cyclegan_g is not None  # _check_phase
        load_with_spec(cyclegan_g, "degradation", scale=d.scale)  # a degradation G for this scale
        return CachedLR(lr_cache_dirs(cyclegan_g), hr_paths, d.scale, id=f"cyclegan-{cyclegan_g.parent.name}")
    if sr.lr_source == "pipeline":
        pipe = default_pipeline() if sr.pipeline is None else load_pipeline(sr.pipeline)
        return PipelineLR(pipe, d.scale)
    assert d.train_lr is not None  # config cross-check
    return CachedLR([d.train_lr], hr_paths, d.scale, id="paired")


def _build_dataset(cfg: ExperimentConfig, cyclegan_g: Path | None) -> PairedPatchDataset:
    d = cfg.data
    if d.train_hr is None:
        raise ValueError("data.train_hr is not set (resolve the config with csrgan.data.layout.resolve_data)")
    return PairedPatchDataset(
        d.train_hr,
        scale=d.scale,
        patch_size=cfg.sr.patch_size,
        lr_dir=None,
        augment=True,
        cache=d.cache,
        seed=cfg.seed,
        alt=lr_source(cfg, cyclegan_g),
        mix_prob=cfg.sr.mix_prob,
    )


def train_sr(
    cfg: ExperimentConfig,
    ctx: TrainContext,
    phase: Phase,
    init_from: Path | None = None,
    cyclegan_g: Path | None = None,
) -> dict[str, Any]:
    """Run one SR phase to ``iters`` (resuming from ``ctx.latest_checkpoint()``); returns the final metrics.

    ``init_from``: a ``final/`` artefact or checkpoint directory whose generator starts this phase
    (ignored when resuming). ``cyclegan_g``: the degradation stage's ``final/`` artefact (with its
    cached LR), required iff ``sr.mix_prob > 0`` and ``sr.lr_source`` is ``cyclegan``. A phase with
    ``iters: 0`` trains nothing, reports nothing, writes no
    artefact and returns ``{"skipped": 1, ...}``. A non-finite loss ends the run with one report
    ``{"diverged": 1, ...}`` on every rank (no checkpoint, no exception).
    """
    _check_phase(cfg, phase, cyclegan_g)
    if (cfg.sr.pretrain.iters if phase == "pretrain" else cfg.sr.gan.iters) == 0:
        return {"skipped": 1, "phase": phase, "step": 0}
    return run_loop(lambda: SRLoop(cfg, ctx, phase, init_from, cyclegan_g), cfg, ctx)
