"""The degradation stages behind a sweep, for ``csrgan results report``: samples and quality verdict.

Each distinct ``cyclegan_key`` of the rows names a stage folder ``<storage>/_stages/cyclegan-<key>/``
(:mod:`csrgan.storage`): ``stage.json`` (with the quality gate's ``quality`` block once the sweep judged
it), ``final/`` (the generator and ``fidelity.json``) and ``grids/cyclegan_<set>_step<N>.png``, the
stage's own bicubic LR | G(x) | real LR samples. The rows' ``degradation_*`` columns say what the
trials were told about that stage; the report shows both, so a disagreement is visible.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csrgan.results.report_data import Sweep, arm_label
from csrgan.results.schema import PARAM_PREFIX
from csrgan.storage import STAGES_DIR

__all__ = ["LrSource", "StageView", "degradation_stages", "lr_sources"]

_GRID = re.compile(r"^cyclegan_(?P<set>.+)_step(?P<step>\d+)\.png$")
ROW_COLUMNS = ("degradation_verdict", "degradation_accepted_poor", "degradation_lowfreq_psnr",
               "degradation_hf_w1_ratio")  # fmt: skip


@dataclass
class StageView:
    """One degradation stage: its ``stage.json`` (None when missing), the newest sample grid per test
    set (``{set: (step, path)}``), what the rows recorded about it, and the arms trained on it."""

    key: str
    dir: Path
    info: dict[str, Any] | None
    grids: dict[str, tuple[int, Path]] = field(default_factory=dict)
    row_values: dict[str, list[Any]] = field(default_factory=dict)
    arms: list[str] = field(default_factory=list)

    @property
    def quality(self) -> dict[str, Any]:
        return dict((self.info or {}).get("quality") or {})

    @property
    def translation(self) -> dict[str, float]:
        """The stage's paired numbers (``<set>/g_psnr`` ... vs the real LR), from its final metrics."""
        metrics = (self.info or {}).get("metrics") or {}
        keys = ("g_psnr", "g_ssim", "bicubic_psnr", "bicubic_ssim")
        return {
            k: v for k, v in metrics.items() if isinstance(v, int | float) and k.rsplit("/", 1)[-1] in keys
        }


def _newest_grids(folder: Path) -> dict[str, tuple[int, Path]]:
    out: dict[str, tuple[int, Path]] = {}
    for p in sorted(folder.glob("cyclegan_*_step*.png")):
        m = _GRID.match(p.name)
        if m and int(m["step"]) >= out.get(m["set"], (-1, p))[0]:
            out[m["set"]] = (int(m["step"]), p)
    return out


def degradation_stages(sweep: Sweep) -> list[StageView]:
    """Every degradation stage some trial of the sweep trained on, in key order."""
    df = sweep.df
    if "cyclegan_key" not in df.columns:
        return []
    out = []
    searched = [PARAM_PREFIX + b for b in sweep.search.by if PARAM_PREFIX + b in df.columns]
    for key in sorted(df["cyclegan_key"].dropna().unique()):
        folder = sweep.root / STAGES_DIR / f"cyclegan-{key}"
        info_file = folder / "stage.json"
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else None
        rows = df[df["cyclegan_key"] == key]
        values = {c: sorted({str(v) for v in rows[c].dropna()}) for c in ROW_COLUMNS if c in rows.columns}
        arms = sorted({arm_label(r) for r in rows[searched].drop_duplicates().to_dict("records")})
        out.append(StageView(str(key), folder, info, _newest_grids(folder / "grids"), values, arms))
    return out


@dataclass(frozen=True)
class LrSource:
    """A non-learned LR source (``lr_source_id`` ``pipeline-<id>`` or ``paired``) and its arms."""

    id: str
    arms: tuple[str, ...]


def lr_sources(sweep: Sweep) -> list[LrSource]:
    """The arms whose real-like LR came from the synthetic pipeline (the oracle) or paired data."""
    df = sweep.df
    if "lr_source_id" not in df.columns:
        return []
    searched = [PARAM_PREFIX + b for b in sweep.search.by if PARAM_PREFIX + b in df.columns]
    out = []
    for sid in sorted(df["lr_source_id"].dropna().unique()):
        if str(sid).startswith("cyclegan-"):
            continue
        rows = df[df["lr_source_id"] == sid]
        arms = sorted({arm_label(r) for r in rows[searched].drop_duplicates().to_dict("records")})
        out.append(LrSource(str(sid), tuple(arms)))
    return out
