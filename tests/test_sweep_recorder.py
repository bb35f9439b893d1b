"""Spec of csrgan.sweep.recorder: a trial's reports become Parquet rows (one per evaluation step and test
set) through a real :class:`csrgan.results.ResultsStore`.

* only ``<test set>/<psnr|ssim|lpips>`` keys make rows; losses and timings never do;
* a metric that was not computed is null, never a made-up number;
* resume: a new recorder reloads the trial's rows and drops those past the checkpoint it resumes from, so
  re-recording a step never duplicates a row;
* a trial that fails before its first evaluation still leaves rows (status diverged/error, null metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from csrgan.results import ResultsStore
from csrgan.sweep.recorder import TrialRecorder, eval_rows

SWEEP = "recsweep"
TRIAL = "t0001"
KEY = ["trial_id", "phase", "step", "test_set"]
TEST_SETS = ["bicubic", "unknown"]


def static() -> dict[str, Any]:
    """What run_trial puts in every row of a trial."""
    return {
        "sweep": SWEEP,
        "trial_id": TRIAL,
        "seed": 1,
        "param.sr.mix_prob": 0.5,
        "config_hash": "cfg123",
        "git_commit": None,
        "protocol": "not reported",
        "weights": "not reported",
        "cyclegan_key": "cg1",
        "pretrain_key": None,
    }


def report(step: int, psnr: float = 25.0, **extra: Any) -> dict[str, Any]:
    """A trainer's evaluation report: metrics for both test sets, plus losses and timings."""
    return {
        "step": step,
        "diverged": 0,
        "bicubic/psnr": psnr,
        "bicubic/ssim": 0.71,
        "unknown/psnr": psnr - 1,
        "unknown/ssim": 0.65,
        "loss/g_total": 1.25,
        "loss/psnr": 99.0,  # a loss key that happens to end in a metric name: not a test set
        "mix/g_fraction": 0.5,
        "time/step_s": 0.01,
        "protocol": "y-crop4-u8",
        "weights": "vgg19:random",
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "results", SWEEP)


def recorder(store: ResultsStore, devices: float = 2.0) -> TrialRecorder:
    return TrialRecorder(store, TRIAL, static(), devices=devices, test_sets=TEST_SETS)


def folder(store: ResultsStore) -> pd.DataFrame:
    """What a user reads: plain pandas on the sweep folder."""
    return pd.read_parquet(store.uri)


def assert_unique(df: pd.DataFrame) -> None:
    assert not df.duplicated(KEY).any(), df[KEY][df.duplicated(KEY, keep=False)]


# --------------------------------------------------------------------------------------------- parsing
def test_eval_rows_groups_by_test_set_and_ignores_other_keys() -> None:
    rows = eval_rows(report(10))
    assert rows == {
        "bicubic": {"psnr": 25.0, "ssim": 0.71, "lpips": None, "niqe": None},
        "unknown": {"psnr": 24.0, "ssim": 0.65, "lpips": None, "niqe": None},
    }


@pytest.mark.parametrize(
    "key", ["loss/psnr", "loss/g/psnr", "loss_psnr", "psnr", "step", "mix/g_fraction", "bicubic/fid"]
)
def test_eval_rows_ignores_non_metric_keys(key: str) -> None:
    assert eval_rows({key: 1.0}) == {}


def test_eval_rows_keeps_dotted_and_dashed_test_set_names() -> None:
    assert eval_rows({"div2k.unknown-x4/lpips": 0.2}) == {
        "div2k.unknown-x4": {"psnr": None, "ssim": None, "lpips": 0.2, "niqe": None}
    }


def test_eval_rows_keeps_test_sets_named_like_loss() -> None:
    assert eval_rows({"lossy_jpeg/psnr": 21.0}) == {
        "lossy_jpeg": {"psnr": 21.0, "ssim": None, "lpips": None, "niqe": None}
    }


@pytest.mark.parametrize("bad", [None, "n/a", float("nan")])
def test_eval_rows_uncomputed_values_are_null(bad: Any) -> None:
    assert eval_rows({"bicubic/psnr": bad, "bicubic/ssim": 0.5}) == {
        "bicubic": {"psnr": None, "ssim": 0.5, "lpips": None, "niqe": None}
    }


# ------------------------------------------------------------------------------------------- recording
def test_record_writes_one_row_per_test_set(store: ResultsStore) -> None:
    rec = recorder(store, devices=2.0)
    assert rec.record(report(10)) is True
    df = folder(store)
    assert len(df) == 2
    assert sorted(df["test_set"]) == TEST_SETS
    by = df.set_index("test_set")
    assert by.loc["bicubic", "psnr"] == 25.0 and by.loc["bicubic", "ssim"] == 0.71
    assert by.loc["unknown", "psnr"] == 24.0 and by.loc["unknown", "ssim"] == 0.65
    assert df["lpips"].isna().all()  # not computed -> null, never a made-up number
    assert (df["phase"] == "gan").all() and (df["step"] == 10).all()
    assert (df["status"] == "running").all()
    assert (df["trial_id"] == TRIAL).all() and (df["sweep"] == SWEEP).all()
    assert (df["seed"] == 1).all() and (df["param.sr.mix_prob"] == 0.5).all()
    # the report's provenance replaces the placeholders
    assert (df["protocol"] == "y-crop4-u8").all() and (df["weights"] == "vgg19:random").all()
    assert (df["device_s"] >= df["wall_s"]).all()  # 2 devices
    assert not any(c.startswith(("loss", "mix", "time")) for c in df.columns)


