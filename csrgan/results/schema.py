"""The results table's schema: its columns, the row validation and the Arrow table of one trial.

Schema consistency: fixed columns have one explicit pyarrow schema (:data:`FIXED_SCHEMA`). ``param.*``
and extra columns are typed by value (numbers -> float64, so 1 and 1.0 agree across trials; bool -> bool;
everything else, ``None`` included, -> string). ``pd.read_parquet`` on a folder takes its schema from
*one* file, so files must agree: the writer warns (:class:`ResultsSchemaWarning`) when a trial's columns
differ from a sibling's, and :func:`csrgan.results.store.read_results` reads each file and unifies the
schemas itself (columns missing in a file become nulls; an all-null column takes the type the other files
give it; real conflicts are errors). docs/results.md documents every column.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from csrgan.metrics import METRIC_NAMES, NOREF_METRIC_NAMES
from csrgan.metrics import METRICS as _METRICS

# ------------------------------------------------------------------------------------------ constants
STATUSES = ("running", "finished", "diverged", "error", "stopped")
#: Trials with these statuses are left out of summary means and counted in ``n_diverged``.
EXCLUDED_STATUSES = ("diverged", "error")
#: Included in means but not finished: counted in ``n_unfinished`` so partial trials are visible.
UNFINISHED_STATUSES = ("running", "stopped")
PARAM_PREFIX = "param."
EXTRA_PREFIX = "extra."

#: The metric columns (one per built-in metric of :data:`csrgan.metrics.METRICS`, in table order), which
#: way each is better, and the decimals of its mean and std in the markdown summary.
METRICS = (*METRIC_NAMES, *NOREF_METRIC_NAMES)
HIGHER_IS_BETTER = {m: _METRICS.get(m).higher_is_better for m in METRICS}
DECIMALS = {m: _METRICS.get(m).decimals for m in METRICS}

# Fixed columns, split around the param.* block (file column order: head, params, body, extras).
_HEAD = pa.schema(
    [
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
    ]
)
_BODY = pa.schema(
    [
        pa.field("phase", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("test_set", pa.string(), nullable=False),
        pa.field("psnr", pa.float64()),
        pa.field("ssim", pa.float64()),
        pa.field("lpips", pa.float64()),
        pa.field("niqe", pa.float64()),
        pa.field("wall_s", pa.float64(), nullable=False),
        pa.field("device_s", pa.float64(), nullable=False),
        pa.field("git_commit", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("node_ip", pa.string()),
        pa.field("node_id", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
FIXED_SCHEMA = pa.schema(list(_HEAD) + list(_BODY))
FIXED_COLUMNS = tuple(FIXED_SCHEMA.names)
_FIXED_TYPES = {f.name: f.type for f in FIXED_SCHEMA}
#: Set by the store; rows may carry them (e.g. rows read back) but must then agree.
_STORE_COLUMNS = ("sweep", "trial_id", "status")
_REQUIRED = ("seed", "phase", "step", "test_set", "wall_s", "device_s", "config_hash", "protocol", "weights")
#: absent -> null (created_at -> now)
_OPTIONAL = ("psnr", "ssim", "lpips", "niqe", "git_commit", "node_ip", "node_id", "created_at")
#: Fixed columns added after files were first written: a file without them reads as nulls there.
ADDED_COLUMNS = ("node_ip", "node_id")
_ROW_KEY = ("phase", "step", "test_set")
#: Extras csrgan itself writes that are not strings: their type when a trial has only nulls (e.g. the
#: degradation stage's numbers in a p = 0 trial), so files of one sweep agree.
KNOWN_EXTRA_TYPES: dict[str, pa.DataType] = {
    "degradation_accepted_poor": pa.bool_(),
    "degradation_lowfreq_psnr": pa.float64(),
    "degradation_hf_w1_ratio": pa.float64(),
    "baseline_psnr": pa.float64(),
    "baseline_ssim": pa.float64(),
    # the run's settings (csrgan.train.loop.TrainLoop.settings)
    "amp": pa.bool_(),
    "channels_last": pa.bool_(),
    "compile": pa.bool_(),
    "ema_decay": pa.float64(),
    "lr_schedule": pa.string(),
    "joint_sr_weight": pa.float64(),
}
#: ``baseline_<metric>`` columns: MATLAB-bicubic upsampling of the row's test set, same protocol (the
#: driver measures PSNR/SSIM only: LPIPS would need the backbone in the driver).
BASELINE_METRICS = ("psnr", "ssim")


class ResultsError(ValueError):
    """A results problem, already phrased for users (names the file, trial, row or column)."""


class ResultsSchemaWarning(UserWarning):
    """Trial files of one sweep disagree on columns/types: plain ``pd.read_parquet(folder)`` may fail
    or drop columns (it infers the schema from one file); :func:`read_results` still reads them."""


# ------------------------------------------------------------------------------------------ params
def flatten_params(nested: Mapping[str, Any], prefix: str = PARAM_PREFIX) -> dict[str, Any]:
    """``{"sr": {"mix_prob": 0.5}}`` -> ``{"param.sr.mix_prob": 0.5}``. Leaves (lists too) are kept as is.

    Keys may already be dotted (``{"sr.mix_prob": 0.5}`` gives the same result); two spellings of the same
    dotted name are an error rather than one silently overwriting the other.
    """
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        for key, value in node.items():
            if not isinstance(key, str) or not key:
                raise ResultsError(f"parameter names must be non-empty strings, got {key!r} under {path!r}")
            dotted = f"{path}.{key}" if path else key
            if isinstance(value, Mapping):
                walk(value, dotted)
                continue
            name = prefix + dotted
            if name in out:
                raise ResultsError(f"parameter {dotted!r} is given twice (nested and dotted)")
            out[name] = value

    walk(nested, "")
    return out


# ------------------------------------------------------------------------------------ value typing
def _where(trial_id: str, i: int | None) -> str:
    return f"trial {trial_id!r}" + (f", row {i}" if i is not None else "")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _dynamic_value(v: Any, col: str, where: str) -> tuple[Any, str]:
    """A ``param.*``/extra value and its kind: ``float`` (every number), ``bool``, ``string`` or ``null``.

    Lists/tuples/dicts become canonical JSON strings, so a list-valued parameter is still one scalar cell.
    """
    if v is None:
        return None, "null"
    if isinstance(v, bool | np.bool_):
        return bool(v), "bool"
    if _is_real(v):
        return float(v), "float"
    if isinstance(v, str):
        return v, "string"
    if isinstance(v, list | tuple | dict):
        try:
            return json.dumps(v, sort_keys=True, default=str), "string"
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"{where}: column {col!r}: cannot store {v!r} as JSON: {exc}") from None
    raise ResultsError(
        f"{where}: column {col!r} must be a scalar (number, bool, string or None), got {type(v).__name__}"
    )


_KIND_TYPES = {"float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits incl. adjacent swaps), for catching typos like 'psrn'."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _check_extra_name(col: str, where: str) -> None:
    if col.startswith(PARAM_PREFIX) or col.startswith(EXTRA_PREFIX):
        if col in (PARAM_PREFIX, EXTRA_PREFIX):
            raise ResultsError(f"{where}: column {col!r} has an empty name after the prefix")
        return
    near = [f for f in FIXED_COLUMNS if col.lower() == f or _osa_distance(col.lower(), f) <= 1]
    if near:
        raise ResultsError(
            f"{where}: unknown column {col!r} looks like a misspelling of {near[0]!r}; extra columns must "
            f"not be one edit away from a fixed column (use the prefix {EXTRA_PREFIX!r} to be explicit)"
        )


def _as_utc(v: Any, where: str) -> datetime:
    if not isinstance(v, datetime):
        raise ResultsError(f"{where}: created_at must be a datetime, got {type(v).__name__}")
    if v.tzinfo is None or v.utcoffset() is None:
        raise ResultsError(f"{where}: created_at must be timezone-aware (naive times are ambiguous)")
    return v.astimezone(UTC)


# --------------------------------------------------------------------------------- rows and tables
def _normalise_row(
    row: Mapping[str, Any], sweep: str, trial_id: str, i: int, now: datetime
) -> dict[str, Any]:
    """Validate one caller row and return it with canonical Python values (no store columns)."""
    where = _where(trial_id, i)
    if not isinstance(row, Mapping):
        raise ResultsError(f"{where}: a row must be a dict of column -> value, got {type(row).__name__}")
    missing = [c for c in _REQUIRED if row.get(c) is None]
    if missing:
        raise ResultsError(f"{where}: missing required column(s) {missing} (see docs/results.md)")
    for col, expected in (("sweep", sweep), ("trial_id", trial_id)):
        if col in row and row[col] != expected:
            raise ResultsError(
                f"{where}: row says {col}={row[col]!r} but it is written as {col}={expected!r}"
            )
    out: dict[str, Any] = {}
    for col in ("seed", "step"):
        v = row[col]
        if not _is_int(v):
            raise ResultsError(f"{where}: {col} must be an integer, got {v!r}")
        out[col] = int(v)
    if out["step"] < 0:
        raise ResultsError(f"{where}: step must be >= 0, got {out['step']}")
    for col in ("phase", "test_set", "config_hash", "protocol", "weights"):
        v = row[col]
        if not isinstance(v, str) or not v:
            raise ResultsError(f"{where}: {col} must be a non-empty string, got {v!r}")
        out[col] = v
    for col in ("wall_s", "device_s"):
        v = row[col]
        if not _is_real(v) or not math.isfinite(v) or v < 0:
            raise ResultsError(f"{where}: {col} must be a finite number >= 0 (seconds), got {v!r}")
        out[col] = float(v)
    for col in METRICS:
        v = row.get(col)
        if v is not None and not _is_real(v):
            raise ResultsError(f"{where}: {col} must be a number or None (not computed), got {v!r}")
        # NaN/inf are kept: they are computed values (e.g. PSNR of identical images is inf).
        out[col] = None if v is None else float(v)
    for col in ("git_commit", "node_ip", "node_id"):
        v = row.get(col)
        if v is not None and not isinstance(v, str):
            raise ResultsError(f"{where}: {col} must be a string or None (unknown), got {v!r}")
        out[col] = v
    v = row.get("created_at")
    out["created_at"] = now if v is None else _as_utc(v, where)
    for col, v in row.items():
        if col in out or col in _STORE_COLUMNS or col in FIXED_COLUMNS:
            continue
        if not isinstance(col, str) or not col:
            raise ResultsError(f"{where}: column names must be non-empty strings, got {col!r}")
        _check_extra_name(col, where)
        out[col] = _dynamic_value(v, col, where)[0]
    return out


def _dynamic_columns(rows: Sequence[Mapping[str, Any]], trial_id: str) -> dict[str, pa.DataType]:
    """Type of every param/extra column over all rows of one trial (one type per column)."""
    kinds: dict[str, set[str]] = {}
    for i, row in enumerate(rows):
        for col, v in row.items():
            if col in FIXED_COLUMNS:
                continue
            kinds.setdefault(col, set()).add(_dynamic_value(v, col, _where(trial_id, i))[1])
    types: dict[str, pa.DataType] = {}
    for col, ks in kinds.items():
        ks.discard("null")
        if len(ks) > 1:
            raise ResultsError(f"{_where(trial_id, None)}: column {col!r} mixes value kinds {sorted(ks)}")
        # All-None -> the column's known type, else string: None is "not a number", and most optional
        # extras (stage keys) are strings.
        types[col] = _KIND_TYPES[ks.pop()] if ks else KNOWN_EXTRA_TYPES.get(col, pa.string())
    return types


def _column_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    params = sorted(n for n in names if n.startswith(PARAM_PREFIX))
    extras = sorted(n for n in names if n not in FIXED_COLUMNS and not n.startswith(PARAM_PREFIX))
    return [*_HEAD.names, *params, *_BODY.names, *extras]


def _field(name: str, typ: pa.DataType) -> pa.Field:
    fixed = FIXED_SCHEMA.field(name) if name in FIXED_COLUMNS else None
    return fixed if fixed is not None else pa.field(name, typ)


def _build_table(rows: Sequence[dict[str, Any]], sweep: str, trial_id: str, status: str) -> pa.Table:
    dyn = _dynamic_columns(rows, trial_id)
    order = _column_order([*FIXED_COLUMNS, *dyn])
    full = [{**r, "sweep": sweep, "trial_id": trial_id, "status": status} for r in rows]
    fields = [_field(c, dyn.get(c, _FIXED_TYPES.get(c))) for c in order]
    arrays = []
    for f in fields:
        vals = [r.get(f.name) for r in full]
        if f.name not in FIXED_COLUMNS:
            vals = [_dynamic_value(v, f.name, _where(trial_id, None))[0] for v in vals]
        arrays.append(pa.array(vals, type=f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
