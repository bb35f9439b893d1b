"""Spec of csrgan.sweep.space: from a ``search:`` section to the trials a sweep runs.

* grid: every combination, in ``itertools.product`` order of the parameters as written, seeds inner;
* random: ``num_samples`` configurations drawn with ``sampler_seed`` (same file -> same trials), values
  inside their ranges (``log_uniform`` uniform in log space, ``int_uniform`` inclusive), seeds inner;
* arms: explicit configurations; every grid combination (or random sample) × every arm, ``{**combo,
  **arm}`` (an arm's key overrides the grid's), exact duplicates dropped (first kept), seeds inner; the
  searched names (the rows' ``param.*`` columns) are the grid's keys, then the arms', first seen first;
* optuna: a define-by-run space calling Optuna's ``suggest_*`` API (no arms);
* a trial's config is the base with its parameters and seed applied, validated again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from pydantic import ValidationError

from csrgan.config import ExperimentConfig, SearchConfig, validate_config
from csrgan.sweep.space import TrialSpec, expand_trials, optuna_space, trial_config


def search(method: str = "grid", parameters: dict[str, Any] | None = None, **kw: Any) -> SearchConfig:
    return SearchConfig.model_validate(
        {"method": method, "metric": {"name": "unknown/psnr"}, "parameters": parameters or {}, **kw}
    )


# ---------------------------------------------------------------------------------------------- grid
def test_grid_is_the_product_in_order_with_seeds_inner() -> None:
    s = search(
        parameters={
            "sr.mix_prob": {"values": [0.0, 0.5, 1.0]},
            "sr.gan.adv_weight": {"values": [1e-3, 1e-2]},
        },
        seeds=[0, 1],
    )
    trials = expand_trials(s)
    assert len(trials) == 3 * 2 * 2
    assert [(t.params["sr.mix_prob"], t.params["sr.gan.adv_weight"], t.seed) for t in trials] == [
        (p, w, seed) for p in (0.0, 0.5, 1.0) for w in (1e-3, 1e-2) for seed in (0, 1)
    ]
    assert all(list(t.params) == ["sr.mix_prob", "sr.gan.adv_weight"] for t in trials)


def test_grid_keeps_the_value_order_of_the_file() -> None:
    trials = expand_trials(search(parameters={"sr.mix_prob": {"values": [1.0, 0.0, 0.5]}}))
    assert [t.params["sr.mix_prob"] for t in trials] == [1.0, 0.0, 0.5]


def test_grid_without_parameters_runs_the_base_once_per_seed() -> None:
    trials = expand_trials(search(seeds=[3, 1, 2]))
    assert trials == [TrialSpec({}, 3), TrialSpec({}, 1), TrialSpec({}, 2)]


def test_grid_expansion_is_deterministic() -> None:
    s = search(parameters={"sr.mix_prob": {"values": [0.0, 1.0]}}, seeds=[0, 1])
    assert expand_trials(s) == expand_trials(s)


# ---------------------------------------------------------------------------------------------- arms
ARMS = [
    {"sr.mix_prob": 0.0},
    {"sr.gan.adv_weight": 1e-2, "sr.mix_prob": 0.5},
    {"sr.mix_prob": 1.0},
]


def test_arms_alone_run_in_the_order_listed_with_seeds_inner() -> None:
    trials = expand_trials(search(arms=ARMS, seeds=[0, 1]))
    assert trials == [TrialSpec(arm, seed) for arm in ARMS for seed in (0, 1)]


def test_every_grid_combination_is_combined_with_every_arm() -> None:
    s = search(
        parameters={"sr.gan.lr": {"values": [1e-4, 1e-3]}},
        arms=[{"sr.mix_prob": 0.0}, {"sr.mix_prob": 1.0}],
        seeds=[0, 1],
    )
    assert [(t.params, t.seed) for t in expand_trials(s)] == [
        ({"sr.gan.lr": lr, "sr.mix_prob": p}, seed)
        for lr in (1e-4, 1e-3)  # grid outer
        for p in (0.0, 1.0)  # arms inner
        for seed in (0, 1)  # seeds innermost
    ]


def test_an_arm_key_overrides_the_grid_value() -> None:
    s = search(
        parameters={"sr.mix_prob": {"values": [0.5, 1.0]}, "sr.gan.lr": {"values": [1e-4]}},
        arms=[{"sr.mix_prob": 0.0}, {"sr.gan.adv_weight": 1e-2}],
    )
    assert [t.params for t in expand_trials(s)] == [
        {"sr.mix_prob": 0.0, "sr.gan.lr": 1e-4},  # p = 0.5 overridden by the first arm
        {"sr.mix_prob": 0.5, "sr.gan.lr": 1e-4, "sr.gan.adv_weight": 1e-2},
        # p = 1.0 with the first arm is again {p: 0, lr: 1e-4}: a duplicate, dropped
        {"sr.mix_prob": 1.0, "sr.gan.lr": 1e-4, "sr.gan.adv_weight": 1e-2},
    ]


def test_duplicate_configurations_run_once_first_kept() -> None:
    s = search(
        arms=[
            {"sr.mix_prob": 0.0},
            {"sr.gan.adv_weight": 1e-2, "sr.mix_prob": 0.5},
            {"sr.mix_prob": 0.0},  # exact duplicate of the first
            {"sr.mix_prob": 0.5, "sr.gan.adv_weight": 1e-2},  # the second, keys in another order
            {"sr.mix_prob": 0.5},  # not a duplicate: sets fewer keys
        ],
        seeds=[0, 1],
    )
    assert [(t.params, t.seed) for t in expand_trials(s)] == [
        (p, seed)
        for p in ({"sr.mix_prob": 0.0}, {"sr.gan.adv_weight": 1e-2, "sr.mix_prob": 0.5}, {"sr.mix_prob": 0.5})
        for seed in (0, 1)
    ]
    # list values cannot be hashed; they are compared
    listed = search(arms=[{"eval.metrics": ["psnr"]}, {"eval.metrics": ["psnr"]}, {"eval.metrics": ["ssim"]}])
    assert [t.params for t in expand_trials(listed)] == [
        {"eval.metrics": ["psnr"]},
        {"eval.metrics": ["ssim"]},
    ]


def test_random_combines_every_sample_with_every_arm() -> None:
    params = {"sr.gan.lr": {"log_uniform": [1e-5, 1e-3]}}
    samples = expand_trials(search("random", params, num_samples=3, sampler_seed=5))
    s = search("random", params, num_samples=3, sampler_seed=5, arms=ARMS, seeds=[0, 1])
    assert [(t.params, t.seed) for t in expand_trials(s)] == [
        ({**sample.params, **arm}, seed) for sample in samples for arm in ARMS for seed in (0, 1)
    ]  # the same draws as without arms


def test_arms_must_be_non_empty_mappings() -> None:
    with pytest.raises(ValidationError, match=r"search\.arms\[1\] is empty"):
        search(arms=[{"sr.mix_prob": 0.0}, {}])
    with pytest.raises(ValidationError, match="valid dictionary"):
        search(arms=[0.5])


def test_optuna_takes_no_arms() -> None:
    with pytest.raises(ValidationError, match=r"optuna does not take search\.arms"):
        search("optuna", {"sr.mix_prob": {"uniform": [0.0, 1.0]}}, arms=[{"sr.gan.lr": 1e-4}])


def test_param_names_are_the_grid_keys_then_the_arm_keys_first_seen_first() -> None:
    s = search(
        parameters={"sr.gan.lr": {"values": [1e-4]}, "sr.mix_prob": {"values": [0.5]}},
        arms=[{"sr.mix_prob": 0.0}, {"sr.gan.adv_weight": 1e-2, "sr.gan.lr": 1e-3}, {"sr.pretrain.iters": 2}],
    )
    names = ("sr.gan.lr", "sr.mix_prob", "sr.gan.adv_weight", "sr.pretrain.iters")
    assert s.param_names() == names
    assert search(parameters={"sr.mix_prob": {"values": [0.5]}}).param_names() == ("sr.mix_prob",)
    assert search().param_names() == ()


def test_rows_record_every_searched_key(base: ExperimentConfig) -> None:
    """The driver hands the trials every searched key (the rows' ``param.*`` columns): a trial whose arm
    does not set one records its config's value (the base's)."""
    from csrgan.sweep.driver import _param_names
    from csrgan.sweep.trial import _param_view

    assert base.search is not None
    cfg = base.model_copy(
        update={
            "search": base.search.model_copy(update={"arms": [{"sr.gan.lr": 1e-3}, {"sr.pretrain.iters": 2}]})
        }
    )
    names = _param_names(cfg)
    assert names == ("sr.mix_prob", "sr.gan.adv_weight", "sr.gan.lr", "sr.pretrain.iters")
    trial = trial_config(
        cfg, TrialSpec({"sr.mix_prob": 0.0, "sr.gan.adv_weight": 1e-2, "sr.gan.lr": 1e-3}, 0)
    )
    view = _param_view(trial, names)
    assert view["sr"]["gan"]["lr"] == 1e-3
    assert view["sr"]["pretrain"]["iters"] == base.sr.pretrain.iters  # not set by this arm: the base value


def test_trial_config_applies_a_whole_arm(base: ExperimentConfig) -> None:
    cfg = trial_config(base, TrialSpec({"sr.mix_prob": 0.0, "sr.gan.lr": 1e-3}, seed=3))
    assert (cfg.sr.mix_prob, cfg.sr.gan.lr, cfg.seed) == (0.0, 1e-3, 3)


# -------------------------------------------------------------------------------------------- random
RANDOM_PARAMS = {
    "sr.mix_prob": {"uniform": [0.25, 0.75]},
    "sr.gan.adv_weight": {"log_uniform": [1e-4, 1e-0]},
    "sr.pretrain.iters": {"int_uniform": [1, 3]},
    "sr.gan.content.type": {"values": ["mse", "l1", "vgg"]},
}


def test_random_is_reproducible_with_sampler_seed() -> None:
    a = expand_trials(search("random", RANDOM_PARAMS, num_samples=20, sampler_seed=7))
    b = expand_trials(search("random", RANDOM_PARAMS, num_samples=20, sampler_seed=7))
    c = expand_trials(search("random", RANDOM_PARAMS, num_samples=20, sampler_seed=8))
    assert a == b
    assert a != c


def test_random_count_and_seeds_inner() -> None:
    trials = expand_trials(search("random", RANDOM_PARAMS, num_samples=5, seeds=[0, 1, 2]))
    assert len(trials) == 15
    assert [t.seed for t in trials] == [0, 1, 2] * 5
    for i in range(0, 15, 3):  # the seeds of one configuration share its parameters
        assert trials[i].params == trials[i + 1].params == trials[i + 2].params
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5


def test_random_values_lie_in_their_ranges() -> None:
    trials = expand_trials(search("random", RANDOM_PARAMS, num_samples=400, sampler_seed=1))
    p = np.array([t.params["sr.mix_prob"] for t in trials])
    w = np.array([t.params["sr.gan.adv_weight"] for t in trials])
    it = [t.params["sr.pretrain.iters"] for t in trials]
    ct = [t.params["sr.gan.content.type"] for t in trials]
    assert all(type(t.params["sr.mix_prob"]) is float for t in trials)
    assert p.min() >= 0.25 and p.max() <= 0.75
    assert p.max() - p.min() > 0.4  # spread over the range, not a constant
    assert w.min() >= 1e-4 and w.max() <= 1.0
    assert all(type(v) is int for v in it)
    assert set(it) == {1, 2, 3}  # int_uniform includes both ends
    assert set(ct) == {"mse", "l1", "vgg"}


def test_log_uniform_is_uniform_in_log_space() -> None:
    """Over [1e-4, 1] half the draws are below 1e-2 (a linear uniform would put ~1% there)."""
    trials = expand_trials(
        search(
            "random", {"sr.gan.adv_weight": {"log_uniform": [1e-4, 1.0]}}, num_samples=1000, sampler_seed=3
        )
    )
    logs = np.log10([t.params["sr.gan.adv_weight"] for t in trials])
    assert 0.42 < np.mean(logs < -2) < 0.58
    for lo in (-4, -3, -2, -1):  # every decade gets about a quarter of the draws
        assert 0.18 < np.mean((logs >= lo) & (logs < lo + 1)) < 0.32


def test_optuna_trials_are_not_expanded() -> None:
    s = search("optuna", {"sr.mix_prob": {"uniform": [0.0, 1.0]}}, num_samples=4)
    with pytest.raises(ValueError, match="optuna"):
        expand_trials(s)


# -------------------------------------------------------------------------------------------- optuna
class FakeTrial:
    """Records every ``suggest_*`` call and answers with the low end / first choice."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.calls.append(("categorical", (name, list(choices)), {}))
        return choices[0]

    def suggest_float(self, name: str, low: float, high: float, **kw: Any) -> float:
        self.calls.append(("float", (name, low, high), kw))
        return low

    def suggest_int(self, name: str, low: int, high: int, **kw: Any) -> int:
        self.calls.append(("int", (name, low, high), kw))
        return low


