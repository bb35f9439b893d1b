"""From a ``search:`` section to concrete trials.

Grid and random sweeps are expanded here into an explicit, ordered list of :class:`TrialSpec` (random
values drawn with ``search.sampler_seed``), so the same file always gives the same trials and a resumed
sweep matches its trials by content. Optuna proposes trials one at a time through a define-by-run space.
``arms`` (explicit configurations) are combined with every grid combination or random sample, an arm's
keys overriding the grid's; exact duplicate configurations run once. ``seeds`` repeat every configuration
of a grid/random sweep.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csrgan.config import ExperimentConfig, ParamSpec, SearchConfig, with_params


@dataclass(frozen=True)
class TrialSpec:
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def label(self) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in self.params.items()]
        return ",".join([*parts, f"seed={self.seed}"])


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def expand_trials(search: SearchConfig) -> list[TrialSpec]:
    """Every trial of a grid or random sweep, in run order (configurations outer, seeds inner).

    The configurations are each grid combination (or random sample) × each arm, ``{**combo, **arm}``
    (an arm's keys override the grid's), with exact duplicates dropped (the first is kept).
    """
    if search.method == "grid":
        names = list(search.parameters)
        combos = itertools.product(*(search.parameters[n].values or [] for n in names))
        configs = [dict(zip(names, combo, strict=True)) for combo in combos]
    elif search.method == "random":
        rng = np.random.default_rng(search.sampler_seed)
        configs = [
            {name: _sample(spec, rng) for name, spec in search.parameters.items()}
            for _ in range(search.num_samples)
        ]
    else:
        raise ValueError("optuna trials are proposed one by one; use optuna_space()")
    unique: list[dict[str, Any]] = []
    for combo in configs or [{}]:
        for arm in search.arms or [{}]:
            params = {**combo, **arm}
            if params not in unique:  # values may be unhashable (lists): compare, do not hash
                unique.append(params)
    return [TrialSpec(params=c, seed=s) for c in unique for s in search.seeds]


def _sample(spec: ParamSpec, rng: np.random.Generator) -> Any:
    if spec.values is not None:
        return spec.values[int(rng.integers(len(spec.values)))]
    if spec.uniform is not None:
        return float(rng.uniform(*spec.uniform))
    if spec.log_uniform is not None:
        lo, hi = spec.log_uniform
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    lo, hi = spec.int_uniform  # type: ignore[misc]
    return int(rng.integers(lo, hi + 1))


class OptunaSpace:
    """A define-by-run space for ``ray.tune.search.optuna.OptunaSearch`` (Optuna's own suggest API).

    A class rather than a closure: Tune pickles the searcher into its experiment state for resume.
    """

    def __init__(self, parameters: dict[str, ParamSpec]) -> None:
        self.parameters = dict(parameters)

    def __call__(self, trial: Any) -> None:
        for name, spec in self.parameters.items():
            if spec.values is not None:
                trial.suggest_categorical(name, spec.values)
            elif spec.uniform is not None:
                trial.suggest_float(name, *spec.uniform)
            elif spec.log_uniform is not None:
                trial.suggest_float(name, *spec.log_uniform, log=True)
            else:
                trial.suggest_int(name, *spec.int_uniform)


def optuna_space(search: SearchConfig) -> Callable[[Any], None]:
    return OptunaSpace(search.parameters)


def trial_config(base: ExperimentConfig, spec: TrialSpec) -> ExperimentConfig:
    """The validated config one trial runs: the base with the trial's parameters and seed."""
    return with_params(base, {**spec.params, "seed": spec.seed})
