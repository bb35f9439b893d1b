"""Frequency separation: the low-pass / high-pass split of an image (Fritsche, Gu, Timofte 2019).

A degradation changes an image mostly in its high frequencies (noise, lost detail, JPEG blocks) and
should leave its low frequencies (content, colour) alone. DSGAN's code (manuelfritsche/real-world-sr,
``dsgan/model.py``, ``FilterLow``/``FilterHigh``) uses a 5x5 box filter (``AvgPool2d(5, stride 1)``);
here the border is replicate-padded so the output keeps the input's size (DSGAN's default discards
the 2-px border instead). ``high_pass(x) = x - low_pass(x)``.

Used by the frequency-separation objective (:mod:`csrgan.train.dsgan`) and by the degradation
fidelity metrics (:mod:`csrgan.fidelity`), so both mean the same split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOW_PASS_KERNEL", "high_pass", "low_pass"]

#: DSGAN's box-filter side (``kernel_size=5`` in ``FilterLow``).
LOW_PASS_KERNEL = 5


def low_pass(x: torch.Tensor, kernel: int = LOW_PASS_KERNEL) -> torch.Tensor:
    """Box filter of side ``kernel`` (odd), replicate padding: ``(N, C, H, W)`` -> same shape."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"low_pass: kernel must be odd and positive, got {kernel}")
    r = kernel // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, stride=1)


def high_pass(x: torch.Tensor, kernel: int = LOW_PASS_KERNEL) -> torch.Tensor:
    """``x - low_pass(x)``: what a degradation is allowed to change."""
    return x - low_pass(x, kernel)
