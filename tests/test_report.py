"""``csrgan results report``: a tiny quickstart-like sweep on real local Ray, its report opened in Chromium.

Spec:
* the page's ablation tables are the very tables ``csrgan sweep`` prints at the end of a run (every
  cell), with the bicubic baseline of ``_sweep.json`` and each arm's gain and oracle share;
* the page is self-contained: it asks for nothing but itself and ``data:`` URIs, and every image
  decodes (``naturalWidth > 0``);
* every test image has a crop section with bicubic | each arm's final model | HR and PSNR per crop;
  the representative trial of an arm is its median-PSNR seed, and the mean whole-image PSNR the page
  reports for it (and for bicubic) is the number in its row (and the baseline): the same models, the
  same images, the same protocol;
* the degradation stage's verdict and samples, and the provenance (git commit, protocol, version);
* rows written before the artefact/baseline columns existed get the same values from the layout.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it): without it this module
skips, except under ``CI`` where it fails, so CI cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tiny_experiment import tiny

from csrgan.config import validate_config
from csrgan.data.layout import resolve_data

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CSRGAN = [sys.executable, "-m", "csrgan.cli.app"]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NOTES_SHOT = Path("/work/notes/report_screenshot.png")  # a copy for people, where that folder exists
ARMS = [
    {"sr.mix_prob": 0.0},  # reference: bicubic LR only
    {"sr.lr_source": "cyclegan", "sr.mix_prob": 1.0},  # the learned degradation
    {"sr.lr_source": "pipeline", "sr.mix_prob": 1.0},  # oracle: the demo's true degradation
]
SEARCH = {
    "method": "grid",
    "metric": {"name": "unknown/psnr"},
    "arms": ARMS,
    "reference": {"sr.mix_prob": 0.0},
    "oracle": {"sr.lr_source": "pipeline", "sr.mix_prob": 1.0},
    "seeds": [0, 1],
}


def _raw(storage: Path, demo: Path) -> dict[str, Any]:
    # bicubic skip: a few steps already give a usable picture, so the crops show images, not noise
    gen = {"type": "srresnet", "channels": 8, "n_blocks": 1, "global_bicubic_skip": True}
    # named like the demo's sweep: the README's after-demo commands run on it as written
    return tiny("quickstart", storage, demo, search=SEARCH, sr={"generator": gen})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """(sweep folder, its experiment dict, what ``csrgan sweep`` printed at the end of the run)."""
    import ray

    from csrgan.cli.sweep import _print_summary
    from csrgan.data.demo import build_demo
    from csrgan.sweep.driver import run_sweep

    base = tmp_path_factory.mktemp("report")
    build_demo(base / "demo", seed=0)
    raw = _raw(base / "results", base / "demo")
    cfg = resolve_data(validate_config(raw))
    lines: list[str] = []
    try:
        outcome = run_sweep(cfg, echo=lines.append, num_cpus=2)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert outcome.complete and not outcome.errors, "\n".join(lines)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _print_summary(cfg, outcome.results_dir, outcome.baseline)  # what `csrgan sweep` prints at the end
    return outcome.results_dir, raw, printed.getvalue()


@pytest.fixture(scope="module")
def report(sweep: tuple[Path, dict[str, Any], str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*CSRGAN, "results", "report", str(sweep[0]), "-o", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path, checked before the sweep is built (skip, or fail under CI, without it)."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path, why = None, "the playwright package is not installed (pip install -e '.[test]')"
    else:
        why = "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must render the report in a real browser, but {why}")
        pytest.skip(why)
    return path


REQUESTS: list[str] = []  # every URL the page asked the browser for


@pytest.fixture(scope="module")
def page(chromium: str, report: Path, tmp_path_factory: pytest.TempPathFactory):
    """The report open in headless Chromium. A full-page screenshot of it as it opens is saved under the
    tmp dir (and copied to /work/notes when that folder exists); then every <details> is opened and
    every image has loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1300, "height": 900})
        pg.on("request", lambda r: REQUESTS.append(r.url))
        pg.goto(report.as_uri(), wait_until="load")
        shot = tmp_path_factory.mktemp("shot") / "report.png"
        pg.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if NOTES_SHOT.parent.is_dir():
            shutil.copyfile(shot, NOTES_SHOT)
        pg.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        pg.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
        yield pg
        browser.close()


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """The markdown tables in ``text``: per table, its header then body rows, cells unescaped."""
    from csrgan.results.report_data import markdown_cells

    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            head, body = markdown_cells("\n".join(block))
            tables.append([head, *body])
            block = []
    return tables


def _cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        selector, "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
    )


