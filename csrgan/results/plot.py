"""The ablation plot of a results table: metric vs one parameter, mean ± std over seeds (a PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from csrgan.results.schema import HIGHER_IS_BETTER, PARAM_PREFIX
from csrgan.results.summary import Which, _fmt_value, summarize


def plot(
    df: pd.DataFrame,
    by: str,
    out: str | Path,
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> Path:
    """PNG of metric vs ``by``: one subplot per metric, one line per test set, error bars = std over seeds.

    Numeric parameters are plotted on a numeric axis (log when they span >= 2 decades, all positive);
    others (and parameters with missing values) as categories.
    """
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
            ax.errorbar(x, mean, yerr=np.nan_to_num(std, nan=0.0), marker="o", capsize=3, label=ts)
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
        ax.legend(title="test set", fontsize="small")
    ns = ", ".join(
        f"{_fmt_value(v)}: n={n}" + (f" (+{d} diverged)" if d else "")
        for v, n, d in zip(xs, summary["n"], summary["n_diverged"], strict=True)
    )
    fig.suptitle(f"phase {summary.attrs['phase']}; mean ± std over seeds; {label} {ns}", fontsize="small")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out