def test_optuna_space_calls_the_suggest_api() -> None:
    s = search("optuna", RANDOM_PARAMS, num_samples=3)
    trial = FakeTrial()
    optuna_space(s)(trial)
    assert trial.calls == [
        ("float", ("sr.mix_prob", 0.25, 0.75), {}),
        ("float", ("sr.gan.adv_weight", 1e-4, 1.0), {"log": True}),
        ("int", ("sr.pretrain.iters", 1, 3), {}),
        ("categorical", ("sr.gan.content.type", ["mse", "l1", "vgg"]), {}),
    ]


def test_optuna_space_works_with_a_real_optuna_trial() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define = optuna_space(search("optuna", RANDOM_PARAMS, num_samples=3))
    for _ in range(5):
        trial = study.ask()
        define(trial)
        p = trial.params
        assert set(p) == set(RANDOM_PARAMS)
        assert 0.25 <= p["sr.mix_prob"] <= 0.75
        assert 1e-4 <= p["sr.gan.adv_weight"] <= 1.0
        assert p["sr.pretrain.iters"] in (1, 2, 3)
        assert p["sr.gan.content.type"] in ("mse", "l1", "vgg")
        study.tell(trial, 0.0)
    dist = study.trials[0].distributions["sr.gan.adv_weight"]
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log


