"""Throughput of csrgan's training steps against bare PyTorch loops of the same models and losses.

Benches (``--which``, comma-separated; ``both`` = srgan,cyclegan, the default; ``all``):

* ``srgan``: the SRGAN GAN-phase step (SRResNet G + SRGAN D + VGG54 content loss; at ``quickstart``
  size the demo's pixel content loss);
* ``esrgan``: the ESRGAN GAN step (RRDBNet G + VGG-style D, L1 on VGG conv5_4, relativistic average
  GAN loss, L1 pixel loss);
* ``cyclegan``: the CycleGAN step (two generators, two PatchGANs, cycle/identity/LSGAN losses, image
  pools, LR schedulers);
* ``ema``: the SR pre-training step with (ours) and without (bare) the ``sr.ema`` update after it.

"ours" is the trainers' real step code — :class:`csrgan.train.srgan.SRStep` and
:meth:`csrgan.train.cyclegan.CycleGANLoop.train_step` (fed the same fixed batch, so data loading, which
trainers do outside the step, is not measured on either side); "bare" is a plain PyTorch loop with the
same networks (identical initial weights), the same losses and optimisers, written inline.

Single steps alternate ours/bare so drift (thermal, other processes) hits both alike; the ratio is
median bare step time / median ours step time, i.e. ours/bare images per second (target >= 0.97; the
exit status is 1 below it). FLOPs of one (eager) step are counted with
``torch.utils.flop_counter.FlopCounterMode`` and turned into achieved GFLOP/s, next to a large matmul
measured in the same run (the attainable rate of this device/dtype; best of 3 timings).

``--amp`` / ``--channels-last`` / ``--compile`` set both sides' switches as ``resources.amp`` /
``channels_last`` / ``compile`` do in training. ``--compare SWITCH`` instead times ours with the switch
on against ours with it off, alternating the same way (ratio > 1: on is faster; exit status 0): the
measurement behind the ``auto`` table in :mod:`csrgan.train.efficiency`.

    python benchmarks/train_step.py --size cpu-small
    python benchmarks/train_step.py --size quickstart --which srgan --compare channels-last --pairs 10
    python benchmarks/train_step.py --size paper --device cuda --amp --channels-last
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

SIZES: dict[str, dict[str, int]] = {
    # SRGAN paper (Ledig et al.): 64 ch, 16 blocks, 96 px HR, batch 16, VGG54 content. ESRGAN paper
    # (Wang et al.): RRDBNet 64 ch / 23 RRDBs / growth 32, 128 px HR, batch 16. CycleGAN: the config
    # defaults (junyanz: ngf/ndf 64, 9 blocks; csrgan LR patches of 64 px, batch 1). DSGAN: the config
    # defaults of its networks (residual G nf 32 / 4 blocks, critic ndf 64; 64 px, batch 1).
    "paper": {"sr_ch": 64, "sr_blocks": 16, "d_ch": 64, "hr": 96, "sr_batch": 16, "sr_skip": 0, "sr_vgg": 1,
              "esr_ch": 64, "esr_blocks": 23, "esr_growth": 32, "esr_hr": 128, "esr_batch": 16,
              "ngf": 64, "cg_blocks": 9, "ndf": 64, "cg_patch": 64, "cg_batch": 1,
              "ds_nf": 32, "ds_blocks": 4, "ds_ndf": 64, "ds_patch": 64, "ds_batch": 1},
    # experiments/quickstart.yaml (the demo): SRResNet 32 ch / 4 blocks with the bicubic skip, SRGAN D
    # 16 ch, HR 64 px, batch 8, a pixel (MSE) content loss; its DSGAN degradation stage (residual G nf
    # 32 / 4 blocks, critic ndf 16, LR 32 px, batch 8), and junyanz's CycleGAN at those sizes. The demo
    # has no ESRGAN: that row is the demo's SR sizes with RRDBs (32 ch, 4 blocks, growth 16).
    "quickstart": {"sr_ch": 32, "sr_blocks": 4, "d_ch": 16, "hr": 64, "sr_batch": 8, "sr_skip": 1,
                   "sr_vgg": 0, "esr_ch": 32, "esr_blocks": 4, "esr_growth": 16, "esr_hr": 64, "esr_batch": 8,
                   "ngf": 32, "cg_blocks": 4, "ndf": 16, "cg_patch": 32, "cg_batch": 8,
                   "ds_nf": 32, "ds_blocks": 4, "ds_ndf": 16, "ds_patch": 32, "ds_batch": 8},
    "cpu-small": {"sr_ch": 16, "sr_blocks": 2, "d_ch": 16, "hr": 32, "sr_batch": 4, "sr_skip": 0, "sr_vgg": 1,
                  "esr_ch": 8, "esr_blocks": 1, "esr_growth": 8, "esr_hr": 32, "esr_batch": 4,
                  "ngf": 16, "cg_blocks": 2, "ndf": 16, "cg_patch": 32, "cg_batch": 1,
                  "ds_nf": 16, "ds_blocks": 2, "ds_ndf": 16, "ds_patch": 32, "ds_batch": 1},
}  # fmt: skip

Step = Callable[[], Any]


@dataclass
class Bench:
    name: str
    ours: Step
    bare: Step
    images_per_step: int
    #: an eager step whose FLOPs are counted (the bare one when None; compiled code hides its ops)
    flops: Step | None = None


@dataclass(frozen=True)
class Opts:
    """The efficiency switches of one side (``resources.amp`` / ``channels_last`` / ``compile``)."""

    amp: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def fmt(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.amp else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: bool) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else nullcontext()


def _compiled(net: torch.nn.Module, opts: Opts) -> torch.nn.Module:
    return torch.compile(net) if opts.compile else net


# --------------------------------------------------------------------------------------- SRGAN, ESRGAN
@dataclass
class GanRecipe:
    """One SR GAN step's networks and losses, for both sides: ``L_G = content + adv_w * adv + pixel_w *
    pixel`` with the discriminator loss of ``gan`` (``vanilla``: SRGAN, ``ragan``: ESRGAN)."""

    name: str
    G: torch.nn.Module
    D: torch.nn.Module
    content: torch.nn.Module
    gan: str
    adv_w: float
    pixel_w: float
    pixel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch: int
    hr_px: int


def _vgg(layer: str, criterion: str) -> torch.nn.Module:
    from csrgan.losses import VGGContentLoss

    return VGGContentLoss(layer, random_init=True, criterion=criterion)  # offline: the FLOPs are the same


class _Pixel(torch.nn.Module):
    """A pixel content loss as a module (the demo's ``content: {type: mse}``)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(sr, hr)


def _srresnet(size: dict[str, int]) -> torch.nn.Module:
    from csrgan.models.srgan import SRResNet

    torch.manual_seed(0)
    return SRResNet(
        channels=size["sr_ch"], n_blocks=size["sr_blocks"], scale=4, global_bicubic_skip=bool(size["sr_skip"])
    )


def srgan_recipe(size: dict[str, int]) -> GanRecipe:
    from csrgan.models.srgan import SRGANDiscriminator

    G = _srresnet(size)
    D = SRGANDiscriminator(channels=size["d_ch"], patch_size=size["hr"])
    content = _vgg("relu5_4", "mse") if size["sr_vgg"] else _Pixel()
    return GanRecipe(
        "srgan-gan-step", G, D, content, "vanilla", 1e-3, 0.0, F.mse_loss, size["sr_batch"], size["hr"]
    )


def esrgan_recipe(size: dict[str, int]) -> GanRecipe:
    """ESRGAN (Wang et al. 2018; BasicSR's train_ESRGAN_x4.yml): RRDBNet + VGG-style D, L1 on VGG
    conv5_4 (weight 1), relativistic average GAN (5e-3), L1 pixel loss (1e-2)."""
    from csrgan.models.esrgan import RRDBNet, VGGStyleDiscriminator

    torch.manual_seed(0)
    G = RRDBNet(channels=size["esr_ch"], n_blocks=size["esr_blocks"], growth=size["esr_growth"], scale=4)
    D = VGGStyleDiscriminator(channels=size["esr_ch"], patch_size=size["esr_hr"])
    content = _vgg("conv5_4", "l1")
    return GanRecipe(
        "esrgan-gan-step", G, D, content, "ragan", 5e-3, 1e-2, F.l1_loss, size["esr_batch"], size["esr_hr"]
    )


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _bare_gan_step(r: GanRecipe, G: Any, D: Any, lr: torch.Tensor, hr: torch.Tensor, amp: bool) -> Step:
    """The GAN step written inline; ``ragan``: BasicSR's esrgan_model.py (halved relativistic losses),
    reusing the generator update's fake logits for D's real term as csrgan does (D is unchanged)."""
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=1e-4), torch.optim.Adam(D.parameters(), lr=1e-4)
    device, ragan = hr.device, r.gan == "ragan"
    vgg = getattr(r.content, "features", None)
    if vgg is not None:  # VGG content loss inline: features of (x - mean) / std, HR as a target
        mean, std = r.content.mean, r.content.std
        crit = F.l1_loss if r.content.criterion == "l1" else F.mse_loss

    def content(sr32: torch.Tensor) -> torch.Tensor:
        if vgg is None:
            return F.mse_loss(sr32, hr)
        with torch.no_grad():  # per step, as the trainer's loss does (HR changes every batch there)
            t = vgg((hr - mean) / std)
        return crit(vgg((sr32 - mean) / std), t)

    def step() -> None:
        D.requires_grad_(False)
        with _autocast(device, amp):
            sr = G(lr)
            sr32 = sr.float()
            fake = D(sr).float()
            if ragan:
                with torch.no_grad():
                    real = D(hr).float()
                adv = (_bce(real - fake.mean(), False) + _bce(fake - real.mean(), True)) / 2
            else:
                adv = _bce(fake, True)
            pix = r.pixel(sr32, hr) if r.pixel_w > 0 else sr32.new_zeros(())
            total = content(sr32) + r.adv_w * adv + r.pixel_w * pix
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        fake = fake.detach()
        with _autocast(device, amp):
            real = D(hr).float()
            d_real = _bce(real - fake.mean(), True) / 2 if ragan else _bce(real, True)
        d_real.backward()
        with _autocast(device, amp):
            fake_now = D(sr.detach()).float()
            d_fake = _bce(fake_now - real.detach().mean(), False) / 2 if ragan else _bce(fake_now, False)
        d_fake.backward()
        opt_d.step()

    return step


