"""Stage 1, CycleGAN learner (``cyclegan.learner: cyclegan``): ``G: X -> Y`` from unpaired patches.

One per-worker loop function, :func:`train_cyclegan`, on the degradation skeleton
(:class:`csrgan.train.degradation.DegradationLoop`: data, evaluation, fidelity, cached LR; on
:class:`csrgan.train.loop.TrainLoop`: cadence, checkpoints, resume, divergence, DDP bookkeeping);
this module holds only the CycleGAN: its networks, losses and step. It follows the
authors' ``cycle_gan_model.py`` (junyanz/pytorch-CycleGAN-and-pix2pix) step for step, one small
method per loss.

Naming convention (junyanz's code names, with the paper's symbols):

=========  ===================  ===========================================================
code       paper (Zhu et al.)   here
=========  ===================  ===========================================================
real_A     x ∈ X                bicubic LR patch (MATLAB bicubic of an HR image of ``data.train_hr``)
real_B     y ∈ Y                real LR patch (``data.real_lr``, unpaired)
G_A        G: X -> Y            bicubic -> real-like LR; **the network CSR-GAN keeps** (``final/``)
G_B        F: Y -> X            real -> bicubic-like LR; only needed for the cycle losses
D_A        D_Y                  judges Y: real ``y`` vs ``G(x)``
D_B        D_X                  judges X: bicubic ``x`` vs ``F(y)``
=========  ===================  ===========================================================

Losses per iteration (λ = ``cyclegan.lambda_cycle``, λ_idt = ``cyclegan.lambda_identity``):

* generators (one Adam over G_A and G_B): ``L_GAN(D_Y(G(x)), 1) + L_GAN(D_X(F(y)), 1)`` (LSGAN, i.e.
  MSE to the label) ``+ λ (|F(G(x)) - x|_1 + |G(F(y)) - y|_1)`` ``+ λ_idt λ (|G(y) - y|_1 + |F(x) - x|_1)``;
* discriminators (one Adam over D_A and D_B): ``0.5 (L_GAN(D_Y(y), 1) + L_GAN(D_Y(ŷ), 0))`` and the same
  for ``D_X``, where ``ŷ`` / ``x̂`` are drawn from image pools (history of 50 fakes; Shrivastava et al.).

Networks come from the registries named in the config (junyanz's setup: ``cyclegan.generator:
{type: resnet}``, ``cyclegan.discriminator: {type: patchgan}``) with junyanz's init (normal, gain
0.02), except a generator that keeps its own init (``residual``: the identity at step 0).
Adam(lr, betas=(beta1, 0.999)); the learning rate is constant until ``decay_start`` (default
``iters // 2``) and then decays linearly to 0 at ``iters`` (:class:`LinearDecay`). Reported losses
(``loss/cycle``, ``loss/idt``, ``loss/g_gan``, ``loss/d``, ``loss/g``) are the terms *as weighted in the
objective*, summed over both directions, averaged over the iterations since the previous report and
over ranks.

Data (:class:`csrgan.train.degradation.DegradationLoop`): X is MATLAB bicubic of ``data.train_hr``
(never ``data.train_lr``), Y random crops of ``data.real_lr``; ``batch_size`` is per worker.

Distributed. Each of G_A, G_B, D_A, D_B goes through ``ctx.prepare_model`` separately. In the
generator step the discriminators are frozen and called *unwrapped*: their DDP wrappers exist to
all-reduce D gradients, and a frozen D has none (a DDP forward there would only add bookkeeping).
Evaluation runs on rank 0 with the unwrapped G_A (no collectives), while the other ranks wait in
``ctx.report``. Checkpoints hold each rank's own image pools (and RNG states), so a multi-worker run
resumes bit-for-bit too.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from csrgan.config import CycleGANConfig, ExperimentConfig
from csrgan.losses import GANLoss, ImagePool, cycle_loss, identity_loss
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.degradation import PHASE, STREAM_POOL_X, STREAM_POOL_Y, DegradationLoop, generator_spec
from csrgan.train.loop import run_loop

__all__ = ["LOSS_KEYS", "PHASE", "CycleGANLoop", "LinearDecay", "generator_spec", "train_cyclegan"]

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss/cycle", "loss/idt", "loss/g_gan", "loss/d", "loss/g")


# ------------------------------------------------------------------------------------------ schedule
class LinearDecay:
    """``LambdaLR`` factor: 1 for ``step < decay_start``, then linear to exactly 0 at ``step == iters``.

    ``step`` is the number of optimiser steps taken so far, so the update of iteration ``i`` (0-based)
    uses ``lr * factor(i)``. Junyanz's epoch rule ``1 - max(0, e - n) / (n_decay + 1)`` never reaches 0;
    here the last update (``i = iters - 1``) uses ``lr / (iters - decay_start)`` and the factor is 0 at
    ``iters``. A plain class (not a lambda) so ``LambdaLR.state_dict()`` records its parameters.
    """

    def __init__(self, iters: int, decay_start: int) -> None:
        if not 0 <= decay_start <= iters:
            raise ValueError(f"LinearDecay: need 0 <= decay_start <= iters, got {decay_start}, {iters}")
        self.iters = int(iters)
        self.decay_start = int(decay_start)

    @classmethod
    def from_config(cls, cg: CycleGANConfig) -> LinearDecay:
        """``cyclegan.decay_start`` (default ``iters // 2``) and ``cyclegan.iters``."""
        return cls(cg.iters, cg.iters // 2 if cg.decay_start is None else cg.decay_start)

    def __call__(self, step: int) -> float:
        if step < self.decay_start:
            return 1.0
        if step >= self.iters:
            return 0.0
        return (self.iters - step) / (self.iters - self.decay_start)


# ------------------------------------------------------------------------------------------ the loop
class CycleGANLoop(DegradationLoop):
    """Junyanz's CycleGANModel. ``nets``: G_A (G), G_B (F), D_A (D_Y), D_B (D_X)."""

    exported = "G_A"

    def __init__(self, cfg: ExperimentConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        cg = cfg.cyclegan
        for name in ("G_A", "G_B"):  # in this order, right after the construction seed
            self.nets[name] = self.build_generator()
        for name in ("D_A", "D_B"):
            self.nets[name] = self.build_critic()
        self.nets = {name: self.prepare(net) for name, net in self.nets.items()}
        n, betas = self.nets, (cg.beta1, 0.999)
        self.optimizers["G"] = torch.optim.Adam(
            [*n["G_A"].parameters(), *n["G_B"].parameters()], cg.lr, betas
        )
        self.optimizers["D"] = torch.optim.Adam(
            [*n["D_A"].parameters(), *n["D_B"].parameters()], cg.lr, betas
        )
        decay = LinearDecay.from_config(cg)
        for key, opt in self.optimizers.items():
            self.schedulers[key] = torch.optim.lr_scheduler.LambdaLR(
                opt, LinearDecay(decay.iters, decay.decay_start)
            )
        self.pools = {
            name: ImagePool(
                cg.pool_size, generator=torch.Generator().manual_seed(self.stream_seed(stream, ctx.rank))
            )
            for name, stream in (("fake_Y", STREAM_POOL_Y), ("fake_X", STREAM_POOL_X))
        }
        self.gan_loss = GANLoss("lsgan")

    # --------------------------------------------------------------------------------- the step
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        """One junyanz ``optimize_parameters``: the generators, then the discriminators."""
        real_A, real_B = self.batch(step)
        losses, fake_B, fake_A = self._generator_step(real_A, real_B)
        losses["d"] = self._discriminator_step(real_A, real_B, fake_B, fake_A)
        for sched in self.schedulers.values():
            sched.step()
        return {k: losses[k] for k in ("cycle", "idt", "g_gan", "d", "g")}

    def _generator_step(
        self, real_A: torch.Tensor, real_B: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """G_A (G) and G_B (F) with the discriminators frozen and called unwrapped."""
        n, cg = self.nets, self.cfg.cyclegan
        lam, lam_idt = cg.lambda_cycle, cg.lambda_identity * cg.lambda_cycle
        _set_requires_grad([n["D_A"], n["D_B"]], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            fake_B = n["G_A"](real_A)  # G(x)
            rec_A = n["G_B"](fake_B)  # F(G(x))
            fake_A = n["G_B"](real_B)  # F(y)
            rec_B = n["G_A"](fake_A)  # G(F(y))
            idt = self._identity(real_A, real_B, lam_idt) if lam_idt > 0 else real_A.new_zeros(())
            g_gan = self.gan_loss(unwrap(n["D_A"])(fake_B).float(), True) + self.gan_loss(
                unwrap(n["D_B"])(fake_A).float(), True
            )
            cycle = lam * (cycle_loss(rec_A.float(), real_A) + cycle_loss(rec_B.float(), real_B))
            total = g_gan + cycle + idt
        total.backward()
        self.optimizers["G"].step()
        return {"cycle": cycle, "idt": idt, "g_gan": g_gan, "g": total}, fake_B, fake_A

    def _identity(self, real_A: torch.Tensor, real_B: torch.Tensor, weight: float) -> torch.Tensor:
        """``λ_idt λ (|G(y) - y|_1 + |F(x) - x|_1)``: keep what is already in the target domain."""
        n = self.nets
        return weight * (
            identity_loss(n["G_A"](real_B).float(), real_B) + identity_loss(n["G_B"](real_A).float(), real_A)
        )

    def _discriminator_step(
        self, real_A: torch.Tensor, real_B: torch.Tensor, fake_B: torch.Tensor, fake_A: torch.Tensor
    ) -> torch.Tensor:
        """D_A (D_Y) and D_B (D_X) on pooled fakes: ``0.5 (L(D(real), 1) + L(D(pooled fake), 0))`` each."""
        n = self.nets
        _set_requires_grad([n["D_A"], n["D_B"]], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        pooled_B = self.pools["fake_Y"].query(fake_B.detach().float())
        pooled_A = self.pools["fake_X"].query(fake_A.detach().float())
        with self.autocast():
            loss_d_a = 0.5 * (
                self.gan_loss(n["D_A"](real_B).float(), True)
                + self.gan_loss(n["D_A"](pooled_B).float(), False)
            )
            loss_d_b = 0.5 * (
                self.gan_loss(n["D_B"](real_A).float(), True)
                + self.gan_loss(n["D_B"](pooled_A).float(), False)
            )
            loss = loss_d_a + loss_d_b
        loss.backward()
        self.optimizers["D"].step()
        return loss

    # ------------------------------------------------------------------------------ skeleton hooks
    def window_metrics(self) -> dict[str, Any]:
        return {"lr": self.schedulers["G"].get_last_lr()[0]}

    def rank_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_rank_state(self, state: Any) -> None:
        for name, pool in self.pools.items():
            pool.load_state_dict(state["pools"][name])


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        unwrap(net).requires_grad_(flag)


def train_cyclegan(cfg: ExperimentConfig, ctx: TrainContext) -> dict[str, Any]:
    """Train (or resume) the CycleGAN stage on this worker; returns rank 0's last report.

    ``cfg`` must have absolute data paths (:func:`csrgan.data.layout.resolve_data`). Reports, on every
    rank at the same steps (:class:`csrgan.train.loop.TrainLoop`); rank 0 adds the Table-2 metrics
    (``"<set>/g_psnr"``, ``"<set>/g_ssim"``, ``"<set>/bicubic_psnr"``, ``"<set>/bicubic_ssim"`` for each
    ``degradation: real`` set with HR) at evaluation steps and writes ``ctx.out_dir/final/`` at the end.
    """
    return run_loop(lambda: CycleGANLoop(cfg, ctx), cfg, ctx)