# ---------------------------------------------------------------------------------------- trial config
@pytest.fixture
def base(tmp_path: Path) -> ExperimentConfig:
    return validate_config(
        {
            "name": "space",
            "storage": str(tmp_path / "storage"),
            "data": {"demo": {"dir": str(tmp_path / "demo")}},
            "sr": {"mix_prob": 1.0, "patch_size": 16, "gan": {"adv_weight": 1e-3}},
            "search": {
                "method": "grid",
                "metric": {"name": "unknown/psnr"},
                "parameters": {
                    "sr.mix_prob": {"values": [0.0, 0.5]},
                    "sr.gan.adv_weight": {"values": [1e-3, 1e-2]},
                },
                "seeds": [0, 3],
            },
        }
    )


def test_trial_config_applies_params_and_seed(base: ExperimentConfig) -> None:
    cfg = trial_config(base, TrialSpec({"sr.mix_prob": 0.5, "sr.gan.adv_weight": 1e-2}, seed=3))
    assert cfg.sr.mix_prob == 0.5
    assert cfg.sr.gan.adv_weight == 1e-2
    assert cfg.seed == 3
    # everything else is the base's
    assert cfg.sr.gan.content == base.sr.gan.content
    assert cfg.sr.patch_size == 16
    assert cfg.model_dump(exclude={"seed", "sr"}) == base.model_dump(exclude={"seed", "sr"})
    # the base is not modified
    assert base.sr.mix_prob == 1.0 and base.seed == 0


