"""Throughput of csrgan's training steps against bare PyTorch loops of the same models and losses.

For each of the SRGAN GAN-phase step (G + D + VGG content loss) and the CycleGAN step (two generators,
two PatchGANs, cycle/identity/LSGAN losses, image pools, LR schedulers), in the SAME process:

* "ours": the trainers' real step code — :class:`csrgan.train.srgan.SRStep` and
  :meth:`csrgan.train.cyclegan.CycleGANLoop.train_step` (fed the same fixed batch, so data loading, which
  trainers do outside the step, is not measured on either side);
* "bare": a plain PyTorch loop with the same networks (identical initial weights), the same losses and
  optimisers, written inline.

Single steps alternate ours/bare so drift (thermal, other processes) hits both alike; the ratio is
median bare step time / median ours step time, i.e. ours/bare images per second (target >= 0.97).
FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` and turned into
achieved GFLOP/s, next to a large matmul measured in the same run (the attainable rate of this
device/dtype; best of 3 timings).

    python benchmarks/train_step.py --size cpu-small
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

SIZES: dict[str, dict[str, int]] = {
    # SRGAN paper (Ledig et al.): 64 ch, 16 blocks, 96 px HR, batch 16. CycleGAN: the config defaults
    # (junyanz: ngf/ndf 64, 9 blocks; csrgan LR patches of 64 px, batch 1).
    "paper": {"sr_ch": 64, "sr_blocks": 16, "d_ch": 64, "hr": 96, "sr_batch": 16,
              "ngf": 64, "cg_blocks": 9, "ndf": 64, "cg_patch": 64, "cg_batch": 1},
    "cpu-small": {"sr_ch": 16, "sr_blocks": 2, "d_ch": 16, "hr": 32, "sr_batch": 4,
                  "ngf": 16, "cg_blocks": 2, "ndf": 16, "cg_patch": 32, "cg_batch": 1},
}  # fmt: skip

Step = Callable[[], Any]


@dataclass
class Bench:
    name: str
    ours: Step
    bare: Step
    images_per_step: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: bool) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else nullcontext()


# ----------------------------------------------------------------------------------------------- SRGAN
def srgan_bench(size: dict[str, int], device: torch.device, amp: bool, channels_last: bool) -> Bench:
    from csrgan.losses import GANLoss, VGGContentLoss
    from csrgan.models.srgan import SRGANDiscriminator, SRResNet
    from csrgan.train.srgan import SRStep

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    G0 = SRResNet(channels=size["sr_ch"], n_blocks=size["sr_blocks"], scale=4).to(device, memory_format=fmt)
    D0 = SRGANDiscriminator(channels=size["d_ch"], patch_size=size["hr"]).to(device, memory_format=fmt)
    content = VGGContentLoss("relu5_4", random_init=True).to(
        device
    )  # offline: same FLOPs as ImageNet weights
    adv_w = 1e-3
    n, hr_px = size["sr_batch"], size["hr"]
    hr = torch.rand(n, 3, hr_px, hr_px, device=device).contiguous(memory_format=fmt)
    lr = F.interpolate(hr, scale_factor=0.25, mode="area").contiguous(memory_format=fmt)

    # ours: the trainer's step object
    G1, D1 = copy.deepcopy(G0), copy.deepcopy(D0)
    ours = SRStep(
        "gan",
        G1,
        torch.optim.Adam(G1.parameters(), lr=1e-4),
        F.mse_loss,
        discriminator=D1,
        opt_d=torch.optim.Adam(D1.parameters(), lr=1e-4),
        content_loss=content,
        gan_loss=GANLoss("vanilla"),
        content_weight=1.0,
        adv_weight=adv_w,
        amp_dtype=torch.bfloat16 if amp else None,
        channels_last=channels_last,
    )

    # bare: the same computation written inline
    G2, D2 = copy.deepcopy(G0), copy.deepcopy(D0)
    opt_g, opt_d = torch.optim.Adam(G2.parameters(), lr=1e-4), torch.optim.Adam(D2.parameters(), lr=1e-4)
    vgg, mean, std = content.features, content.mean, content.std

    def bare() -> None:
        for p in D2.parameters():
            p.requires_grad_(False)
        with _autocast(device, amp):
            sr = G2(lr)
            with torch.no_grad():
                target = vgg((hr - mean) / std)
            c = F.mse_loss(vgg((sr.float() - mean) / std), target)
            logits = D2(sr).float()
            a = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            total = c + adv_w * a
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        for p in D2.parameters():
            p.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            real = D2(hr).float()
            d_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        d_real.backward()
        with _autocast(device, amp):
            fake = D2(sr.detach()).float()
            d_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        d_fake.backward()
        opt_d.step()

    return Bench("srgan-gan-step", lambda: ours(lr, hr), bare, n)


# -------------------------------------------------------------------------------------------- CycleGAN
def _scratch_dir() -> Path:
    """An out_dir for the trainer's context (train_step writes nothing there); removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="csrgan-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _fixed_batch_loop(cfg: Any, ctx: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """The real CycleGAN loop (networks, optimisers, schedulers, pools, step), fed one fixed batch."""
    from csrgan.train.cyclegan import CycleGANLoop

    class FixedBatch(CycleGANLoop):
        def _build_data(self) -> None:  # no image folders: the step's input is the fixed batch
            pass

        def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x, y

    return FixedBatch(cfg, ctx)


