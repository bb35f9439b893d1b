"""The note printed under an ablation table, computed from that table (never a canned sentence).

For one metric (the sweep's, e.g. ``psnr``) and each test set of a :func:`csrgan.results.summarize`
table, :func:`closing_note` says

* which arm (row) is best, by its mean over seeds;
* whether the spread between the arms' means exceeds the seed noise: twice the pooled seed std
  (:func:`csrgan.results.effects.pooled_std`; with one seed per arm there is no noise estimate, and the
  note says so instead of guessing);
* which arms are below the bicubic-interpolation baseline (``baseline``: ``{"<test_set>/<metric>":
  value}``, what the sweep driver measures), or that every arm is;
* how many trials diverged or failed and are left out of the means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from csrgan.results.effects import pooled_std
from csrgan.results.schema import DECIMALS, HIGHER_IS_BETTER, PARAM_PREFIX

__all__ = ["NOISE_FACTOR", "arm_label", "closing_note"]

#: A spread counts as more than seed noise when it exceeds this many pooled seed stds.
NOISE_FACTOR = 2.0


def _params(table: pd.DataFrame) -> list[str]:
    by = table.attrs.get("by")
    return list(by) if by else [c for c in table.columns if str(c).startswith(PARAM_PREFIX)]


def arm_label(row: pd.Series, params: list[str]) -> str:
    """``mix_prob=0.5, lr_source=cyclegan``: the row's parameters, short names unless two share one."""
    short = [p.removeprefix(PARAM_PREFIX).split(".")[-1] for p in params]
    names = short if len(set(short)) == len(short) else [p.removeprefix(PARAM_PREFIX) for p in params]
    parts = []
    for name, col in zip(names, params, strict=True):
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{name}={v:g}" if isinstance(v, float) else f"{name}={v}")
    return ", ".join(parts) or "all trials"


def _test_sets(table: pd.DataFrame, metric: str) -> list[str]:
    sets = table.attrs.get("test_sets")
    if sets:
        return [t for t in sets if f"{t}/{metric} mean" in table.columns]
    suffix = f"/{metric} mean"
    return [c.removesuffix(suffix) for c in table.columns if isinstance(c, str) and c.endswith(suffix)]


def _noise_sentence(spread: float, sigma: float, d: int) -> str:
    if math.isnan(sigma):
        return f"spread {spread:.{d}f} between arms; one seed per arm, so no seed std to compare it with"
    if spread > NOISE_FACTOR * sigma:
        return (
            f"spread {spread:.{d}f} between arms > {NOISE_FACTOR:g} x the pooled seed std {sigma:.{d}f}: "
            "the arms differ by more than seed noise"
        )
    return (
        f"spread {spread:.{d}f} between arms <= {NOISE_FACTOR:g} x the pooled seed std {sigma:.{d}f}: "
        "within seed noise, read the arms as a tie"
    )


def _baseline_sentence(
    ts: str, means: pd.Series, labels: pd.Series, base: float, higher: bool, d: int
) -> str:
    below = means < base if higher else means > base
    if not below.any():
        return f"{ts}: every arm beats the bicubic-interpolation baseline ({base:.{d}f})"
    if below.all():
        best = means.max() if higher else means.min()
        return (
            f"{ts}: EVERY arm is below the bicubic-interpolation baseline ({base:.{d}f}; best arm "
            f"{best:.{d}f}): these models do not yet beat plain interpolation"
        )
    worse = ", ".join(f"{labels[i]} ({means[i]:.{d}f})" for i in means.index[below])
    return f"{ts}: below the bicubic-interpolation baseline ({base:.{d}f}): {worse}"


def closing_note(table: pd.DataFrame, metric: str, baseline: Mapping[str, float] | None = None) -> list[str]:
    """Lines about ``table`` (a :func:`csrgan.results.summarize` result) for ``metric`` (``psnr``,
    ``ssim``, ``lpips``; a ``<test_set>/<metric>`` name is reduced to its metric); see the module doc."""
    metric = metric.rsplit("/", 1)[-1]
    higher = HIGHER_IS_BETTER.get(metric, True)
    d = DECIMALS.get(metric, 4)
    params = _params(table)
    labels = pd.Series({i: arm_label(r, params) for i, r in table.iterrows()})
    lines: list[str] = []
    for ts in _test_sets(table, metric):
        col = f"{ts}/{metric}"
        means = table[f"{col} mean"].astype("float64").dropna()
        if means.empty:
            lines.append(f"{ts}: no {metric} values")
            continue
        best = means.idxmax() if higher else means.idxmin()
        head = f"{ts}: best {labels[best]} ({metric} {means[best]:.{d}f})"
        if len(means) > 1:
            head += "; " + _noise_sentence(float(means.max() - means.min()), pooled_std(table, col), d)
        lines.append(head)
        base = (baseline or {}).get(col)
        if base is not None and math.isfinite(base):
            lines.append(_baseline_sentence(ts, means, labels, float(base), higher, d))
    left_out = int(table["n_diverged"].sum()) if "n_diverged" in table.columns else 0
    if left_out:
        lines.append(f"{left_out} trial(s) diverged or failed and are left out of the means")
    return lines
