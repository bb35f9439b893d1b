"""Root of the ``csrgan`` command. Each command group lives in its own module and is mounted here.

Every module mounted here is imported to build ``csrgan --help`` (and any ``csrgan GROUP --help``), so
none of them imports torch, Ray, pandas, pyarrow, matplotlib or the pydantic schema at import time:
commands import the library when they run (benchmarks/cli_startup.py measures the start-up,
tests/test_cli_hygiene.py keeps the heavy libraries out).
"""

from __future__ import annotations

from typing import Annotated

import typer

import csrgan
from csrgan.cli import cluster, data, evaluate, export, jobs, results, submit, sweep, train, upscale, weights
from csrgan.cli.common import weights_named_as

app = typer.Typer(
    name="csrgan",
    help=(
        "Real-world super-resolution experiments: CycleGAN-made real-like LR + SRGAN (x4), "
        "trained with Ray Train, swept with Ray Tune + Optuna, results in Parquet."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def version_line() -> str:
    """``csrgan 0.3.0 (torch 2.5.1, ray 2.40.0)``: torch's and Ray's versions come from their
    installed metadata, so this imports neither."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("torch", "ray"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return f"csrgan {csrgan.__version__} ({', '.join(parts)})"


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print csrgan's version (and torch's, Ray's)."
        ),
    ] = False,
) -> None:
    """The options of ``csrgan`` itself (the help text is the Typer's)."""


app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(weights.app, name="weights")
app.add_typer(results.app, name="results")
# `csrgan evaluate` takes weights as flags: messages about missing weights name those, not config keys.
app.command("evaluate")(weights_named_as("evaluate")(evaluate.evaluate))
app.command("sweep")(sweep.sweep)
app.command("upscale")(upscale.upscale)
app.command("submit")(submit.submit)
app.command("export")(export.export)
app.add_typer(jobs.app, name="jobs")
app.add_typer(cluster.app, name="cluster")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