def test_tables_are_the_sweeps_closing_tables_with_the_baseline(page, sweep) -> None:
    folder, _, printed = sweep
    printed_tables = _markdown_tables(printed)
    assert len(printed_tables) == 2, printed  # pretrain, gan
    meta = json.loads((folder / "_sweep.json").read_text())
    base = meta["bicubic_baseline"]
    assert set(base) == {"bicubic/psnr", "bicubic/ssim", "unknown/psnr", "unknown/ssim"}
    for phase, expected in zip(("pretrain", "gan"), printed_tables, strict=True):
        t = f'table.ablation[data-phase="{phase}"]'
        assert _cells(page, f"{t} thead tr") == [expected[0]]
        assert _cells(page, f"{t} tbody tr.arm") == expected[1:]  # every cell, as printed
        header = expected[0]
        assert "oracle share" in header and "gain unknown/psnr" in header
        share = [row[header.index("oracle share")] for row in expected[1:]]
        oracle_row = _cells(page, f"{t} tbody tr.oracle")
        assert len(oracle_row) == 1 and oracle_row[0][header.index("oracle share")] == "1"
        assert share.count("1") >= 1
        assert len(_cells(page, f"{t} tbody tr.reference")) == 1
        for key, v in base.items():
            cell = page.locator(f'{t} tr.baseline td[data-column="{key}"]')
            assert float(cell.get_attribute("data-value")) == pytest.approx(v, abs=1e-12)
            decimals = 2 if key.endswith("psnr") else 4
            assert cell.inner_text().strip() == f"{v:.{decimals}f}"
    notes = page.eval_on_selector_all("p.oracle-note", "ps => ps.map(p => p.textContent)")
    assert notes == [ln for ln in printed.splitlines() if ln.startswith("unknown/psnr: the oracle")]
    reading = page.eval_on_selector_all("li.reading", "li => li.map(x => x.textContent)")
    indented = [ln.strip() for ln in printed.splitlines() if ln.startswith("  ") and not ln.startswith("  |")]
    assert reading and reading == indented  # the closing notes under each table, line for line
    assert any("below the bicubic-interpolation baseline" in r for r in reading)  # tiny models are
    line = page.inner_text("p.baseline-line")
    assert all(f"{k} {v:.4f}" in line for k, v in base.items())


def test_page_is_self_contained_and_every_image_decodes(page, report: Path) -> None:
    text = report.read_text()
    assert "<script" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    assert REQUESTS and REQUESTS[0] == report.as_uri()
    foreign = [u for u in REQUESTS if not u.startswith(("file://", "data:"))]
    assert not foreign, foreign
    js = "imgs => imgs.map(i => [i.alt, i.naturalWidth, i.src.slice(0, 22)])"
    widths = page.eval_on_selector_all("img", js)
    assert len(widths) >= 2 + 2 * 4 * 5 + 1  # 2 plots, 2 sets x 4 images x 5 crops, 1 stage grid
    bad = [w for w in widths if not (w[1] > 0 and w[2] == "data:image/png;base64,")]
    assert not bad, bad
    errors = page.eval_on_selector_all(".err", "e => e.map(x => x.textContent)")
    assert not errors, errors


def _final(df: pd.DataFrame, trial_id: str, test_set: str) -> float:
    rows = df[(df.trial_id == trial_id) & (df.phase == "gan") & (df.test_set == test_set)]
    return float(rows.loc[rows.step.idxmax(), "psnr"])


def test_crops_cover_every_test_image_with_the_tables_models(page, sweep) -> None:
    from csrgan.data.io import list_images
    from csrgan.results import read_results

    folder, raw, _ = sweep
    df = read_results(folder)
    meta = json.loads((folder / "_sweep.json").read_text())
    test_sets = meta["config"]["data"]["test_sets"]
    reps = {
        r.get_attribute("data-label"): r.get_attribute("data-trial") for r in page.locator("tr.rep").all()
    }
    assert len(reps) == len(ARMS)
    for label, trial in reps.items():  # the median seed: with two seeds, the lower one (ties: lower seed)
        params = dict(kv.split("=") for kv in label.split(", "))
        mine = df[(df.phase == "gan") & (df["param.sr.mix_prob"] == float(params["sr.mix_prob"]))]
        mine = mine[mine["param.sr.lr_source"] == params["sr.lr_source"]]
        seeds = mine.groupby("trial_id").seed.first()
        finals = sorted((_final(df, t, "unknown"), s, t) for t, s in seeds.items())
        assert len(finals) == 2 and trial == finals[0][2], (label, finals)
    for ts in test_sets:
        section = page.locator(f'section.crop-set[data-test-set="{ts["name"]}"]')
        names = sorted(p.stem for p in list_images(ts["hr"]))
        images = section.locator("details.crop-image")
        assert sorted(d.get_attribute("data-image") for d in images.all()) == names
        for d in images.all():
            labels = [f.get_attribute("data-label") for f in d.locator("figure.crop").all()]
            assert labels == ["bicubic", *reps, "HR"]
            scored = d.locator("figure.crop[data-psnr-crop]").all()
            crops = [float(f.get_attribute("data-psnr-crop")) for f in scored]
            assert len(crops) == 1 + len(reps) and all(math.isfinite(v) for v in crops)
            assert "crop PSNR" in d.locator("figure.crop").first.inner_text()
        means = {li.get_attribute("data-label"): float(li.get_attribute("data-mean-psnr"))
                 for li in section.locator("li.set-mean").all()}  # fmt: skip
        assert means["bicubic"] == pytest.approx(meta["bicubic_baseline"][f"{ts['name']}/psnr"], abs=1e-9)
        for label, trial in reps.items():  # the very model and protocol of the trial's row
            assert means[label] == pytest.approx(_final(df, trial, ts["name"]), abs=1e-3), (label, ts["name"])


