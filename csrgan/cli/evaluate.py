"""``csrgan evaluate``: per-image and mean PSNR/SSIM/LPIPS (or, without HR, NIQE) of bicubic or a trained
generator."""

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
    hr: Annotated[
        Path | None,
        typer.Option(help="folder of HR images (modcropped to the scale); omit to score --lr with niqe"),
    ] = None,
    lr: Annotated[
        Path | None, typer.Option(help="folder of LR images; default: MATLAB bicubic of HR")
    ] = None,
    method: Annotated[str, typer.Option(help="bicubic | model (model when CHECKPOINT is given)")] = "",
    scale: Annotated[int, typer.Option(help="upscaling factor; also the border crop")] = 4,
    metrics: Annotated[
        str,
        typer.Option(
            help="comma-separated: psnr,ssim,lpips (need --hr), niqe (no-reference); "
            "default: psnr,ssim with --hr, niqe without"
        ),
    ] = "",
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
    niqe_params: Annotated[
        Path | None,
        typer.Option(
            help="NIQE model file (LIVE .mat or deepinv .pt); default: the torch cache's LIVE model"
        ),
    ] = None,
    tile: Annotated[int, typer.Option(help="model only: tile side for large images (0 = whole image)")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Score bicubic upsampling or a trained generator on an HR folder (Y channel BT.601, crop = scale),
    or, without --hr, on real LR photos with the no-reference NIQE (recording which model scored).

    Examples:\n
      csrgan evaluate --method bicubic --hr Set5/HR --lr Set5/LR_bicubic_x4 --scale 4\n
      csrgan evaluate runs/srgan/final --hr Set5/HR --metrics psnr,ssim,lpips --json\n
      csrgan evaluate runs/srgan/final --lr RealSRSet+5images/LR_real --metrics niqe
    """
    method = method or ("model" if checkpoint else "bicubic")
    if method not in ("bicubic", "model"):
        fail(f"--method: {method!r} is not bicubic or model", EXIT_CONFIG)
    if method == "model" and checkpoint is None:
        fail("--method model needs a CHECKPOINT argument", EXIT_CONFIG)
    if method == "bicubic" and checkpoint is not None:
        fail("give either CHECKPOINT or --method bicubic, not both", EXIT_CONFIG)
    wanted, no_ref = _metrics(metrics, hr, lr)

    from csrgan.weights import WeightsError  # CorruptWeightsError too: a command that ran and failed

    with user_errors(failures=(WeightsError,)):
        from csrgan.config import EvalConfig, LPIPSConfig
        from csrgan.data.datasets import TestSet
        from csrgan.evaluation import bicubic_upscaler, build_lpips, evaluate_folder
        from csrgan.noref import build_noref

        test_set = TestSet("cli", hr, lr, scale=scale)
        lpips_cfg = LPIPSConfig(
            source=str(lpips_weights) if lpips_weights else None,
            random_backbone=random_lpips,
            optional=lpips_optional,
        )
        lpips = build_lpips(EvalConfig(metrics=wanted, lpips=lpips_cfg), device=device)
        noref = build_noref(no_ref, {"niqe": niqe_params})
        if method == "bicubic":
            upscale = bicubic_upscaler(scale)
        else:
            from csrgan.inference import model_upscaler

            upscale = model_upscaler(checkpoint, device=device, tile=tile, scale=scale)
        result = evaluate_folder(test_set, upscale, wanted, lpips, noref=noref)

    result = {
        "method": method,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "hr": str(hr) if hr else None,
        "lr": str(lr) if lr else "bicubic-from-hr",
        "scale": scale,
        "lpips_weights": getattr(lpips, "provenance", None) if "lpips" in wanted else None,
        **result,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_table(result, wanted)


def _metrics(metrics: str, hr: Path | None, lr: Path | None) -> tuple[list[str], list[str]]:
    """The ``--metrics`` asked for (default by whether there is an HR) and its no-reference ones."""
    from csrgan.registry import METRICS

    if hr is None and lr is None:
        fail(
            "give --hr (full-reference metrics), --lr (real LR photos: no-reference metrics), or both",
            EXIT_CONFIG,
        )
    wanted = split_csv(metrics or ("psnr,ssim" if hr else "niqe"), tuple(METRICS.names()), "metrics")
    no_ref = [m for m in wanted if not METRICS.get(m).reference]
    full_ref = [m for m in wanted if m not in no_ref]
    if hr is None and full_ref:
        known = ", ".join(m for m in METRICS.names() if not METRICS.get(m).reference)
        fail(
            f"--metrics {','.join(full_ref)} compare SR with HR, and no --hr was given; score real LR photos "
            f"with the no-reference metrics ({known})",
            EXIT_CONFIG,
        )
    return wanted, no_ref


def _print_table(result: dict, metrics: list[str]) -> None:
    from csrgan.registry import METRICS

    def cell(v: float | None, m: str) -> str:
        if v is None:
            return "-"
        return f"{v:.{METRICS.get(m).decimals}f}"

    width = max([len(r["name"]) for r in result["images"]] + [4])
    typer.echo(f"{'image':<{width}}  " + "  ".join(f"{m:>8}" for m in metrics))
    for r in result["images"]:
        typer.echo(f"{r['name']:<{width}}  " + "  ".join(f"{cell(r[m], m):>8}" for m in metrics))
    typer.echo(f"{'mean':<{width}}  " + "  ".join(f"{cell(result['mean'][m], m):>8}" for m in metrics))
    typer.echo(
        f"({result['n']} images, x{result['scale']}, {result['method']}, protocol {result['protocol']}"
        + (f", LPIPS backbone {result['lpips_weights']}" if result.get("lpips_weights") else "")
        + "".join(f", {m.upper()} model {p}" for m, p in result.get("noref_models", {}).items())
        + (f", no-reference protocol {result['noref_protocol']}" if result.get("noref_protocol") else "")
        + ")"
    )
