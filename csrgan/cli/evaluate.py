"""``csrgan evaluate``: per-image and mean PSNR/SSIM/LPIPS of bicubic or a trained generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_CONFIG, fail, split_csv, user_errors


def evaluate(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="trained generator: a run's final/ folder or a checkpoint folder (omit for --method bicubic)"
        ),
    ] = None,
    hr: Annotated[Path, typer.Option(help="folder of HR images (modcropped to the scale)")] = ...,  # type: ignore[assignment]
    lr: Annotated[
        Path | None, typer.Option(help="folder of LR images; default: MATLAB bicubic of HR")
    ] = None,
    method: Annotated[str, typer.Option(help="bicubic | model (model when CHECKPOINT is given)")] = "",
    scale: Annotated[int, typer.Option(help="upscaling factor; also the border crop")] = 4,
    metrics: Annotated[str, typer.Option(help="comma-separated: psnr,ssim,lpips")] = "psnr,ssim",
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object: mean, images, protocol")
    ] = False,
    lpips_weights: Annotated[Path | None, typer.Option(help="AlexNet backbone file for LPIPS")] = None,
    random_lpips: Annotated[
        bool, typer.Option(help="explicitly use a RANDOM LPIPS backbone (for tests; recorded in the output)")
    ] = False,
    lpips_optional: Annotated[
        bool, typer.Option(help="missing LPIPS weights leave LPIPS empty (warned once) instead of failing")
    ] = False,
    tile: Annotated[int, typer.Option(help="model only: tile side for large images (0 = whole image)")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Score bicubic upsampling or a trained generator on an HR folder (Y channel BT.601, crop = scale).

    Examples:\n
      csrgan evaluate --method bicubic --hr Set5/HR --lr Set5/LR_bicubic_x4 --scale 4\n
      csrgan evaluate runs/srgan/final --hr Set5/HR --metrics psnr,ssim,lpips --json
    """
    method = method or ("model" if checkpoint else "bicubic")
    if method not in ("bicubic", "model"):
        fail(f"--method: {method!r} is not bicubic or model", EXIT_CONFIG)
    if method == "model" and checkpoint is None:
        fail("--method model needs a CHECKPOINT argument", EXIT_CONFIG)
    if method == "bicubic" and checkpoint is not None:
        fail("give either CHECKPOINT or --method bicubic, not both", EXIT_CONFIG)
    from csrgan.registry import METRICS

    wanted = split_csv(metrics, tuple(METRICS.names()), "metrics")

    with user_errors():
        from csrgan.config import EvalConfig, LPIPSConfig
        from csrgan.data.datasets import TestSet
        from csrgan.evaluation import bicubic_upscaler, build_lpips, evaluate_folder

        test_set = TestSet("cli", hr, lr, scale=scale)
        lpips_cfg = LPIPSConfig(
            source=str(lpips_weights) if lpips_weights else None,
            random_backbone=random_lpips,
            optional=lpips_optional,
        )
        lpips = build_lpips(EvalConfig(metrics=wanted, lpips=lpips_cfg), device=device)
        if method == "bicubic":
            upscale = bicubic_upscaler(scale)
        else:
            from csrgan.inference import model_upscaler

            upscale = model_upscaler(checkpoint, device=device, tile=tile, scale=scale)
        result = evaluate_folder(test_set, upscale, wanted, lpips)

    result = {
        "method": method,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "hr": str(hr),
        "lr": str(lr) if lr else "bicubic-from-hr",
        "scale": scale,
        "lpips_weights": getattr(lpips, "provenance", None) if "lpips" in wanted else None,
        **result,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_table(result, wanted)


def _print_table(result: dict, metrics: list[str]) -> None:
    def cell(v: float | None, m: str) -> str:
        if v is None:
            return "-"
        return f"{v:.2f}" if m == "psnr" else f"{v:.4f}"

    width = max([len(r["name"]) for r in result["images"]] + [4])
    typer.echo(f"{'image':<{width}}  " + "  ".join(f"{m:>8}" for m in metrics))
    for r in result["images"]:
        typer.echo(f"{r['name']:<{width}}  " + "  ".join(f"{cell(r[m], m):>8}" for m in metrics))
    typer.echo(f"{'mean':<{width}}  " + "  ".join(f"{cell(result['mean'][m], m):>8}" for m in metrics))
    typer.echo(
        f"({result['n']} images, x{result['scale']}, {result['method']}, protocol {result['protocol']}"
        + (f", LPIPS backbone {result['lpips_weights']}" if result.get("lpips_weights") else "")
        + ")"
    )