def test_degradation_stage_and_provenance(page, sweep) -> None:
    from csrgan import __version__
    from csrgan.metrics import PROTOCOL
    from csrgan.results import read_results

    folder, _, _ = sweep
    df = read_results(folder)
    (key,) = df.cyclegan_key.dropna().unique()
    stage = page.locator(f'section.stage[data-key="{key}"]')
    info = json.loads((folder.parent / "_stages" / f"cyclegan-{key}" / "stage.json").read_text())
    quality = info["quality"]
    assert f"quality gate: {quality['verdict'].upper()}" in stage.locator(".verdict").inner_text()
    for reason in quality["reasons"]:
        assert reason in stage.inner_text()
    assert stage.locator("figure.grid img").count() == 1  # the one "real" test set's samples
    assert "bicubic LR | G(x) | real LR" in stage.locator("figure.grid figcaption").inner_text()
    assert page.locator("p.lr-source code").inner_text().startswith("pipeline-")
    (commit,) = df.git_commit.dropna().unique()
    assert page.locator("dd.commit").inner_text().startswith(commit)
    assert page.locator("dd.protocol").inner_text().startswith(PROTOCOL.id)
    assert f"csrgan {__version__}" in page.locator("dd.version").inner_text()
    config = json.loads(page.locator("pre.config").inner_text())
    assert config == json.loads((folder / "_sweep.json").read_text())["config"]


def test_rows_without_artefact_columns_get_them_from_the_layout(sweep) -> None:
    """What an older sweep's rows lack is recomputed, equal to what the recorder writes today."""
    from csrgan.results import read_results
    from csrgan.results.report_data import fill_artefact_columns, fill_baseline_columns

    folder, _, _ = sweep
    df = read_results(folder)
    cols = ["run_dir", "checkpoint", "grid", "baseline_psnr", "baseline_ssim"]
    assert set(cols) <= set(df.columns), "the recorder writes these columns"
    old = df.drop(columns=cols)
    baseline = json.loads((folder / "_sweep.json").read_text())["bicubic_baseline"]
    filled = fill_baseline_columns(fill_artefact_columns(old, folder.parent, folder.name), baseline)
    pd.testing.assert_series_equal(filled.run_dir, df.run_dir.astype(object), check_names=False)
    pd.testing.assert_series_equal(filled.grid, df.grid.astype(object), check_names=False)
    exists = df.checkpoint.map(lambda c: c is not None and (folder.parent / c).exists())
    assert exists.any() and (filled.checkpoint[exists] == df.checkpoint[exists]).all()
    assert filled.checkpoint[~exists].isna().all()  # pruned checkpoints are not invented
    for m in ("psnr", "ssim"):
        pd.testing.assert_series_equal(filled[f"baseline_{m}"], df[f"baseline_{m}"], check_names=False)


# ------------------------------------------------------------------- the README's after-demo commands
def _readme_after_demo_block() -> list[str]:
    """The command lines of the bash block the README marks as runnable after ``make demo``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    marker = text.index("<!-- readme-after-demo")
    block = text[text.index("```bash\n", marker) + len("```bash\n") :]
    block = block[: block.index("```")]
    return [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_readme_after_demo_commands_work_as_written(sweep, tmp_path: Path) -> None:
    """Every command of that README block, verbatim, in a folder laid out as `make demo` leaves it
    (results/quickstart, results/_stages, .demo-data): each exits 0 and makes what it says."""
    folder, raw, _ = sweep
    (tmp_path / "results").symlink_to(folder.parent)
    (tmp_path / ".demo-data").symlink_to(Path(raw["data"]["demo"]["dir"]))
    lines = _readme_after_demo_block()
    assert len(lines) >= 8 and lines[0].startswith("csrgan results summary")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    script = "set -euo pipefail\n" + "\n".join(f"echo '+ {ln.replace(chr(39), '')}'\n{ln}" for ln in lines)
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    out = proc.stdout
    assert "| sr.mix_prob | sr.lr_source |" in out  # the summary table, one row per arm
    assert (tmp_path / "mix_prob.png").read_bytes()[:4] == b"\x89PNG"
    assert "<html" in (tmp_path / "quickstart.html").read_text(encoding="utf-8")[:200].lower()
    assert "max abs" in out.lower() and (tmp_path / "model.onnx").stat().st_size > 1000
    shown = sorted(p.name for p in (tmp_path / "upscaled").iterdir())
    assert shown == sorted(p.stem + ".png" for p in (tmp_path / ".demo-data/test/unknown/LR").iterdir())
