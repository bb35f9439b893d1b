"""``csrgan upscale``: super-resolve images with a trained generator (tiled, so any size fits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_CONFIG, fail, user_errors


def upscale(
    checkpoint: Annotated[
        Path, typer.Argument(help="a run's final/ folder (e.g. OUT/gan/final) or a checkpoint folder")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="LR image files and/or folders of images")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder for <name>.png")] = ...,  # type: ignore[assignment]
    tile: Annotated[int, typer.Option(help="LR tile side (0 = whole image at once)")] = 256,
    overlap: Annotated[int, typer.Option(help="LR px of context around each tile")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Upscale LR images with a trained SR generator; writes OUT/<name>.png for each input.

    Example:\n
      csrgan upscale runs/demo/gan/final photos/ -o photos_x4
    """
    if tile < 0 or overlap < 0:
        fail(f"--tile and --overlap must be >= 0 (got {tile}, {overlap})", EXIT_CONFIG)
    with user_errors():
        from csrgan.inference import upscale_paths

        written = upscale_paths(checkpoint, inputs, out, tile=tile, overlap=overlap, device=device)
    typer.echo(f"wrote {len(written)} image(s) to {out}")
