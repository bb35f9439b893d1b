"""``csrgan results summary|plot DIR``: the ablation table and plot of a sweep's Parquet results.

Only parsing and formatting here; reading, summarising and plotting live in :mod:`csrgan.results`.
User errors (missing folder, unknown ``--by``, empty results) go to stderr with exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from csrgan.cli.common import LazyModule
from csrgan.names import METRIC_NAMES

#: csrgan.results, imported when a command first uses it: it pulls in pandas, pyarrow and torch.
results = LazyModule("csrgan.results")

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
Metric = StrEnum("Metric", {m: m for m in METRIC_NAMES})


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
ObjectiveOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--objective",
        metavar="SET/METRIC[:max|min]",
        help="an objective of the Pareto front, e.g. unknown/psnr or unknown/lpips:min (repeatable; default: "
        "the sweep's search.metric list; goal default: the metric's own direction)",
    ),
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
    objective: ObjectiveOpt = None,
    pareto: Annotated[
        bool | None,
        typer.Option(
            "--pareto/--no-pareto",
            help="add the Pareto front of the objectives (default: on for a multi-objective sweep or with "
            "--objective); with --format csv|json the front's table replaces the ablation table",
        ),
    ] = None,
) -> None:
    """Mean ± std over seeds per parameter value and test set; diverged/error trials counted apart.

    For a multi-objective sweep (search.metric a list), or with --objective, the Pareto front follows:
    every configuration's objectives at the final step (mean ± std over seeds), whether it is on the
    front, how many configurations dominate it and by how many seed stds (docs/results.md, "Pareto front").
    """

    def go() -> str:
        df = results.read_results(directory)
        objs = _objectives(directory, objective, pareto)
        front = None
        if objs:
            from csrgan.results.pareto import format_pareto, pareto_table

            front = format_pareto(pareto_table(df, objs, by, phase), fmt.value, title=Path(directory).name)
            if fmt is not Fmt.markdown:
                return front
        table = results.summarize(df, by, _metrics(metric), which.value, test_set or None, phase)
        text = results.format_summary(table, fmt.value)
        return text + ("\n" + front if front else "")

    typer.echo(_run(go), nl=False)


def _objectives(directory: str, objective: list[str] | None, pareto: bool | None) -> list[Any]:
    """The Pareto front's objectives: ``--objective``, else the sweep's (its ``_sweep.json``) when it has
    several or ``--pareto`` asks; [] for no front."""
    from csrgan.results.pareto import Objective, sweep_objectives

    if pareto is False:
        return []
    if objective:
        return [Objective.parse(o) for o in objective]
    objs = sweep_objectives(directory)
    if pareto and len(objs) < 2:
        raise results.ResultsError(
            f"--pareto: {directory} has {'one search metric' if objs else 'no sweep config (_sweep.json)'}; "
            "name two or more objectives with --objective SET/METRIC[:max|min]"
        )
    return objs if len(objs) > 1 else []


@app.command()
def plot(
    directory: DirArg,
    by: Annotated[
        list[str],
        typer.Option(
            "--by", help="parameter on the x axis, e.g. sr.mix_prob; repeat it to plot configurations (arms)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
    metric: MetricOpt = None,
    which: WhichOpt = Which.final,
    test_set: TestSetOpt = None,
    phase: PhaseOpt = None,
    pareto: Annotated[
        bool,
        typer.Option(
            "--pareto",
            help="plot objective 1 against objective 2 instead: every configuration (--by) with error bars, "
            "the Pareto front connected (two objectives: the sweep's, or --objective twice)",
        ),
    ] = False,
    objective: ObjectiveOpt = None,
) -> None:
    """Metric vs parameter, one subplot per metric, one line per test set, error bars = std over seeds."""
    if out.suffix.lower() != ".png":
        typer.echo(f"error: --out must be a .png file, got {out}", err=True)
        raise typer.Exit(1)
    if not pareto and objective:
        typer.echo("error: --objective sets the axes of the Pareto plot: add --pareto", err=True)
        raise typer.Exit(1)
    if pareto and (metric or test_set or which is not Which.final):
        typer.echo(
            "error: with --pareto the axes are the objectives (--objective SET/METRIC) at the final step; "
            "--metric, --test-set and --which do not apply",
            err=True,
        )
        raise typer.Exit(1)

    def go() -> Path:
        from csrgan.results.plot import configurations, plot_pareto

        if pareto:
            objs = _objectives(directory, objective, True)
            return plot_pareto(results.read_results(directory), objs, by, out, phase)
        df, x = configurations(results.read_results(directory), by)
        return results.plot(df, x, out, _metrics(metric), which.value, test_set or None, phase)

    typer.echo(f"wrote {_run(go)}")


@app.command()
def report(
    directory: Annotated[
        str, typer.Argument(metavar="DIR", help="one sweep folder (results/<sweep>, with its _sweep.json)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file to write (default: DIR/_report.html)")
    ] = None,
    device: Annotated[str, typer.Option(help="where the arms' generators run for the crops")] = "cpu",
    crop: Annotated[int, typer.Option(min=8, help="HR px per side of each crop")] = 96,
) -> None:
    """One self-contained HTML page of a sweep: tables, plots, crops, degradation stage, provenance.

    The ablation tables as the sweep prints them (with the bicubic baseline and each arm's share of the
    oracle gain), the plots, crops of every test image (bicubic | each arm's final model | HR, PSNR per
    crop), the degradation stage's samples and quality verdict, and provenance. Every image is embedded:
    the file opens offline. Details: docs/results.md, "Report".
    """
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        typer.echo(f"error: --out must be an .html file, got {out}", err=True)
        raise typer.Exit(1)

    def go() -> Path:
        from csrgan.results.report import build_report

        return build_report(directory, out, device=device, crop=crop)

    typer.echo(f"wrote {_run(go)}")


@app.command()
def models(
    directory: DirArg,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="PARAM=VALUE a trial must have, e.g. sr.mix_prob=0.5 (repeatable)"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="only trials with this seed")] = None,
    phase: Annotated[str, typer.Option("--phase", help="whose model: gan (the trial's) or pretrain")] = "gan",
    path: Annotated[
        bool, typer.Option("--path", help="print only the model folder of the ONE matching trial (scripts)")
    ] = False,
) -> None:
    """Each trial's final model (the folder evaluate, upscale and export take), with its params and metrics.

    Examples:\n
      csrgan results models results/quickstart\n
      M=$(csrgan results models results/quickstart --where sr.mix_prob=0.5 --seed 0 --path)\n
      csrgan upscale "$M" photo.png -o out/
    """

    def go() -> str:
        from csrgan.results import models as m

        df = results.read_results(directory)
        table = m.trial_models(df, phase)
        table = m.select(table, df, m.parse_where(where or []), seed)
        root = m.storage_root_of(directory, df)
        table["checkpoint"] = [_shown(root / c) for c in table["checkpoint"]]
        if path:
            what = " and ".join([*(where or []), *([f"seed={seed}"] if seed is not None else [])]) or "all"
            return str(m.one_model(table, what)["checkpoint"]) + "\n"
        if table.empty:
            raise results.ResultsError("no trial matches --where/--seed")
        shown = table.rename(columns=lambda c: c.removeprefix(results.PARAM_PREFIX))
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n"

    typer.echo(_run(go), nl=False)


def _shown(p: Path) -> str:
    """A model folder as the user can type it: relative to the current directory when under it."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
