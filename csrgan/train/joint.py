"""Joint training of the degradation ``G`` and the SR network (report 6.4; ``sr.joint``).

After CycleSR (Chen et al., "Unsupervised Image Super-Resolution with an Indirect Supervised Path",
CVPRW 2020): instead of training the SR network on a frozen, cached ``G(x)`` (two-stage CSR-GAN), an
SR phase in ``sr.joint.phases`` keeps the degradation generator ``G: X -> Y`` (bicubic LR -> real-like
LR) and its critic training while the SR network trains on ``G``'s output, and the SR loss reaches
``G`` too (the *indirect supervised path*): ``G`` is pushed toward LR from which the SR network
recovers the HR, not only toward LR that the critic finds real.

Per step ``s`` (:class:`JointSRLoop`; ``nets``: the SR ``G`` (exported; its EMA ``G_ema`` with
``sr.ema``) and ``D``, plus ``G_deg`` and
``D_deg``):

1. **data** — the SR batch of step ``s`` (:class:`ContextPatchDataset`): HR patches, and for each the
   bicubic LR patch *with* ``G``'s receptive radius of context around it (``receptive_radius``; none
   for a generator that declares none, e.g. junyanz's ``resnet``), plus the sample's flips and
   its coin "use ``G``" (w.p. ``sr.mix_prob``). Crops, flips and coins are exactly those of the
   two-stage SR dataset with the same seed (the coin is :class:`~csrgan.data.datasets.PairedPatchDataset`'s
   own per-sample draw), so joint and two-stage runs are coupled sample for sample. ``G``'s noise
   input comes from the stream ``(seed, rank, NOISE, s)``; the real LR patches for the critic from
   the degradation stage's kind of dataset (``data.real_lr``, ``cyclegan.patch_size``/``batch_size``)
   on its own stream. The batch of step ``s`` is a pure function of ``s`` (exact resume).
2. **G forward, once** — ``G`` runs on the context windows, *before* the flips (as the cache is made:
   on the unflipped image); the centre crop is the patch (away from the image border the same pixels
   as ``G`` of the whole image, which the two-stage cache holds), rounded to uint8 levels in the
   forward (as the cache is) and passed straight through in the backward.
3. **the SR update** — :class:`csrgan.train.srgan.SRLoop`'s own step on
   ``lr = where(coin, G(x), x)`` fed as a *leaf* tensor; its backward leaves ``dL_SR/dlr`` there.
4. **G's update** — its own objective (frequency separation, as :mod:`csrgan.train.dsgan`: colour L1 on
   the low-pass against ``x``, the critic's texture GAN on the high-pass) plus ``sr_weight * dL_SR/dlr``
   on the samples that used ``G``, in **one** backward through ``G`` (so under DDP one forward, one
   backward: one gradient all-reduce); then Adam at ``sr.joint.lr``.
5. **the critic** — real high-pass -> 1, ``G``'s -> 0, as in stage 1.

``sr_weight: 0``: no SR gradient reaches ``G`` (it still learns on its own losses, on the SR data);
``lr: 0``: ``G`` and its critic are frozen (run without gradients, in eval mode; their reported
losses are monitors only); both 0 is two-stage CSR-GAN computed on the fly (the same LR as the cache
for a ``G`` without noise, away from image borders, where the window is reflect-padded here and the
whole image zero-padded per layer there).

``G_deg``/``D_deg`` start from the degradation stage's ``final/`` (``G`` and its critic ``D`` in
``state.pt``), or, in a GAN phase after a joint pre-training, from that pre-training's ``final/``;
fresh Adam optimisers (betas ``(cyclegan.beta1, 0.999)``), no schedule. Both are checkpointed with
the SR networks (exact resume). The phase exports the SR generator as ``final/``, and the jointly
trained ``G`` as ``final/degradation/`` (``generator.pt`` + ``generator.json``, role ``degradation``:
``csrgan`` loads it like any stage-1 ``G``).

Only the ``frequency_separation`` learner is supported (``cyclegan.learner: cyclegan`` would need
``F``, both critics and the image pools in the joint step): :func:`joint_problem` says so before
anything starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from csrgan.config import ExperimentConfig
from csrgan.data.datasets import PairedPatchDataset, UnpairedPatchDataset, mix_coin
from csrgan.data.io import to_tensor
from csrgan.frequency import high_pass, low_pass
from csrgan.models.artifacts import GeneratorSpec, load_with_spec, save_generator
from csrgan.registry import DEGRADATION_CRITICS, GAN_LOSSES
from csrgan.train.checkpoint import load_state
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.loop import derive_seed, evaluating, run_loop
from csrgan.train.sampling import IterationSampler
from csrgan.train.srgan import Phase, SRLoop

__all__ = [
    "DEGRADATION_DIR",
    "JOINT_LEARNERS",
    "LOSS_KEYS",
    "ContextPatchDataset",
    "JointSRLoop",
    "check_joint",
    "dihedral",
    "joint_problem",
    "train_joint",
]

#: ``final/degradation/``: the jointly trained degradation generator, beside the exported SR one
DEGRADATION_DIR = "degradation"
#: ``cyclegan.learner`` values the joint loop implements
JOINT_LEARNERS = ("frequency_separation",)
#: the losses the joint loop reports beside the SR phase's own
LOSS_KEYS = ("loss/deg_color", "loss/deg_texture", "loss/deg_d")

# Random streams of the joint loop, derived from (sr seed, rank, tag[, step]).
_STREAM_NOISE, _STREAM_REAL = 0x4A4E, 0x4A52  # "JN", "JR"


# ------------------------------------------------------------------------------------------ config
def joint_problem(cfg: ExperimentConfig) -> str | None:
    """Why this config's ``sr.joint`` cannot run (a user-facing sentence), or None."""
    if cfg.sr.joint.enabled and cfg.cyclegan.learner not in JOINT_LEARNERS:
        return (
            f"sr.joint.enabled trains the degradation G with the SR network, implemented for "
            f"cyclegan.learner {' | '.join(JOINT_LEARNERS)}; cyclegan.learner is {cfg.cyclegan.learner!r} "
            "(its F, second critic and image pools are not part of the joint step): set "
            "cyclegan.learner: frequency_separation or sr.joint.enabled: false"
        )
    return None


