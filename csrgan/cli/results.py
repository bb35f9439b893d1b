"""``csrgan results summary|plot DIR``: the ablation table and plot of a sweep's Parquet results.

Only parsing and formatting here; reading, summarising and plotting live in :mod:`csrgan.results`.
User errors (missing folder, unknown ``--by``, empty results) go to stderr with exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from csrgan import results

app = typer.Typer(
    help=(
        "Summarise and plot sweep results: DIR is results/<sweep> (or a results root, a trial file, "
        "or a file:// / s3:// / gs:// URI)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


class Which(StrEnum):
    final = "final"
    best = "best"


class Fmt(StrEnum):
    markdown = "markdown"
    csv = "csv"
    json = "json"


#: The metric columns of a results table, as typer choices.
Metric = StrEnum("Metric", {m: m for m in results.METRICS})


T = TypeVar("T")

DirArg = Annotated[
    str, typer.Argument(metavar="DIR", help="sweep folder (results/<sweep>), results root or URI")
]
MetricOpt = Annotated[
    list[Metric] | None, typer.Option("--metric", help="metric(s) to show (default: all that have values)")
]
WhichOpt = Annotated[
    Which,
    typer.Option("--which", help="per trial: the final evaluation, or the best step per metric (optimistic)"),
]
TestSetOpt = Annotated[
    list[str] | None, typer.Option("--test-set", help="test set(s) to show (default: all)")
]
PhaseOpt = Annotated[
    str | None, typer.Option("--phase", help="phase to summarise; needed when the results hold several")
]


def _run(fn: Callable[[], T]) -> T:
    """Turn the library's user-facing errors into ``error: ...`` on stderr and exit code 1."""
    try:
        return fn()
    except (results.ResultsError, OSError) as exc:  # OSError: missing folder, unreachable store
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _metrics(metric: list[Metric] | None) -> list[str] | None:
    return [m.value for m in metric] if metric else None


@app.command()
def summary(
    directory: DirArg,
    by: Annotated[
        list[str], typer.Option("--by", help="parameter to group by, e.g. sr.mix_prob (repeatable)")
    ],
    metric: MetricOpt = None,
    which: WhichOpt = Which.final,
    fmt: Annotated[
        Fmt, typer.Option("--format", help="markdown (mean ± std), csv or json (numbers)")
    ] = Fmt.markdown,
    test_set: TestSetOpt = None,
    phase: PhaseOpt = None,
) -> None:
    """Mean ± std over seeds per parameter value and test set; diverged/error trials counted apart."""

    def go() -> str:
        df = results.read_results(directory)
        table = results.summarize(df, by, _metrics(metric), which.value, test_set or None, phase)
        return results.format_summary(table, fmt.value)

    typer.echo(_run(go), nl=False)


@app.command()
def plot(
    directory: DirArg,
    by: Annotated[str, typer.Option("--by", help="parameter on the x axis, e.g. sr.mix_prob")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
    metric: MetricOpt = None,
    which: WhichOpt = Which.final,
    test_set: TestSetOpt = None,
    phase: PhaseOpt = None,
) -> None:
    """Metric vs parameter, one subplot per metric, one line per test set, error bars = std over seeds."""
    if out.suffix.lower() != ".png":
        typer.echo(f"error: --out must be a .png file, got {out}", err=True)
        raise typer.Exit(1)

    def go() -> Path:
        df = results.read_results(directory)
        return results.plot(df, by, out, _metrics(metric), which.value, test_set or None, phase)

    typer.echo(f"wrote {_run(go)}")
