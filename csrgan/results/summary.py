"""The ablation summary of a results table: mean ± std over seeds per configuration, and its rendering.

:func:`summarize` groups the trials of one phase by parameter columns; :func:`format_summary` renders
its table as markdown, CSV or JSON.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from csrgan.results.schema import (
    DECIMALS,
    EXCLUDED_STATUSES,
    HIGHER_IS_BETTER,
    METRICS,
    PARAM_PREFIX,
    UNFINISHED_STATUSES,
    ResultsError,
    _is_real,
)

Which = Literal["final", "best"]
Format = Literal["markdown", "csv", "json"]


def param_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if str(c).startswith(PARAM_PREFIX))


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """``sr.mix_prob`` or ``param.sr.mix_prob`` -> ``param.sr.mix_prob``; other non-metric columns
    (``sweep``, an extra such as ``cyclegan_key``) may be named as they are."""
    for cand in (name, PARAM_PREFIX + name):
        if cand.startswith(PARAM_PREFIX) and cand in df.columns:
            return cand
    if name in df.columns and name not in (*METRICS, "step", "trial_id", "created_at", "wall_s", "device_s"):
        return name
    params = [c.removeprefix(PARAM_PREFIX) for c in param_columns(df)]
    close = difflib.get_close_matches(name.removeprefix(PARAM_PREFIX), params, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    avail = ", ".join(params) or "(none)"
    raise ResultsError(f"unknown parameter {name!r}; parameter columns: {avail}{hint}")


def summarize(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> pd.DataFrame:
    """Per-configuration mean ± std over trials (seeds) of each test set's metrics.

    Per trial and test set one value per metric is taken from ``phase`` (needed when the results hold
    several phases): ``final`` = the row with the largest step; ``best`` = the best value over steps
    (max PSNR/SSIM, min LPIPS), chosen per metric — note that picking the best step *on the test set*
    is optimistic. Trials are then grouped by the ``by`` parameters. Columns: the ``by`` columns, ``n``
    (trials in the means), ``n_diverged`` (diverged/error trials, left out of the means), ``n_unfinished``
    (running/stopped trials, included), and ``<test_set>/<metric> mean|std|n`` (std: sample std, ddof=1,
    NaN for one trial; the metric's n counts trials that have a value, it is < ``n`` when some lack it).
    """
    df = _checked_table(df, which)
    by_cols = _by_columns(df, by)
    phase = _choose_phase(df, phase)
    rows = df[df["phase"] == phase]
    metrics = _choose_metrics(df, metrics)
    test_sets = _choose_test_sets(rows, test_sets, phase)
    rows = rows[rows["test_set"].isin(test_sets)]
    per_trial = _join_values(_trial_constants(df, by_cols), _trial_values(rows, metrics, which))
    result = _aggregate(per_trial, by_cols, metrics, test_sets)
    result.attrs = {
        "which": which,
        "phase": phase,
        "metrics": list(metrics),
        "test_sets": list(test_sets),
        "by": by_cols,
    }
    return result


# ------------------------------------------------------------------------------ summary: the choices
def _checked_table(df: pd.DataFrame, which: Which) -> pd.DataFrame:
    """``df`` with a fresh index (``idxmax`` needs unique labels), once it is known to be a results table."""
    if df.empty:
        raise ResultsError("no results to summarise (the table is empty)")
    df = df.reset_index(drop=True)
    need = [c for c in ("sweep", "trial_id", "status", "phase", "step", "test_set") if c not in df.columns]
    if need:
        raise ResultsError(f"not a results table: missing columns {need}")
    if which not in ("final", "best"):
        raise ResultsError(f"which must be 'final' or 'best', got {which!r}")
    return df


def _by_columns(df: pd.DataFrame, by: Sequence[str]) -> list[str]:
    by_cols = [resolve_column(df, b) for b in by]
    if len(set(by_cols)) != len(by_cols):
        raise ResultsError(f"--by names a column twice: {list(by)}")
    return by_cols


def _choose_phase(df: pd.DataFrame, phase: str | None) -> str:
    phases = sorted(df["phase"].dropna().unique().tolist())
    if phase is not None:
        if phase not in phases:
            raise ResultsError(f"no rows with phase {phase!r}; phases: {phases}")
        return phase
    if len(phases) == 1:
        return phases[0]
    if "gan" in phases:  # a sweep trial's own phase; pre-training rows are shared-stage context
        return "gan"
    raise ResultsError(
        f"the results hold several phases {phases} whose steps are not comparable: choose one (--phase)"
    )


def _choose_metrics(df: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    """The metrics asked for (deduplicated), or by default every metric with at least one value."""
    if metrics is None:
        present = [m for m in METRICS if m in df.columns and df[m].notna().any()]
        if not present:
            raise ResultsError("no metric (psnr, ssim, lpips) has any value in these results")
        return present
    bad = [m for m in metrics if m not in METRICS or m not in df.columns]
    if bad:
        raise ResultsError(f"unknown metric(s) {bad}; known: {list(METRICS)}")
    return list(dict.fromkeys(metrics))


def _choose_test_sets(rows: pd.DataFrame, test_sets: Sequence[str] | None, phase: str) -> list[str]:
    """The test sets asked for (deduplicated), or by default every test set of ``phase``'s ``rows``."""
    all_sets = sorted(rows["test_set"].unique().tolist())
    if test_sets is None:
        return all_sets
    bad = [t for t in test_sets if t not in all_sets]
    if bad:
        raise ResultsError(f"unknown test set(s) {bad} in phase {phase!r}; test sets: {all_sets}")
    return list(dict.fromkeys(test_sets))


# ----------------------------------------------------------------------- summary: one row per trial
_TRIAL = ["sweep", "trial_id"]


def _trial_constants(df: pd.DataFrame, by_cols: list[str]) -> pd.DataFrame:
    """``status`` and the ``by`` columns, one row per trial (over all its rows: they must not vary)."""
    varying = [c for c in ["status", *by_cols] if (df.groupby(_TRIAL)[c].nunique(dropna=False) > 1).any()]
    if varying:
        raise ResultsError(f"column(s) {varying} change within a trial; they must be constant per trial")
    return df.groupby(_TRIAL, sort=False)[["status", *by_cols]].first()


def _trial_values(rows: pd.DataFrame, metrics: list[str], which: Which) -> pd.DataFrame:
    """One value per (trial, test set, metric): the last step's (``final``) or the best over steps."""
    keys = [*_TRIAL, "test_set"]
    if which == "final":
        last = rows.loc[rows.groupby(keys)["step"].idxmax()]
        return last.set_index(keys)[list(metrics)]
    g = rows.groupby(keys)
    return pd.concat({m: (g[m].max() if HIGHER_IS_BETTER[m] else g[m].min()) for m in metrics}, axis=1)


def _join_values(trials: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Each trial's constants and a ``<test_set>/<metric>`` column per value (NaN where it has none)."""
    if values.empty:
        return trials.join(pd.DataFrame(index=trials.index), how="left")
    wide = values.unstack("test_set")
    wide.columns = [f"{ts}/{m}" for m, ts in wide.columns]
    return trials.join(wide, how="left")


# ------------------------------------------------------------------------ summary: one row per group
def _aggregate(
    per_trial: pd.DataFrame, by_cols: list[str], metrics: list[str], test_sets: list[str]
) -> pd.DataFrame:
    """Group the trials by ``by_cols`` (all in one group when there are none) and summarise each."""
    group_keys = by_cols or ["_all"]
    if not by_cols:
        per_trial = per_trial.assign(_all="all")
    out = []
    for key, g in per_trial.groupby(group_keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(group_keys, key, strict=True))
        out.append(rec | _group_stats(g, metrics, test_sets))
    result = pd.DataFrame(out)
    if not by_cols:
        result = result.drop(columns="_all")
    return result


def _group_stats(g: pd.DataFrame, metrics: list[str], test_sets: list[str]) -> dict[str, Any]:
    """Trial counts and ``<test_set>/<metric> mean|std|n`` of one group's trials (diverged ones left out)."""
    ok = g[~g["status"].isin(EXCLUDED_STATUSES)]
    rec: dict[str, Any] = {
        "n": len(ok),
        "n_diverged": len(g) - len(ok),
        "n_unfinished": int(ok["status"].isin(UNFINISHED_STATUSES).sum()),
    }
    for ts in test_sets:
        for m in metrics:
            col = f"{ts}/{m}"
            v = ok[col].astype("float64") if col in ok.columns else pd.Series(dtype="float64")
            rec[f"{col} mean"] = v.mean()
            rec[f"{col} std"] = v.std(ddof=1)
            rec[f"{col} n"] = int(v.notna().sum())
    return rec


# ------------------------------------------------------------------------------------------ formatting
def _fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if _is_real(v):
        return f"{float(v) + 0.0:g}"  # + 0.0: a rounded -0.0 prints as 0
    return str(v)


def _metric_cells(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(header, metric) for each ``<test_set>/<metric>`` in the summary, in column order."""
    heads = [c.removesuffix(" mean") for c in summary.columns if c.endswith(" mean")]
    return [(h, h.rsplit("/", 1)[1]) for h in heads]


def format_summary(summary: pd.DataFrame, fmt: Format = "markdown") -> str:
    """Render :func:`summarize`'s table: ``markdown`` ("28.41 ± 0.05" cells), ``csv`` or ``json``."""
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        records = [
            {
                k: (
                    None
                    if isinstance(v, float) and math.isnan(v)
                    else v.item()
                    if isinstance(v, np.generic)
                    else v
                )
                for k, v in r.items()
            }
            for r in summary.to_dict("records")
        ]
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if fmt != "markdown":
        raise ResultsError(f"format must be markdown, csv or json, got {fmt!r}")
    cells = _metric_cells(summary)
    plain = [c for c in summary.columns if not any(c.startswith(h + " ") for h, _ in cells)]
    header = [c.removeprefix(PARAM_PREFIX) for c in plain] + [h for h, _ in cells]
    body = []
    for r in summary.to_dict("records"):
        line = [_fmt_value(r[c]) for c in plain]
        for h, m in cells:
            mean, std, k = r[f"{h} mean"], r[f"{h} std"], r[f"{h} n"]
            d = DECIMALS.get(m, 4)
            if k == 0 or math.isnan(mean):
                line.append("–")
                continue
            cell = f"{mean:.{d}f} ± " + ("n/a" if math.isnan(std) else f"{std:.{d}f}")
            line.append(cell + (f" (n={k})" if k != r.get("n", k) else ""))
        body.append(line)
    esc = [[x.replace("|", "\\|") for x in row] for row in [header, *body]]
    widths = [max(3, *(len(x) for x in col)) for col in zip(*esc, strict=True)]

    def fmt_row(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                x.rjust(w) if i >= 1 else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "| " + " | ".join(("-" * w) if i == 0 else ("-" * (w - 1) + ":") for i, w in enumerate(widths)) + " |"
    )
    return "\n".join([fmt_row(esc[0]), sep, *(fmt_row(r) for r in esc[1:])]) + "\n"
