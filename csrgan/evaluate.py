"""Score an upscaler on one folder of test images by the protocol in :mod:`csrgan.metrics`.

``evaluate_folder`` is what ``csrgan evaluate`` prints: per-image values and their means. The upscaler is
any ``uint8 LR -> uint8 SR`` function: the MATLAB-bicubic baseline here, or a trained generator
(:func:`csrgan.inference.model_upscaler`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from csrgan.data.datasets import TestSet
from csrgan.data.resize import imresize
from csrgan.metrics import PROTOCOL, LPIPSMetric, evaluate_image

Upscaler = Callable[[np.ndarray], np.ndarray]


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB-compatible bicubic upsampling (a = -0.5), rounded to uint8: the baseline every paper reports."""

    def up(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return imresize(lr, output_shape=(h * scale, w * scale))

    return up


def evaluate_folder(
    test_set: TestSet,
    upscale: Upscaler,
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
