"""The Pareto front of a multi-objective sweep: the configurations no other configuration beats on every
objective.

A multi-objective sweep (``search.metric`` a list, e.g. maximise ``unknown/psnr`` and ``bicubic/psnr``,
or PSNR against LPIPS) has no single best configuration, only a front. It is computed here from the rows,
the same way for every method (Optuna's study keeps its own front, but grid and random sweeps have none):

1. Per configuration (the ``by`` parameter columns) the mean and sample std over seeds of each
   objective at the **final** evaluation of one phase (``gan`` by default), exactly the numbers of the
   ablation table (:func:`csrgan.results.summarize`, ``which="final"``). The best step per metric would
   combine different steps, i.e. different models, into one point, so it is not offered.
2. Configuration ``a`` dominates ``b`` when ``a`` is at least as good as ``b`` on every objective and
   strictly better on one (each objective read in its own direction). The front is every configuration
   that nothing dominates; equal configurations do not dominate each other, so ties are all on it.
3. Configurations without a mean for every objective (all their trials diverged, or a metric is missing)
   are left out, and counted (``attrs["n_excluded"]``).
4. Against the seed noise: each objective's pooled seed std σ (:func:`csrgan.results.effects.pooled_std`)
   and, for a dominated configuration, its ``margin``: by how many σ the configuration that dominates it
   most clearly is better on its most-improved objective. A margin below
   :data:`csrgan.results.notes.NOISE_FACTOR` means seed noise could put it on the front; with one seed
   per configuration there is no σ and the margin is NaN.

:func:`pareto_table` returns every configuration with its ``on front`` flag, :func:`pareto_front` the
front alone, :func:`pareto_note` the sentences printed under the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from csrgan.results.effects import pooled_std
from csrgan.results.notes import NOISE_FACTOR, arm_label
from csrgan.results.schema import DECIMALS, HIGHER_IS_BETTER, METRICS, ResultsError
from csrgan.results.summary import summarize
from csrgan.storage import META_FILE

__all__ = [
    "FRONT_COLUMN",
    "format_pareto",
    "DOMINATED_COLUMN",
    "MARGIN_COLUMN",
    "Objective",
    "non_dominated",
    "objectives_of_config",
    "pareto_front",
    "pareto_note",
    "pareto_table",
    "sweep_objectives",
]

Goal = Literal["maximize", "minimize"]

FRONT_COLUMN = "on front"
DOMINATED_COLUMN = "dominated by"
MARGIN_COLUMN = "margin (σ)"

_GOALS: dict[str, Goal] = {
    "max": "maximize",
    "maximize": "maximize",
    "min": "minimize",
    "minimize": "minimize",
}


@dataclass(frozen=True)
class Objective:
    """One objective: a ``<test_set>/<metric>`` column of the table and its direction."""

    name: str
    goal: Goal

    @property
    def test_set(self) -> str:
        return self.name.rsplit("/", 1)[0]

    @property
    def metric(self) -> str:
        return self.name.rsplit("/", 1)[1]

    @property
    def sign(self) -> float:
        """+1 when larger is better: ``sign * value`` is then always "larger is better"."""
        return 1.0 if self.goal == "maximize" else -1.0

    def __str__(self) -> str:
        return f"{self.goal} {self.name}"

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``unknown/psnr`` (the metric's own direction: PSNR/SSIM up, LPIPS down), or with a goal:
        ``unknown/lpips:min``, ``bicubic/psnr:maximize``."""
        name, _, goal = text.strip().partition(":")
        if "/" not in name or not all(name.rsplit("/", 1)):
            raise ResultsError(
                f"objective {text!r}: expected <test_set>/<metric>[:max|min], e.g. unknown/psnr"
            )
        metric = name.rsplit("/", 1)[1]
        if metric not in METRICS:
            raise ResultsError(f"objective {text!r}: unknown metric {metric!r}; known: {list(METRICS)}")
        if goal and goal not in _GOALS:
            raise ResultsError(f"objective {text!r}: the goal after ':' must be max or min, got {goal!r}")
        default: Goal = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
        return cls(name, _GOALS[goal] if goal else default)

    @classmethod
    def of(cls, spec: Objective | Mapping[str, Any] | str | Any) -> Objective:
        """From an :class:`Objective`, a ``{name, goal}`` mapping, a config ``MetricSpec`` or a string."""
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping):
            return cls(str(spec["name"]), _GOALS[str(spec.get("goal", "maximize"))])
        return cls(str(spec.name), _GOALS[str(spec.goal)])


