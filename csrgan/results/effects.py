"""Effects in an ablation table: each configuration's gain over a reference, and its share of an oracle's.

An effect of a training-data change is only readable against the baselines that bound it (the brief:
bicubic below, an oracle trained on the true degradation above). Given a :func:`summarize` table, a
``reference`` configuration (e.g. ``{sr.mix_prob: 0.0}``, plain SRGAN) and an ``oracle`` (e.g.
``{sr.lr_source: pipeline, sr.mix_prob: 1.0}``, the true degradation), :func:`effects` adds, for one
``<test_set>/<metric>``, the columns

* ``gain <test_set>/<metric>``: mean minus the reference's mean (signed so that positive is better);
* ``oracle share``: gain divided by the oracle's gain (1 = as good as the oracle; undefined when the
  oracle gains nothing);

and :func:`pooled_std` gives the seed noise those numbers must be read against (the square root of the
mean per-configuration variance, over configurations with at least two seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from csrgan.results.schema import HIGHER_IS_BETTER, PARAM_PREFIX, ResultsError

__all__ = ["SHARE_COLUMN", "effects", "find_row", "gain_column", "pooled_std"]

SHARE_COLUMN = "oracle share"


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def find_row(summary: pd.DataFrame, where: Mapping[str, Any]) -> int | None:
    """Index of the one summary row whose parameter columns equal ``where`` (dotted names), else None."""
    cols = {k: PARAM_PREFIX + k for k in where}
    if any(c not in summary.columns for c in cols.values()):
        return None
    hits = [i for i, row in summary.iterrows() if all(_same(row[cols[k]], v) for k, v in where.items())]
    if len(hits) > 1:
        raise ResultsError(f"{dict(where)} matches {len(hits)} configurations; name more parameters")
    return hits[0] if hits else None


def effects(
    summary: pd.DataFrame, column: str, reference: Mapping[str, Any], oracle: Mapping[str, Any] | None
) -> pd.DataFrame:
    """``summary`` with ``gain <column>`` and ``oracle share`` added (NaN where undefined)."""
    mean = f"{column} mean"
    if mean not in summary.columns:
        raise ResultsError(f"no column {column!r} in the summary")
    sign = 1.0 if HIGHER_IS_BETTER.get(column.rsplit("/", 1)[-1], True) else -1.0
    out = summary.copy()
    gain, share = gain_column(column), SHARE_COLUMN
    ref = find_row(summary, reference)
    if ref is None:
        out[gain] = math.nan
        out[share] = math.nan
        return out
    out[gain] = sign * (summary[mean] - summary.at[ref, mean])
    orc = find_row(summary, oracle) if oracle else None
    oracle_gain = out.at[orc, gain] if orc is not None else math.nan
    ok = not math.isnan(oracle_gain) and oracle_gain != 0
    out[share] = out[gain] / oracle_gain if ok else math.nan
    return out


def gain_column(column: str) -> str:
    """The name :func:`effects` gives the gain on ``column`` (it must not start with ``column``: the
    markdown renderer reads ``<column> mean|std|n`` as that metric's cells)."""
    return f"gain {column}"


def pooled_std(summary: pd.DataFrame, column: str) -> float:
    """sqrt(mean of the per-configuration variances) of ``column`` over rows with a std (>= 2 seeds)."""
    std = summary.get(f"{column} std")
    if std is None:
        return math.nan
    v = std.dropna().astype("float64") ** 2
    return math.sqrt(float(v.mean())) if len(v) else math.nan