def check_joint(cfg: ExperimentConfig, phase: str) -> None:
    """Raise ``ValueError`` unless ``phase`` of ``cfg`` can train jointly."""
    problem = joint_problem(cfg)
    if problem is not None:
        raise ValueError(problem)
    if not cfg.sr.joint_in(phase):
        raise ValueError(
            f"the joint loop runs SR phases in sr.joint.phases {cfg.sr.joint.phases} with sr.joint.enabled "
            f"and the learned degradation; phase {phase!r} of this config is not one"
        )


# -------------------------------------------------------------------------------------------- data
class ContextPatchDataset(PairedPatchDataset):
    """The SR training samples of the joint loop, unflipped and with context for ``G``.

    Item ``i``: ``x`` — the bicubic LR window ``(3, lp + 2 margin, lp + 2 margin)`` centred on the LR
    patch (``lp = patch_size / scale``; reflect-padded where it leaves the image), ``hr`` — the aligned
    HR patch, ``flips`` — ``(hflip, vflip, transpose)`` to apply afterwards (:func:`dihedral`), ``alt``
    — the coin "use ``G``" (w.p. ``mix_prob``), ``index``, and the patch's LR position ``top``, ``left``
    (in the unpadded image). Crop position, flips and coin are drawn exactly as
    :class:`PairedPatchDataset` draws them (same streams, same order), so after :func:`dihedral` the
    centre of ``x`` and ``hr`` are its ``lr`` and ``hr`` and ``alt`` its ``alt`` for a ``mix_prob``
    source (tests/test_joint.py holds both to that).
    """

    def __init__(
        self,
        hr_dir: str | Path,
        *,
        scale: int,
        patch_size: int,
        margin: int,
        mix_prob: float,
        augment: bool = True,
        cache: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(hr_dir, scale=scale, patch_size=patch_size, augment=augment, cache=cache, seed=seed)
        if margin < 0:
            raise ValueError(f"ContextPatchDataset: margin must be >= 0, got {margin}")
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob!r}")
        self.margin, self.g_prob = int(margin), float(mix_prob)
        self._padded: dict[int, np.ndarray] = {}

    def padded_lr(self, k: int) -> np.ndarray:
        """Image ``k``'s bicubic LR, reflect-padded by ``margin`` on each side."""
        if k in self._padded:
            return self._padded[k]
        m = self.margin
        out = np.pad(self.pair(k)[0], ((m, m), (m, m), (0, 0)), mode="reflect")
        if self.cache:
            self._padded[k] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        k = index % self.n_images
        lr, hr = self.pair(k)
        lp, s, m = self.patch_size // self.scale, self.scale, self.margin
        h, w = lr.shape[:2]
        if h < lp or w < lp:
            raise ValueError(
                f"{self.hr_paths[k]}: LR {w}x{h} is smaller than the LR patch {lp}x{lp} "
                f"(patch_size {self.patch_size} / scale {self.scale})"
            )
        top, left = int(rng.integers(0, h - lp + 1)), int(rng.integers(0, w - lp + 1))
        coin = mix_coin(self.seed, self.epoch, index, self.g_prob)
        flips = [bool(rng.random() < 0.5) for _ in range(3)] if self.augment else [False] * 3
        x = self.padded_lr(k)[top : top + lp + 2 * m, left : left + lp + 2 * m]
        hr_p = hr[top * s : (top + lp) * s, left * s : (left + lp) * s]
        return {
            "x": to_tensor(x)[0],
            "hr": to_tensor(hr_p)[0],
            "flips": torch.tensor(flips),
            "alt": coin,
            "index": index,
            "top": top,
            "left": left,
        }