def gan_bench(
    recipe: Callable[[dict[str, int]], GanRecipe], size: dict[str, int], device: torch.device, opts: Opts
) -> Bench:
    """Ours (:class:`csrgan.train.srgan.SRStep`) against the inline step, identical initial weights.

    With ``--compile`` both sides compile G and D; ours calls the frozen D unwrapped in G's update (the
    trainer's eager call: :func:`csrgan.train.context.unwrap` sees through the compile wrapper), the bare
    side calls its compiled D everywhere, as a plain compiled loop would."""
    from csrgan.registry import GAN_LOSSES
    from csrgan.train.srgan import SRStep

    r = recipe(size)
    G0, D0 = r.G.to(device, memory_format=opts.fmt), r.D.to(device, memory_format=opts.fmt)
    # the VGG in the nets' memory format too: channels_last SR images into an NCHW VGG are slower on CPU
    r.content.to(device, memory_format=opts.fmt)
    hr = torch.rand(r.batch, 3, r.hr_px, r.hr_px, device=device).contiguous(memory_format=opts.fmt)
    lr = F.interpolate(hr, scale_factor=0.25, mode="area").contiguous(memory_format=opts.fmt)
    G1, D1 = _compiled(copy.deepcopy(G0), opts), _compiled(copy.deepcopy(D0), opts)
    ours = SRStep(
        "gan", G1, torch.optim.Adam(G1.parameters(), lr=1e-4), r.pixel, discriminator=D1,
        opt_d=torch.optim.Adam(D1.parameters(), lr=1e-4), content_loss=r.content,
        gan_loss=GAN_LOSSES.build(r.gan), content_weight=1.0, adv_weight=r.adv_w, pixel_weight=r.pixel_w,
        amp_dtype=opts.amp_dtype, channels_last=opts.channels_last,
    )  # fmt: skip
    G2, D2 = copy.deepcopy(G0), copy.deepcopy(D0)
    bare = _bare_gan_step(r, _compiled(G2, opts), _compiled(D2, opts), lr, hr, opts.amp)
    flops = _bare_gan_step(r, G2, D2, lr, hr, opts.amp) if opts.compile else None
    return Bench(r.name, lambda: ours(lr, hr), bare, r.batch, flops)


