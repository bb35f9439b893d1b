"""Scoring by the protocol: trainers, the sweep's bicubic baseline, ``csrgan evaluate``.

Everything here follows the core protocol of :mod:`csrgan.metrics` (Y channel, crop ``scale`` px,
uint8 rounding): SR outputs are quantised with :func:`csrgan.data.io.to_uint8` *before* any metric,
exactly once, and metrics are means over the images of a set. Keys are ``"<set>/<metric>"``.

* :func:`evaluate_sr_model` — an SR network on full test images (tiled when ``tile > 0``), plus an
  LR/SR/HR comparison grid PNG per set.
* :func:`evaluate_bicubic` — the same numbers for MATLAB-bicubic upsampling (the baseline).
* :func:`evaluate_translation` — the CycleGAN's Table 2: how close ``G(bicubic(HR))`` and plain
  ``bicubic(HR)`` are to the *real* LR of the same scene.
* :func:`evaluate_folder` — per-image and mean metrics of any ``uint8 LR -> uint8 SR`` function on one
  folder (what ``csrgan evaluate`` prints), :func:`bicubic_upscaler` and :func:`evaluate_checkpoint`.
* :func:`build_lpips` — LPIPS per ``eval.lpips``, honouring ``optional``.

Large images run through :func:`csrgan.models.tiling.tiled_forward` (exact for convolutional nets).

Sets without HR (no-reference, e.g. RealSRSet) get no metric keys; their SR output still goes into
the comparison grid.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from csrgan.config import EvalConfig, LPIPSConfig, TestSetConfig
from csrgan.data.datasets import TestSet
from csrgan.data.io import to_tensor, to_uint8, write_image
from csrgan.data.resize import imresize
from csrgan.inference import model_upscaler
from csrgan.metrics import PROTOCOL, evaluate_image
from csrgan.models.tiling import ModelFn, tiled_forward
from csrgan.registry import METRICS

if TYPE_CHECKING:
    from csrgan.metrics import LPIPSMetric

__all__ = [
    "bicubic_upscaler",
    "build_lpips",
    "comparison_grid",
    "evaluate_bicubic",
    "evaluate_checkpoint",
    "evaluate_folder",
    "evaluate_sr_model",
    "evaluate_translation",
    "iter_test_images",
]

log = logging.getLogger(__name__)

#: ``uint8 (h, w, 3) LR -> uint8 (s*h, s*w, 3) SR``: bicubic, or a trained generator.
UpscaleFn = Callable[[np.ndarray], np.ndarray]

GRID_CROP = 128  # HR px per side of each grid cell: the grid is for eyeballing, not a full-size dump


# ------------------------------------------------------------------------------------------ loading
def iter_test_images(ts: TestSetConfig, scale: int) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(image name, lr_uint8, hr_uint8 or None)`` for a configured test set, at most ``max_images``.

    Loading rules (modcrop of HR, LR from ``lr`` checked to be HR/scale, or MATLAB bicubic of HR)
    live in :class:`csrgan.data.datasets.TestSet`.
    """

    for name, lr, hr, _ in iter_test_images_gray(ts, scale):
        yield name, lr, hr


def iter_test_images_gray(
    ts: TestSetConfig, scale: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, bool]]:
    """Like :func:`iter_test_images`, plus whether the HR file is single-channel (scored as grey)."""
    test_set = TestSet(ts.name, hr_dir=ts.hr, lr_dir=ts.lr, scale=scale)
    for k, (name, lr, hr) in enumerate(test_set):
        if ts.max_images is not None and k >= ts.max_images:
            break
        yield name, lr, hr, test_set.hr_is_gray(k)


# ----------------------------------------------------------------------------------------- SR eval
def _center_crop(img: np.ndarray, size: int, multiple: int) -> tuple[slice, slice]:
    h, w = img.shape[:2]
    ch, cw = min(size, h) // multiple * multiple, min(size, w) // multiple * multiple
    y, x = (h - ch) // 2 // multiple * multiple, (w - cw) // 2 // multiple * multiple
    return slice(y, y + ch), slice(x, x + cw)


