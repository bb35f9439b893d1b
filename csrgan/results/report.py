"""``csrgan results report DIR``: one self-contained HTML page for a sweep (opens offline, no CDN, no JS).

Sections, each from the library that computes it elsewhere, so the page and the terminal agree:

* **ablation tables** per phase (pre-training, GAN) exactly as ``csrgan sweep`` prints them at the end
  (:func:`csrgan.results.report_data.phase_table`), with a bicubic baseline row;
* **Pareto front** of a multi-objective sweep (:mod:`csrgan.results.pareto`), as ``csrgan sweep`` prints
  it, and with two objectives its plot (:func:`csrgan.results.plot.pareto_figure`);
* **plots**: :func:`csrgan.results.plot` (metric vs parameter, or vs configuration for arms);
* **crops**: bicubic | each arm's final model | HR on every test image, PSNR per crop
  (:mod:`csrgan.results.report_crops`: which trial represents an arm and why);
* **degradation stage**: its bicubic LR | G(x) | real LR samples and quality-gate verdict
  (:mod:`csrgan.results.report_stages`);
* **provenance**: git commit, protocol, weights, config (``_sweep.json``), csrgan version.

Every image is a PNG embedded as a ``data:`` URI. Torch is imported only while crops are made.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from csrgan.results.effects import find_row
from csrgan.results.report_crops import (
    DEFAULT_CROP,
    Arm,
    ImageCrops,
    SetCrops,
    crop_sets,
    limit_arms,
    pick_arms,
)
from csrgan.results.report_data import (
    PhaseTable,
    Sweep,
    baseline_line,
    baseline_value,
    format_metric,
    markdown_cells,
    open_sweep,
    phase_table,
)
from csrgan.results.report_stages import LrSource, StageView, degradation_stages, lr_sources
from csrgan.results.schema import PARAM_PREFIX, ResultsError

__all__ = ["DEFAULT_NAME", "build_report", "render_report"]

#: Where the report goes by default, inside the sweep folder (``_`` names are not Parquet data).
DEFAULT_NAME = "_report.html"
PHASES = ("pretrain", "gan")
_LIMIT = "the reference, the oracle and the best others by their representative's PSNR"

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0} th,td{border:1px solid #ccc;padding:3px 8px}
td{text-align:right;font-variant-numeric:tabular-nums} td:first-child,th{text-align:left}
tr.baseline td{background:#f3f3f3;font-style:italic} tr.reference td{background:#eef5ff}
tr.oracle td{background:#fff4e0} .note{color:#444} code,pre{background:#f6f6f6}
table.pareto tr.front td{background:#fdecea;font-weight:600}
pre{padding:.6em;overflow:auto;max-height:40em} figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:12px;text-align:center;max-width:220px} .crops img{width:192px;image-rendering:pixelated}
.grid img{image-rendering:pixelated;max-width:100%} .plot img{max-width:100%}
.plot figcaption,.grid figcaption{max-width:none}
.verdict{font-weight:bold;padding:2px 8px;border-radius:3px;display:inline-block}
.verdict.ok{background:#d8f5d8} .verdict.poor{background:#ffd9d9} .err{color:#b00}
details.crop-image{border:1px solid #e4e4e4;margin:6px 0;padding:4px 8px} summary{cursor:pointer}
dl.prov dt{font-weight:bold;margin-top:.5em} table.kv td{text-align:left}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{_e(cls)}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _ul(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _kv_table(pairs: Iterable[tuple[str, Any]], cls: str = "") -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv {_e(cls)}">{rows}</table>'


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


# ---------------------------------------------------------------------------------------- tables
def _row_class(pt: PhaseTable, i: int, reference: Any, oracle: Any) -> str:
    roles = [r for r, w in (("reference", reference), ("oracle", oracle)) if w and find_row(pt.table, w) == i]
    return " ".join(roles)


def _table_html(sweep: Sweep, pt: PhaseTable) -> str:
    """The markdown table's very cells as HTML, plus the bicubic baseline in the metric columns."""
    header, body = markdown_cells(pt.markdown)
    s = sweep.search
    metric_heads = {c.removesuffix(" mean") for c in pt.table.columns if c.endswith(" mean")}
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    base_cells = []
    for j, h in enumerate(header):
        if h in metric_heads:
            ts, m = h.rsplit("/", 1)
            v = baseline_value(sweep.df, ts, m)
            attr = f' data-value="{v!r}"' if v is not None else ""
            base_cells.append(f'<td data-column="{_e(h)}"{attr}>{_e(format_metric(m, v))}</td>')
        else:
            base_cells.append(f"<td>{'bicubic (MATLAB, same protocol)' if j == 0 else ''}</td>")
    rows = [f'<tr class="baseline">{"".join(base_cells)}</tr>']
    for i, cells in enumerate(body):
        cls = _row_class(pt, i, s.reference, s.oracle)
        tds = "".join(f'<td data-column="{_e(h)}">{_e(c)}</td>' for h, c in zip(header, cells, strict=True))
        rows.append(f'<tr class="arm {cls}">{tds}</tr>')
    return (
        f'<table class="ablation" data-phase="{_e(pt.phase)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _tables_section(sweep: Sweep, tables: Sequence[PhaseTable]) -> str:
    parts = ['<section id="tables"><h2>Ablation tables</h2>']
    parts.append(
        "<p>The tables <code>csrgan sweep</code> prints at the end of a run (and <code>csrgan results "
        "summary --by …</code> for the columns before the gain): final step per trial, mean ± std over "
        "seeds; diverged/error trials are counted in <code>n_diverged</code> and left out.</p>"
    )
    for pt in tables:
        parts.append(f'<h3 id="table-{_e(pt.phase)}">{_e(pt.heading)}</h3>{_table_html(sweep, pt)}')
        if pt.note:
            parts.append(f'<p class="note oracle-note">{_e(pt.note)}</p>')
        if pt.reading:
            lines = "".join(f'<li class="reading">{_e(r)}</li>' for r in pt.reading)
            parts.append(f'<p class="note">{_e(pt.reading_head)}</p><ul class="reading">{lines}</ul>')
    if sweep.baseline:
        parts.append(f'<p class="note baseline-line">{_e(baseline_line(sweep.baseline))}</p>')
    return "".join(parts) + "</section>"


# ---------------------------------------------------------------------------------------- pareto
def _pareto_section(sweep: Sweep) -> str:
    """A multi-objective sweep's Pareto front (:mod:`csrgan.results.pareto`), as ``csrgan sweep`` and
    ``csrgan results summary`` print it, and with two objectives its plot; "" for one objective."""
    from csrgan.results.pareto import FRONT_COLUMN, format_pareto, objectives_of_config, pareto_table

    objs = objectives_of_config(sweep.config)
    if len(objs) < 2 or "gan" not in set(sweep.df["phase"]):
        return ""
    by = [b for b in sweep.search.by if PARAM_PREFIX + b in sweep.df.columns]
    head = '<section id="pareto"><h2>Pareto front</h2>'
    try:
        table = pareto_table(sweep.df, objs, by, phase="gan")
    except ResultsError as exc:
        return f'{head}<p class="err">no Pareto front: {_e(exc)}</p></section>'
    markdown = format_pareto(table, "markdown", title=sweep.name)
    header, body = markdown_cells(markdown)
    rows = "".join(
        f'<tr class="arm{" front" if on else ""}">' + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        for cells, on in zip(body, table[FRONT_COLUMN], strict=True)
    )
    first = markdown.splitlines()[0]
    parts = [head, f"<p>{_e(first)}</p>", '<table class="pareto"><thead><tr>']
    parts += [f"<th>{_e(h)}</th>" for h in header] + [f"</tr></thead><tbody>{rows}</tbody></table>"]
    reading = markdown.split("Reading this front:\n", 1)[-1].splitlines()
    parts.append('<ul class="reading">' + "".join(f"<li>{_e(r.strip())}</li>" for r in reading) + "</ul>")
    if len(objs) == 2:
        parts.append(_pareto_plot(sweep.df, objs, by))
    return "".join(parts) + "</section>"


def _pareto_plot(df: pd.DataFrame, objs: Sequence[Any], by: list[str]) -> str:
    """The Pareto plot (:func:`csrgan.results.plot.pareto_figure`) as an embedded figure."""
    import io

    from csrgan.results.plot import pareto_figure

    buf = io.BytesIO()
    pareto_figure(df, objs, by, phase="gan").savefig(buf, format="png", dpi=120)
    cap = f"{objs[0].name} against {objs[1].name}: every configuration, the front connected"
    return f'<figure class="plot">{_img(buf.getvalue(), cap)}<figcaption>{_e(cap)}</figcaption></figure>'


# ----------------------------------------------------------------------------------------- plots
def _plots(sweep: Sweep, phases: Sequence[str]) -> list[tuple[str, bytes]]:
    """(caption, PNG) per phase: metric vs the one searched parameter, or vs configuration (arms)."""
    from csrgan.results.plot import configurations, plot

    by = [b for b in sweep.search.by if PARAM_PREFIX + b in sweep.df.columns]
    if by:  # arms (or a grid over several parameters): one category per configuration
        df, x = configurations(sweep.df, by)
    else:
        df, x = sweep.df.assign(**{"all trials": "all"}), "all trials"
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for phase in phases:
            path = Path(tmp) / f"{phase}.png"
            try:
                plot(df, x, path, phase=phase)
            except ResultsError as exc:
                out.append((f"{phase}: no plot ({exc})", b""))
                continue
            out.append((f"{phase}: final metrics vs {x}, mean ± std over seeds", path.read_bytes()))
    return out


def _plots_section(plots: Sequence[tuple[str, bytes]]) -> str:
    figs = [
        f'<figure class="plot">{_img(png, cap)}<figcaption>{_e(cap)}</figcaption></figure>'
        if png
        else f'<p class="err">{_e(cap)}</p>'
        for cap, png in plots
    ]
    return '<section id="plots"><h2>Plots</h2>' + "".join(figs) + "</section>"


# ----------------------------------------------------------------------------------------- crops
def _arms_table(arms: Sequence[Arm]) -> str:
    head = (
        "<tr><th>configuration</th><th>role</th><th>representative trial</th><th>seeds' final PSNR</th></tr>"
    )
    rows = "".join(
        f'<tr class="rep" data-label="{_e(a.label)}" data-trial="{_e(a.trial_id or "")}">'
        f"<td>{_e(a.label)}</td><td>{_e(a.role)}</td><td>{_e(a.why)}</td>"
        f"<td>{_e(', '.join(f'{v:.2f}' for v in a.values))}</td></tr>"
        for a in arms
    )
    return f'<table class="arms">{head}{rows}</table>'


def _figure(cell: Any) -> str:
    lines = [_e(cell.label)]
    attrs = f'data-label="{_e(cell.label)}"'
    if cell.psnr_crop is not None:
        lines.append(f"crop PSNR {cell.psnr_crop:.2f} dB")
        attrs += f' data-psnr-crop="{cell.psnr_crop!r}"'
    if cell.psnr_image is not None:
        lines.append(f"whole image {cell.psnr_image:.2f} dB")
        attrs += f' data-psnr-image="{cell.psnr_image!r}"'
    caption = "<br>".join(lines)
    img = _img(cell.png, cell.label)
    return f'<figure class="crop" {attrs}>{img}<figcaption>{caption}</figcaption></figure>'


def _image_html(im: ImageCrops, open_: bool) -> str:
    y, x, h, w = im.box
    psnrs = " · ".join(f"{c.label} {c.psnr_crop:.2f}" for c in im.cells if c.psnr_crop is not None)
    summary = f"{_e(im.name)} — crop at y={y}, x={x} ({h}×{w} HR px)" + (
        f"; crop PSNR: {_e(psnrs)}" if psnrs else ""
    )
    figs = "".join(_figure(c) for c in im.cells)
    return (
        f'<details class="crop-image" data-image="{_e(im.name)}"{" open" if open_ else ""}>'
        f'<summary>{summary}</summary><div class="crops">{figs}</div></details>'
    )


def _set_html(sweep: Sweep, sc: SetCrops, arms: Sequence[Arm]) -> str:
    means = []
    for label, v in sc.means.items():
        arm = next((a for a in arms if a.label == label), None)
        ref = baseline_value(sweep.df, sc.name, "psnr") if arm is None else _trial_value(sweep, arm, sc.name)
        what = "the sweep's baseline" if arm is None else f"trial {arm.trial_id}'s row"
        means.append(
            f'<li class="set-mean" data-label="{_e(label)}" data-mean-psnr="{v!r}">{_e(label)}: {v:.4f} dB '
            f"({what}: {_fmt(ref if ref is not None else math.nan)})</li>"
        )
    errs = "".join(f'<p class="err">{_e(e)}</p>' for e in sc.errors)
    images = "".join(_image_html(im, k == 0) for k, im in enumerate(sc.images)) + _train_grids(
        sweep, arms, sc.name
    )
    return (
        f'<section class="crop-set" id="crops-{_e(sc.name)}" data-test-set="{_e(sc.name)}">'
        f"<h3>Test set {_e(sc.name)} ({len(sc.images)} images)</h3>{errs}"
        "<p>Mean whole-image PSNR over the set's images (the protocol's number):</p>"
        f"<ul>{''.join(means)}</ul>"
        f"{images}</section>"
    )


def _final_row(sweep: Sweep, trial_id: str | None, test_set: str) -> pd.Series | None:
    """A trial's row at its last step on ``test_set``, in the phase the crops show."""
    df = sweep.df
    rows = df[(df["trial_id"] == trial_id) & (df["test_set"] == test_set) & (df["phase"] == _crop_phase(df))]
    return rows.loc[rows["step"].idxmax()] if len(rows) else None


def _captioned(png: bytes, caption: str, cls: str) -> str:
    return f'<figure class="{cls}">{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>'


def _train_grids(sweep: Sweep, arms: Sequence[Arm], test_set: str) -> str:
    """The evaluation grid each representative trial wrote at its final step (the rows' ``grid``)."""
    figs = []
    for arm in arms:
        row = _final_row(sweep, arm.trial_id, test_set)
        path = sweep.path(row["grid"]) if row is not None else None
        if path is not None and path.is_file():
            figs.append(
                _captioned(path.read_bytes(), f"{arm.label}: trial {arm.trial_id}, {path.name}", "grid")
            )
    if not figs:
        return ""
    return (
        '<details class="train-grids"><summary>The grids these trials wrote at their final evaluation '
        f"(training-time, a rotating subset of images)</summary>{''.join(figs)}</details>"
    )


def _trial_value(sweep: Sweep, arm: Arm, test_set: str) -> float | None:
    row = _final_row(sweep, arm.trial_id, test_set)
    return None if row is None else float(row["psnr"])


def _crop_phase(df: pd.DataFrame) -> str:
    return "gan" if "gan" in set(df["phase"]) else str(df["phase"].iloc[0])


def _crops_section(
    sweep: Sweep,
    arms: Sequence[Arm],
    sets: Sequence[SetCrops],
    pick_set: str,
    errors: Sequence[str],
    n_configs: int,
) -> str:
    phase = _crop_phase(sweep.df)
    intro = (
        f"<p>Bicubic (MATLAB-compatible) | each configuration's final {_e(phase)} model | HR, on the same "
        "region of every test image (the window with the most HR detail). One trial represents each "
        f"configuration: the seed whose final <code>{_e(pick_set)}/psnr</code> is the median of its "
        "seeds (lower middle for an even count). PSNR by the table's protocol (Y channel, uint8, a "
        "<code>scale</code>-px border removed — of the crop for the crop's number).</p>"
    )
    errs = "".join(f'<p class="err">{_e(e)}</p>' for e in errors)
    if len(arms) < n_configs:
        errs = (
            f'<p class="note">{n_configs} configurations: crops for {len(arms)} of them ({_LIMIT}).</p>'
            + errs
        )
    body = "".join(_set_html(sweep, sc, arms) for sc in sets)
    return f'<section id="crops"><h2>Crops</h2>{intro}{_arms_table(arms)}{errs}{body}</section>'


# ----------------------------------------------------------------------------------- degradation
def _stage_html(st: StageView) -> str:
    q = st.quality
    if q:
        verdict = str(q.get("verdict", "?"))
        badge = f'<span class="verdict {_e(verdict)}">quality gate: {_e(verdict.upper())}</span>'
        badge += " (accepted: cyclegan.accept_poor)" if q.get("accepted_poor") else ""
        reasons = (
            _ul(_e(r) for r in q.get("reasons") or []) if q.get("reasons") else "<p>no reasons: it passed</p>"
        )
        numbers = {k: v for k, v in q.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        details = _kv_table([(k, _fmt(float(v))) for k, v in sorted(numbers.items())], "fidelity")
        details += _kv_table(sorted((q.get("thresholds") or {}).items()), "thresholds")
    else:
        badge = '<span class="verdict poor">not judged</span>'
        reasons, details = "<p>stage.json has no quality block (made before the gate, or missing)</p>", ""
    grids = (
        "".join(
            f'<figure class="grid">{_img(p.read_bytes(), f"{ts} step {step}")}<figcaption>bicubic LR | G(x) '
            f"| real LR — test set {_e(ts)}, step {step} ({_e(p.name)})</figcaption></figure>"
            for ts, (step, p) in sorted(st.grids.items())
        )
        or f'<p class="err">no sample grid in {_e(st.dir / "grids")}</p>'
    )
    rows = _kv_table([(k, ", ".join(v) or "–") for k, v in st.row_values.items()], "row-values")
    trans = _kv_table([(k, _fmt(float(v))) for k, v in sorted(st.translation.items())], "translation")
    return (
        f'<section class="stage" data-key="{_e(st.key)}"><h3>cyclegan-{_e(st.key)}</h3>'
        f"<p>{badge}</p>{reasons}"
        f"<p>Trained on by: {_e('; '.join(st.arms))}. Folder: <code>{_e(st.dir)}</code></p>{grids}"
        f"<h4>Fidelity (unpaired, on the training images) and gate thresholds</h4>{details}"
        f"<h4>Paired numbers vs the real LR (report Table 2, crop 0)</h4>{trans}"
        f"<h4>What the trials' rows recorded</h4>{rows}</section>"
    )


def _degradation_section(stages: Sequence[StageView], sources: Sequence[LrSource]) -> str:
    parts = ['<section id="degradation"><h2>Degradation stage</h2>']
    if not stages:
        parts.append("<p>No trial of this sweep trained on a learned degradation stage.</p>")
    parts += [_stage_html(st) for st in stages]
    for src in sources:
        parts.append(
            f'<p class="lr-source">LR source <code>{_e(src.id)}</code> (not learned: a synthetic pipeline '
            "applied on the fly, or paired data — the oracle's true degradation): "
            f"{_e('; '.join(src.arms))}</p>"
        )
    return "".join(parts) + "</section>"


# ------------------------------------------------------------------------------------ provenance
def _counts(df: pd.DataFrame, col: str) -> list[tuple[str, str]]:
    """(value, "n trial(s)") per distinct value of ``col`` (None shown as "unknown")."""
    if col not in df.columns:
        return []
    per_trial = df.groupby("trial_id")[col].first()
    return [
        (str(v), f"{n} trial(s)") for v, n in per_trial.fillna("unknown").value_counts().sort_index().items()
    ]


def _provenance_section(sweep: Sweep, stages: Sequence[StageView]) -> str:
    from csrgan import __version__
    from csrgan.metrics import PROTOCOL

    df = sweep.df
    commits = "".join(
        f'<dd class="commit">{_e(v)} <small>({_e(n)})</small></dd>' for v, n in _counts(df, "git_commit")
    )
    protocols = "".join(
        f'<dd class="protocol">{_e(v)} <small>({_e(n)})</small></dd>' for v, n in _counts(df, "protocol")
    )
    known = set(df["protocol"].dropna()) == {PROTOCOL.id}
    proto = (
        f"<details><summary>the protocol, constant by constant</summary>"
        f"{_kv_table(sorted(PROTOCOL.as_dict().items()), 'protocol')}</details>"
        if known
        else ""
    )
    weights = "".join(f"<dd>{_e(v)} <small>({_e(n)})</small></dd>" for v, n in _counts(df, "weights"))
    hashes = "".join(
        f"<dd><code>{_e(v)}</code> <small>({_e(n)})</small></dd>" for v, n in _counts(df, "config_hash")
    )
    stage_versions = sorted({str((st.info or {}).get("csrgan_version")) for st in stages if st.info})
    runs = [
        f"{_e(r.get('started_at'))}: <code>{_e(' '.join(map(str, r.get('argv') or [])))}</code>, wall "
        f"{_e(r.get('wall_s', '?'))} s, statuses {_e(_status_counts(r.get('statuses') or {}))}"
        for r in sweep.meta.get("runs") or []
    ]
    config = json.dumps(sweep.config, indent=2, sort_keys=True)
    plan = _ul(_e(t) for t in sweep.meta.get("trials") or [])
    return (
        '<section id="provenance"><h2>Provenance</h2><dl class="prov">'
        f"<dt>sweep folder</dt><dd><code>{_e(sweep.dir)}</code></dd><dt>git commit</dt>{commits}"
        f"<dt>metric protocol</dt>{protocols}<dd>{proto}</dd><dt>pretrained weights</dt>{weights}"
        f"<dt>config hash</dt>{hashes}<dt>csrgan version</dt><dd class='version'>report made by csrgan "
        f"{_e(__version__)}; stages made by {_e(', '.join(stage_versions) or 'unknown')}</dd>"
        f"<dt>runs</dt><dd>{_ul(runs)}</dd><dt>trial plan</dt><dd>{plan}</dd>"
        "<dt>config (_sweep.json)</dt><dd><details><summary>show</summary>"
        f"<pre class='config'>{_e(config)}</pre>"
        "</details></dd></dl></section>"
    )


def _status_counts(statuses: dict[str, str]) -> str:
    out: dict[str, int] = {}
    for s in statuses.values():
        out[s] = out.get(s, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(out.items())) or "–"


# ------------------------------------------------------------------------------------------ page
def _pick_set(sweep: Sweep) -> str:
    """The test set whose PSNR picks each arm's representative: the search metric's, else the first."""
    metric, sets = sweep.search.metric, sorted(sweep.df["test_set"].unique())
    ts = metric.rsplit("/", 1)[0] if metric and "/" in metric else None
    return ts if ts in sets else sets[0]


def render_report(sweep: Sweep, device: str = "cpu", crop: int = DEFAULT_CROP) -> str:
    """The whole HTML page of ``sweep`` (runs each arm's representative generator on the test images)."""
    df = sweep.df
    phases = [p for p in PHASES if p in set(df["phase"])] or sorted(df["phase"].unique())
    name = str(sweep.config.get("name", sweep.name))
    tables = [phase_table(df, sweep.search, p, name, sweep.baseline) for p in phases]
    pick = _pick_set(sweep)
    all_arms = pick_arms(sweep, _crop_phase(df), pick)
    arms = limit_arms(all_arms)
    cfg_data, tile = sweep.config.get("data") or {}, int((sweep.config.get("eval") or {}).get("tile") or 0)
    sets, load_errors = crop_sets(
        cfg_data.get("test_sets") or [], int(cfg_data.get("scale", 4)), arms, device, crop, tile
    )
    stages = degradation_stages(sweep)
    made = datetime.now(UTC).isoformat(timespec="seconds")
    nav = " · ".join(
        f'<a href="#{k}">{v}</a>'
        for k, v in (("tables", "tables"), ("plots", "plots"), ("crops", "crops"),
                     ("degradation", "degradation stage"), ("provenance", "provenance"))
    )  # fmt: skip
    body = "".join([
        f"<h1>csrgan report: {_e(sweep.name)}</h1>",
        f"<p>{df['trial_id'].nunique()} trials, made {_e(made)}. {nav}</p>",
        _tables_section(sweep, tables),
        _pareto_section(sweep),
        _plots_section(_plots(sweep, phases)),
        _crops_section(sweep, arms, sets, pick, load_errors, len(all_arms)),
        _degradation_section(stages, lr_sources(sweep)),
        _provenance_section(sweep, stages),
    ])  # fmt: skip
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>csrgan report: {_e(sweep.name)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def build_report(
    directory: str | Path, out: str | Path | None = None, device: str = "cpu", crop: int = DEFAULT_CROP
) -> Path:
    """Write the report of the sweep folder ``directory`` to ``out`` (default ``<sweep>/_report.html``)."""
    sweep = open_sweep(directory)
    path = Path(out) if out is not None else sweep.dir / DEFAULT_NAME
    page = render_report(sweep, device=device, crop=crop)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