def srgan_bench(size: dict[str, int], device: torch.device, opts: Opts) -> Bench:
    return gan_bench(srgan_recipe, size, device, opts)


def esrgan_bench(size: dict[str, int], device: torch.device, opts: Opts) -> Bench:
    return gan_bench(esrgan_recipe, size, device, opts)


# ------------------------------------------------------------------------------------------------ EMA
def ema_bench(size: dict[str, int], device: torch.device, opts: Opts) -> Bench:
    """The SR pre-training step (SRResNet, pixel MSE) with (ours) and without (bare) the EMA update
    that ``sr.ema`` adds after it (:class:`csrgan.train.ema.ModelEMA`, decay 0.999): the ratio is the
    EMA's cost. Both sides run the trainer's :class:`csrgan.train.srgan.SRStep`."""
    from csrgan.train.context import unwrap
    from csrgan.train.ema import ModelEMA
    from csrgan.train.srgan import SRStep

    G0 = _srresnet(size).to(device, memory_format=opts.fmt)
    n, px = size["sr_batch"], size["hr"]
    hr = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=opts.fmt)
    lr = F.interpolate(hr, scale_factor=0.25, mode="area").contiguous(memory_format=opts.fmt)

    def sr_step(G: torch.nn.Module) -> SRStep:
        return SRStep("pretrain", G, torch.optim.Adam(G.parameters(), lr=2e-4), F.mse_loss,
                      amp_dtype=opts.amp_dtype, channels_last=opts.channels_last)  # fmt: skip

    G1, G2 = (_compiled(copy.deepcopy(G0), opts) for _ in range(2))
    with_ema, without = sr_step(G1), sr_step(G2)
    ema = ModelEMA(unwrap(G1), 0.999)

    def ours() -> None:
        with_ema(lr, hr)
        ema.update(unwrap(G1))

    flops = sr_step(copy.deepcopy(G0)) if opts.compile else None
    return Bench(
        "sr-ema-overhead", ours, lambda: without(lr, hr), n, None if flops is None else lambda: flops(lr, hr)
    )