def objectives_of_config(config: Mapping[str, Any]) -> list[Objective]:
    """The searched objectives of a plain config dict (``_sweep.json``'s ``config``): every entry of a
    list-valued ``search.metric`` (stored as ``search.objectives``), else the one ``search.metric``."""
    s = config.get("search") or {}
    specs = s.get("objectives") or ([s["metric"]] if s.get("metric") else [])
    return [Objective.of(m) for m in specs]


def sweep_objectives(directory: str | Path) -> list[Objective]:
    """The objectives ``_sweep.json`` of the sweep folder ``directory`` names; [] where there is none
    (a results root, a trial file, a remote URI, results written by hand)."""
    text = str(directory)
    if "://" in text and not text.startswith("file://"):
        return []
    meta = Path(text.removeprefix("file://")).expanduser() / META_FILE
    if not meta.is_file():
        return []
    try:
        config = json.loads(meta.read_text(encoding="utf-8")).get("config") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ResultsError(f"{meta}: not a valid sweep file: {exc}") from None
    return objectives_of_config(config)


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n × k, larger is better in every column, no NaN) that no
    other row dominates (>= everywhere and > somewhere). Equal rows do not dominate each other."""
    return dominators(values).sum(axis=1) == 0


def dominators(values: np.ndarray) -> np.ndarray:
    """``d[i, j]``: row ``j`` dominates row ``i``."""
    v = np.asarray(values, dtype=float)
    ge = (v[None, :, :] >= v[:, None, :]).all(axis=2)
    gt = (v[None, :, :] > v[:, None, :]).any(axis=2)
    return ge & gt


def _checked_objectives(objectives: Sequence[Any]) -> list[Objective]:
    objs = [Objective.of(o) for o in objectives]
    names = [o.name for o in objs]
    if len(objs) < 2:
        raise ResultsError(
            f"a Pareto front needs two or more objectives, got {len(objs)} ({', '.join(names) or 'none'}); "
            "name them with --objective <test_set>/<metric>[:max|min] (repeatable)"
        )
    if len(set(names)) != len(names):
        raise ResultsError(f"an objective is named twice: {names}")
    return objs


def pareto_table(
    df: pd.DataFrame, objectives: Sequence[Any], by: Sequence[str], phase: str | None = None
) -> pd.DataFrame:
    """Every configuration (grouped by ``by``) with a mean for each objective, front first.

    Columns: the ``by`` columns, ``n`` (trials in the means), ``n_diverged``, ``on front``, ``dominated
    by`` (how many configurations dominate it), ``margin (σ)`` (see the module docstring; NaN on the
    front) and ``<objective> mean|std|n``. ``attrs``: ``objectives``, ``phase``, ``by``, ``n_excluded``
    and ``excluded`` (labels of the configurations left out), ``sigma`` (pooled seed std per objective).
    """
    objs = _checked_objectives(objectives)
    metrics = list(dict.fromkeys(o.metric for o in objs))
    sets = list(dict.fromkeys(o.test_set for o in objs))
    summary = summarize(df, by, metrics, "final", sets, phase)
    by_cols, phase = list(summary.attrs["by"]), str(summary.attrs["phase"])
    cells = [f"{o.name} {s}" for o in objs for s in ("mean", "std", "n")]
    table = summary[[*by_cols, "n", "n_diverged", *cells]]
    means = table[[f"{o.name} mean" for o in objs]].astype("float64")
    ok = means.notna().all(axis=1).to_numpy()
    excluded = [arm_label(r, by_cols) for _, r in table[~ok].iterrows()]
    table, means = table[ok].reset_index(drop=True), means[ok].reset_index(drop=True)
    signed = means.to_numpy() * np.array([o.sign for o in objs])
    dom = dominators(signed)
    sigma = {o.name: pooled_std(table, o.name) for o in objs}
    table.insert(len(by_cols) + 2, FRONT_COLUMN, dom.sum(axis=1) == 0)
    table.insert(len(by_cols) + 3, DOMINATED_COLUMN, dom.sum(axis=1).astype(int))
    table.insert(len(by_cols) + 4, MARGIN_COLUMN, _margins(signed, dom, [sigma[o.name] for o in objs]))
    order = np.lexsort((-signed[:, 0], ~table[FRONT_COLUMN].to_numpy()))  # front first, then objective 1
    table = table.iloc[order].reset_index(drop=True)
    table.attrs = {
        "objectives": objs,
        "phase": phase,
        "by": by_cols,
        "n_excluded": len(excluded),
        "excluded": excluded,
        "sigma": sigma,
    }
    return table


def _margins(signed: np.ndarray, dom: np.ndarray, sigma: list[float]) -> np.ndarray:
    """Per dominated row: max over its dominators and the objectives of (improvement / σ); NaN on the
    front and wherever σ is unknown (one seed per configuration)."""
    out = np.full(len(signed), math.nan)
    s = np.array(sigma, dtype=float)
    if not len(signed) or np.isnan(s).any() or (s <= 0).any():
        return out
    for i in np.flatnonzero(dom.any(axis=1)):
        better = (signed[dom[i]] - signed[i]) / s
        out[i] = float(better.max())
    return out


def pareto_front(
    df: pd.DataFrame, objectives: Sequence[Any], by: Sequence[str] | None = None, phase: str | None = None
) -> pd.DataFrame:
    """The non-dominated configurations of :func:`pareto_table` (``by`` default: every parameter column
    that differs between trials)."""
    if by is None:
        from csrgan.results.models import _varying_params

        by = _varying_params(df)
    table = pareto_table(df, objectives, by, phase)
    front = table[table[FRONT_COLUMN]].reset_index(drop=True)
    front.attrs = table.attrs
    return front


def _fmt(value: float, metric: str) -> str:
    return f"{value:.{DECIMALS.get(metric, 4)}f}"


def pareto_note(table: pd.DataFrame) -> list[str]:
    """The sentences under a :func:`pareto_table`: the front's size, what was left out, and whether the
    front is resolved beyond the seed noise."""
    objs: list[Objective] = table.attrs["objectives"]
    n_front = int(table[FRONT_COLUMN].sum())
    lines = [
        f"{n_front} of {len(table)} configuration(s) on the Pareto front of {', '.join(map(str, objs))} "
        f"(final step of phase {table.attrs['phase']}, seed means)"
    ]
    if table.attrs.get("n_excluded"):
        lines.append(
            f"{table.attrs['n_excluded']} configuration(s) left out, without a value for every objective "
            f"(all trials diverged, or a metric missing): {'; '.join(table.attrs['excluded'])}"
        )
    sigma: dict[str, float] = table.attrs["sigma"]
    if any(math.isnan(v) for v in sigma.values()):
        lines.append("one seed per configuration: no seed std to tell whether the front is more than noise")
        return lines
    noise = ", ".join(f"{o.name} {_fmt(sigma[o.name], o.metric)}" for o in objs)
    close = table[~table[FRONT_COLUMN] & (table[MARGIN_COLUMN] < NOISE_FACTOR)]
    lines.append(
        f"pooled seed std: {noise}; {len(close)} dominated configuration(s) within {NOISE_FACTOR:g} σ of "
        "a configuration that dominates them (margin): "
        + ("seed noise could put them on the front" if len(close) else "the front is clear of the noise")
    )
    return lines


def format_pareto(table: pd.DataFrame, fmt: str = "markdown", title: str | None = None) -> str:
    """Render a :func:`pareto_table`: markdown (a heading, the table, :func:`pareto_note`), or the table
    alone as ``csv`` / ``json`` (numbers, as :func:`csrgan.results.format_summary` writes them)."""
    from csrgan.results.summary import format_summary

    if fmt != "markdown":
        return format_summary(table, fmt)  # type: ignore[arg-type]
    objs = ", ".join(map(str, table.attrs["objectives"]))
    name = f" ({title})" if title else ""
    head = f"Pareto front{name}, phase {table.attrs['phase']}: {objs}; final step, mean ± std over seeds\n"
    body = format_summary(table.assign(**{MARGIN_COLUMN: table[MARGIN_COLUMN].round(2)}), "markdown")
    note = "\n".join(f"  {line}" for line in pareto_note(table))
    return f"{head}\n{body}\nReading this front:\n{note}\n"
