"""``csrgan sweep FILE``: validate, run (or resume) the sweep, print the ablation table."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_CONFIG, EXIT_ERROR, fail, user_errors

EXIT_INCOMPLETE = 3  # the sweep stopped with unfinished trials (Ctrl-C, driver lost): resume it


def sweep(
    config: Annotated[Path, typer.Argument(help="experiment YAML, e.g. experiments/quickstart.yaml")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted override, typed by the schema: sr.mix_prob=0.5")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted sweep: finished trials are kept")
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(help="join a Ray cluster (auto | HOST:6379 | ray://HOST:10001); default: embedded"),
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="results/stages root (overrides the file's `storage`)")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="embedded Ray only: CPUs to use (default: all)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="check every input and print the trial plan; start and write nothing")
    ] = False,
    check_data: Annotated[
        bool,
        typer.Option(help="decode every image in every data folder first (default: small folders only)"),
    ] = False,
) -> None:
    """Run a sweep from an experiment file on Ray Tune (+ Optuna), with results in Parquet.

    Before Ray starts, every input is checked (data folders, image sizes, LR/HR pairs, weights,
    storage); all problems are listed at once and the command exits 2 having written nothing.
    The CycleGAN stage is trained once per distinct CycleGAN config and SRResNet pre-training once per
    distinct pre-training config; both are reused by later trials and sweeps under the same storage.
    Exit codes: 0 every trial finished (or diverged / was stopped by the scheduler), 1 a trial or stage
    ended in error, 2 bad input (nothing started), 3 interrupted (resume it).
    """
    from csrgan.sweep.driver import SweepError

    if address is not None and num_cpus is not None:
        fail("--num-cpus sizes an embedded Ray cluster; it cannot be combined with --address", EXIT_CONFIG)
    with user_errors(config=(SweepError,)):
        from csrgan.config import load_config
        from csrgan.data.layout import resolve_data
        from csrgan.sweep.driver import check_fits, embedded_resources, plan_sweep

        cfg = resolve_data(load_config(config, set_ or []), build_demo=False)
        if storage:
            cfg = cfg.model_copy(update={"storage": storage})
        if dry_run:
            plan = plan_sweep(cfg, resume=resume, check_data=check_data, echo=lambda _m: None)
            if address is None:
                check_fits(plan.cfg, embedded_resources(num_cpus))
            _print_plan(plan.cfg)
            typer.echo("inputs checked: no problems found (nothing was started or written)", err=True)
            return

    from csrgan.cli.live import sweep_view
    from csrgan.sweep.driver import run_sweep

    with user_errors(config=(SweepError,)):
        outcome = run_sweep(
            cfg,
            resume=resume,
            address=address,
            num_cpus=num_cpus,
            echo=typer.echo,
            check_data=check_data,
            view=sweep_view(),  # a live table on a terminal; plain lines otherwise
        )

    if outcome.baseline:
        from csrgan.results.report_data import baseline_line

        typer.echo("\n" + baseline_line(outcome.baseline))  # the report prints the same sentence
    _print_summary(cfg, outcome.results_uri or outcome.results_dir, outcome.baseline)
    t = outcome.timing
    if t.get("train_s"):
        busy = t["train_s"] / (t["wall_s"] * t.get("slots", 1))
        typer.echo(
            f"\nwall {t['wall_s']:.0f} s; trainers ran {t['train_s']:.0f} s over {t.get('slots', 1)} "
            f"parallel slot(s): {100 * busy:.0f}% busy, so orchestration "
            f"(Ray start, trial start-up, idle slots) took ~{100 * (1 - busy):.0f}% "
            f"(details in {outcome.results_dir / '_sweep.json'})"
        )
    _print_errors(outcome)
    if not outcome.complete:
        cmd = " ".join(shlex.quote(a) for a in ["csrgan", "sweep", str(config), *_set_args(set_), "--resume"])
        typer.echo(
            f"\nsweep interrupted: {len(outcome.unfinished)} trial(s) unfinished. Resume with:\n  {cmd}",
            err=True,
        )
        raise typer.Exit(EXIT_INCOMPLETE)
    if outcome.errors or outcome.stage_errors:
        raise typer.Exit(EXIT_ERROR)


def _print_errors(outcome) -> None:  # noqa: ANN001
    """Which trials and stages ended in error, and why (the first line of each error), on stderr."""
    if not (outcome.errors or outcome.stage_errors):
        return
    lines = [f"  stage {name}: {why}" for name, why in sorted(outcome.stage_errors.items())]
    lines += [f"  trial {tid} ({why})" for tid, why in sorted(outcome.errors.items())]
    n, m = len(outcome.errors), len(outcome.stage_errors)
    typer.echo(
        f"\nerror: {n} trial(s) and {m} stage(s) ended in error; the rows of every other trial are written "
        f"(details: Tune's error.txt under {outcome.results_dir / '_tune'}):\n" + "\n".join(lines),
        err=True,
    )


def _print_phase_table(cfg, df, by: list[str], phase: str, baseline: dict[str, float]) -> None:  # noqa: ANN001
    """One phase's ablation table, then the note computed from it (:func:`csrgan.results.notes.closing_note`:
    best arm per test set, spread against the seed noise, arms below the bicubic-interpolation baseline)."""
    from csrgan.results import summarize
    from csrgan.results.notes import closing_note

    table = summarize(df, by=by, which="final", phase=phase)
    name = {"pretrain": "SRResNet pre-training", "gan": "SRGAN (GAN phase)"}[phase]
    typer.echo(f"\nAblation ({cfg.name}), {name}: final step per trial, mean ± std over seeds\n")
    _print_rows(cfg, table)
    metric = cfg.search.metric.name.rsplit("/", 1)[-1]
    note = closing_note(table, metric, baseline)
    if note:
        typer.echo(f"\nReading this table ({metric}, mean over seeds):\n" + "\n".join(f"  {n}" for n in note))


def _print_rows(cfg, table) -> None:  # noqa: ANN001
    """The table; with ``search.reference`` (and ``oracle``) each row's gain on the search metric over the
    reference and its share of the oracle's gain, against the seed noise."""
    from csrgan.results import format_summary
    from csrgan.results.effects import SHARE_COLUMN, effects, find_row, gain_column, pooled_std

    s = cfg.search
    col = s.metric.name
    if s.reference is None or f"{col} mean" not in table.columns:
        typer.echo(format_summary(table, "markdown"))
        return
    table = effects(table, col, s.reference, s.oracle)
    for name in (gain_column(col), SHARE_COLUMN):
        table[name] = table[name].round(2)
    typer.echo(format_summary(table, "markdown"))
    sigma = pooled_std(table, col)
    orc = find_row(table, s.oracle) if s.oracle else None
    if orc is not None:
        gain = float(table.at[orc, gain_column(col)])
        typer.echo(
            f"{col}: the oracle {s.oracle} gains {gain:+.2f} over the reference {s.reference}; pooled "
            f"seed std {sigma:.2f} ({'more' if gain > 2 * sigma else 'NOT more'} than twice the noise). "
            "share = gain / oracle gain."
        )