def cyclegan_bench(size: dict[str, int], device: torch.device, amp: bool, channels_last: bool) -> Bench:
    from csrgan.config import validate_config
    from csrgan.train import cyclegan as cg_mod
    from csrgan.train.context import LocalContext

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cfg = validate_config(
        {
            "name": "bench",
            "data": {"train_hr": "unused", "real_lr": "unused"},
            "cyclegan": {  # junyanz's CycleGAN (the learner this benchmark's bare loop writes out)
                "learner": "cyclegan",
                "generator": {"type": "resnet", "ngf": size["ngf"], "n_blocks": size["cg_blocks"]},
                "discriminator": {"type": "patchgan", "ndf": size["ndf"]},
                "iters": 10**9,
                "batch_size": size["cg_batch"],
                "patch_size": size["cg_patch"],
            },
            "resources": {"amp": amp, "channels_last": channels_last},
        }
    )
    cg = cfg.cyclegan
    n, px = cg.batch_size, cg.patch_size
    x = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    y = torch.rand(n, 3, px, px, device=device).contiguous(memory_format=fmt)
    decay = cg_mod.LinearDecay.from_config(cg)

    # ours: the trainer's own step method (identical initial weights for both sides)
    trainer = _fixed_batch_loop(cfg, LocalContext(_scratch_dir(), device=device), x, y)
    nets0 = {k: copy.deepcopy(v) for k, v in trainer.nets.items()}
    step_counter = iter(range(10**9))

    # bare: the same algorithm inline (junyanz's optimize_parameters)
    G_A, G_B, D_A, D_B = (nets0[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    opt_G = torch.optim.Adam([*G_A.parameters(), *G_B.parameters()], lr=cg.lr, betas=(cg.beta1, 0.999))
    opt_D = torch.optim.Adam([*D_A.parameters(), *D_B.parameters()], lr=cg.lr, betas=(cg.beta1, 0.999))
    sched = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_G, opt_D)]
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

    return Bench("cyclegan-step", lambda: trainer.train_step(next(step_counter)), bare, n)


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


def run_bench(bench: Bench, device: torch.device, warmup: int, pairs: int) -> dict[str, Any]:
    """Time ``pairs`` single steps of each side, alternating ours/bare step by step.

    The per-side throughput is taken from the *median* step time: on a shared machine a step that
    another process delayed is an outlier, and alternating single steps exposes both sides to the
    same background load. The ratio is bare median time / ours median time (> 1: ours is faster).
    """
    for _ in range(warmup):
        bench.ours()
        bench.bare()
    flops = count_flops(bench.bare)
    t_ours, t_bare = [], []
    for _ in range(pairs):
        t_ours.append(_time_steps(bench.ours, 1, device))
        t_bare.append(_time_steps(bench.bare, 1, device))
    mo, mb = statistics.median(t_ours), statistics.median(t_bare)
    n = bench.images_per_step
    return {
        "bench": bench.name,
        "ours_img_s": n / mo,
        "bare_img_s": n / mb,
        "ratio": mb / mo,
        "ours_step_s": {"median": mo, "min": min(t_ours), "max": max(t_ours)},
        "bare_step_s": {"median": mb, "min": min(t_bare), "max": max(t_bare)},
        "gflop_per_step": flops / 1e9,
        "ours_gflop_s": flops / 1e9 / mo,
        "bare_gflop_s": flops / 1e9 / mb,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", choices=sorted(SIZES), default="cpu-small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--which", choices=["srgan", "cyclegan", "both"], default="both")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    p.add_argument("--pairs", type=int, default=15, help="timed steps per side (alternating)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.amp and device.type != "cuda":
        p.error("--amp is bf16 autocast on GPUs; the trainers refuse it on CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    dtype = torch.bfloat16 if args.amp else torch.float32
    ref_n = 8192 if device.type == "cuda" else 1024
    ref = matmul_gflops(device, dtype, ref_n)
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(
        f"device {device} ({where}), size {args.size}, amp {args.amp}, channels_last {args.channels_last}, "
        f"torch {torch.__version__}"
    )
    print(f"reference: {ref_n}x{ref_n} {str(dtype).removeprefix('torch.')} matmul {ref:.1f} GFLOP/s")
    builders = {"srgan": srgan_bench, "cyclegan": cyclegan_bench}
    names = ["srgan", "cyclegan"] if args.which == "both" else [args.which]
    results = []
    for name in names:
        bench = builders[name](size, device, args.amp, args.channels_last)
        r = run_bench(bench, device, args.warmup, args.pairs)
        r["matmul_gflop_s"] = ref
        results.append(r)
        print(
            f"{r['bench']:<16} ours {r['ours_img_s']:8.2f} img/s   bare {r['bare_img_s']:8.2f} img/s   "
            f"ratio {r['ratio']:.3f}   step ours {r['ours_step_s']['median'] * 1e3:.1f} ms "
            f"(min {r['ours_step_s']['min'] * 1e3:.1f}) bare {r['bare_step_s']['median'] * 1e3:.1f} ms "
            f"(min {r['bare_step_s']['min'] * 1e3:.1f})   "
            f"{r['gflop_per_step']:.2f} GFLOP/step -> {r['ours_gflop_s']:.1f} GFLOP/s "
            f"({100 * r['ours_gflop_s'] / ref:.0f}% of matmul)"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2)
        )
    return 0 if all(r["ratio"] >= 0.97 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