def test_trial_config_for_every_grid_trial(base: ExperimentConfig) -> None:
    assert base.search is not None
    cfgs = [trial_config(base, t) for t in expand_trials(base.search)]
    assert [(c.sr.mix_prob, c.sr.gan.adv_weight, c.seed) for c in cfgs] == [
        (p, w, s) for p in (0.0, 0.5) for w in (1e-3, 1e-2) for s in (0, 3)
    ]


def test_trial_config_validates_the_result(base: ExperimentConfig) -> None:
    from csrgan.config import ConfigError

    with pytest.raises(ConfigError, match=r"sr\.mix_prob"):
        trial_config(base, TrialSpec({"sr.mix_prob": 1.5}, seed=0))


# ------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("spec", "label"),
    [
        (TrialSpec({"sr.mix_prob": 0.0}, 0), "sr.mix_prob=0,seed=0"),
        (TrialSpec({"sr.mix_prob": 0.5}, 1), "sr.mix_prob=0.5,seed=1"),
        (TrialSpec({"sr.gan.adv_weight": 0.0012345678}, 2), "sr.gan.adv_weight=0.001235,seed=2"),
        (
            TrialSpec({"sr.gan.adv_weight": 1e-5, "sr.pretrain.iters": 7}, 0),
            "sr.gan.adv_weight=1e-05,sr.pretrain.iters=7,seed=0",
        ),
        (TrialSpec({"sr.gan.content.type": "l1"}, 0), "sr.gan.content.type=l1,seed=0"),
        (TrialSpec({}, 4), "seed=4"),
    ],
)
def test_label(spec: TrialSpec, label: str) -> None:
    assert spec.label() == label


def test_trial_specs_are_values() -> None:
    """Frozen and compared by content: a resumed sweep matches its trials by content."""
    a = TrialSpec({"sr.mix_prob": 0.5}, 1)
    assert a == TrialSpec({"sr.mix_prob": 0.5}, 1)
    assert a != TrialSpec({"sr.mix_prob": 0.5}, 2)
    with pytest.raises(AttributeError):
        a.seed = 3  # type: ignore[misc]