# -------------------------------------------------------------------------------------------- CycleGAN
def _scratch_dir() -> Path:
    """An out_dir for the trainer's context (train_step writes nothing there); removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="csrgan-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _fixed_batch_loop(cfg: Any, ctx: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """The real degradation loop of ``cfg``'s learner (networks, optimisers, schedulers, pools, step),
    fed one fixed batch."""
    from csrgan.train.cyclegan import CycleGANLoop
    from csrgan.train.dsgan import DSGANLoop

    base = CycleGANLoop if cfg.cyclegan.learner == "cyclegan" else DSGANLoop

    class FixedBatch(base):  # type: ignore[misc,valid-type]
        def _build_data(self) -> None:  # no image folders: the step's input is the fixed batch
            pass

        def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x, y

    return FixedBatch(cfg, ctx)


def _stage_config(stage: dict[str, Any], opts: Opts) -> Any:
    from csrgan.config import validate_config

    return validate_config(
        {
            "name": "bench",
            "data": {"train_hr": "unused", "real_lr": "unused"},
            "cyclegan": {**stage, "iters": 10**9},
            "resources": {"amp": opts.amp, "channels_last": opts.channels_last, "compile": opts.compile},
        }
    )


def cyclegan_bench(size: dict[str, int], device: torch.device, opts: Opts) -> Bench:
    """The trainer's CycleGAN step (with ``--compile`` its loop compiles the four nets, as
    ``resources.compile`` does) against junyanz's step inline (compiled nets called everywhere)."""
    from csrgan.train import cyclegan as cg_mod
    from csrgan.train.context import LocalContext, unwrap

    fmt, amp = opts.fmt, opts.amp
    stage = {  # junyanz's CycleGAN (the learner this benchmark's bare loop writes out)
        "learner": "cyclegan",
        "generator": {"type": "resnet", "ngf": size["ngf"], "n_blocks": size["cg_blocks"]},
        "discriminator": {"type": "patchgan", "ndf": size["ndf"]},
        "batch_size": size["cg_batch"],
        "patch_size": size["cg_patch"],
    }
    cfg = _stage_config(stage, opts)
    cg = cfg.cyclegan
    n, px = cg.batch_size, cg.patch_size
    x = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    y = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    decay = cg_mod.LinearDecay.from_config(cg)

    # ours: the trainer's own step method (identical initial weights for both sides)
    trainer = _fixed_batch_loop(cfg, LocalContext(_scratch_dir(), device=device), x, y)
    nets0 = {k: copy.deepcopy(unwrap(v)) for k, v in trainer.nets.items()}
    step_counter = iter(range(10**9))

    # bare: the same algorithm inline (junyanz's optimize_parameters)
    plain = [nets0[k] for k in ("G_A", "G_B", "D_A", "D_B")]
    opt_G = torch.optim.Adam(
        [*plain[0].parameters(), *plain[1].parameters()], lr=cg.lr, betas=(cg.beta1, 0.999)
    )
    opt_D = torch.optim.Adam(
        [*plain[2].parameters(), *plain[3].parameters()], lr=cg.lr, betas=(cg.beta1, 0.999)
    )
    sched = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_G, opt_D)]
    G_A, G_B, D_A, D_B = (_compiled(net, opts) for net in plain)
    pools: dict[str, list[torch.Tensor]] = {"Y": [], "X": []}
    pool_rng = torch.Generator().manual_seed(0)
    lam, lam_idt = cg.lambda_cycle, cg.lambda_identity * cg.lambda_cycle

    def pool(name: str, images: torch.Tensor) -> torch.Tensor:
        out = []
        for img in images:
            store = pools[name]
            if len(store) < cg.pool_size:
                store.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=pool_rng) < 0.5:
                k = int(torch.randint(len(store), (), generator=pool_rng))
                out.append(store[k].clone())
                store[k] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def bare() -> torch.Tensor:
        for net in (D_A, D_B):
            net.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            fake_B, fake_A = G_A(x), G_B(y)
            rec_A, rec_B = G_B(fake_B), G_A(fake_A)
            idt = lam_idt * (F.l1_loss(G_A(y).float(), y) + F.l1_loss(G_B(x).float(), x))
            g_gan = lsgan(D_A(fake_B).float(), True) + lsgan(D_B(fake_A).float(), True)
            cyc = lam * (F.l1_loss(rec_A.float(), x) + F.l1_loss(rec_B.float(), y))
            loss_G = g_gan + cyc + idt
        loss_G.backward()
        opt_G.step()
        for net in (D_A, D_B):
            net.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        pb, pa = pool("Y", fake_B.detach().float()), pool("X", fake_A.detach().float())
        with _autocast(device, amp):
            d = 0.5 * (lsgan(D_A(y).float(), True) + lsgan(D_A(pb).float(), False))
            d = d + 0.5 * (lsgan(D_B(x).float(), True) + lsgan(D_B(pa).float(), False))
        d.backward()
        opt_D.step()
        for s in sched:
            s.step()
        return torch.stack([cyc, idt, g_gan, d, loss_G]).detach()

    # compiled: FLOPs of the trainer's step with its eager (unwrapped) nets, one step of the same work
    flops = _eager_train_step(trainer, step_counter) if opts.compile else None
    return Bench("cyclegan-step", lambda: trainer.train_step(next(step_counter)), bare, n, flops)