def comparison_grid(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], scale: int
) -> np.ndarray:
    """One row per image: nearest-upsampled LR | SR | HR (a centred crop of <= ``GRID_CROP`` HR px).

    Nearest upsampling shows the LR's actual pixels (a bicubic LR would already be a method).
    Missing HR cells are left black. Cells are separated by 2 px white lines.
    """
    gap = 2
    cells: list[list[np.ndarray]] = []
    for lr, sr, hr in rows:
        ys, xs = _center_crop(sr, GRID_CROP, scale)
        lr_ys = slice(ys.start // scale, ys.stop // scale)
        lr_xs = slice(xs.start // scale, xs.stop // scale)
        lr_up = np.repeat(np.repeat(lr[lr_ys, lr_xs], scale, axis=0), scale, axis=1)
        sr_c = sr[ys, xs]
        hr_c = hr[ys, xs] if hr is not None else np.zeros_like(sr_c)
        cells.append([lr_up, sr_c, hr_c])
    cell_h = max(c[0].shape[0] for c in cells)
    cell_w = max(c[0].shape[1] for c in cells)
    grid = np.full((len(cells) * (cell_h + gap) - gap, 3 * (cell_w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            grid[y : y + cell_h, x : x + cell_w] = 0
            grid[y : y + img.shape[0], x : x + img.shape[1]] = img
    return grid


def _evaluate_upscaler(
    upscale: UpscaleFn,
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None,
    grid_dir: Path | None,
    step: int,
    grid_images: int,
) -> dict[str, float]:
    for m in metrics:
        METRICS.get(m)  # unknown names: RegistryError listing the known ones
    # LPIPS asked for but unavailable (eval.lpips.optional and weights missing): build_lpips has already
    # said so loudly; the column stays empty rather than being filled by a different network.
    wanted = tuple(m for m in metrics if m != "lpips" or lpips is not None)
    out: dict[str, float] = {}
    for ts in test_sets:
        sums: dict[str, float] = {}
        n_scored = 0
        grid_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for name, lr, hr, gray in iter_test_images_gray(ts, scale):
            sr = upscale(lr)
            if sr.dtype != np.uint8 or sr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, 3):
                raise ValueError(
                    f"{ts.name}/{name}: upscaled image is {sr.dtype} {sr.shape}, expected uint8 "
                    f"{(lr.shape[0] * scale, lr.shape[1] * scale, 3)}"
                )
            if hr is not None and wanted:
                scores = evaluate_image(sr, hr, scale, metrics=wanted, lpips=lpips, gray=gray)
                for key, value in scores.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                n_scored += 1
            if grid_dir is not None and len(grid_rows) < grid_images:
                grid_rows.append((lr, sr, hr))
        if n_scored:
            out.update({f"{ts.name}/{k}": v / n_scored for k, v in sums.items()})
        if grid_dir is not None and grid_rows:
            write_image(Path(grid_dir) / f"{ts.name}_step{step}.png", comparison_grid(grid_rows, scale))
    return out


def evaluate_sr_model(
    model_fn: ModelFn,
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None,
    device: torch.device | str,
    tile: int = 0,
    grid_dir: Path | None = None,
    step: int = 0,
    grid_images: int = 2,
    overlap: int | None = None,
) -> dict[str, float]:
    """Mean metrics of an SR network over every set: ``{"<set>/psnr": ..., "<set>/ssim": ..., ...}``.

    ``model_fn`` maps a float ``(1, 3, h, w)`` tensor in [0, 1] on ``device`` to ``(1, 3, s*h, s*w)``; put
    an ``nn.Module`` in eval mode first (the caller owns train/eval state). Full images, one at a time;
    with ``tile > 0`` through :func:`tiled_forward` (``overlap`` LR px of context). ``lpips`` is an
    ``LPIPSMetric`` or None (then no ``lpips`` key). With ``grid_dir``, writes
    ``grid_dir/<set>_step<step>.png`` of the first ``grid_images`` images. ``overlap`` defaults to the
    network's ``receptive_radius`` (16 for a function without one).
    """
    device = torch.device(device)
    if overlap is None:
        overlap = int(getattr(model_fn, "receptive_radius", 16))

    @torch.no_grad()
    def upscale(lr: np.ndarray) -> np.ndarray:
        x = to_tensor(lr).to(device)
        return to_uint8(tiled_forward(model_fn, x, scale, tile, overlap))[0]

    return _evaluate_upscaler(upscale, test_sets, scale, metrics, lpips, grid_dir, step, grid_images)


def evaluate_bicubic(
    test_sets: Sequence[TestSetConfig],
    scale: int,
    metrics: Sequence[str],
    lpips: LPIPSMetric | None = None,
    grid_dir: Path | None = None,
    step: int = 0,
    grid_images: int = 2,
) -> dict[str, float]:
    """:func:`evaluate_sr_model` for MATLAB-bicubic upsampling of the LR (uint8 in, uint8 out)."""
    return _evaluate_upscaler(
        lambda lr: imresize(lr, scale=scale), test_sets, scale, metrics, lpips, grid_dir, step, grid_images
    )


# --------------------------------------------------------------------------------- CycleGAN Table 2
def evaluate_translation(
    G_fn: ModelFn, test_sets: Sequence[TestSetConfig], scale: int, device: torch.device | str
) -> dict[str, float]:
    """How real-like the CycleGAN's ``G`` makes bicubic LR (the report's Table 2), per "real" set.

    For every set with ``degradation == "real"`` and both ``hr`` and ``lr``: ``x = bicubic(HR)`` (MATLAB,
    uint8) and the real LR ``y`` of the same scene. Keys ``<set>/g_psnr``, ``<set>/g_ssim`` compare
    ``G(x)`` (uint8-rounded) with ``y``; ``<set>/bicubic_psnr``, ``<set>/bicubic_ssim`` compare ``x``
    with ``y``, the baseline G must beat. Means over images. Other sets are skipped.

    Protocol: Y channel as in :mod:`csrgan.metrics`, but crop border **0**. The SR protocol's
    ``scale``-px crop removes HR-scale border artefacts of upsampling; here both images are at LR scale
    and G is size-preserving, so there is no upsampling border to exclude, and on small LR images a
    4-px crop would discard a large share of the pixels. ``G_fn`` maps ``(1, 3, h, w)`` on ``device``
    to the same shape (put an ``nn.Module`` in eval mode first).
    """
    from csrgan.metrics import psnr, ssim

    device = torch.device(device)
    out: dict[str, float] = {}
    for ts in test_sets:
        if ts.degradation != "real" or ts.hr is None or ts.lr is None:
            continue
        sums = {"g_psnr": 0.0, "g_ssim": 0.0, "bicubic_psnr": 0.0, "bicubic_ssim": 0.0}
        n = 0
        for name, real_lr, hr in iter_test_images(ts, scale):
            assert hr is not None
            bic = imresize(hr, scale=1.0 / scale)
            if bic.shape != real_lr.shape:
                raise ValueError(
                    f"{ts.name}/{name}: bicubic LR {bic.shape[:2]} and real LR {real_lr.shape[:2]} "
                    "differ in size"
                )
            with torch.no_grad():
                g = to_uint8(G_fn(to_tensor(bic).to(device)))[0]
            if g.shape != real_lr.shape:
                raise ValueError(f"{ts.name}/{name}: G changed the LR size {bic.shape[:2]} -> {g.shape[:2]}")
            sums["g_psnr"] += psnr(g, real_lr, crop_border=0)
            sums["g_ssim"] += ssim(g, real_lr, crop_border=0)
            sums["bicubic_psnr"] += psnr(bic, real_lr, crop_border=0)
            sums["bicubic_ssim"] += ssim(bic, real_lr, crop_border=0)
            n += 1
        if n:
            out.update({f"{ts.name}/{k}": v / n for k, v in sums.items()})
    return out


# ------------------------------------------------------------------------------------------- LPIPS
def build_lpips(eval_cfg: EvalConfig, device: torch.device | str = "cpu") -> LPIPSMetric | None:
    """The ``LPIPSMetric`` that ``eval`` asks for, or None when LPIPS is not among ``eval.metrics``.

    Missing backbone weights: with ``eval.lpips.optional: true`` -> None and ONE loud warning (log +
    stderr), so the LPIPS column is empty rather than silently computed with another network; with
    ``optional: false`` the ``MissingWeightsError`` (which says how to fix it) propagates.
    """
    if "lpips" not in eval_cfg.metrics:
        return None
    from csrgan.metrics import LPIPSMetric
    from csrgan.weights import MissingWeightsError

    cfg = eval_cfg.lpips
    if cfg.net != PROTOCOL.lpips_net:
        raise ValueError(
            f"eval.lpips.net: {cfg.net!r} is not the protocol's LPIPS network ({PROTOCOL.lpips_net!r})"
        )
    try:
        return LPIPSMetric(device=str(device), source=cfg.source, random_backbone=cfg.random_backbone)
    except MissingWeightsError as exc:
        if not cfg.optional:
            raise
        msg = (
            f"LPIPS DISABLED: backbone weights are missing and eval.lpips.optional is true, so every "
            f"'<set>/lpips' value of this run is left empty.\n{exc}"
        )
        log.warning(msg)
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
        return None


# ----------------------------------------------------------------------------------- one folder
def bicubic_upscaler(scale: int) -> UpscaleFn:
    """MATLAB-compatible bicubic upsampling (a = -0.5), rounded to uint8: the baseline every paper reports."""

    def up(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return imresize(lr, output_shape=(h * scale, w * scale))

    return up


def evaluate_folder(
    test_set: TestSet,
    upscale: UpscaleFn,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips: LPIPSMetric | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{"mean": {metric: value}, "images": [{"name":..., metric: value}], "n": N}``.

    LPIPS is skipped (None) when requested but ``lpips`` is None (optional LPIPS with missing weights).
    """
    if not test_set.has_hr:
        raise ValueError(f"test set {test_set.name!r} has no HR images: full-reference metrics need them")
    wanted = [m for m in metrics if m != "lpips" or lpips is not None]
    images: list[dict[str, Any]] = []
    for i, (name, lr, hr) in enumerate(test_set):
        assert hr is not None
        sr = upscale(lr)
        if sr.shape != hr.shape:
            raise ValueError(f"{name}: SR is {sr.shape} but HR is {hr.shape} (scale {test_set.scale})")
        gray = test_set.hr_is_gray(i)
        row: dict[str, Any] = {
            "name": name,
            **evaluate_image(sr, hr, test_set.scale, wanted, lpips, gray=gray),
        }
        for m in metrics:
            row.setdefault(m, None)
        images.append(row)
        if progress:
            progress(name)
    mean = {m: (float(np.mean([r[m] for r in images])) if _all_present(images, m) else None) for m in metrics}
    return {"mean": mean, "images": images, "n": len(images), "protocol": PROTOCOL.id}


def _all_present(rows: list[dict[str, Any]], metric: str) -> bool:
    return bool(rows) and all(r.get(metric) is not None for r in rows)


def evaluate_checkpoint(
    checkpoint: str | Path,
    hr_dir: str | Path,
    lr_dir: str | Path | None = None,
    scale: int | None = None,
    metrics: Sequence[str] = ("psnr", "ssim"),
    lpips_cfg: LPIPSConfig | None = None,
    device: str | torch.device = "cpu",
    tile: int = 0,
) -> dict[str, Any]:
    """PSNR/SSIM/LPIPS of the generator in ``checkpoint`` on ``hr_dir`` (LR from ``lr_dir`` or bicubic).

    Returns :func:`evaluate_folder`'s ``{"mean": {...}, "images": [...], "n", "protocol"}``
    plus ``"scale"``, ``"checkpoint"`` and ``"lpips_weights"`` (the LPIPS backbone's provenance).
    ``lpips_cfg`` is a :class:`csrgan.config.LPIPSConfig` (default: AlexNet weights from the cache,
    not optional).
    """
    up = model_upscaler(checkpoint, device=device, tile=tile, scale=scale)
    s = up.scale
    lpips = build_lpips(EvalConfig(metrics=list(metrics), lpips=lpips_cfg or LPIPSConfig()), device=device)
    result = evaluate_folder(TestSet("checkpoint", hr_dir, lr_dir, scale=s), up, metrics, lpips)
    return {
        **result,
        "scale": s,
        "checkpoint": str(checkpoint),
        "lpips_weights": getattr(lpips, "provenance", None),
    }
