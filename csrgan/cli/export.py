"""``csrgan export``: a trained SR generator as a ``.safetensors`` or ``.onnx`` file, checked against PyTorch.

Mounted in :mod:`csrgan.cli.app`. Importing this module stays cheap (no torch, onnx or safetensors):
the library, :mod:`csrgan.export`, is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_CONFIG, fail, user_errors

# Literals, so that `--help` imports no torch; tests keep them equal to csrgan.export.FORMATS / DEFAULT_ATOL.
FORMATS = ("safetensors", "onnx")
DEFAULT_ATOL = 1e-4


def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="a run's final/ folder (e.g. OUT/gan/final) or a checkpoint folder (step_XXXXXXXX/)"
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="safetensors | onnx")] = ...,  # type: ignore[assignment]
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="output file, or a folder for generator.<format>",
            show_default="generator.<format> beside the weights",
        ),
    ] = None,
    atol: Annotated[
        float,
        typer.Option(
            help="largest max abs difference from PyTorch accepted by the check of the written file"
        ),
    ] = DEFAULT_ATOL,
    ema: Annotated[
        bool,
        typer.Option(
            "--ema/--no-ema",
            help='export the EMA weights (state.pt nets["G_ema"]) when the checkpoint has them; '
            "--no-ema: the raw weights",
        ),
    ] = True,
) -> None:
    """Export the SR generator for deployment: safetensors (weights) or ONNX.

    The file carries the generator spec, scale, stage, step, which weights
    (EMA or raw) and the csrgan version as metadata. ONNX: input `lr`
    (N, 3, H, W) in [0, 1], output `sr`; batch, height and width are
    dynamic. The written file is run on random images (onnxruntime for
    ONNX) and compared with PyTorch; the max abs difference is printed,
    and above --atol the export fails (exit 1) and nothing is written.

    Example:\n
      csrgan export runs/demo/gan/final --format onnx -o srresnet_x4.onnx
    """
    if fmt not in FORMATS:
        fail(f"--format: unknown {fmt!r}; choose from {', '.join(FORMATS)}", EXIT_CONFIG)
    if not atol >= 0:  # also refuses NaN
        fail(f"--atol must be >= 0 (got {atol})", EXIT_CONFIG)
    from csrgan.export import ExportInputError

    with user_errors(config=(ExportInputError,)):
        from csrgan.export import export_generator

        result = export_generator(checkpoint, fmt, out, atol=atol, ema=ema)
    weights = "EMA" if result.used_ema else "raw"
    where = ", ".join(f"{k} {result.metadata[k]}" for k in ("stage", "step") if k in result.metadata)
    typer.echo(
        f"exported {result.spec.type} x{result.spec.scale} ({weights} weights, {result.weights_entry}"
        f"{'; ' + where if where else ''}) to {result.path}"
    )
    shapes = ", ".join("x".join(map(str, s)) for s in result.checked_shapes)
    typer.echo(
        f"check: max abs difference from PyTorch {result.max_abs_diff:.3g} (atol {result.atol:g}; "
        f"random images {shapes}{', onnxruntime CPU' if fmt == 'onnx' else ''})"
    )
