"""Run a convolutional network over a large image tile by tile, with the same result as in one piece."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ModelFn", "tiled_forward"]

#: A network, or any function ``(N, C, h, w) -> (N, C, s*h, s*w)``.
ModelFn = Callable[[torch.Tensor], torch.Tensor]


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