def _eager_train_step(trainer: Any, counter: Any) -> Step:
    """One trainer step with its nets temporarily unwrapped (eager), for FLOP counting."""
    from csrgan.train.context import unwrap

    def step() -> None:
        compiled = dict(trainer.nets)
        trainer.nets.update({k: unwrap(v) for k, v in compiled.items()})
        try:
            trainer.train_step(next(counter))
        finally:
            trainer.nets.update(compiled)

    return step


def dsgan_bench(size: dict[str, int], device: torch.device, opts: Opts) -> Bench:
    """The trainer's DSGAN step (:class:`csrgan.train.dsgan.DSGANLoop`: residual G with a noise input,
    high-pass critic, colour L1 on the low-pass + vanilla GAN on the high-pass, linear-decay schedules)
    against the same step inline; the demo's degradation learner."""
    from csrgan.frequency import high_pass, low_pass
    from csrgan.train import cyclegan as cg_mod
    from csrgan.train.context import LocalContext, unwrap

    stage = {
        "learner": "frequency_separation",
        "generator": {
            "type": "residual",
            "nf": size["ds_nf"],
            "n_blocks": size["ds_blocks"],
            "noise_channels": 1,
        },
        "discriminator": {"type": "dsgan", "ndf": size["ds_ndf"]},
        "batch_size": size["ds_batch"],
        "patch_size": size["ds_patch"],
    }
    cfg = _stage_config(stage, opts)
    cg, fmt = cfg.cyclegan, opts.fmt
    fs, k = cg.frequency_separation, cg.frequency_separation.low_pass
    n, px = cg.batch_size, cg.patch_size
    x = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    y = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    trainer = _fixed_batch_loop(cfg, LocalContext(_scratch_dir(), device=device), x, y)
    G0, D0 = (copy.deepcopy(unwrap(trainer.nets[name])) for name in ("G", "D"))
    opts_ = [torch.optim.Adam(net.parameters(), cg.lr, betas=(cg.beta1, 0.999)) for net in (G0, D0)]
    sched = [torch.optim.lr_scheduler.LambdaLR(o, cg_mod.LinearDecay.from_config(cg)) for o in opts_]
    G, D = _compiled(G0, opts), _compiled(D0, opts)
    step_counter = iter(range(10**9))

    def bare() -> None:
        D.requires_grad_(False)
        opts_[0].zero_grad(set_to_none=True)
        with _autocast(device, opts.amp):
            fake = G(x)
            color = fs.color_weight * F.l1_loss(low_pass(fake.float(), k), low_pass(x, k))
            texture = fs.texture_weight * _bce(D(high_pass(fake, k)).float(), True)
            total = color + texture
        total.backward()
        opts_[0].step()
        D.requires_grad_(True)
        opts_[1].zero_grad(set_to_none=True)
        with _autocast(device, opts.amp):
            d = _bce(D(high_pass(y, k)).float(), True) + _bce(D(high_pass(fake.detach(), k)).float(), False)
        d.backward()
        opts_[1].step()
        for s_ in sched:
            s_.step()

    flops = _eager_train_step(trainer, step_counter) if opts.compile else None
    return Bench("dsgan-step", lambda: trainer.train_step(next(step_counter)), bare, n, flops)


