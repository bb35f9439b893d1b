"""Spec of the Parquet results store (csrgan.results), its summary/plot and ``csrgan results``.

A sweep writes ``<root>/<sweep>/trial-<id>.parquet``: one file per trial, replaced atomically, holding all
the trial's rows; ``pd.read_parquet(<root>/<sweep>)`` must read it at any moment.
"""

from __future__ import annotations

import io
import json
import math
import threading
import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from csrgan import results as R
from csrgan.cli.results import app as results_app
from csrgan.results import (
    ResultsError,
    ResultsSchemaWarning,
    ResultsStore,
    flatten_params,
    format_summary,
    read_results,
    summarize,
)
from csrgan.results import store as results_store

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def row(step: int, test_set: str, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """One evaluation row as the sweep layer passes it."""
    base: dict[str, Any] = {
        "seed": seed,
        "phase": "gan",
        "step": step,
        "test_set": test_set,
        "psnr": 25.0,
        "ssim": 0.7,
        "wall_s": step / 10,
        "device_s": step / 5,
        "git_commit": "abc123",
        "config_hash": "cfg0",
        "protocol": "y-crop4-u8",
        "weights": "vgg19:torchvision-imagenet",
        "created_at": T0,
    }
    return base | kw


def psnr_of(p: float, seed: int, step: int, ts: str) -> float:
    """A deterministic, distinct PSNR per (p, seed, step, test set)."""
    return 20.0 + 4 * p + 0.3 * seed + step / 1000 + (0.5 if ts == "bicubic" else 0.0)


def write_sweep(store: ResultsStore, statuses: dict[tuple[float, int], str] | None = None) -> None:
    """p in {0, 0.5, 1} x seeds {0, 1, 2}; steps 1000, 2000; test sets bicubic, real. p=1 is written as
    the int 1 (must read back as float64 like 0.5)."""
    statuses = statuses or {}
    for p in (0, 0.5, 1):
        for seed in (0, 1, 2):
            rows = [
                row(
                    step,
                    ts,
                    seed=seed,
                    psnr=psnr_of(p, seed, step, ts),
                    ssim=0.5 + p / 10 - step / 100_000,  # SSIM *drops* with steps: best != final
                    **{"param.sr.mix_prob": p, "param.sr.gan.content.type": "vgg"},
                )
                for step in (1000, 2000)
                for ts in ("bicubic", "real")
            ]
            store.write_trial(f"p{p}-s{seed}", rows, statuses.get((p, seed), "finished"))


# ----------------------------------------------------------------------------------------- schema
EXPECTED_DTYPES = {
    "sweep": "str",
    "trial_id": "str",
    "status": "str",
    "seed": "int64",
    "param.sr.gan.content.type": "str",
    "param.sr.mix_prob": "float64",
    "phase": "str",
    "step": "int64",
    "test_set": "str",
    "psnr": "float64",
    "ssim": "float64",
    "lpips": "float64",
    "niqe": "float64",
    "wall_s": "float64",
    "device_s": "float64",
    "git_commit": "str",
    "config_hash": "str",
    "protocol": "str",
    "weights": "str",
    "node_ip": "str",
    "node_id": "str",
    "created_at": "datetime64[us, UTC]",
}


def test_pd_read_parquet_reads_the_sweep_folder_with_exact_columns_and_dtypes(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "mix_prob")
    write_sweep(store)
    df = pd.read_parquet(tmp_path / "mix_prob")
    assert {c: str(t) for c, t in df.dtypes.items()} == EXPECTED_DTYPES
    assert list(df.columns) == list(EXPECTED_DTYPES)  # fixed head, sorted params, fixed body
    assert len(df) == 9 * 2 * 2  # trials x steps x test sets
    assert df["lpips"].isna().all()  # not computed -> null, never a fake number
    assert sorted(df["param.sr.mix_prob"].unique()) == [0.0, 0.5, 1.0]
    assert (df["sweep"] == "mix_prob").all() and (df["status"] == "finished").all()
    assert (df["created_at"] == pd.Timestamp(T0)).all()  # microseconds kept
    r = df[(df.trial_id == "p0.5-s2") & (df.step == 2000) & (df.test_set == "real")].iloc[0]
    assert r["psnr"] == psnr_of(0.5, 2, 2000, "real") and r["seed"] == 2 and r["wall_s"] == 200.0
    # the file schema itself: explicit Arrow types, required fixed columns
    schema = pq.read_schema(tmp_path / "mix_prob" / "trial-p0-s0.parquet")
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert not schema.field("step").nullable and schema.field("lpips").nullable
    assert store.trial_ids() == sorted(f"p{p}-s{s}" for p in (0, 0.5, 1) for s in range(3))


def test_read_results_and_store_read_match_pd_read_parquet(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "mix_prob")
    write_sweep(store)
    ref = pd.read_parquet(tmp_path / "mix_prob").sort_values(
        ["trial_id", "step", "test_set"], ignore_index=True
    )
    for df in (read_results(tmp_path / "mix_prob"), store.read()):
        df = df.sort_values(["trial_id", "step", "test_set"], ignore_index=True)
        pd.testing.assert_frame_equal(df, ref)
    one = read_results(tmp_path / "mix_prob" / "trial-p1-s0.parquet")
    assert set(one.trial_id) == {"p1-s0"} and len(one) == 4


def test_empty_store_reads_as_an_empty_frame_with_the_fixed_columns(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "fresh")
    assert store.trial_ids() == [] and store.read_trial("x") is None
    df = store.read()
    assert df.empty and list(df.columns) == list(R.FIXED_COLUMNS)


def test_numbers_normalise_to_float64_bools_stay_bool_lists_become_json(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("a", [row(1, "x", **{"param.n": 3, "param.flag": True, "param.l": [1, 2]})], "finished")
    store.write_trial("b", [row(1, "x", **{"param.n": 2.5, "param.flag": False, "param.l": [3]})], "finished")
    df = pd.read_parquet(tmp_path / "s").sort_values("trial_id")
    assert str(df["param.n"].dtype) == "float64" and list(df["param.n"]) == [3.0, 2.5]
    assert str(df["param.flag"].dtype) == "bool" and list(df["param.flag"]) == [True, False]
    assert list(df["param.l"]) == ["[1, 2]", "[3]"]
    np_row = row(1, "x", seed=np.int64(4), psnr=np.float32(30.5), **{"param.n": np.int32(7)})
    with pytest.warns(ResultsSchemaWarning, match="param.flag: absent here vs bool in trial-a.parquet"):
        store.write_trial("c", [np_row], "finished")  # numpy scalars are numbers too
    c = store.read_trial("c").iloc[0]
    assert c["seed"] == 4 and c["psnr"] == 30.5 and c["param.n"] == 7.0


def test_extra_columns_are_kept_and_a_none_only_extra_is_a_string_column(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("a", [row(1, "x", cyclegan_key=None, **{"extra.lr_at_end": 1e-5})], "finished")
    store.write_trial("b", [row(1, "x", cyclegan_key="cg-123", **{"extra.lr_at_end": 2e-5})], "finished")
    df = pd.read_parquet(tmp_path / "s").sort_values("trial_id")  # same schema in both files
    assert str(df["cyclegan_key"].dtype) == "str" and df["cyclegan_key"].isna().tolist() == [True, False]
    assert df["extra.lr_at_end"].tolist() == [1e-5, 2e-5]
    assert list(df.columns)[-2:] == ["cyclegan_key", "extra.lr_at_end"]  # extras after the fixed columns


def test_nan_metric_is_kept_distinct_from_not_computed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("a", [row(1, "x", psnr=float("inf"), ssim=float("nan"), lpips=None)], "finished")
    t = pq.read_table(tmp_path / "s" / "trial-a.parquet")
    assert t.column("psnr").to_pylist() == [math.inf]
    assert math.isnan(t.column("ssim").to_pylist()[0]) and t.column("ssim").null_count == 0
    assert t.column("lpips").null_count == 1


def test_created_at_defaults_to_now_and_is_converted_to_utc(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    before = datetime.now(UTC)
    r1 = row(1, "x")
    del r1["created_at"]
    plus2 = timezone(timedelta(hours=2))
    store.write_trial("a", [r1, row(2, "x", created_at=datetime(2025, 1, 1, 12, tzinfo=plus2))], "running")
    got = store.read_trial("a")["created_at"].tolist()
    assert before <= got[0] <= datetime.now(UTC)
    assert got[1] == pd.Timestamp("2025-01-01 10:00", tz="UTC")


# ---------------------------------------------------------------------------------------- rewrite
def test_rewriting_a_trial_replaces_its_rows_without_duplicates_and_updates_status(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    rows = [row(1000, "bicubic"), row(1000, "real")]
    store.write_trial("t1", rows, "running")
    rows += [row(2000, "bicubic", psnr=26.0), row(2000, "real", psnr=24.0)]
    path = store.write_trial("t1", rows, "finished")
    assert path == str(tmp_path.resolve() / "s" / "trial-t1.parquet")
    df = pd.read_parquet(tmp_path / "s")
    assert len(df) == 4 and not df.duplicated(["trial_id", "phase", "step", "test_set"]).any()
    assert (df["status"] == "finished").all()
    # a resumed trial that recomputes step 2000 and writes its rows again: still one row per key
    store.write_trial(
        "t1", rows[:2] + [row(2000, "bicubic", psnr=26.5), row(2000, "real", psnr=24.5)], "finished"
    )
    df = pd.read_parquet(tmp_path / "s")
    assert len(df) == 4 and df.loc[df.step == 2000, "psnr"].tolist() == [26.5, 24.5]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["trial-t1.parquet"]  # no temp files left


def test_rows_read_back_with_read_trial_round_trip_through_write_trial(tmp_path: Path) -> None:
    """The sweep layer's resume path: reload a trial's rows, append, write all again."""
    store = ResultsStore(tmp_path, "s")
    store.write_trial("t1", [row(1, "a", lpips=0.2, git_commit=None, **{"param.p": 1, "k": None})], "running")
    before = store.read_trial("t1")
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in before.to_dict("records")
    ]
    store.write_trial("t1", [*rows, row(2, "a", **{"param.p": 1, "k": None})], "finished")
    after = store.read_trial("t1")
    pd.testing.assert_frame_equal(after.iloc[:1].drop(columns="status"), before.drop(columns="status"))
    assert after["status"].tolist() == ["finished", "finished"]


def test_same_phase_step_test_set_twice_in_one_write_is_an_error(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    with pytest.raises(ResultsError, match=r"trial 't1': rows 0 and 1 share \(phase, step, test_set\)"):
        store.write_trial("t1", [row(5, "x"), row(5, "x", psnr=1.0)], "running")


def test_no_rows_removes_the_trial_file_and_warns_when_the_trial_is_over(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("t1", [row(1, "x")], "running")
    with pytest.warns(UserWarning, match="ended 'diverged' with no result rows"):
        assert store.write_trial("t1", [], "diverged") is None
    assert store.trial_ids() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.write_trial("t2", [], "running")  # nothing to say yet


def test_a_leftover_hidden_temp_file_is_ignored_by_readers(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("t1", [row(1, "x")], "finished")
    (tmp_path / "s" / ".trial-t1.parquet.deadbeef.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / "s" / "_trials").mkdir()  # the sweep layer's scratch folder
    assert len(pd.read_parquet(tmp_path / "s")) == 1
    assert len(read_results(tmp_path / "s")) == 1
    assert store.trial_ids() == ["t1"]


def test_a_failed_write_keeps_the_previous_file_and_removes_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("t1", [row(1, "x")], "running")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(results_store.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_trial("t1", [row(1, "x"), row(2, "x")], "finished")
    monkeypatch.undo()
    df = pd.read_parquet(tmp_path / "s")
    assert len(df) == 1 and df["status"].tolist() == ["running"]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["trial-t1.parquet"]


# ------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": None}, r"trial 't1', row 0: missing required column\(s\) \['step'\]"),
        ({"protocol": None, "weights": None}, r"missing required column\(s\) \['protocol', 'weights'\]"),
        ({"step": 1.5}, "step must be an integer"),
        ({"step": -1}, "step must be >= 0"),
        ({"seed": True}, "seed must be an integer"),
        ({"psnr": "28.1"}, "psnr must be a number or None"),
        ({"wall_s": float("nan")}, "wall_s must be a finite number >= 0"),
        ({"git_commit": 123}, "git_commit must be a string or None"),
        ({"created_at": datetime(2025, 1, 1)}, "created_at must be timezone-aware"),
        ({"psrn": 28.0}, "unknown column 'psrn' looks like a misspelling of 'psnr'"),
        ({"test_sets": "x"}, "misspelling of 'test_set'"),
        ({"param.x": object()}, "column 'param.x' must be a scalar"),
        ({"sweep": "other"}, "row says sweep='other' but it is written as sweep='s'"),
        ({"trial_id": "t2"}, "row says trial_id='t2'"),
    ],
)
def test_bad_rows_are_rejected_naming_trial_row_and_column(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    store = ResultsStore(tmp_path, "s")
    with pytest.raises(ResultsError, match=message):
        store.write_trial("t1", [row(1, "x") | change], "running")
    assert store.trial_ids() == []  # nothing written


def test_bad_status_names_and_mixed_kinds_are_rejected(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    with pytest.raises(ResultsError, match=r"status 'done' is not one of \['running', 'finished'"):
        store.write_trial("t1", [row(1, "x")], "done")
    with pytest.raises(ResultsError, match="column 'param.x' mixes value kinds"):
        store.write_trial("t1", [row(1, "x", **{"param.x": 1}), row(2, "x", **{"param.x": "a"})], "running")
    with pytest.raises(ResultsError, match="sweep name '_hidden' must match"):
        ResultsStore(tmp_path, "_hidden")
    with pytest.raises(ResultsError, match="trial_id 'a/b' must match"):
        store.write_trial("a/b", [row(1, "x")], "running")


# ------------------------------------------------------------------------------ schema differences
def test_trials_with_different_columns_warn_and_read_results_unifies_them(tmp_path: Path) -> None:
    """pd.read_parquet takes one file's schema; read_results must still read every column correctly."""
    store = ResultsStore(tmp_path, "s")
    store.write_trial("a", [row(1, "x", **{"param.decay": None})], "finished")  # None -> string column
    with pytest.warns(ResultsSchemaWarning, match="param.decay: double here vs string in trial-a.parquet"):
        store.write_trial("b", [row(1, "x", **{"param.decay": 500, "extra.only_b": "yes"})], "finished")
    df = read_results(tmp_path / "s").sort_values("trial_id")
    assert str(df["param.decay"].dtype) == "float64"  # the all-null column took the other file's type
    assert df["param.decay"].isna().tolist() == [True, False] and df["param.decay"].iloc[1] == 500.0
    assert df["extra.only_b"].isna().tolist() == [True, False]


def test_a_real_type_conflict_between_trials_is_an_error_naming_both_files(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("a", [row(1, "x", **{"param.loss": "vgg"})], "finished")
    with pytest.warns(ResultsSchemaWarning):
        store.write_trial("b", [row(1, "x", **{"param.loss": 1.0})], "finished")
    with pytest.raises(
        ResultsError, match=r"column 'param.loss' is string in .*trial-a.parquet but double in"
    ):
        read_results(tmp_path / "s")


def test_read_results_of_a_results_root_reads_every_sweep(tmp_path: Path) -> None:
    ResultsStore(tmp_path, "one").write_trial("t", [row(1, "x")], "finished")
    ResultsStore(tmp_path, "two").write_trial("t", [row(1, "x"), row(2, "x")], "finished")
    (tmp_path / "_stages").mkdir()
    df = read_results(tmp_path)
    assert df.groupby("sweep").size().to_dict() == {"one": 1, "two": 2}


def test_read_results_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"results folder not found: {tmp_path / 'nope'}"):
        read_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no results"):
        read_results(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trial-x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match="cannot read results file .*trial-x.parquet"):
        read_results(tmp_path / "bad")
    with pytest.raises(ResultsError, match="cannot open results location 'nosuchfs://x'"):
        read_results("nosuchfs://x")


# ------------------------------------------------------------------------------------- file:// URI
def test_file_uri_storage_reads_and_writes_like_a_local_folder(tmp_path: Path) -> None:
    uri = tmp_path.resolve().as_uri()  # file:///...
    store = ResultsStore(uri, "mix_prob")
    assert store.uri == f"{uri}/mix_prob"
    write_sweep(store)
    assert (tmp_path / "mix_prob" / "trial-p0-s0.parquet").is_file()
    df = read_results(store.uri)
    assert len(df) == 36 and len(pd.read_parquet(store.uri)) == 36
    assert len(store.read_trial("p0.5-s1")) == 4 and len(store.trial_ids()) == 9


# ------------------------------------------------------------------------------------ concurrency
def test_readers_see_whole_files_while_a_writer_rewrites_50_times(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    store.write_trial("other", [row(1, "x")], "finished")
    store.write_trial("t", [row(0, "x")], "running")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(1, 51):  # version k holds rows for steps 0..k, status running until the end
                store.write_trial(
                    "t", [row(s, "x") for s in range(k + 1)], "finished" if k == 50 else "running"
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    reads = 0
    while th.is_alive() or reads < 2:
        for df in (pd.read_parquet(tmp_path / "s"), read_results(tmp_path / "s")):
            t = df[df.trial_id == "t"].sort_values("step")
            k = len(t) - 1  # a whole version k: steps 0..k, one status
            assert k >= 0 and t["step"].tolist() == list(range(k + 1))
            assert t["status"].nunique() == 1 and (t["status"].iloc[0] == "finished") == (k == 50)
            assert (df.trial_id == "other").sum() == 1
            reads += 1
    th.join()
    assert not errors, errors
    assert len(store.read_trial("t")) == 51 and reads >= 2


# ------------------------------------------------------------------------------------------ params
def test_flatten_params() -> None:
    nested = {"sr": {"mix_prob": 0.5, "gan": {"adv_weight": 1e-3}}, "seed": 1, "cyclegan.iters": 10}
    assert flatten_params(nested) == {
        "param.sr.mix_prob": 0.5,
        "param.sr.gan.adv_weight": 1e-3,
        "param.seed": 1,
        "param.cyclegan.iters": 10,
    }
    assert flatten_params({"a": {"b": [1, 2]}}, prefix="") == {"a.b": [1, 2]}
    with pytest.raises(ResultsError, match="parameter 'a.b' is given twice"):
        flatten_params({"a": {"b": 1}, "a.b": 2})


# ---------------------------------------------------------------------------------------- summary
def test_summary_final_is_mean_and_sample_std_over_seeds_of_the_last_step(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    write_sweep(store)
    s = summarize(read_results(store.uri), by=["sr.mix_prob"])
    assert s["param.sr.mix_prob"].tolist() == [0.0, 0.5, 1.0]
    assert s["n"].tolist() == [3, 3, 3] and s["n_diverged"].tolist() == [0, 0, 0]
    for p, rec in zip((0, 0.5, 1), s.to_dict("records"), strict=True):
        for ts in ("bicubic", "real"):
            vals = [psnr_of(p, seed, 2000, ts) for seed in range(3)]
            assert rec[f"{ts}/psnr mean"] == pytest.approx(np.mean(vals))
            assert rec[f"{ts}/psnr std"] == pytest.approx(np.std(vals, ddof=1))
            assert rec[f"{ts}/psnr n"] == 3
        assert rec["bicubic/ssim mean"] == pytest.approx(0.5 + p / 10 - 0.02)
    assert "bicubic/lpips mean" not in s.columns  # never computed -> not summarised by default


def test_summary_best_takes_each_metrics_best_step(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    write_sweep(store)
    # LPIPS: lower is better; give step 1000 the better (lower) value for one trial
    df = read_results(store.uri)
    df["lpips"] = np.where(df.step == 1000, 0.10, 0.30)
    s = summarize(df, by=["param.sr.mix_prob"], which="best", test_sets=["real"])
    rec = s.set_index("param.sr.mix_prob").loc[0.5]
    assert rec["real/psnr mean"] == pytest.approx(np.mean([psnr_of(0.5, k, 2000, "real") for k in range(3)]))
    assert rec["real/ssim mean"] == pytest.approx(0.5 + 0.05 - 0.01)  # step 1000 has the higher SSIM
    assert rec["real/lpips mean"] == pytest.approx(0.10)
    assert not any(c.startswith("bicubic/") for c in s.columns)
    final = summarize(df, by=["sr.mix_prob"], which="final").set_index("param.sr.mix_prob").loc[0.5]
    assert final["real/ssim mean"] == pytest.approx(0.5 + 0.05 - 0.02)
    assert final["real/lpips mean"] == pytest.approx(0.30)


def test_diverged_and_error_trials_are_excluded_from_means_and_counted(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    write_sweep(store, statuses={(1, 0): "diverged", (1, 1): "error", (0.5, 2): "stopped"})
    s = summarize(read_results(store.uri), by=["sr.mix_prob"], metrics=["psnr"]).set_index(
        "param.sr.mix_prob"
    )
    assert s.loc[1.0, "n"] == 1 and s.loc[1.0, "n_diverged"] == 2
    assert s.loc[1.0, "bicubic/psnr mean"] == pytest.approx(psnr_of(1, 2, 2000, "bicubic"))
    assert math.isnan(s.loc[1.0, "bicubic/psnr std"])  # one trial: no spread to report
    assert s.loc[0.5, "n"] == 3 and s.loc[0.5, "n_unfinished"] == 1  # stopped: included, flagged


def test_summary_groups_by_several_parameters_and_accepts_extras(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    for i, (p, w) in enumerate([(0.0, 1e-3), (0.0, 1e-3), (0.0, 5e-3), (1.0, 1e-3)]):
        prm = {
            "param.sr.mix_prob": p,
            "param.sr.gan.adv_weight": w,
            "cyclegan_key": "none" if p == 0 else "cg",
        }
        store.write_trial(f"t{i}", [row(1, "x", seed=i, psnr=20.0 + i, **prm)], "finished")
    df = read_results(store.uri)
    s = summarize(df, by=["sr.mix_prob", "sr.gan.adv_weight"])
    assert s[["param.sr.mix_prob", "param.sr.gan.adv_weight", "n"]].values.tolist() == [
        [0.0, 1e-3, 2],
        [0.0, 5e-3, 1],
        [1.0, 1e-3, 1],
    ]
    assert s["x/psnr mean"].tolist() == [20.5, 22.0, 23.0]
    assert summarize(df, by=["cyclegan_key"])["n"].tolist() == [1, 3]


def test_summary_errors_are_specific(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    write_sweep(store)
    df = read_results(store.uri)
    with pytest.raises(
        ResultsError, match=r"unknown parameter 'mix'; parameter columns: sr.gan.content.type, sr"
    ):
        summarize(df, by=["mix"])
    with pytest.raises(ResultsError, match=r"unknown metric\(s\) \['fid'\]"):
        summarize(df, by=["sr.mix_prob"], metrics=["fid"])
    with pytest.raises(ResultsError, match=r"unknown test set\(s\) \['Set5'\]"):
        summarize(df, by=["sr.mix_prob"], test_sets=["Set5"])
    with pytest.raises(ResultsError, match="empty"):
        summarize(df.iloc[:0], by=["sr.mix_prob"])
    two = pd.concat([df, df.assign(phase="pretrain")])
    # a sweep's own phase is "gan": it is the default when pre-training rows are present too
    pd.testing.assert_frame_equal(summarize(two, by=["sr.mix_prob"]), summarize(df, by=["sr.mix_prob"]))
    other = pd.concat([df.assign(phase="a"), df.assign(phase="b")])
    with pytest.raises(ResultsError, match=r"several phases \['a', 'b'\].*--phase"):
        summarize(other, by=["sr.mix_prob"])
    assert summarize(two, by=["sr.mix_prob"], phase="pretrain")["n"].tolist() == [3, 3, 3]


# ------------------------------------------------------------------------------------------ formats
def small_summary(metrics: list[str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "sweep": "s",
            "trial_id": ["a", "b", "c", "d"],
            "status": ["finished", "finished", "finished", "diverged"],
            "param.sr.mix_prob": [0.0, 0.0, 1.0, 1.0],
            "phase": "gan",
            "step": 10,
            "test_set": "bicubic",
            "psnr": [28.36, 28.46, 27.0, float("nan")],
            "ssim": [0.8, 0.81, 0.75, float("nan")],
            "lpips": [0.2, float("nan"), 0.3, float("nan")],
        }
    )
    return summarize(df, by=["sr.mix_prob"], metrics=metrics)


def test_markdown_shows_mean_pm_std_and_counts() -> None:
    md = format_summary(small_summary(["psnr", "lpips"]), "markdown")
    assert md.splitlines() == [
        "| sr.mix_prob |   n | n_diverged | n_unfinished | bicubic/psnr |      bicubic/lpips |",
        "| ----------- | --: | ---------: | -----------: | -----------: | -----------------: |",
        "| 0           |   2 |          0 |            0 | 28.41 ± 0.07 | 0.2000 ± n/a (n=1) |",
        "| 1           |   1 |          1 |            0 |  27.00 ± n/a |       0.3000 ± n/a |",
    ]
    assert "0.8050 ± 0.0071" in format_summary(small_summary(), "markdown")  # SSIM: 4 decimals


def test_csv_and_json_carry_the_numbers() -> None:
    s = small_summary()
    back = pd.read_csv(io.StringIO(format_summary(s, "csv")))
    assert list(back.columns) == list(s.columns)
    assert back["bicubic/psnr mean"].tolist() == pytest.approx([28.41, 27.0])
    recs = json.loads(format_summary(s, "json"))
    assert recs[0]["param.sr.mix_prob"] == 0.0 and recs[0]["n"] == 2
    assert recs[1]["bicubic/psnr std"] is None  # NaN -> null, valid JSON
    with pytest.raises(ResultsError, match="format must be"):
        format_summary(s, "html")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- plot
def test_plot_writes_a_png_for_numeric_and_categorical_parameters(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "s")
    write_sweep(store, statuses={(1, 0): "diverged"})
    df = read_results(store.uri)
    out = R.plot(df, "sr.mix_prob", tmp_path / "plots" / "mix.png", metrics=["psnr", "ssim"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    out2 = R.plot(df, "sr.gan.content.type", tmp_path / "cat.png")
    assert out2.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ResultsError, match="unknown parameter"):
        R.plot(df, "nope", tmp_path / "x.png")


def test_plot_draws_each_test_sets_bicubic_baseline(tmp_path: Path) -> None:
    """Rows carry baseline_<metric>; the plot draws it dashed, in the colour of its test set's line."""
    from csrgan.results.plot import figure

    store = ResultsStore(tmp_path, "s")
    write_sweep(store)
    df = read_results(store.uri)
    df["baseline_psnr"] = df["test_set"].map({"bicubic": 26.5, "real": 22.25})
    (ax,) = figure(df, "sr.mix_prob", metrics=["psnr"]).axes
    dashed = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_linestyle() == "--"}
    assert set(dashed) == {"bicubic: bicubic", "real: bicubic"}
    assert list(dashed["real: bicubic"].get_ydata()) == [22.25, 22.25]
    (ax,) = figure(df.drop(columns="baseline_psnr"), "sr.mix_prob", metrics=["psnr"]).axes
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]  # older sweeps: no line


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli() -> typer.Typer:
    root = typer.Typer()  # mounted like csrgan/cli/app.py does: `csrgan results ...`
    root.add_typer(results_app, name="results")
    return root


def invoke(cli: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(cli, ["results", *args])


def test_cli_summary_prints_the_table_in_each_format(cli: typer.Typer, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "mix")
    write_sweep(store)
    res = invoke(cli, "summary", store.uri, "--by", "sr.mix_prob", "--metric", "psnr")
    assert res.exit_code == 0, res.output
    mean = np.mean([psnr_of(0.5, k, 2000, "bicubic") for k in range(3)])
    assert f"{mean:.2f} ± 0.30" in res.stdout and "ssim" not in res.stdout
    res = invoke(cli, "summary", store.uri, "--by", "sr.mix_prob", "--format", "json", "--which", "best")
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 3
    res = invoke(cli, "summary", tmp_path.as_uri() + "/mix", "--by", "sr.mix_prob", "--format", "csv")
    assert res.exit_code == 0 and res.stdout.startswith("param.sr.mix_prob,n,n_diverged")


def test_cli_plot_writes_the_png(cli: typer.Typer, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, "mix")
    write_sweep(store)
    out = tmp_path / "mix.png"
    res = invoke(cli, "plot", store.uri, "--by", "sr.mix_prob", "-o", str(out), "--metric", "psnr")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:4] == b"\x89PNG" and f"wrote {out}" in res.stdout


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["summary", "{d}/missing", "--by", "p"], "error: results folder not found: {d}/missing"),
        ("empty", ["summary", "{d}/empty", "--by", "p"], "error: no results (trial-*.parquet) in {d}/empty"),
        (
            "sweep",
            ["summary", "{d}/mix", "--by", "mixprob"],
            "error: unknown parameter 'mixprob'; parameter columns: sr.gan.content.type, sr.mix_prob",
        ),
        ("sweep", ["plot", "{d}/mix", "--by", "nope", "-o", "{d}/x.png"], "error: unknown parameter 'nope'"),
        (
            "sweep",
            ["plot", "{d}/mix", "--by", "sr.mix_prob", "-o", "{d}/x.svg"],
            "error: --out must be a .png",
        ),
    ],
)
def test_cli_user_errors_go_to_stderr_with_exit_1(
    cli: typer.Typer, tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    d = str(tmp_path.resolve())
    if setup == "empty":
        (tmp_path / "empty").mkdir()
    if setup == "sweep":
        write_sweep(ResultsStore(tmp_path, "mix"))
    res = invoke(cli, *[a.format(d=d) for a in args])
    assert res.exit_code == 1
    assert message.format(d=d) in res.stderr and res.stdout == ""
    assert "Traceback" not in res.output


# ------------------------------------------------------------------------------ models of the trials
def test_models_lists_each_trials_final_model_and_picks_one(cli: typer.Typer, tmp_path: Path) -> None:
    """`csrgan results models` is how a user gets from the table to the folder evaluate/upscale take:
    one line per trial (its final step's metrics), and --path with --where/--seed gives exactly one."""
    store = ResultsStore(tmp_path, "mix")
    write_sweep(store)  # written without the checkpoint column: the layout's _trials/<id>/final is used
    res = invoke(cli, "models", store.uri)
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 + 9 and "checkpoint" in lines[0] and "sr.mix_prob" in lines[0]
    assert f"{psnr_of(0.5, 2, 2000, 'real'):.4f}" in next(ln for ln in lines if "p0.5-s2" in ln)
    res = invoke(cli, "models", store.uri, "--where", "sr.mix_prob=0.5", "--seed", "2", "--path")
    assert res.exit_code == 0, res.output
    assert Path(res.stdout.strip()) == tmp_path / "mix" / "_trials" / "p0.5-s2" / "final"
    res = invoke(cli, "models", store.uri, "--where", "sr.mix_prob=0.5", "--path")
    assert res.exit_code == 1 and "3 trials match" in res.stderr and "p0.5-s1" in res.stderr
    res = invoke(cli, "models", store.uri, "--where", "sr.mixprob=1")
    assert res.exit_code == 1 and "sr.mix_prob" in res.stderr


def test_models_follow_the_checkpoint_column_when_rows_have_it(tmp_path: Path) -> None:
    from csrgan.results.models import trial_models

    store = ResultsStore(tmp_path, "s")
    rows = [row(s, "real", checkpoint=f"elsewhere/t/{s}") for s in (10, 20)]
    store.write_trial("t", rows, "finished")
    table = trial_models(read_results(store.uri))
    assert table["checkpoint"].tolist() == ["elsewhere/t/20"] and table["step"].tolist() == [20]
