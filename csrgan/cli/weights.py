"""``csrgan weights ...``: see which pretrained weights are present, fetch them, print their paths.

Training machines are offline: run ``csrgan weights download all`` on a connected machine and copy
the torch checkpoints dir (``csrgan weights status`` prints it) to the same place on the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

# Literals, not csrgan.weights (torch + torchvision, seconds): `--help` lists them without importing it.
from csrgan.names import WEIGHTS_DOWNLOADABLE, WEIGHTS_IN_ALL, WEIGHTS_KNOWN

app = typer.Typer(
    help=(
        "Pretrained weights (VGG19 for the content loss, AlexNet/VGG16 + linear layers for LPIPS): "
        "status, download (on a connected machine), path."
    ),
    no_args_is_help=True,
)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**10:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status rows as JSON.")] = False,
) -> None:
    """Show each weights file, what it is for, and whether it is present (and where)."""
    from csrgan import weights as W

    rows = W.status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"torch checkpoint cache: {W.cache_dir()}")
    headers = ("name", "used for", "status", "size", "path")
    table = [
        (r["name"], r["used_for"], "present" if r["present"] else "MISSING", _size(r["size"]), r["path"])
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in (headers, *table):
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command("download")
def download_cmd(
    name: Annotated[
        str,
        typer.Argument(
            help=f"One of {', '.join(WEIGHTS_DOWNLOADABLE)}, or 'all' ({', '.join(WEIGHTS_IN_ALL)})."
        ),
    ],
    url: Annotated[
        str | None, typer.Option("--url", help="Download this exact URL instead (one NAME only).")
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror", help="Base URL of a mirror serving the official file names (also with 'all')."
        ),
    ] = None,
    dest: Annotated[
        Path | None, typer.Option("--dest", help="Target directory (default: the torch checkpoint cache).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a file is present.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download torchvision checkpoints (verifying their hash prefix) into the torch cache."""
    from csrgan import weights as W

    names = [n for n, s in W.SPECS.items() if s.in_all] if name == "all" else [name]
    if url is not None and (name == "all" or mirror is not None):
        raise _fail(ValueError("--url names one file: use it with a single NAME and without --mirror"))
    try:
        for n in names:
            source = url
            if mirror is not None:
                source = f"{mirror.rstrip('/')}/{W.SPECS[n].filename}" if n in W.SPECS else None
            path = W.download(n, url=source, dest_dir=dest, force=force, progress=not quiet)
            typer.echo(f"{n}: {path}")
    except W.WeightsError as exc:
        raise _fail(exc) from None


@app.command("path")
def path_cmd(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(WEIGHTS_KNOWN)}.")],
    check: Annotated[bool, typer.Option("--check", help="Exit with code 1 if the file is missing.")] = False,
) -> None:
    """Print where the named weights file is expected (whether or not it is there yet)."""
    from csrgan import weights as W

    try:
        path = W.weights_path(name)
    except W.WeightsError as exc:
        raise _fail(exc) from None
    if check and not path.is_file():
        raise _fail(FileNotFoundError(f"{name}: {path} does not exist"))
    typer.echo(str(path))