def test_phase_comes_from_the_argument_or_the_report(store: ResultsStore) -> None:
    rec = recorder(store)
    rec.record(report(0), phase="pretrain")
    rec.record(report(5, phase="cyclegan"))
    rec.record(report(5))
    df = folder(store)
    assert sorted(set(zip(df["phase"], df["step"], strict=True))) == [
        ("cyclegan", 5),
        ("gan", 5),
        ("pretrain", 0),
    ]


def test_report_without_test_set_metrics_adds_nothing(store: ResultsStore) -> None:
    rec = recorder(store)
    assert rec.record({"step": 3, "diverged": 0, "loss/g_total": 1.0, "time/step_s": 0.1}) is False
    assert rec.rows == []
    assert store.read_trial(TRIAL) is None  # nothing written yet
    rec.record(report(10))
    assert rec.record({"step": 11, "loss/g_total": 1.0}) is False
    assert len(folder(store)) == 2


def test_every_evaluation_is_persisted_immediately(store: ResultsStore) -> None:
    rec = recorder(store)
    for step in (10, 20, 30):
        rec.record(report(step, psnr=20.0 + step / 10))
        assert sorted(set(folder(store)["step"])) == list(range(10, step + 1, 10))
    df = folder(store)
    assert len(df) == 6
    assert_unique(df)


def test_re_recording_a_step_replaces_its_rows(store: ResultsStore) -> None:
    rec = recorder(store)
    rec.record(report(10, psnr=25.0))
    rec.record(report(10, psnr=26.0))
    df = folder(store)
    assert len(df) == 2
    assert_unique(df)
    assert df.set_index("test_set").loc["bicubic", "psnr"] == 26.0


def test_final_status_is_written_to_every_row(store: ResultsStore) -> None:
    rec = recorder(store)
    rec.record(report(0), phase="pretrain")
    rec.record(report(10))
    rec.flush("finished")
    df = folder(store)
    assert len(df) == 4 and (df["status"] == "finished").all()


# ---------------------------------------------------------------------------------------------- resume
def test_resume_reloads_drops_later_rows_and_never_duplicates(store: ResultsStore) -> None:
    first = recorder(store)
    first.record(report(0), phase="pretrain")
    for step in (10, 20, 30):
        first.record(report(step, psnr=20.0 + step / 10))
    # killed here; the last checkpoint was at step 20 (the evaluation at 30 is recomputed)
    wall_before = folder(store)["wall_s"].max()

    second = recorder(store)
    assert len(second.rows) == 8  # reloaded from disk
    assert all(r["psnr"] is not None for r in second.rows)
    second.resume_from("gan", 20)
    assert sorted({(r["phase"], r["step"]) for r in second.rows}) == [
        ("gan", 10),
        ("gan", 20),
        ("pretrain", 0),
    ]
    assert second.wall_s() >= wall_before  # wall time continues from the resumed rows

    second.record(report(20, psnr=22.0))  # re-evaluating the checkpoint step: no duplicate
    second.record(report(30, psnr=23.5))
    second.record(report(40, psnr=24.0))
    second.flush("finished")

    df = folder(store)
    assert_unique(df)
    assert len(df) == 2 * 5
    assert sorted(set(zip(df["phase"], df["step"], strict=True))) == [
        ("gan", 10),
        ("gan", 20),
        ("gan", 30),
        ("gan", 40),
        ("pretrain", 0),
    ]
    bic = df[df["test_set"] == "bicubic"].set_index(["phase", "step"])["psnr"]
    assert bic[("gan", 10)] == 21.0  # kept from the first run
    assert bic[("gan", 30)] == 23.5  # recomputed after resume
    assert (df["status"] == "finished").all()
    assert (df[df["step"] >= 30]["wall_s"] >= wall_before).all()


def test_resume_from_only_touches_its_phase(store: ResultsStore) -> None:
    rec = recorder(store)
    rec.record(report(50), phase="pretrain")
    rec.record(report(10))
    again = recorder(store)
    again.resume_from("gan", 0)
    assert {(r["phase"], r["step"]) for r in again.rows} == {("pretrain", 50)}


def test_resumed_rows_round_trip_through_the_store(store: ResultsStore) -> None:
    """Rows read back (numpy ints, pandas timestamps, nulls) are valid rows for the next write."""
    rec = recorder(store)
    rec.record(report(10))
    created = folder(store)["created_at"].tolist()
    again = recorder(store)
    again.flush("stopped")
    df = folder(store)
    assert len(df) == 2 and (df["status"] == "stopped").all()
    assert df["created_at"].tolist() == created  # the original evaluation time is kept
    assert df["lpips"].isna().all() and df["git_commit"].isna().all()