# ------------------------------------------------------------------------------------------- measuring
def _time_steps(step: Step, n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return time.perf_counter() - t0


def count_flops(step: Step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    seconds = min(_time_steps(lambda: a @ b, repeats, device) for _ in range(3))
    return 2 * n**3 * repeats / seconds / 1e9


def _time_one(step: Step, device: torch.device) -> tuple[float, float]:
    """(wall s, process CPU s) of one step."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    step()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run_bench(
    bench: Bench, device: torch.device, warmup: int, pairs: int, clock: str = "wall"
) -> dict[str, Any]:
    """Time ``pairs`` single steps of each side, alternating ours/bare step by step.

    The per-side throughput is taken from the *median* step time: on a shared machine a step that
    another process delayed is an outlier, and alternating single steps exposes both sides to the
    same background load. The ratio is bare median time / ours median time (> 1: ours is faster), by
    ``clock``: ``wall`` (perf_counter), or ``cpu`` (the process's CPU time: with ``--threads 1`` on a
    CPU it is the step's own work, nearly blind to other processes competing for the cores; with more
    threads it also counts OpenMP's spin-waiting).
    """
    for _ in range(warmup):
        bench.ours()
        bench.bare()
    flops = count_flops(bench.flops or bench.bare)
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": []}
    for _ in range(pairs):
        times["ours"].append(_time_one(bench.ours, device))
        times["bare"].append(_time_one(bench.bare, device))
    k = 0 if clock == "wall" else 1
    step_s = {side: _stats([t[k] for t in ts]) for side, ts in times.items()}
    other = {side: _stats([t[1 - k] for t in ts]) for side, ts in times.items()}
    mo, mb = step_s["ours"]["median"], step_s["bare"]["median"]
    n = bench.images_per_step
    return {
        "bench": bench.name,
        "clock": clock,
        "ours_img_s": n / mo,
        "bare_img_s": n / mb,
        "ratio": mb / mo,
        "ours_step_s": step_s["ours"],
        "bare_step_s": step_s["bare"],
        f"{'cpu' if k == 0 else 'wall'}_step_s": other,  # the other clock, for reference
        "gflop_per_step": flops / 1e9,
        "ours_gflop_s": flops / 1e9 / mo,
        "bare_gflop_s": flops / 1e9 / mb,
    }


BUILDERS: dict[str, Callable[[dict[str, int], torch.device, Opts], Bench]] = {
    "srgan": srgan_bench,
    "esrgan": esrgan_bench,
    "cyclegan": cyclegan_bench,
    "dsgan": dsgan_bench,
    "ema": ema_bench,
}
#: ``--compare`` switch -> the Opts field it flips
SWITCHES = {"amp": "amp", "channels-last": "channels_last", "compile": "compile"}


def _which(text: str) -> list[str]:
    names = {"both": ["srgan", "cyclegan"], "all": list(BUILDERS)}.get(text, text.split(","))
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown bench {unknown}; choose from {sorted(BUILDERS)}, both, all"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", choices=sorted(SIZES), default="cpu-small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (resources.amp)")
    p.add_argument("--channels-last", action="store_true", help="resources.channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D on both sides")
    p.add_argument(
        "--compare",
        choices=sorted(SWITCHES),
        default=None,
        help="instead of ours vs bare: ours with this switch on vs ours with it off (ratio = speedup of on)",
    )
    p.add_argument("--which", type=_which, default=["srgan", "cyclegan"], help="comma list of "
                   f"{', '.join(BUILDERS)}; 'both' (srgan,cyclegan, the default) or 'all'")  # fmt: skip
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    p.add_argument("--pairs", type=int, default=15, help="timed steps per side (alternating)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what the ratio compares "
                   "(cpu: process CPU time, robust on a shared machine with --threads 1)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


def _bench(name: str, size: dict[str, int], device: torch.device, opts: Opts, compare: str | None) -> Bench:
    """``ours`` vs ``bare`` at ``opts``; with ``compare``: ours with the switch on vs ours with it off."""
    build = BUILDERS[name]
    if compare is None:
        return build(size, device, opts)
    field = SWITCHES[compare]
    on = build(size, device, replace(opts, **{field: True}))
    off = build(size, device, replace(opts, **{field: False}))
    return Bench(f"{name}:{compare}", on.ours, off.ours, on.images_per_step, off.flops or off.bare)


def _line(r: dict[str, Any], ref: float, compare: str | None) -> str:
    a, b = ("on", "off") if compare else ("ours", "bare")
    return (
        f"{r['bench']:<16} [{r['clock']}] {a} {r['ours_img_s']:8.2f} img/s   "
        f"{b} {r['bare_img_s']:8.2f} img/s   "
        f"ratio {r['ratio']:.3f}   step {a} {r['ours_step_s']['median'] * 1e3:.1f} ms "
        f"(min {r['ours_step_s']['min'] * 1e3:.1f}, max {r['ours_step_s']['max'] * 1e3:.1f}) {b} "
        f"{r['bare_step_s']['median'] * 1e3:.1f} ms (min {r['bare_step_s']['min'] * 1e3:.1f}, "
        f"max {r['bare_step_s']['max'] * 1e3:.1f})   {r['gflop_per_step']:.2f} GFLOP/step -> "
        f"{r['ours_gflop_s']:.1f} GFLOP/s ({100 * r['ours_gflop_s'] / ref:.0f}% of matmul)"
    )


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    opts = Opts(amp=args.amp, channels_last=args.channels_last, compile=args.compile)
    dtype = torch.bfloat16 if args.amp or args.compare == "amp" else torch.float32
    ref_n = 8192 if device.type == "cuda" else 1024
    ref = matmul_gflops(device, dtype, ref_n)
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(
        f"device {device} ({where}), size {args.size}, amp {args.amp}, channels_last {args.channels_last}, "
        f"compile {args.compile}, compare {args.compare}, torch {torch.__version__}"
    )
    print(f"reference: {ref_n}x{ref_n} {str(dtype).removeprefix('torch.')} matmul {ref:.1f} GFLOP/s")
    results = []
    for name in args.which:
        bench = _bench(name, size, device, opts, args.compare)
        r = run_bench(bench, device, args.warmup, args.pairs, args.clock)
        r["matmul_gflop_s"] = ref
        results.append(r)
        print(_line(r, ref, args.compare), flush=True)
    if args.json:
        meta = vars(args) | {"json": str(args.json), "torch": torch.__version__, "where": where}
        args.json.write_text(json.dumps({"args": meta, "results": results}, indent=2))
    if args.compare:  # a measurement of a switch, not a check of csrgan's overhead
        return 0
    return 0 if all(r["ratio"] >= 0.97 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