def _set_args(items: list[str] | None) -> list[str]:
    return [x for item in (items or []) for x in ("--set", item)]


def _print_plan(cfg) -> None:  # noqa: ANN001
    from csrgan.sweep.driver import plan_trials

    trials = plan_trials(cfg)
    s = cfg.search
    metric = "-" if s is None else s.metric.name  # several: "maximize a, minimize b", as the sweep says
    if s is not None and s.multi_objective:
        metric = ", ".join(f"{m.goal} {m.name}" for m in s.targets)
    typer.echo(
        f"sweep {cfg.name}: method {s.method if s else 'single run'}, "
        f"{'objectives' if s and s.multi_objective else 'metric'} {metric}"
    )
    if s is not None and s.method == "optuna":
        sampler = "NSGA-II" if s.sampler == "nsga2" else "TPE"
        typer.echo(
            f"  {s.num_samples} Optuna {sampler} trial(s) over {', '.join(s.parameters)} (seed {s.seeds[0]})"
        )
    for t in trials:
        typer.echo(f"  {t.label()}")


def _print_summary(cfg, results_dir: Path | str, baseline: dict[str, float] | None = None) -> None:  # noqa: ANN001
    from csrgan.results import read_results

    try:
        df = read_results(results_dir)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"no results to summarise: {exc}", err=True)
        return
    by = list(cfg.search.param_names()) if cfg.search else []
    if not by:
        typer.echo(df.to_string())
        return
    for phase in [p for p in ("pretrain", "gan") if p in set(df["phase"])]:
        _print_phase_table(cfg, df, by, phase, baseline or {})
    if cfg.search.multi_objective and "gan" in set(df["phase"]):
        _print_pareto(cfg, df, by)
    sys.stdout.flush()


def _print_pareto(cfg, df, by: list[str]) -> None:  # noqa: ANN001
    """The Pareto front of the GAN phase's final evaluations (:mod:`csrgan.results.pareto`)."""
    from csrgan.results import ResultsError
    from csrgan.results.pareto import format_pareto, pareto_table

    try:
        table = pareto_table(df, cfg.search.targets, by, phase="gan")
    except ResultsError as exc:  # e.g. every trial diverged: the tables above already say so
        typer.echo(f"\nno Pareto front: {exc}", err=True)
        return
    typer.echo("\n" + format_pareto(table, "markdown", title=cfg.name))
