"""Stage 1, frequency-separation learner (DSGAN; Fritsche, Gu, Timofte, ICCVW 2019).

One generator ``G: X -> Y`` (bicubic LR -> real-like LR), no inverse and no cycle: a degradation only
has to change an image's high frequencies, so the objective splits them (:mod:`csrgan.frequency`):

* colour/content: ``color_weight * |low_pass(G(x)) - low_pass(x)|_1`` — keep what ``x`` already has;
* texture: ``texture_weight * L_GAN(D(high_pass(G(x))), real)`` — ``D`` sees only high-pass parts and
  tells real LR's ``high_pass(y)`` from ``high_pass(G(x))``, so it cannot win on colour or content
  (the two demo domains are different photos with different colours);
* discriminator: ``L_GAN(D(high_pass(y)), real) + L_GAN(D(high_pass(G(x))), fake)``.

DSGAN's published code (manuelfritsche/real-world-sr, ``dsgan/train.py`` and its options) uses a 5x5
box low-pass, ``color_weight 1``, ``texture_weight 0.005``, a perceptual term ``0.01 * LPIPS(G(x), x)``,
the vanilla GAN loss, Adam (2e-4, betas 0.5/0.999) and a linear decay. The perceptual term needs
LPIPS's pretrained AlexNet, which csrgan never downloads at run time: it is not implemented here
(``frequency_separation`` records ``perceptual_weight: 0``), and the colour term alone keeps content.

Same skeleton, data, schedule, evaluation and artefact as the CycleGAN learner
(:mod:`csrgan.train.cyclegan`): ``final/`` holds ``G`` (key ``G``), the cached real-like LR of every
training image and the stage's fidelity (:mod:`csrgan.train.degradation`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from csrgan.config import ExperimentConfig
from csrgan.frequency import high_pass, low_pass
from csrgan.registry import GAN_LOSSES
from csrgan.train.context import TrainContext, unwrap
from csrgan.train.cyclegan import LinearDecay
from csrgan.train.degradation import DegradationLoop
from csrgan.train.loop import run_loop

__all__ = ["LOSS_KEYS", "DSGANLoop", "train_dsgan"]

LOSS_KEYS = ("loss/color", "loss/texture", "loss/g", "loss/d")


class DSGANLoop(DegradationLoop):
    """``nets``: ``G`` (exported) and ``D`` (the high-pass critic)."""

    exported = "G"

    def __init__(self, cfg: ExperimentConfig, ctx: TrainContext) -> None:
        super().__init__(cfg, ctx)
        cg = cfg.cyclegan
        self.nets["G"] = self.build_generator()
        self.nets["D"] = self.build_critic()
        self.nets = {name: self.prepare(n) for name, n in self.nets.items()}
        betas = (cg.beta1, 0.999)
        for name in ("G", "D"):
            self.optimizers[name] = torch.optim.Adam(self.nets[name].parameters(), cg.lr, betas)
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(
                self.optimizers[name], LinearDecay.from_config(cg)
            )
        self.gan_loss = GAN_LOSSES.build("vanilla")

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        x, y = self.batch(step)
        fs, G, D = self.cfg.cyclegan.frequency_separation, self.nets["G"], self.nets["D"]
        k = fs.low_pass
        # 1. G: keep the low frequencies, make the high ones look real (D frozen, unwrapped)
        unwrap(D).requires_grad_(False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            fake = G(x)
            color = fs.color_weight * F.l1_loss(low_pass(fake.float(), k), low_pass(x, k))
            texture = fs.texture_weight * self.gan_loss(unwrap(D)(high_pass(fake, k)).float(), True)
            total = color + texture
        total.backward()
        self.optimizers["G"].step()
        # 2. D: real high-pass -> 1, generated high-pass -> 0
        unwrap(D).requires_grad_(True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.autocast():
            d_loss = self.gan_loss(D(high_pass(y, k)).float(), True) + self.gan_loss(
                D(high_pass(fake.detach(), k)).float(), False
            )
        d_loss.backward()
        self.optimizers["D"].step()
        for sched in self.schedulers.values():
            sched.step()
        return {"color": color, "texture": texture, "g": total, "d": d_loss}

    def window_metrics(self) -> dict[str, Any]:
        return {"lr": self.schedulers["G"].get_last_lr()[0]}


def train_dsgan(cfg: ExperimentConfig, ctx: TrainContext) -> dict[str, Any]:
    """Train (or resume) the frequency-separation learner on this worker; returns rank 0's last report."""
    return run_loop(lambda: DSGANLoop(cfg, ctx), cfg, ctx)
