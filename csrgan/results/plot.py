"""The ablation plot of a results table: metric vs one parameter, mean ± std over seeds (a PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from csrgan.results.schema import HIGHER_IS_BETTER, PARAM_PREFIX
from csrgan.results.summary import Which, _fmt_value, summarize


def configurations(df: pd.DataFrame, by: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Several parameters on one axis: a column ``"a / b"`` whose categories are the configurations
    (``"1 / pipeline"``), so arms that share one parameter's value (the learned p = 1 and the oracle p = 1)
    stay apart instead of being averaged into one point."""
    from csrgan.results.summary import _fmt_value, resolve_column

    if len(by) == 1:
        return df, by[0]
    cols = [resolve_column(df, b) for b in by]
    name = " / ".join(c.removeprefix(PARAM_PREFIX) for c in cols)
    values = [" / ".join(_fmt_value(r[c]) for c in cols) for r in df[cols].to_dict("records")]
    return df.assign(**{name: values}), name


def baseline_of(df: pd.DataFrame, test_set: str, metric: str) -> float | None:
    """The bicubic baseline of ``test_set`` from the rows' ``baseline_<metric>`` column (None if absent)."""
    col = f"baseline_{metric}"
    if col not in df.columns:
        return None
    vals = df.loc[df["test_set"] == test_set, col].dropna()
    return float(vals.iloc[0]) if len(vals) else None


def plot(
    df: pd.DataFrame,
    by: str,
    out: str | Path,
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> Path:
    """PNG of metric vs ``by``: one subplot per metric, one line per test set, error bars = std over seeds,
    and each test set's bicubic baseline (rows' ``baseline_<metric>``) as a dashed line of its colour.

    Numeric parameters are plotted on a numeric axis (log when they span >= 2 decades, all positive);
    others (and parameters with missing values) as categories.
    """
    fig = figure(df, by, metrics, which, test_sets, phase)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out


def figure(
    df: pd.DataFrame,
    by: str,
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> Any:
    """The matplotlib ``Figure`` that :func:`plot` saves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize(df, [by], metrics, which, test_sets, phase)
    by_col = summary.attrs["by"][0]
    metrics, test_sets = summary.attrs["metrics"], summary.attrs["test_sets"]
    xs = summary[by_col]
    numeric = pd.api.types.is_numeric_dtype(xs) and not pd.api.types.is_bool_dtype(xs) and xs.notna().all()
    x = xs.to_numpy(dtype=float) if numeric else np.arange(len(xs))
    label = by_col.removeprefix(PARAM_PREFIX)

    fig = Figure(figsize=(4.6 * len(metrics), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics, strict=True):
        for ts in test_sets:
            mean, std = summary[f"{ts}/{m} mean"].to_numpy(float), summary[f"{ts}/{m} std"].to_numpy(float)
            line = ax.errorbar(x, mean, yerr=np.nan_to_num(std, nan=0.0), marker="o", capsize=3, label=ts)
            base = baseline_of(df, ts, m)
            if base is not None:
                color = line.lines[0].get_color()
                ax.axhline(base, color=color, linestyle="--", linewidth=1, label=f"{ts}: bicubic")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{m.upper()} ({'higher' if HIGHER_IS_BETTER[m] else 'lower'} is better)")
        ax.set_title(f"{m} ({which} step)")
        ax.grid(alpha=0.3)
        if numeric and (x > 0).all() and x.max() / x.min() >= 100:
            ax.set_xscale("log")
        elif numeric and len(x) <= 12:
            ax.set_xticks(x, [_fmt_value(v) for v in xs])
        if not numeric:
            ax.set_xticks(x, [_fmt_value(v) for v in xs])
        ax.legend(title="test set (dashed: bicubic)", fontsize="small")
    ns = ", ".join(
        f"{_fmt_value(v)}: n={n}" + (f" (+{d} diverged)" if d else "")
        for v, n, d in zip(xs, summary["n"], summary["n_diverged"], strict=True)
    )
    fig.suptitle(f"phase {summary.attrs['phase']}; mean ± std over seeds; {label} {ns}", fontsize="small")
    return fig


def pareto_figure(
    df: pd.DataFrame, objectives: Sequence[Any], by: Sequence[str], phase: str | None = None
) -> Any:
    """Objective 1 (x) against objective 2 (y): every configuration at its mean over seeds with error bars
    = std over seeds, the Pareto front (:func:`csrgan.results.pareto.pareto_table`) highlighted and
    connected in order of objective 1. Needs exactly two objectives."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from csrgan.results.notes import arm_label
    from csrgan.results.pareto import FRONT_COLUMN, Objective, pareto_table
    from csrgan.results.schema import ResultsError

    objs = [Objective.of(o) for o in objectives]
    if len(objs) != 2:
        raise ResultsError(
            f"the Pareto plot draws objective 1 against objective 2: it needs exactly two objectives, got "
            f"{len(objs)} ({', '.join(o.name for o in objs) or 'none'}); name two with --objective"
        )
    table = pareto_table(df, objs, by, phase)
    (ox, oy), front = objs, table[FRONT_COLUMN].to_numpy(bool)
    x, y = (table[f"{o.name} mean"].to_numpy(float) for o in objs)
    xerr, yerr = (np.nan_to_num(table[f"{o.name} std"].to_numpy(float), nan=0.0) for o in objs)
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for mask, style in ((~front, {"color": "0.55", "label": "dominated"}), (front, {"color": "C3"})):
        ax.errorbar(x[mask], y[mask], xerr=xerr[mask], yerr=yerr[mask], fmt="o", capsize=3, **style)
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "-", color="C3", label="Pareto front")
    if len(table) <= 12:  # one label per point; configurations with equal means share it
        labels: dict[tuple[float, float], list[str]] = {}
        for i, r in table.iterrows():
            labels.setdefault((x[i], y[i]), []).append(arm_label(r, table.attrs["by"]))
        for xy, names in labels.items():
            ax.annotate("; ".join(names), xy, fontsize="x-small", xytext=(4, 4), textcoords="offset points")
    for set_label, o in ((ax.set_xlabel, ox), (ax.set_ylabel, oy)):
        set_label(f"{o.name} ({'higher' if o.goal == 'maximize' else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    left = f"; {table.attrs['n_excluded']} left out (no value)" if table.attrs["n_excluded"] else ""
    fig.suptitle(
        f"phase {table.attrs['phase']}, final step; mean ± std over seeds; {int(front.sum())} of "
        f"{len(table)} configurations on the front{left}",
        fontsize="small",
    )
    return fig


def plot_pareto(
    df: pd.DataFrame, objectives: Sequence[Any], by: Sequence[str], out: str | Path, phase: str | None = None
) -> Path:
    """Write :func:`pareto_figure` as a PNG."""
    fig = pareto_figure(df, objectives, by, phase)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out
