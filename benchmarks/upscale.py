"""``csrgan upscale`` at scale: time per megapixel and peak memory, streamed uint8 vs float-assembled.

Upscales (x4) one synthetic LR image (default 4000x3000 = 12 MP, ``--megapixels`` to shrink it) with an
SRResNet of RANDOM-INIT weights (seed 0: time and memory do not depend on the weights, the pixels are
not a meaningful SR result) and writes the PNG, for every ``--paths`` x ``--tiles`` configuration,
each in a FRESH subprocess so its peak RSS (``VmHWM`` from /proc/self/status, else ``ru_maxrss``)
is its own:

* ``old``: the path before: ``to_uint8(tiled_forward(...))`` (a float32 SR tensor of the whole image,
  then two float copies in ``to_uint8`` and a uint8 one) + ``write_image`` (Pillow: a 4-byte/px copy);
* ``array``: :func:`csrgan.inference.tiled_upscale_uint8` (each tile core quantised at once into one
  preallocated uint8 image; ``ModelUpscaler.__call__``, used by evaluation) + ``write_image``;
* ``stream``: :func:`csrgan.inference.tiled_upscale_png` (what ``csrgan upscale`` runs: each finished
  row of tiles is PNG-encoded and written at once; the SR image never exists in one piece).

Each child also hashes the uint8 SR pixels (``stream``: decoded back from its PNG, after the peak was
read), so the table shows that every path gives the same image. Ratios are against the FIRST
configuration measured in the same run (by default ``old`` at the same tile).

    python benchmarks/upscale.py                                   # 12 MP, cpu-small, old vs stream
    python benchmarks/upscale.py --megapixels 0.5 --paths old,array,stream
    python benchmarks/upscale.py --megapixels 1 --size quickstart --paths stream --tiles 64,128,256,512
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES: dict[str, dict[str, Any]] = {
    # like benchmarks/train_step.py's cpu-small generator (+ the bicubic skip the demo uses)
    "cpu-small": {"channels": 16, "n_blocks": 2, "global_bicubic_skip": True},
    # experiments/quickstart.yaml sr.generator: what the demo trains
    "quickstart": {"channels": 32, "n_blocks": 4, "global_bicubic_skip": True},
    # Ledig et al.: 64 features, 16 residual blocks
    "paper": {"channels": 64, "n_blocks": 16},
}
PATHS = ("old", "array", "stream")


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: unlike wall time, barely moved by other
    jobs on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic_lr(h: int, w: int) -> np.ndarray:
    """A uint8 photo-like image (smooth structure + noise), built in row blocks to keep memory low."""
    rng = np.random.default_rng(0)
    out = np.empty((h, w, 3), np.uint8)
    tint = np.array([1.0, 0.6, -0.4])
    xx = np.arange(w)[None, :, None]
    for y0 in range(0, h, 256):
        yy = np.arange(y0, min(y0 + 256, h))[:, None, None]
        base = 127 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) * tint + 30 * np.sin((xx + yy) / 41.0)
        out[y0 : y0 + len(yy)] = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return out


def lr_shape(megapixels: float) -> tuple[int, int]:
    """(h, w) of a 4:3 image of about ``megapixels`` MP (12 -> 3000 x 4000)."""
    w = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    return round(w * 3 / 4), w


def _run_path(path: str, model: Any, lr: np.ndarray, tile: int, overlap: int, png: Path) -> np.ndarray | None:
    import torch

    from csrgan.data.io import to_tensor, to_uint8, write_image
    from csrgan.inference import tiled_upscale_png, tiled_upscale_uint8
    from csrgan.models.tiling import tiled_forward

    if path == "old":
        with torch.no_grad():
            sr = to_uint8(tiled_forward(model, to_tensor(lr), 4, tile=tile, overlap=overlap))[0]
        write_image(png, sr)
        return sr
    if path == "array":
        sr = tiled_upscale_uint8(model, lr, 4, tile=tile, overlap=overlap)
        write_image(png, sr)
        return sr
    tiled_upscale_png(model, lr, 4, png, tile=tile, overlap=overlap)
    return None


def child(cfg: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    import torch

    from csrgan.data.io import read_image
    from csrgan.models.artifacts import GeneratorSpec, build_generator
    from csrgan.models.tiling import count_tiles

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    model = build_generator(GeneratorSpec("sr", "srresnet", SIZES[cfg["size"]], scale=4)).eval()
    h, w = cfg["shape"]
    lr = synthetic_lr(h, w)
    setup_mb = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "sr.png"
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), cpu_seconds()
        sr = _run_path(cfg["path"], model, lr, cfg["tile"], cfg["overlap"], png)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        peak_mb = peak_rss_mb()  # read before the check below decodes the PNG
        png_mb = png.stat().st_size / 1e6
        if sr is None:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = None  # our own 192-MP file, not a decompression bomb
            sr = read_image(png)
        digest = hashlib.sha256(np.ascontiguousarray(sr).data).hexdigest()[:12]
    return {
        **cfg,
        "tiles": count_tiles(h, w, cfg["tile"]),
        "seconds": seconds,
        "s_per_mp": seconds / (h * w / 1e6),
        "cpu_s_per_mp": cpu / (h * w / 1e6),
        "load": load,
        "setup_rss_mb": setup_mb,
        "peak_rss_mb": peak_mb,
        "png_mb": png_mb,
        "sha256": digest,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_child(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {cfg} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| path | tile | tiles | wall s | wall s/MP | CPU s/MP | peak RSS MB | setup RSS MB | CPU ratio "
        "| RSS ratio | load | sha256 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cells = [
            r["path"], r["tile"], r["tiles"], f"{r['seconds']:.1f}", f"{r['s_per_mp']:.2f}",
            f"{r['cpu_s_per_mp']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['setup_rss_mb']:.0f}",
            f"{r['cpu_s_per_mp'] / base['cpu_s_per_mp']:.2f}",
            f"{r['peak_rss_mb'] / base['peak_rss_mb']:.3f}",
            f"{r['load']:.1f}", r["sha256"],
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from csrgan.inference import DEFAULT_OVERLAP, DEFAULT_TILE

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--megapixels", type=float, default=12.0, help="LR size, 4:3 (12 -> 4000x3000)")
    p.add_argument("--size", choices=sorted(SIZES), default="cpu-small", help="the SRResNet generator")
    p.add_argument("--paths", default="old,stream", help=f"comma list of {', '.join(PATHS)}")
    p.add_argument("--tiles", default=str(DEFAULT_TILE), help="comma list of LR tile sides (0 = whole)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--json", type=Path, default=None, help="also write all results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if not paths or any(s not in PATHS for s in paths):
        p.error(f"--paths: choose from {', '.join(PATHS)}")
    tiles = [int(t) for t in args.tiles.split(",")]
    h, w = lr_shape(args.megapixels)
    print(
        f"x4 upscale of a synthetic {w}x{h} LR image ({h * w / 1e6:.2f} MP -> {16 * h * w / 1e6:.0f} MP SR), "
        f"SRResNet {args.size} {SIZES[args.size]} with RANDOM-INIT weights (seed 0), CPU, "
        f"overlap {args.overlap}; each configuration in a fresh subprocess",
        flush=True,
    )
    rows = []
    for tile in tiles:
        for path in paths:
            cfg = {"path": path, "tile": tile, "overlap": args.overlap, "size": args.size,
                   "shape": [h, w], "threads": args.threads}  # fmt: skip
            print(f"  running {path} tile={tile} ...", file=sys.stderr, flush=True)
            rows.append(run_child(cfg, args.timeout))
            r = rows[-1]
            print(f"  -> {r['seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    print(
        f"threads {rows[0]['threads']}, torch {rows[0]['torch']}; MP = LR megapixels; ratios against the "
        "first row; load = 1-min load average when the configuration started"
    )
    print(table(rows))
    same = len({r["sha256"] for r in rows if r["tile"] == tiles[0]}) == 1
    print(f"identical SR pixels across paths at tile {tiles[0]}: {same}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
