"""The numbers of ``csrgan results report``: a sweep folder read back with the columns that lead to its files.

* :func:`open_sweep` reads a sweep folder (its Parquet rows and ``_sweep.json``) and fills the artefact
  and baseline columns (``run_dir``, ``checkpoint``, ``grid``, ``baseline_<metric>``) where the rows lack
  them: sweeps written before those columns existed get the same values, computed from the layout
  (:mod:`csrgan.storage`) and from ``_sweep.json``'s ``bicubic_baseline``.
* :func:`phase_table` is the ablation table of one phase exactly as ``csrgan sweep`` prints it at the
  end of a run (:func:`~csrgan.results.summarize`, :func:`~csrgan.results.effects.effects`, the same
  rounding, the same oracle sentence and :func:`csrgan.results.notes.closing_note`), so the report and
  the terminal never disagree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from csrgan.results.effects import SHARE_COLUMN, effects, find_row, gain_column, pooled_std
from csrgan.results.notes import closing_note
from csrgan.results.plot import baseline_of
from csrgan.results.schema import BASELINE_METRICS, DECIMALS, PARAM_PREFIX, ResultsError
from csrgan.results.store import read_results
from csrgan.results.summary import format_summary, summarize
from csrgan.storage import META_FILE, STAGES_DIR, SweepLayout, is_uri

__all__ = [
    "PHASE_TITLES",
    "PhaseTable",
    "Search",
    "Sweep",
    "arm_label",
    "baseline_line",
    "baseline_value",
    "fill_artefact_columns",
    "fill_baseline_columns",
    "format_metric",
    "markdown_cells",
    "open_sweep",
    "phase_table",
]

#: The phases a sweep's rows hold, in the order the sweep prints them, and their headings.
PHASE_TITLES = {"pretrain": "SRResNet pre-training", "gan": "SRGAN (GAN phase)"}


@dataclass(frozen=True)
class Search:
    """What the sweep searched (from ``_sweep.json``'s config): the table's ``by`` columns and baselines."""

    by: tuple[str, ...]
    metric: str | None
    reference: dict[str, Any] | None
    oracle: dict[str, Any] | None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Search:
        """Read from the plain config dict (not re-validated: sweeps of older csrgan versions still open).
        ``by`` is ``SearchConfig.param_names()``: the parameters, then the arms' keys, first-seen order."""
        s = config.get("search") or {}
        names = [*(s.get("parameters") or {}), *(k for arm in s.get("arms") or [] for k in arm)]
        metric = (s.get("metric") or {}).get("name")
        return cls(tuple(dict.fromkeys(names)), metric, s.get("reference"), s.get("oracle"))


@dataclass(frozen=True)
class Sweep:
    """One sweep folder, read back: ``df`` has the artefact and baseline columns filled."""

    dir: Path
    df: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The storage root (``_stages`` lives here; rows' paths are relative to it)."""
        return self.dir.parent

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta.get("config") or {})

    @property
    def search(self) -> Search:
        return Search.of(self.config)

    @property
    def baseline(self) -> dict[str, float]:
        return dict(self.meta.get("bicubic_baseline") or {})

    def path(self, relative: str | None) -> Path | None:
        """A row's path column (relative to the storage root) as a path on this machine."""
        if relative is None or (isinstance(relative, float) and math.isnan(relative)):
            return None
        return self.root / str(relative)


def open_sweep(directory: str | Path) -> Sweep:
    """Read the sweep folder ``directory`` (``<storage>/<sweep>``, with its ``_sweep.json``)."""
    if is_uri(directory) and not str(directory).startswith("file://"):
        raise ResultsError(
            f"{directory}: the report runs each arm's checkpoint, so it needs the sweep folder on this "
            "machine (copy it with its storage root's _stages/ first)"
        )
    folder = Path(str(directory).removeprefix("file://")).expanduser().resolve()
    if not folder.is_dir():
        raise ResultsError(f"sweep folder not found: {folder}")
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise ResultsError(
            f"{folder} is not a sweep folder: no {META_FILE} (give results/<sweep>, not a results root)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{meta_file}: not valid JSON: {exc}") from None
    df = read_results(folder)
    df = fill_artefact_columns(df, folder.parent, folder.name)
    df = fill_baseline_columns(df, meta.get("bicubic_baseline") or {})
    return Sweep(folder, df, meta)


# ----------------------------------------------------------------------------- fallback columns
def _missing(df: pd.DataFrame, col: str) -> pd.Series:
    return df[col].isna() if col in df.columns else pd.Series(True, index=df.index)


def _run_dir(row: Mapping[str, Any], layout: SweepLayout) -> str | None:
    """``<sweep>/_trials/<trial_id>`` for gan rows, ``_stages/pretrain-<key>`` for pretrain rows."""
    if row["phase"] == "pretrain":
        key = row.get("pretrain_key")
        return None if pd.isna(key) else f"{STAGES_DIR}/pretrain-{key}"
    return layout.trial_dir(str(row["trial_id"])).relative_to(layout.root).as_posix()


def _checkpoint(row: Mapping[str, Any], run_dir: str, last: bool, root: Path) -> str | None:
    """``<run_dir>/final`` for a finished run's last step, else that step's checkpoint folder if it exists
    (only the newest two are kept), else None."""
    if last and row["status"] == "finished" and (root / run_dir / "final").is_dir():
        return f"{run_dir}/final"
    step_dir = f"{run_dir}/checkpoints/step_{int(row['step']):08d}"
    return step_dir if (root / step_dir).is_dir() else None


def fill_artefact_columns(df: pd.DataFrame, root: Path, sweep: str) -> pd.DataFrame:
    """``run_dir``, ``checkpoint`` and ``grid`` (relative to ``root``) for rows that lack them."""
    df = df.copy()
    layout = SweepLayout(Path(root), sweep)
    for col in ("run_dir", "checkpoint", "grid"):
        if col not in df.columns:
            df[col] = None
        df[col] = df[col].astype(object)
    last = df["step"] == df.groupby(["trial_id", "phase"])["step"].transform("max")
    for i, row in df.iterrows():
        run_dir = row["run_dir"] if not pd.isna(row["run_dir"]) else _run_dir(row, layout)
        if run_dir is None:
            continue
        df.at[i, "run_dir"] = run_dir
        if pd.isna(row["checkpoint"]):
            df.at[i, "checkpoint"] = _checkpoint(row, run_dir, bool(last[i]), layout.root)
        if pd.isna(row["grid"]):
            grid = f"{run_dir}/grids/{row['phase']}/{row['test_set']}_step{int(row['step'])}.png"
            df.at[i, "grid"] = grid if (layout.root / grid).is_file() else None
    return df


def fill_baseline_columns(df: pd.DataFrame, baseline: Mapping[str, float]) -> pd.DataFrame:
    """``baseline_<metric>`` of each row's test set, from ``_sweep.json``'s ``{"<set>/<metric>": v}``,
    where a row lacks it (sweeps written before the rows carried it)."""
    df = df.copy()
    for m in BASELINE_METRICS:
        col = f"baseline_{m}"
        fill = df["test_set"].map(lambda ts, m=m: baseline.get(f"{ts}/{m}"))
        df[col] = df[col].where(~_missing(df, col), fill) if col in df.columns else fill
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


#: The bicubic baseline of a test set from the rows (one definition, shared with the plot).
baseline_value = baseline_of


def baseline_line(baseline: Mapping[str, float]) -> str:
    """The sentence ``csrgan sweep`` ends its tables with (same keys, order and 4 decimals)."""
    items = ", ".join(f"{k} {v:.4f}" for k, v in sorted(baseline.items()))
    return "bicubic-interpolation baseline (MATLAB bicubic, same protocol): " + items


# ------------------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class PhaseTable:
    """One phase's ablation table: the summary (with gain and oracle share when the sweep has a
    reference), its markdown (what the terminal shows), the oracle sentence (or "") and the lines of
    :func:`~csrgan.results.notes.closing_note` (``reading``, headed ``reading_head``)."""

    phase: str
    heading: str
    table: pd.DataFrame
    markdown: str
    note: str
    reading_head: str = ""
    reading: tuple[str, ...] = ()


def phase_table(
    df: pd.DataFrame, search: Search, phase: str, name: str, baseline: Mapping[str, float] | None = None
) -> PhaseTable:
    """``csrgan sweep``'s closing table for ``phase``: final step per trial, mean ± std over seeds; with
    ``search.reference`` each row's gain on the search metric and its share of the oracle's gain; then
    the note on it against the bicubic ``baseline`` (``{"<set>/<metric>": v}``)."""
    table = summarize(df, by=list(search.by), which="final", phase=phase)
    metric = (search.metric or "psnr").rsplit("/", 1)[-1]
    reading = tuple(closing_note(table, metric, baseline or {}))
    head = f"Reading this table ({metric}, mean over seeds):" if reading else ""
    heading = (
        f"Ablation ({name}), {PHASE_TITLES.get(phase, phase)}: final step per trial, mean ± std over seeds"
    )
    col, note = search.metric, ""
    if search.reference is not None and col is not None and f"{col} mean" in table.columns:
        table = effects(table, col, search.reference, search.oracle)
        for c in (gain_column(col), SHARE_COLUMN):
            table[c] = table[c].round(2)
        note = _oracle_note(table, col, search)
    return PhaseTable(phase, heading, table, format_summary(table, "markdown"), note, head, reading)


def _oracle_note(table: pd.DataFrame, col: str, search: Search) -> str:
    orc = find_row(table, search.oracle) if search.oracle else None
    if orc is None:
        return ""
    sigma = pooled_std(table, col)
    gain = float(table.at[orc, gain_column(col)])
    return (
        f"{col}: the oracle {search.oracle} gains {gain:+.2f} over the reference {search.reference}; pooled "
        f"seed std {sigma:.2f} ({'more' if gain > 2 * sigma else 'NOT more'} than twice the noise). "
        "share = gain / oracle gain."
    )


def markdown_cells(markdown: str) -> tuple[list[str], list[list[str]]]:
    """(header, body rows) of a :func:`~csrgan.results.format_summary` markdown table, cells stripped
    and ``\\|`` unescaped: the report shows these very strings."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]

    def cells(line: str) -> list[str]:
        out, cur, i = [], "", 1
        while i < len(line):
            if line[i] == "\\" and line[i + 1 : i + 2] == "|":
                cur, i = cur + "|", i + 2
                continue
            if line[i] == "|":
                out.append(cur.strip())
                cur = ""
            else:
                cur += line[i]
            i += 1
        return out

    return cells(lines[0]), [cells(ln) for ln in lines[2:]]


def format_metric(metric: str, value: float | None) -> str:
    """A metric value with the decimals the summary uses for it (``–`` when unknown)."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{DECIMALS.get(metric, 4)}f}"


def arm_label(params: Mapping[str, Any]) -> str:
    """``sr.mix_prob=0, sr.lr_source=cyclegan`` (the summary's value formatting)."""
    from csrgan.results.summary import _fmt_value

    return ", ".join(f"{k.removeprefix(PARAM_PREFIX)}={_fmt_value(v)}" for k, v in params.items()) or "all"
