"""``csrgan data ...``: build the demo set, degrade an HR folder, download DIV2K.

Thin layer: parse and validate options, call ``csrgan.data.*``, print results. Expected failures (a
missing folder, a corrupt image or archive, a lost connection) print one ``error:`` line on stderr and
exit 1; an invalid configuration (pipeline YAML, ``--tracks``...) exits 2 and names the field.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import typer

from csrgan.cli.common import user_errors
from csrgan.names import DIV2K_SPLITS, DIV2K_TRACKS  # literals: --help must not import torch

app = typer.Typer(
    help="Datasets: the offline demo set, synthetic real-world degradations, DIV2K download.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

DATASETS = ("div2k",)


def _expected_errors() -> AbstractContextManager[None]:
    """The library's expected failures: one stderr line and an exit code (no traceback)."""
    import requests

    from csrgan.data.degradations import DegradationConfigError
    from csrgan.data.div2k import ArchiveError, DownloadError

    return user_errors(config=(DegradationConfigError,), failures=(ArchiveError, DownloadError, OSError,
                                                                   requests.RequestException))  # fmt: skip


def _csv(value: str, known: tuple[str, ...], option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if not items or bad:
        raise typer.BadParameter(
            f"{', '.join(bad) or 'nothing given'}: choose from {', '.join(known)} (comma-separated)",
            param_hint=option,
        )
    return items


@app.command()
def demo(
    out: Path = typer.Option(..., "--out", help="folder for the demo set (created; reused if it matches)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed for splits, crops and degradations"),
    force: bool = typer.Option(False, "--force", help="rebuild even if the manifest matches"),
) -> None:
    """Build the offline demo set from photos bundled with scikit-image (train HR, real LR, test sets)."""
    from csrgan.data.demo import build_demo

    with _expected_errors():
        manifest = build_demo(out, seed=seed, force=force)
    c = manifest["counts"]
    typer.echo(
        f"{out}: {c['train_hr']} train HR images, {c['train_lr_real']} real-LR images, "
        f"{c['test_images']} test images (bicubic + unknown LR); "
        f"pipeline {manifest['settings']['pipeline']['id']}, seed {seed}"
    )


@app.command()
def degrade(
    hr: Path = typer.Option(..., "--hr", help="folder of HR images"),
    out: Path = typer.Option(..., "--out", help="folder for the LR images and degradations.jsonl"),
    scale: int = typer.Option(4, "--scale", min=1, help="HR is modcropped to it; LR must be HR / scale"),
    pipeline: Path | None = typer.Option(
        None, "--pipeline", help="degradation pipeline YAML (default: the packaged default_degradation.yaml)"
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="seed (each image's stream is keyed by its file name)"),
) -> None:
    """Make LR images from HR images with a synthetic degradation pipeline (records in degradations.jsonl)."""
    from csrgan.data.degradations import DegradationPipeline, default_pipeline, degrade_folder, load_pipeline

    with _expected_errors():
        pipe: DegradationPipeline = default_pipeline() if pipeline is None else load_pipeline(pipeline)
        records = degrade_folder(hr, out, pipe, scale=scale, seed=seed)
    typer.echo(
        f"{len(records)} LR images -> {out} (pipeline {pipe.id}, seed {seed}); records: degradations.jsonl"
    )


@app.command()
def download(
    dataset: str = typer.Argument(..., help=f"dataset to download: {', '.join(DATASETS)}"),
    root: Path = typer.Option(..., "--root", help="destination folder (archives/ + extracted layout)"),
    tracks: str = typer.Option(",".join(DIV2K_TRACKS), "--tracks", help="LR tracks, comma-separated"),
    splits: str = typer.Option(",".join(DIV2K_SPLITS), "--splits", help="splits, comma-separated"),
    base_url: str | None = typer.Option(None, "--base-url", help="mirror URL (default: the official site)"),
    checksums: Path | None = typer.Option(
        None, "--checksums", help="sha256sum-format manifest to verify the archives against"
    ),
    keep_archives: bool = typer.Option(True, "--keep-archives/--delete-archives", help="keep the zips"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Download and extract a dataset (resumable, idempotent): DIV2K HR + x4 LR tracks."""
    from csrgan.data.div2k import DIV2K_BASE_URL, download_div2k

    if dataset.lower() not in DATASETS:
        raise typer.BadParameter(
            f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}", param_hint="DATASET"
        )
    track_list = _csv(tracks, DIV2K_TRACKS, "--tracks")
    split_list = _csv(splits, DIV2K_SPLITS, "--splits")
    with _expected_errors():
        paths = download_div2k(
            root,
            tracks=track_list,
            splits=split_list,
            base_url=base_url or DIV2K_BASE_URL,
            checksums=checksums,
            keep_archives=keep_archives,
            progress=progress,
        )
    for s in split_list:
        typer.echo(f"{s} HR: {paths.hr(s)}")
        for t in track_list:
            typer.echo(f"{s} LR {t} x4: {paths.lr(s, t)}")
