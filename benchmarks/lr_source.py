"""SR training step with the learned degradation: G inside the step (csrgan 0.2) vs the cached LR (now).

csrgan 0.2 applied the degradation generator ``G`` to every batch's bicubic LR patches inside the SR
step (``LRSource``); since 0.3 the degradation stage writes ``G(bicubic LR)`` of every *whole* training
image once (``final/lr/``) and the SR dataset crops the aligned patch (``CachedLR``). In the SAME
process, alternating single steps, this times one SR pre-training step *including its batch* (the
dataset reads + the optimisation step) for

* "cached": ``PairedPatchDataset(alt=CachedLR(...), mix_prob=p)`` + ``SRStep`` (what trainers run);
* "in-step": ``PairedPatchDataset`` (bicubic) + ``G`` on the selected samples under ``no_grad`` +
  ``SRStep`` (the 0.2 path, inline; its G is the one that made the cache);

and reports the median step times and their ratio (in-step / cached: > 1 means the cache is faster).

    python benchmarks/lr_source.py                 # quickstart sizes, ~1 min on 2 cores
    python benchmarks/lr_source.py --size paper    # SRResNet 64x16, 96-px patches, batch 16; G 64x8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csrgan.data.datasets import CachedLR, PairedPatchDataset  # noqa: E402
from csrgan.data.io import list_images, read_image, to_tensor, to_uint8, write_image  # noqa: E402
from csrgan.data.resize import imresize  # noqa: E402
from csrgan.models.dsgan import ResidualDegradationGenerator  # noqa: E402
from csrgan.models.srgan import SRResNet  # noqa: E402
from csrgan.train.srgan import SRStep  # noqa: E402

SIZES = {
    "quickstart": {"ch": 32, "blocks": 4, "hr": 64, "batch": 8, "g_nf": 32, "g_blocks": 4, "side": 256},
    "paper": {"ch": 64, "blocks": 16, "hr": 96, "batch": 16, "g_nf": 64, "g_blocks": 8, "side": 512},
}


def _images(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    hr_dir = root / "hr"
    for i in range(n):
        base = rng.integers(0, 255, (side // 8, side // 8, 3)).astype(np.uint8)
        write_image(hr_dir / f"{i:03d}.png", imresize(base, output_shape=(side, side)))
    return hr_dir


def _cache(G: torch.nn.Module, hr_dir: Path, out: Path) -> Path:
    with torch.no_grad():
        for p in list_images(hr_dir):
            lr = to_tensor(imresize(read_image(p), scale=0.25))
            write_image(out / "0" / p.name, to_uint8(G(lr, generator=torch.Generator().manual_seed(0)))[0])
    return out / "0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="quickstart")
    ap.add_argument("--pairs", type=int, default=30, help="alternating (cached, in-step) step pairs")
    ap.add_argument("--mix-prob", type=float, default=1.0)
    args = ap.parse_args()
    s = SIZES[args.size]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hr_dir = _images(root, 8, s["side"])
        G = ResidualDegradationGenerator(nf=s["g_nf"], n_blocks=s["g_blocks"], noise_channels=1).eval()
        torch.nn.init.normal_(G.tail.weight, 0, 0.01)  # a G that does something
        cache = _cache(G, hr_dir, root / "lr")
        hr_paths = list_images(hr_dir)
        alt = CachedLR([cache], hr_paths, 4, "bench")
        cached = PairedPatchDataset(hr_dir, 4, s["hr"], cache=True, seed=0, alt=alt, mix_prob=args.mix_prob)
        plain = PairedPatchDataset(hr_dir, 4, s["hr"], cache=True, seed=0)
        net = SRResNet(channels=s["ch"], n_blocks=s["blocks"])
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        step = SRStep("pretrain", net, opt, F.mse_loss)
        rng = torch.Generator().manual_seed(0)

        def batch(ds: PairedPatchDataset, i: int) -> dict[str, torch.Tensor]:
            items = [ds[(i * s["batch"] + j) % len(ds)] for j in range(s["batch"])]
            return {k: torch.stack([torch.as_tensor(x[k]) for x in items]) for k in ("lr", "hr")}

        def run_cached(i: int) -> None:
            b = batch(cached, i)
            step(b["lr"], b["hr"])

        def run_in_step(i: int) -> None:
            b = batch(plain, i)
            mask = torch.rand(b["lr"].shape[0], generator=rng) < args.mix_prob
            lr = b["lr"].clone()
            if mask.any():
                with torch.no_grad():
                    fake = G(lr[mask])
                lr[mask] = fake.clamp(0, 1).mul(255).add(0.5).floor().div(255)
            step(lr, b["hr"])

        for i in range(3):  # warm-up (caches filled, allocator warm)
            run_cached(i)
            run_in_step(i)
        times: dict[str, list[float]] = {"cached": [], "in-step": []}
        for i in range(args.pairs):
            for name, fn in (("cached", run_cached), ("in-step", run_in_step)):
                t0 = time.perf_counter()
                fn(i)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "size": args.size,
        "mix_prob": args.mix_prob,
        "threads": torch.get_num_threads(),
        "median_step_s": {k: round(v, 5) for k, v in med.items()},
        "ratio_in_step_over_cached": round(med["in-step"] / med["cached"], 3),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