# ---------------------------------------------------------------------------------------------- failure
def test_diverged_before_any_evaluation_leaves_visible_null_rows(store: ResultsStore) -> None:
    rec = recorder(store)
    added = rec.record({"step": 3, "diverged": 1, "loss/g_total": float("nan")})
    assert added is False
    df = folder(store)
    assert sorted(df["test_set"]) == TEST_SETS  # one row per configured test set
    assert (df["status"] == "diverged").all()
    assert df[["psnr", "ssim", "lpips"]].isna().all().all()  # no invented metric values
    assert (df["step"] == 0).all() and (df["phase"] == "gan").all()


def test_error_before_any_evaluation_leaves_visible_null_rows(store: ResultsStore) -> None:
    recorder(store).flush("error")
    df = folder(store)
    assert sorted(df["test_set"]) == TEST_SETS
    assert (df["status"] == "error").all()
    assert df[["psnr", "ssim", "lpips"]].isna().all().all()


def test_diverged_after_evaluations_keeps_them(store: ResultsStore) -> None:
    rec = recorder(store)
    rec.record(report(10))
    rec.record({"step": 13, "diverged": 1, "loss/g_total": float("inf")})
    df = folder(store)
    assert len(df) == 2 and (df["step"] == 10).all()
    assert (df["status"] == "diverged").all()
    assert df["psnr"].notna().all()


# ------------------------------------------------------------------------- rows lead to artefacts
def test_rows_name_their_run_folder_checkpoint_and_grid(tmp_path: Path) -> None:
    """run_dir / checkpoint / grid are paths relative to the storage root that resolve to real files:
    the final step's checkpoint is final/ (what evaluate/upscale/export take), an intermediate step's
    is the step checkpoint when the cadence wrote one, and a grid only when the evaluation drew one."""
    from csrgan.sweep.recorder import RunFiles

    root = tmp_path / "results"
    run = root / SWEEP / "_trials" / TRIAL
    (run / "grids" / "gan").mkdir(parents=True)
    (run / "grids" / "gan" / "unknown_step10.png").write_bytes(b"png")
    files = {"gan": RunFiles(root, run, "gan", iters=30, checkpoint_every=10)}
    rec = TrialRecorder(ResultsStore(root, SWEEP), TRIAL, static(), 1.0, TEST_SETS, files=files)
    for step in (5, 10, 30):
        rec.record(report(step))
    df = pd.read_parquet(root / SWEEP).set_index(["step", "test_set"])
    assert (df["run_dir"] == f"{SWEEP}/_trials/{TRIAL}").all()
    assert pd.isna(df.loc[(5, "unknown"), "checkpoint"])  # no checkpoint at step 5 (cadence 10)
    assert df.loc[(10, "unknown"), "checkpoint"] == f"{SWEEP}/_trials/{TRIAL}/checkpoints/step_00000010"
    assert df.loc[(30, "bicubic"), "checkpoint"] == f"{SWEEP}/_trials/{TRIAL}/final"
    assert (root / df.loc[(10, "unknown"), "grid"]).read_bytes() == b"png"
    assert pd.isna(df.loc[(10, "bicubic"), "grid"]) and pd.isna(df.loc[(5, "unknown"), "grid"])


def test_rows_carry_the_bicubic_baseline_of_their_test_set(store: ResultsStore) -> None:
    """The baseline is a column, so pandas and plots see it beside each arm (not only _sweep.json)."""
    base = {"bicubic/psnr": 30.9, "bicubic/ssim": 0.83, "unknown/psnr": 25.7}
    rec = TrialRecorder(store, TRIAL, static(), 1.0, TEST_SETS, baseline=base)
    rec.record(report(10))
    df = folder(store).set_index("test_set")
    assert df.loc["bicubic", "baseline_psnr"] == 30.9 and df.loc["bicubic", "baseline_ssim"] == 0.83
    assert df.loc["unknown", "baseline_psnr"] == 25.7 and pd.isna(df.loc["unknown", "baseline_ssim"])


def test_rows_carry_the_settings_the_run_reported(store: ResultsStore) -> None:
    """``setting/<name>`` report keys (TrainLoop.settings) become columns of every later row, typed, and
    each phase's rows keep the settings of that phase."""
    rec = recorder(store)
    rec.record({**report(5), "setting/lr_schedule": "constant()", "setting/amp": False}, phase="pretrain")
    rec.record(
        {
            **report(10),
            "setting/lr_schedule": "multistep(gamma=0.5, milestones=[5])",
            "setting/ema_decay": 0.9,
        },
    )
    df = folder(store).set_index(["phase", "test_set"])
    assert df.loc[("pretrain", "bicubic"), "lr_schedule"] == "constant()"
    assert df.loc[("gan", "unknown"), "lr_schedule"] == "multistep(gamma=0.5, milestones=[5])"
    assert df.loc[("gan", "bicubic"), "ema_decay"] == 0.9
    assert pd.isna(df.loc[("pretrain", "bicubic"), "ema_decay"])
    assert not df.loc[("gan", "bicubic"), "amp"]  # kept from the earlier report: settings are constant
    assert not any(c.startswith("setting/") for c in df.reset_index().columns)
