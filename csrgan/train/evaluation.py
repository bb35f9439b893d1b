"""Evaluation used by the trainers, ``csrgan evaluate`` and ``csrgan upscale``.

Everything here follows the core protocol of :mod:`csrgan.metrics` (Y channel, crop ``scale`` px,
uint8 rounding): SR outputs are quantised with :func:`csrgan.data.io.to_uint8` *before* any metric,
exactly once, and metrics are means over the images of a set. Keys are ``"<set>/<metric>"``.

* :func:`evaluate_sr_model` — an SR network on full test images (tiled when ``tile > 0``), plus an
  LR/SR/HR comparison grid PNG per set.
* :func:`evaluate_bicubic` — the same numbers for MATLAB-bicubic upsampling (the baseline).
* :func:`evaluate_translation` — the CycleGAN's Table 2: how close ``G(bicubic(HR))`` and plain
  ``bicubic(HR)`` are to the *real* LR of the same scene.
* :func:`tiled_forward` — memory-bounded inference on large images, exact for convolutional nets.
* :func:`build_lpips` — LPIPS per ``eval.lpips``, honouring ``optional``.

Sets without HR (no-reference, e.g. RealSRSet) get no metric keys; their SR output still goes into
the comparison grid.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from csrgan.config import EvalConfig, TestSetConfig
from csrgan.data.io import to_tensor, to_uint8, write_image
from csrgan.data.resize import imresize

if TYPE_CHECKING:  # csrgan.metrics pulls in scipy: imported where it is used
    from csrgan.metrics import LPIPSMetric

__all__ = [
    "build_lpips",
    "comparison_grid",
    "evaluate_bicubic",
    "evaluate_sr_model",
    "evaluate_translation",
    "iter_test_images",
    "tiled_forward",
]

log = logging.getLogger(__name__)

ModelFn = Callable[[torch.Tensor], torch.Tensor]
UpscaleFn = Callable[[np.ndarray], np.ndarray]

GRID_CROP = 128  # HR px per side of each grid cell: the grid is for eyeballing, not a full-size dump


# ------------------------------------------------------------------------------------------- tiling
def _model_device(model: ModelFn, fallback: torch.device) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return fallback


@torch.no_grad()
def tiled_forward(
    model: ModelFn, lr: torch.Tensor, scale: int, tile: int = 0, overlap: int = 16
) -> torch.Tensor:
    """``model(lr)`` computed tile by tile: ``(N, C, h, w)`` -> ``(N, C, scale*h, scale*w)``.

    The LR is cut into ``tile x tile`` cores; each core is run with ``overlap`` LR px of real context
    on every side (less at the image border, where the context is the image border itself, as in the
    untiled run), and only the core's output is kept. For a convolutional net whose receptive-field
    radius (in LR px) is ``<= overlap``, every kept output pixel sees exactly the input it sees in the
    untiled run, so the result equals ``model(lr)`` up to float summation order (no blending seams).
    Only nets with image-global operations (e.g. BatchNorm in *train* mode) differ: call ``.eval()``.

    Memory: one ``(tile + 2*overlap)`` input tile at a time on the model's device; the output is
    assembled on ``lr``'s device (put ``lr`` on the CPU to bound accelerator memory for huge images).
    ``tile=0`` runs the whole image at once.
    """
    if lr.ndim != 4:
        raise ValueError(f"tiled_forward expects (N, C, h, w), got shape {tuple(lr.shape)}")
    if tile < 0 or overlap < 0:
        raise ValueError(f"tiled_forward: tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    device = _model_device(model, lr.device)
    h, w = lr.shape[-2:]
    if tile == 0 or (h <= tile and w <= tile):
        return model(lr.to(device)).to(lr.device)
    out: torch.Tensor | None = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
            sr = model(lr[..., py0:py1, px0:px1].to(device))
            if sr.shape[-2:] != ((py1 - py0) * scale, (px1 - px0) * scale):
                raise ValueError(
                    f"tiled_forward: model output {tuple(sr.shape[-2:])} for input "
                    f"{(py1 - py0, px1 - px0)} is not x{scale}"
                )
            if out is None:
                out = lr.new_zeros((lr.shape[0], sr.shape[1], h * scale, w * scale), dtype=sr.dtype)
            core = sr[..., (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale]
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = core.to(out.device)
    assert out is not None
    return out


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
    from csrgan.data.datasets import TestSet

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
    from csrgan.metrics import evaluate_image

    unknown = sorted(set(metrics) - {"psnr", "ssim", "lpips"})
    if unknown:
        raise ValueError(f"evaluation: unknown metric(s) {unknown}; known: psnr, ssim, lpips")
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
    overlap: int = 16,
) -> dict[str, float]:
    """Mean metrics of an SR network over every set: ``{"<set>/psnr": ..., "<set>/ssim": ..., ...}``.

    ``model_fn`` maps a float ``(1, 3, h, w)`` tensor in [0, 1] on ``device`` to ``(1, 3, s*h, s*w)``; put
    an ``nn.Module`` in eval mode first (the caller owns train/eval state). Full images, one at a time;
    with ``tile > 0`` through :func:`tiled_forward` (``overlap`` LR px of context). ``lpips`` is an
    ``LPIPSMetric`` or None (then no ``lpips`` key). With ``grid_dir``, writes
    ``grid_dir/<set>_step<step>.png`` of the first ``grid_images`` images.
    """
    device = torch.device(device)

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
    kwargs: dict[str, object] = {
        "device": str(device),
        "source": cfg.source,
        "random_backbone": cfg.random_backbone,
    }
    if "net" in _init_params(LPIPSMetric):
        kwargs["net"] = cfg.net
    elif cfg.net != "alex":
        raise ValueError(
            f"eval.lpips.net: {cfg.net!r} is not supported by csrgan.metrics.LPIPSMetric (alex only)"
        )
    try:
        return LPIPSMetric(**kwargs)
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


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls).parameters)
