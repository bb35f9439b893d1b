"""``csrgan upscale``: super-resolve images with a trained generator (tiled, so any size fits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_CONFIG, fail, user_errors

# The defaults are literals so that `--help` does not import torch; a test keeps them equal to
# csrgan.inference.DEFAULT_TILE / DEFAULT_OVERLAP, where the measurement behind the tile is written.
TILE_HELP = (
    "LR tile side in px (0 = whole image at once). The default 256 was measured on CPU: within 10% of "
    "the fastest tile per megapixel (the fastest for the paper-size SRResNet) with a working set of "
    "~0.5-1 GB; 128 is 1.1-1.2x slower (more overlap recomputed), 512 needs ~3x the memory. On a GPU "
    "larger tiles are faster"
)


def upscale(
    checkpoint: Annotated[
        Path, typer.Argument(help="a run's final/ folder (e.g. OUT/gan/final) or a checkpoint folder")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="LR image files and/or folders of images")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder for <name>.png")] = ...,  # type: ignore[assignment]
    tile: Annotated[int, typer.Option(help=TILE_HELP)] = 256,  # == csrgan.inference.DEFAULT_TILE
    overlap: Annotated[
        int | None,
        typer.Option(
            help="LR px of context around each tile; default: the generator's receptive-field radius, "
            "which makes the tiled result equal the untiled one (16 for the demo model, 40 at paper size)"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Upscale LR images with a trained SR generator; writes OUT/<name>.png for each input.

    Any image size: the generator runs one tile at a time, and each row
    of tiles goes straight into the PNG, so memory depends on --tile,
    not on the image. The progress bar counts tiles over all inputs.

    Example:\n
      csrgan upscale runs/demo/gan/final photos/ -o photos_x4
    """
    if tile < 0 or (overlap is not None and overlap < 0):
        fail(f"--tile and --overlap must be >= 0 (got {tile}, {overlap})", EXIT_CONFIG)
    with user_errors():
        from csrgan.inference import upscale_paths

        written = upscale_paths(checkpoint, inputs, out, tile=tile, overlap=overlap, device=device)
    typer.echo(f"wrote {len(written)} image(s) to {out}")