def dihedral(t: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Per sample of ``(N, C, H, W)``: h-flip, v-flip, transpose where ``flips[i]`` says (the order and
    axes of the patch datasets' augmentation); differentiable."""
    out = []
    for sample, (h, v, tr) in zip(t, flips.tolist(), strict=True):
        if h:
            sample = sample.flip(-1)
        if v:
            sample = sample.flip(-2)
        if tr:
            sample = sample.transpose(-1, -2)
        out.append(sample)
    return torch.stack(out)


def _uint8_levels(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the cache stores it: clamped to [0, 1] and rounded to /255 levels (:func:`to_uint8`)."""
    return t.clamp(0, 1).mul(255.0).add(0.5).floor().div(255.0)


@dataclass
class _Forward:
    """One step's batch and ``G`` forward, from the batch to ``G``'s update."""

    x: torch.Tensor  # bicubic LR windows (N, 3, lp + 2m, lp + 2m), unflipped
    fake: torch.Tensor  # G(x), same shape (with its graph when G learns)
    lr_g: torch.Tensor  # the centre of fake, flipped: what the SR network sees where the coin says G
    lr: torch.Tensor  # the SR step's input (a leaf: its .grad is dL_SR/dlr after the SR update)
    mask: torch.Tensor  # (N, 1, 1, 1) bool, the coin
    hr: torch.Tensor  # the HR patches, flipped


# --------------------------------------------------------------------------------- the networks
def _load_critic(cfg: ExperimentConfig, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    d = cfg.cyclegan.discriminator
    critic = DEGRADATION_CRITICS.build(d.type, **d.kwargs(), in_ch=3)
    try:
        critic.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{source}: its critic does not fit cyclegan.discriminator {d.model_dump()} of this config "
            f"(was the degradation stage trained with another one?): {exc}"
        ) from None
    return critic


def degradation_nets(
    cfg: ExperimentConfig, phase: str, init_from: Path | None, cyclegan_g: Path
) -> tuple[nn.Module, nn.Module, GeneratorSpec]:
    """``(G, critic, G's spec)`` to start joint training from, trainable.

    From the degradation stage's ``final/`` (``G`` and, in its ``state.pt``, the critic ``D``); in a GAN
    phase after a joint pre-training, the weights continue from that pre-training (``init_from``'s
    ``state.pt``: ``G_deg``, ``D_deg``).
    """
    G, spec = load_with_spec(cyclegan_g, "degradation", scale=cfg.data.scale)
    stage = load_state(cyclegan_g)
    if "D" not in stage["nets"]:
        raise ValueError(
            f"{cyclegan_g}: no critic 'D' in its state.pt (nets: {sorted(stage['nets'])}); sr.joint needs a "
            "frequency_separation degradation stage"
        )
    critic = _load_critic(cfg, stage["nets"]["D"], cyclegan_g)
    if phase == "gan" and cfg.sr.joint_in("pretrain") and init_from is not None:
        prev = load_state(init_from)["nets"]
        if "G_deg" not in prev or "D_deg" not in prev:
            raise ValueError(
                f"{init_from}: sr.joint.phases includes pretrain, but this pre-training has no jointly "
                "trained degradation (nets G_deg, D_deg); train the pre-training with this config"
            )
        G.load_state_dict(prev["G_deg"], strict=True)
        critic = _load_critic(cfg, prev["D_deg"], init_from)
    return G.train().requires_grad_(True), critic.train(), spec


# ------------------------------------------------------------------------------------------ the loop
class JointSRLoop(SRLoop):
    """An SR phase that trains the degradation ``G`` with it (module doc). ``nets``: ``G`` (exported),
    ``D`` (gan phase), ``G_deg``, ``D_deg``; ``optimizers`` likewise."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: TrainContext,
        phase: Phase,
        init_from: Path | None = None,
        cyclegan_g: Path | None = None,
    ) -> None:
        check_joint(cfg, phase)
        super().__init__(cfg, ctx, phase, init_from, cyclegan_g)
        assert cyclegan_g is not None  # SRLoop checked: joint needs the degradation stage
        j, cg = cfg.sr.joint, cfg.cyclegan
        self.sr_weight, self.g_learns = float(j.sr_weight), j.lr > 0
        self.sr_grad = self.g_learns and self.sr_weight > 0  # does dL_SR/dlr reach G at all
        G, critic, self.deg_spec = degradation_nets(cfg, phase, init_from, Path(cyclegan_g))
        self.margin = int(getattr(G, "receptive_radius", 0))
        self.nets["G_deg"], self.nets["D_deg"] = self.prepare(G), self.prepare(critic)
        for name in ("G_deg", "D_deg"):
            self.optimizers[name] = torch.optim.Adam(self.nets[name].parameters(), j.lr, (cg.beta1, 0.999))
        self.deg_gan_loss = GAN_LOSSES.build("vanilla")  # as the frequency-separation learner
        self._build_joint_data()
        self._n_joint_g = self._n_joint = 0

    def _build_joint_data(self) -> None:
        cfg, d, cg, ctx = self.cfg, self.cfg.data, self.cfg.cyclegan, self.ctx
        # the config: the learned degradation (which joint needs) needs data.real_lr; SRLoop: train_hr
        assert d.train_hr is not None and d.real_lr is not None
        self.dataset = ContextPatchDataset(
            d.train_hr, scale=d.scale, patch_size=cfg.sr.patch_size, margin=self.margin,
            mix_prob=cfg.sr.mix_prob, augment=True, cache=d.cache, seed=cfg.seed,
        )  # fmt: skip
        self.sampler = IterationSampler(
            len(self.dataset),
            cfg.sr.batch_size,
            cfg.seed,
            ctx.rank,
            ctx.world_size,
            prefetch=cfg.resources.prefetch,
        )
        real_seed = derive_seed(cfg.seed, _STREAM_REAL)
        self.real = UnpairedPatchDataset(
            d.real_lr, patch_size=cg.patch_size, augment=True, cache=d.cache, seed=real_seed
        )
        self.real_sampler = IterationSampler(
            len(self.real), cg.batch_size, real_seed, ctx.rank, ctx.world_size
        )

    # ----------------------------------------------------------------------------------- the step
    def _degrade(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """``G(x)`` (float32); a ``G`` with a noise input draws it from the stream of ``(rank, step)``."""
        G = self.nets["G_deg"]
        noisy = bool(getattr(unwrap(G), "noise_channels", 0))
        if not self.g_learns:
            with torch.no_grad(), evaluating(G) as plain, self.autocast():
                return self._call(plain, x, step, noisy).float()
        with self.autocast():
            return self._call(G, x, step, noisy).float()

    def _call(self, G: nn.Module, x: torch.Tensor, step: int, noisy: bool) -> torch.Tensor:
        if not noisy:
            return G(x)
        seed = derive_seed(self.seed, self.ctx.rank, _STREAM_NOISE, step)
        return G(x, generator=torch.Generator().manual_seed(seed))

    def joint_batch(self, step: int) -> _Forward:
        """The SR batch of ``step``: ``hr`` and ``lr = where(coin, G(x), x)`` (a leaf), ``G``'s forward."""
        batch = self.sampler.read(self.dataset, step)
        x = batch["x"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        flips, m = batch["flips"], self.margin
        lp = self.cfg.sr.patch_size // self.cfg.data.scale
        fake = self._degrade(x, step)
        lr_g = dihedral(fake[..., m : m + lp, m : m + lp], flips)
        bicubic = dihedral(x[..., m : m + lp, m : m + lp], flips)
        mask = batch["alt"].to(self.device).view(-1, 1, 1, 1)
        lr = torch.where(mask, _uint8_levels(lr_g.detach()), bicubic).requires_grad_(self.sr_grad)
        hr = dihedral(batch["hr"], flips).to(self.device, non_blocking=True)
        return _Forward(x, fake, lr_g, lr, mask, hr)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """The SR update on :meth:`joint_batch` (then its schedules and EMA), ``G``'s, the critic's."""
        fwd = self.joint_batch(step)
        self._n_joint_g += int(fwd.mask.sum())
        self._n_joint += fwd.mask.numel()
        losses = self.step_fn(fwd.lr, fwd.hr)  # its backward leaves dL_SR/dlr in fwd.lr.grad
        self.after_update()
        y = self.real_sampler.read(self.real, step)["image"]
        y = y.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        deg = self._degradation_update(fwd, y) if self.g_learns else self._degradation_monitor(fwd, y)
        return {**losses, **deg}

    def _generator_terms(self, fwd: _Forward, critic: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Frequency separation (:mod:`csrgan.train.dsgan`): colour L1 on the low-pass, texture GAN."""
        fs = self.cfg.cyclegan.frequency_separation
        k = fs.low_pass
        with self.autocast():
            color = fs.color_weight * F.l1_loss(low_pass(fwd.fake, k), low_pass(fwd.x, k))
            texture = fs.texture_weight * self.deg_gan_loss(critic(high_pass(fwd.fake, k)).float(), True)
        return color, texture

    def _critic_loss(self, critic: nn.Module, fwd: _Forward, y: torch.Tensor) -> torch.Tensor:
        k = self.cfg.cyclegan.frequency_separation.low_pass
        with self.autocast():
            return self.deg_gan_loss(critic(high_pass(y, k)).float(), True) + self.deg_gan_loss(
                critic(high_pass(fwd.fake.detach(), k)).float(), False
            )

    def _degradation_update(self, fwd: _Forward, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``G``: its own objective + ``sr_weight`` x the SR gradient, one backward; then the critic."""
        G_opt, D_opt, D = self.optimizers["G_deg"], self.optimizers["D_deg"], self.nets["D_deg"]
        unwrap(D).requires_grad_(False)  # frozen and unwrapped in G's update (as in stage 1)
        G_opt.zero_grad(set_to_none=True)
        color, texture = self._generator_terms(fwd, unwrap(D))
        tensors, grads = [color + texture], [None]
        if self.sr_grad:
            if fwd.lr.grad is None:
                raise RuntimeError("JointSRLoop: the SR step did not backpropagate into its LR input")
            tensors.append(fwd.lr_g)
            grads.append(torch.where(fwd.mask, fwd.lr.grad, 0.0) * self.sr_weight)
        torch.autograd.backward(tensors, grads)
        G_opt.step()
        unwrap(D).requires_grad_(True)
        D_opt.zero_grad(set_to_none=True)
        d_loss = self._critic_loss(D, fwd, y)
        d_loss.backward()
        D_opt.step()
        return {"deg_color": color.detach(), "deg_texture": texture.detach(), "deg_d": d_loss.detach()}

    @torch.no_grad()
    def _degradation_monitor(self, fwd: _Forward, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sr.joint.lr: 0``: the same losses of the frozen ``G`` and critic (eval mode: nothing moves)."""
        with evaluating(self.nets["D_deg"]) as critic:
            color, texture = self._generator_terms(fwd, critic)
            d_loss = self._critic_loss(critic, fwd, y)
        return {"deg_color": color, "deg_texture": texture, "deg_d": d_loss}

    # ------------------------------------------------------------------------------ skeleton hooks
    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "joint_sr_weight": self.sr_weight}

    def window_metrics(self) -> dict[str, Any]:
        """The SR phase's, with ``mix/g_fraction`` counted here (the share of LR made by ``G``)."""
        out = super().window_metrics()
        if self._n_joint:
            out["mix/g_fraction"] = self._n_joint_g / self._n_joint
        self._n_joint_g = self._n_joint = 0
        return out

    def degradation_spec(self) -> GeneratorSpec:
        """The jointly trained ``G``'s spec: the stage's, with this phase's provenance in ``meta``."""
        meta = {
            "stage": self.stage,
            "key": self.key,
            "step": self.step,
            "joint": True,
            "from": self.deg_spec.meta,
        }
        return dataclasses.replace(self.deg_spec, meta=meta)

    def export_extra(self, final: Path) -> None:
        """Besides the SR generator: ``final/degradation/``, the jointly trained ``G``."""
        super().export_extra(final)
        save_generator(final / DEGRADATION_DIR, unwrap(self.nets["G_deg"]), self.degradation_spec())


def train_joint(
    cfg: ExperimentConfig,
    ctx: TrainContext,
    phase: Phase,
    init_from: Path | None = None,
    cyclegan_g: Path | None = None,
) -> dict[str, Any]:
    """:func:`csrgan.train.srgan.train_sr` for a phase that trains jointly (``cfg.sr.joint_in(phase)``).

    ``cyclegan_g``: the degradation stage's ``final/`` (required). A phase with ``iters: 0`` trains
    nothing and returns ``{"skipped": 1, ...}``.
    """
    check_joint(cfg, phase)
    if (cfg.sr.pretrain.iters if phase == "pretrain" else cfg.sr.gan.iters) == 0:
        return {"skipped": 1, "phase": phase, "step": 0}
    return run_loop(lambda: JointSRLoop(cfg, ctx, phase, init_from, cyclegan_g), cfg, ctx)
