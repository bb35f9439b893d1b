"""From a results table to each trial's model: the folder `csrgan evaluate`, `upscale` and `export` take.

Rows name their model in the ``checkpoint`` column, relative to the storage root (the folder holding the
sweep folder, docs/results.md). :func:`trial_models` picks one row per trial (its final evaluation of
``phase``), :func:`select` narrows them by parameter values and seed, and :func:`storage_root_of` finds
the root a ``csrgan results`` argument lives under, so the paths printed resolve from where the user is.
Sweeps written before the column existed get the layout's ``<sweep>/_trials/<id>/final``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from csrgan.results.schema import METRICS, PARAM_PREFIX, ResultsError
from csrgan.results.summary import param_columns, resolve_column


def storage_root_of(directory: str | Path, df: pd.DataFrame) -> Path:
    """The storage root of ``directory`` (a sweep folder, a results root or one trial file)."""
    path = Path(str(directory).removeprefix("file://")).expanduser()
    sweeps = set(df["sweep"]) if "sweep" in df.columns else set()
    if path.is_file():  # results/<sweep>/trial-<id>.parquet
        return path.parent.parent
    if path.name in sweeps:
        return path.parent
    return path


def _varying_params(df: pd.DataFrame) -> list[str]:
    """Parameter columns whose value differs between trials (the searched ones), else all of them."""
    per_trial = df.groupby("trial_id")[param_columns(df)].first()
    varying = [c for c in per_trial.columns if per_trial[c].astype(str).nunique() > 1]
    return varying or list(per_trial.columns)


def trial_models(df: pd.DataFrame, phase: str = "gan") -> pd.DataFrame:
    """One row per trial: ``trial_id, status, seed``, the varying ``param.*`` columns, ``step`` (its last
    evaluation in ``phase``), ``<test_set>/<metric>`` at that step and ``checkpoint`` (relative to the
    storage root). Sorted by the parameters, then the seed."""
    rows = df[df["phase"] == phase]
    if rows.empty:
        have = ", ".join(sorted(set(df["phase"]))) or "(none)"
        raise ResultsError(f"no rows of phase {phase!r}; phases in these results: {have}")
    last = rows.loc[rows.groupby("trial_id")["step"].idxmax(), ["trial_id", "step"]]
    final = rows.merge(last, on=["trial_id", "step"])
    params = _varying_params(df)
    head = final.groupby("trial_id")[["status", "seed", *params, "step"]].first()
    metrics = [m for m in METRICS if final[m].notna().any()]
    values = final.pivot_table(index="trial_id", columns="test_set", values=metrics, aggfunc="first")
    values.columns = [f"{ts}/{m}" for m, ts in values.columns]
    test_sets = list(dict.fromkeys(final["test_set"]))
    values = values[[f"{ts}/{m}" for ts in test_sets for m in metrics if f"{ts}/{m}" in values.columns]]
    out = head.join(values)
    out["checkpoint"] = _checkpoints(final)
    return out.reset_index().sort_values([*params, "seed"], kind="stable").reset_index(drop=True)


def _checkpoints(final: pd.DataFrame) -> pd.Series:
    per_trial = final.groupby("trial_id").first()
    if "checkpoint" in per_trial.columns:
        have = per_trial["checkpoint"]
    else:
        have = pd.Series(None, index=per_trial.index, dtype=object)
    fallback = per_trial["sweep"] + "/_trials/" + per_trial.index.to_series() + "/final"
    return have.where(have.notna(), fallback)


def _matches(column: pd.Series, text: str) -> pd.Series:
    """Cells of ``column`` equal to ``text``, compared as the column's type (numbers as numbers)."""
    if pd.api.types.is_bool_dtype(column):
        return column == (text.lower() in ("1", "true", "yes"))
    if pd.api.types.is_numeric_dtype(column):
        try:
            value = float(text)
        except ValueError:
            raise ResultsError(f"{column.name}: {text!r} is not a number") from None
        return column.apply(lambda v: v is not None and not pd.isna(v) and math.isclose(v, value))
    return column.astype(str) == text


def parse_where(items: Sequence[str]) -> dict[str, str]:
    """``["sr.mix_prob=0.5"]`` -> ``{"sr.mix_prob": "0.5"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ResultsError(f"--where {item!r}: expected PARAM=VALUE, e.g. sr.mix_prob=0.5")
        out[key.strip()] = value.strip()
    return out


def select(
    models: pd.DataFrame, df: pd.DataFrame, where: Mapping[str, str], seed: int | None
) -> pd.DataFrame:
    """The rows of :func:`trial_models` whose parameters equal ``where`` (and whose seed is ``seed``).

    Parameters that are not among ``models``' columns are looked up in ``df`` (a constant parameter)."""
    keep = pd.Series(True, index=models.index)
    for name, text in where.items():
        col = resolve_column(df, name)
        if col in models.columns:
            keep &= _matches(models[col], text)
            continue
        per_trial = df.groupby("trial_id")[col].first()
        ok = set(per_trial.index[_matches(per_trial, text).to_numpy()])
        keep &= models["trial_id"].isin(ok)
    if seed is not None:
        keep &= models["seed"] == seed
    return models[keep].reset_index(drop=True)


def one_model(models: pd.DataFrame, what: str) -> dict[str, Any]:
    """The single row of ``models``, or a :class:`ResultsError` that lists the candidates."""
    if len(models) == 1:
        return models.iloc[0].to_dict()
    if models.empty:
        raise ResultsError(f"no trial matches {what}")
    listed = "; ".join(
        f"{r['trial_id']} ("
        + ", ".join(
            f"{c.removeprefix(PARAM_PREFIX)}={r[c]}" for c in models.columns if c.startswith(PARAM_PREFIX)
        )
        + f", seed={r['seed']})"
        for r in models.to_dict("records")[:8]
    )
    raise ResultsError(f"{len(models)} trials match {what}; narrow it with --where/--seed: {listed}")
