"""Spec of the Pareto front (csrgan.results.pareto) and its place in ``csrgan results summary|plot``.

A hand-built results table whose dominated set is known: configurations ``a`` (``param.a``), two seeds
each, objectives maximise ``x/psnr`` and minimise ``y/lpips``, at the final GAN step (an earlier step has
values that would give another front). Seed values are mean ∓ d, so every std is known exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from csrgan.cli.results import app as results_app
from csrgan.results import ResultsError, ResultsStore
from csrgan.results.pareto import (
    DOMINATED_COLUMN,
    FRONT_COLUMN,
    MARGIN_COLUMN,
    Objective,
    format_pareto,
    non_dominated,
    objectives_of_config,
    pareto_front,
    pareto_note,
    pareto_table,
    sweep_objectives,
)

runner = CliRunner()
OBJECTIVES = [Objective("x/psnr", "maximize"), Objective("y/lpips", "minimize")]
D_PSNR, D_LPIPS = 0.1, 0.01  # seed 0 = mean - d, seed 1 = mean + d: std = d * sqrt(2)

#: a -> (x/psnr mean, y/lpips mean) at the final step; None: every trial of it diverged.
MEANS: dict[int, tuple[float, float] | None] = {
    1: (30.0, 0.20),  # front
    2: (28.0, 0.10),  # front
    3: (29.0, 0.25),  # dominated by 1 and 4: 1 dB and 0.05 LPIPS worse
    4: (30.0, 0.20),  # a tie with 1: neither dominates the other, both on the front
    5: (27.9, 0.10),  # dominated by 2 only (equal LPIPS, 0.1 dB less): within the seed noise
    6: None,  # diverged: left out, counted
    7: (31.0, 0.30),  # front: the best PSNR
}
FRONT, DOMINATED = {1, 2, 4, 7}, {3: 2, 5: 1}  # a -> how many configurations dominate it


def _rows(a: int, seed: int, means: tuple[float, float] | None) -> list[dict[str, Any]]:
    sign = -1.0 if seed == 0 else 1.0
    common = {"sweep": "mo", "trial_id": f"t{a}s{seed}", "seed": seed, "param.a": a, "phase": "gan"}
    if means is None:
        common["status"] = "diverged"
        return [{**common, "step": 10, "test_set": ts, "psnr": None, "lpips": None} for ts in ("x", "y")]
    psnr, lpips = means[0] + sign * D_PSNR, means[1] + sign * D_LPIPS
    out = []
    for step, (p, lp) in ((5, (40.0, 0.01)), (10, (psnr, lpips))):  # step 5 would dominate everything
        out.append({**common, "status": "finished", "step": step, "test_set": "x", "psnr": p, "lpips": 0.5})
        out.append({**common, "status": "finished", "step": step, "test_set": "y", "psnr": 20.0, "lpips": lp})
    return out


def table(
    means: dict[int, tuple[float, float] | None] = MEANS, seeds: tuple[int, ...] = (0, 1)
) -> pd.DataFrame:
    rows = [r for a, m in means.items() for s in seeds for r in _rows(a, s, m)]
    df = pd.DataFrame(rows)
    df["ssim"] = np.nan
    return df


# ------------------------------------------------------------------------------------------ the front
def test_non_dominated_handles_ties_and_duplicates() -> None:
    v = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [2.0, 0.0], [1.0, 0.5]])
    assert non_dominated(v).tolist() == [True, True, True, False, True, False]
    assert non_dominated(np.empty((0, 2))).tolist() == []


def test_the_front_is_the_known_non_dominated_set_on_the_final_step() -> None:
    t = pareto_table(table(), OBJECTIVES, by=["a"])
    assert set(t["param.a"]) == set(MEANS) - {6}
    got = dict(zip(t["param.a"], t[FRONT_COLUMN], strict=True))
    assert {a for a, on in got.items() if on} == FRONT
    assert dict(zip(t["param.a"], t[DOMINATED_COLUMN], strict=True)) == {a: DOMINATED.get(a, 0) for a in got}
    assert t[FRONT_COLUMN].tolist() == [True] * 4 + [False] * 2  # front first ...
    assert t["param.a"].tolist()[:4] == [7, 1, 4, 2]  # ... by objective 1, best first (ties: stable)
    r = t.set_index("param.a")
    assert r.loc[3, "x/psnr mean"] == pytest.approx(29.0) and r.loc[3, "y/lpips mean"] == pytest.approx(0.25)
    assert r.loc[3, "x/psnr std"] == pytest.approx(D_PSNR * math.sqrt(2))
    assert r.loc[3, "y/lpips std"] == pytest.approx(D_LPIPS * math.sqrt(2))
    assert (r["n"] == 2).all() and (r["x/psnr n"] == 2).all()
    assert t.attrs["n_excluded"] == 1 and t.attrs["excluded"] == ["a=6"]
    assert t.attrs["phase"] == "gan"


def test_margins_say_whether_a_dominated_configuration_is_inside_the_seed_noise() -> None:
    t = pareto_table(table(), OBJECTIVES, by=["a"]).set_index("param.a")
    sigma_psnr, sigma_lpips = D_PSNR * math.sqrt(2), D_LPIPS * math.sqrt(2)
    assert t.attrs["sigma"] == pytest.approx({"x/psnr": sigma_psnr, "y/lpips": sigma_lpips})
    # a=3: its dominators (1, 4) are 1 dB better -> 1 / σ_psnr ≈ 7.1 σ (0.05 LPIPS: 3.5 σ)
    assert t.loc[3, MARGIN_COLUMN] == pytest.approx(1.0 / sigma_psnr)
    # a=5: a=2 is only 0.1 dB better at equal LPIPS -> 0.71 σ, inside the noise
    assert t.loc[5, MARGIN_COLUMN] == pytest.approx(0.1 / sigma_psnr)
    assert t.loc[sorted(FRONT), MARGIN_COLUMN].isna().all()
    note = "\n".join(pareto_note(t))
    assert "4 of 6 configuration(s) on the Pareto front" in note
    assert "1 configuration(s) left out" in note and "a=6" in note
    assert "1 dominated configuration(s) within 2 σ" in note and "seed noise could put them" in note


def test_the_goal_decides_the_direction() -> None:
    """Minimising PSNR and maximising LPIPS mirrors the front: the old dominated ones lead it now."""
    flipped = [Objective("x/psnr", "minimize"), Objective("y/lpips", "maximize")]
    t = pareto_table(table(), flipped, by=["a"])
    assert set(t.loc[t[FRONT_COLUMN], "param.a"]) == {3, 5, 7}  # 7: the largest LPIPS
    front = pareto_front(table(), OBJECTIVES, by=["a"])
    assert set(front["param.a"]) == FRONT and front[FRONT_COLUMN].all()
    assert set(pareto_front(table(), OBJECTIVES)["param.a"]) == FRONT  # by: the varying parameter


def test_one_seed_has_no_noise_estimate() -> None:
    t = pareto_table(table(seeds=(0,)), OBJECTIVES, by=["a"])
    assert t[MARGIN_COLUMN].isna().all() and t["x/psnr std"].isna().all()
    assert any("one seed per configuration" in line for line in pareto_note(t))


def test_fewer_than_two_or_repeated_objectives_are_refused() -> None:
    with pytest.raises(ResultsError, match="two or more objectives"):
        pareto_table(table(), OBJECTIVES[:1], by=["a"])
    with pytest.raises(ResultsError, match="named twice"):
        pareto_table(table(), [OBJECTIVES[0], OBJECTIVES[0]], by=["a"])
    with pytest.raises(ResultsError, match="unknown test set"):
        pareto_table(table(), [OBJECTIVES[0], Objective("z/psnr", "maximize")], by=["a"])


def test_objectives_parse_with_the_metric_direction_by_default() -> None:
    assert Objective.parse("unknown/psnr") == Objective("unknown/psnr", "maximize")
    assert Objective.parse("unknown/lpips") == Objective("unknown/lpips", "minimize")
    assert Objective.parse("bicubic/psnr:min") == Objective("bicubic/psnr", "minimize")
    for bad, why in (("psnr", "expected"), ("x/fid", "unknown metric"), ("x/psnr:up", "max or min")):
        with pytest.raises(ResultsError, match=why):
            Objective.parse(bad)


def test_objectives_come_from_the_sweep_config(tmp_path: Path) -> None:
    from csrgan.config import SearchConfig

    s = SearchConfig.model_validate(
        {"metric": [{"name": "x/psnr"}, {"name": "y/lpips", "goal": "minimize"}], "seeds": [0]}
    )
    config = {"search": s.model_dump(mode="json")}
    assert objectives_of_config(config) == OBJECTIVES
    assert objectives_of_config({"search": {"metric": {"name": "x/psnr"}}}) == [OBJECTIVES[0]]
    (tmp_path / "_sweep.json").write_text(json.dumps({"config": config}))
    assert sweep_objectives(tmp_path) == OBJECTIVES
    assert sweep_objectives(tmp_path / "nowhere") == [] and sweep_objectives("s3://bucket/sweep") == []


def test_format_pareto_markdown_and_json() -> None:
    t = pareto_table(table(), OBJECTIVES, by=["a"])
    md = format_pareto(t, "markdown", title="mo")
    assert md.startswith("Pareto front (mo), phase gan: maximize x/psnr, minimize y/lpips")
    assert "| on front |" in md and "30.00 ± 0.14" in md and "0.2000 ± 0.0141" in md
    records = json.loads(format_pareto(t, "json"))
    assert [r["param.a"] for r in records if r[FRONT_COLUMN]] == [7, 1, 4, 2]


# ------------------------------------------------------------------------------------------- the CLI
def _sweep_dir(tmp_path: Path, objectives: list[dict[str, str]] | None) -> Path:
    """The hand-built table as a sweep folder, with a ``_sweep.json`` naming ``objectives``."""
    df = table().assign(wall_s=1.0, device_s=1.0, config_hash="c", protocol="p", weights="w")
    store = ResultsStore(tmp_path, "mo")
    for tid, rows in df.groupby("trial_id"):
        recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in rows.drop(columns=["sweep", "trial_id", "status"]).to_dict("records")]  # fmt: skip
        store.write_trial(str(tid), [{**r, "sweep": "mo", "trial_id": tid} for r in recs],
                          status=str(rows["status"].iloc[0]))  # fmt: skip
    if objectives is not None:
        search = {"metric": objectives[0], "objectives": objectives, "parameters": {"a": {"values": [1]}}}
        (tmp_path / "mo" / "_sweep.json").write_text(json.dumps({"config": {"search": search}}))
    return tmp_path / "mo"


def test_summary_prints_the_front_of_a_multi_objective_sweep(tmp_path: Path) -> None:
    folder = _sweep_dir(
        tmp_path, [{"name": "x/psnr", "goal": "maximize"}, {"name": "y/lpips", "goal": "minimize"}]
    )
    res = runner.invoke(results_app, ["summary", str(folder), "--by", "a"])
    assert res.exit_code == 0, res.output
    ablation, _, front = res.output.partition("Pareto front (mo)")
    assert "x/psnr" in ablation and front, res.output
    lines = [ln for ln in front.splitlines() if ln.startswith("| ")]
    on = {
        int(ln.split("|")[1]): ln.split("|")[4].strip()
        for ln in lines[1:]
        if ln.split("|")[1].strip().isdigit()
    }
    assert {a for a, v in on.items() if v == "True"} == FRONT
    assert "seed noise could put them on the front" in front
    plain = runner.invoke(results_app, ["summary", str(folder), "--by", "a", "--no-pareto"])
    assert plain.exit_code == 0 and "Pareto" not in plain.output


def test_summary_front_of_any_metrics_with_objective(tmp_path: Path) -> None:
    folder = _sweep_dir(tmp_path, None)  # no sweep config: a front only on request
    res = runner.invoke(results_app, ["summary", str(folder), "--by", "a"])
    assert res.exit_code == 0 and "Pareto" not in res.output
    args = ["summary", str(folder), "--by", "a", "--objective", "x/psnr", "--objective", "y/lpips"]
    res = runner.invoke(results_app, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert {r["param.a"] for r in json.loads(res.output) if r[FRONT_COLUMN]} == FRONT  # lpips: minimised
    res = runner.invoke(results_app, ["summary", str(folder), "--by", "a", "--pareto"])
    assert res.exit_code == 1 and "--objective" in res.output
    res = runner.invoke(results_app, ["summary", str(folder), "--by", "a", "--objective", "x/psnr"])
    assert res.exit_code == 1 and "two or more objectives" in res.output


def test_pareto_plot_needs_exactly_two_objectives(tmp_path: Path) -> None:
    folder = _sweep_dir(
        tmp_path, [{"name": "x/psnr", "goal": "maximize"}, {"name": "y/lpips", "goal": "minimize"}]
    )
    out = tmp_path / "front.png"
    res = runner.invoke(results_app, ["plot", str(folder), "--by", "a", "--pareto", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    three = ["--objective", "x/psnr", "--objective", "y/lpips", "--objective", "x/ssim"]
    res = runner.invoke(results_app, ["plot", str(folder), "--by", "a", "--pareto", "-o", str(out), *three])
    assert res.exit_code == 1 and "exactly two objectives, got 3" in res.output
    res = runner.invoke(
        results_app, ["plot", str(folder), "--by", "a", "--pareto", "--metric", "psnr", "-o", str(out)]
    )
    assert res.exit_code == 1 and "do not apply" in res.output


def test_pareto_figure_draws_every_configuration_and_connects_the_front() -> None:
    from csrgan.results.plot import pareto_figure

    fig = pareto_figure(table(), OBJECTIVES, ["a"])
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto front"]
    xs, ys = line.get_data()
    assert list(xs) == pytest.approx([28.0, 30.0, 30.0, 31.0]) and list(ys) == pytest.approx(
        [0.1, 0.2, 0.2, 0.3]
    )
    assert ax.get_ylabel() == "y/lpips (lower is better)" and ax.get_xlabel() == "x/psnr (higher is better)"
    assert "4 of 6 configurations on the front; 1 left out" in fig._suptitle.get_text()


def test_the_report_shows_the_front_of_a_multi_objective_sweep_only() -> None:
    from csrgan.results.report import _pareto_section
    from csrgan.results.report_data import Sweep

    two = [{"name": "x/psnr", "goal": "maximize"}, {"name": "y/lpips", "goal": "minimize"}]
    search = {"metric": two[0], "objectives": two, "parameters": {"a": {"values": [1]}}}
    html = _pareto_section(Sweep(Path("mo"), table(), {"config": {"search": search}}))
    assert html.startswith('<section id="pareto"><h2>Pareto front</h2>')
    assert html.count('<tr class="arm front">') == len(FRONT) and html.count('<tr class="arm">') == 2
    assert "data:image/png;base64," in html and "seed noise could put them on the front" in html
    one = {"metric": two[0], "parameters": {"a": {"values": [1]}}}
    assert _pareto_section(Sweep(Path("mo"), table(), {"config": {"search": one}})) == ""
