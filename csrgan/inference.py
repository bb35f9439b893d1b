"""Apply a trained SR generator to images: ``csrgan upscale`` and the model side of ``csrgan evaluate``.

The generator comes from a run's ``final/`` folder or any SR checkpoint folder
(:func:`csrgan.models.artifacts.load_generator`). Large images go through
:func:`csrgan.models.tiling.tiled_forward`: one ``tile + 2*overlap`` LR tile at a time on the device,
the SR image assembled on the CPU, so memory is bounded by the tile, not the image (apart from the
uint8 input and the float output, which live in host memory). With ``overlap`` at least the
generator's receptive-field radius in LR px the tiled result equals the untiled one up to float
summation order. SR outputs are quantised once with :func:`csrgan.data.io.to_uint8`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from csrgan.data.io import list_images, read_image, to_tensor, to_uint8, write_image
from csrgan.models.artifacts import load_with_spec
from csrgan.models.tiling import tiled_forward

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "ModelUpscaler",
    "expand_inputs",
    "model_upscaler",
    "upscale_paths",
]

DEFAULT_TILE = 256
#: LR px of context around each tile. SRResNet's receptive field is 9x9 head + 2 convs per block +
#: 3x3 tail + upsampler/9x9 tail (~ 4 + 2*n_blocks + 3 LR px of radius, 39 for the paper's 16 blocks);
#: 16 keeps tiled == untiled to float rounding for small models and makes seams invisible for the paper
#: model. Pass a larger overlap for bit-closer results on deep models.
DEFAULT_OVERLAP = 16


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return dev


class ModelUpscaler:
    """``uint8 (h, w, 3) -> uint8 (s*h, s*w, 3)`` with a trained generator (tiled when ``tile > 0``)."""

    def __init__(self, model: nn.Module, scale: int, tile: int = 0, overlap: int = DEFAULT_OVERLAP) -> None:
        if tile < 0 or overlap < 0:
            raise ValueError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
        self.model, self.scale, self.tile, self.overlap = model, scale, tile, overlap

    @torch.no_grad()
    def __call__(self, lr: np.ndarray) -> np.ndarray:
        # The LR stays on the CPU: tiled_forward moves one tile at a time to the model's device and
        # assembles the SR image on the LR's device, which bounds accelerator memory.
        sr = tiled_forward(self.model, to_tensor(lr), self.scale, tile=self.tile, overlap=self.overlap)
        return to_uint8(sr)[0]


def model_upscaler(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    tile: int = 0,
    scale: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
) -> ModelUpscaler:
    """The generator in ``checkpoint`` as an upscaler, at the scale its spec records. ``scale``, when
    given, must match it (a x4 model cannot score a x2 set)."""
    model, spec = load_with_spec(Path(checkpoint), "sr", device=_device(device), scale=scale)
    return ModelUpscaler(model, spec.scale, tile=tile, overlap=overlap)


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted). Raises on missing paths."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(list_images(p))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not out:
        raise ValueError("no input images given")
    return out


def upscale_paths(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Upscale every input image (files, or folders of images) into ``out_dir/<stem>.png``; returns them.

    Fails before any work when two inputs share a stem (one output would overwrite the other) or an
    output would overwrite its own input. ``tile=0`` runs each image whole.
    """
    from tqdm import tqdm

    files = expand_inputs(inputs)
    out_dir = Path(out_dir)
    targets = [out_dir / f"{f.stem}.png" for f in files]
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, targets, strict=True):
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; upscale them separately")
        if dst.resolve() == src.resolve():
            raise ValueError(f"{src}: the output would overwrite the input; choose another output folder")
        seen[dst] = src
    up = model_upscaler(checkpoint, device=device, tile=tile, overlap=overlap)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        list(zip(files, targets, strict=True)), desc=f"upscale x{up.scale}", unit="img", disable=not progress
    )
    for src, dst in bar:
        bar.set_postfix_str(src.name)
        write_image(dst, up(read_image(src)))
    return targets
