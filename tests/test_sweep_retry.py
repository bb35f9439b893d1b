"""Nothing half-made blocks a retry: a fresh sweep that fails before its first trial leaves no Tune state.

Before, ``seeds: []`` passed the dry run, started Ray, crashed in Tune and left ``tuner.pkl``: the
corrected file was then refused as "already has state". Here the failure is injected after Tune wrote
its state (the last moment before trials would run), without Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_bad_inputs import good_config, world  # noqa: F401 - the fixture

from csrgan.cluster.capacity import Fit
from csrgan.config import validate_config
from csrgan.data.layout import resolve_data
from csrgan.sweep import driver


class Boom(RuntimeError):
    pass


@pytest.fixture
def fails_in_tune(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Ray and the baseline are skipped; ``fit`` writes Tune's state and then fails."""
    seen: list[Path] = []
    monkeypatch.setattr(driver, "_start_cluster", lambda plan, address, num_cpus: Fit(1))
    monkeypatch.setattr(driver, "_say_cluster", lambda address, slots, say: None)
    monkeypatch.setattr(driver, "_bicubic_baseline", lambda cfg, echo: {})
    monkeypatch.setattr(driver, "_start_cyclegan_builds", lambda plan, echo: [])
    monkeypatch.setattr(driver, "_tuner", lambda plan, slots, echo, baseline: plan)

    def fit(plan: Any) -> Any:
        plan.layout.tune.mkdir(parents=True)
        (plan.layout.tune / "tuner.pkl").write_bytes(b"state")
        seen.append(plan.layout.tune)
        raise Boom("tune failed before any trial started")

    monkeypatch.setattr(driver, "_fit_noting_interrupt", fit)
    return seen


def _cfg(w: dict[str, Path]) -> Any:
    return resolve_data(validate_config(good_config(w)), build_demo=False)


def test_a_failure_before_the_first_trial_leaves_no_tune_state(
    world: dict[str, Path],  # noqa: F811
    fails_in_tune: list[Path],
) -> None:
    cfg = _cfg(world)
    with pytest.raises(Boom):
        driver.run_sweep(cfg, echo=lambda m: None)
    assert fails_in_tune and not fails_in_tune[0].exists()
    # the retry is not refused as "already has state"
    plan = driver.plan_sweep(cfg, echo=lambda m: None)
    assert not plan.resume


def test_state_of_a_sweep_whose_trials_started_is_kept(
    world: dict[str, Path],  # noqa: F811
    fails_in_tune: list[Path],
) -> None:
    cfg = _cfg(world)
    layout = driver.SweepLayout.of(cfg.storage, cfg.name)
    (layout.trials / "trial_0001").mkdir(parents=True)  # a trial had started
    with pytest.raises(Boom):
        driver.run_sweep(cfg, echo=lambda m: None)
    assert (layout.tune / "tuner.pkl").is_file()
    with pytest.raises(driver.SweepError, match="already has state"):
        driver.plan_sweep(cfg, echo=lambda m: None)
