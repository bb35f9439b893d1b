"""Sweep results as Parquet: the per-trial store, the reader, the ablation summary and its plot.

Layout: ``<root>/<sweep>/trial-<trial_id>.parquet``, one file per trial holding *all* its rows, one row
per (phase, evaluation step, test set). Every write replaces the whole file atomically:

* local folders (and ``file://``): the bytes go to a hidden temp file in the same folder (``.trial-…``;
  dataset readers skip names starting with ``.`` or ``_``), are fsync'ed, then ``os.replace``'d over
  the old file, so a reader sees the old or the new file, never half of one;
* object stores (``s3://``, ``gs://``): one PUT of the complete bytes; a PUT is atomic there, while
  their "rename" is copy + delete (not atomic, so not used).

So a crash never leaves a half-written file, a resumed trial rewrites its own file (no duplicate rows)
and ``pd.read_parquet("results/<sweep>")`` works at any moment. docs/results.md documents every column.

Schema consistency: fixed columns have one explicit pyarrow schema. ``param.*`` and extra columns are
typed by value (numbers -> float64, so 1 and 1.0 agree across trials; bool -> bool; everything else,
``None`` included, -> string). ``pd.read_parquet`` on a folder takes its schema from *one* file, so
files must agree: the writer warns (:class:`ResultsSchemaWarning`) when a trial's columns differ from a
sibling's, and :func:`read_results` reads each file and unifies the schemas itself (columns missing in a
file become nulls; an all-null column takes the type the other files give it; real conflicts are errors).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

# ------------------------------------------------------------------------------------------ constants
STATUSES = ("running", "finished", "diverged", "error", "stopped")
#: Trials with these statuses are left out of summary means and counted in ``n_diverged``.
EXCLUDED_STATUSES = ("diverged", "error")
#: Included in means but not finished: counted in ``n_unfinished`` so partial trials are visible.
UNFINISHED_STATUSES = ("running", "stopped")
METRICS = ("psnr", "ssim", "lpips")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}
PARAM_PREFIX = "param."
EXTRA_PREFIX = "extra."
TRIAL_FILE_PREFIX = "trial-"
SUFFIX = ".parquet"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OBJECT_STORES = ("s3", "gcs")  # single-PUT writes are atomic; their move is copy + delete

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
        pa.field("wall_s", pa.float64(), nullable=False),
        pa.field("device_s", pa.float64(), nullable=False),
        pa.field("git_commit", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
FIXED_SCHEMA = pa.schema(list(_HEAD) + list(_BODY))
FIXED_COLUMNS = tuple(FIXED_SCHEMA.names)
_FIXED_TYPES = {f.name: f.type for f in FIXED_SCHEMA}
#: Set by the store; rows may carry them (e.g. rows read back) but must then agree.
_STORE_COLUMNS = ("sweep", "trial_id", "status")
_REQUIRED = ("seed", "phase", "step", "test_set", "wall_s", "device_s", "config_hash", "protocol", "weights")
_OPTIONAL = ("psnr", "ssim", "lpips", "git_commit", "created_at")  # absent -> null (created_at -> now)
_ROW_KEY = ("phase", "step", "test_set")


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
    v = row.get("git_commit")
    if v is not None and not isinstance(v, str):
        raise ResultsError(f"{where}: git_commit must be a string or None (unknown), got {v!r}")
    out["git_commit"] = v
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
        # All-None -> string: None is "not a number", and most optional extras (stage keys) are strings.
        types[col] = _KIND_TYPES[ks.pop()] if ks else pa.string()
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


# ----------------------------------------------------------------------------------------- filesystem
@dataclass(frozen=True)
class _Location:
    fs: pafs.FileSystem
    path: str  # path inside fs
    display: str  # what the user gave (URI or absolute local path), for messages and ``.uri``

    def child(self, name: str) -> _Location:
        base, q, query = self.display.partition("?")  # s3://bucket/dir?region=...: the name goes before '?'
        display = f"{base.rstrip('/')}/{name}{q}{query}"
        return _Location(self.fs, f"{self.path.rstrip('/')}/{name}", display)

    @property
    def is_local(self) -> bool:
        return self.fs.type_name == "local"


def _locate(path_or_uri: str | Path) -> _Location:
    s = str(path_or_uri)
    if "://" not in s:
        p = Path(s).expanduser().resolve()
        return _Location(pafs.LocalFileSystem(), p.as_posix(), str(p))
    try:
        fs, path = pafs.FileSystem.from_uri(s)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsError(f"cannot open results location {s!r}: {exc}") from None
    return _Location(fs, path, s)


def _info(loc: _Location) -> pafs.FileInfo:
    return loc.fs.get_file_info(loc.path)


def _list(loc: _Location) -> list[pafs.FileInfo]:
    return sorted(
        loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True)), key=lambda i: i.path
    )


def _visible(info: pafs.FileInfo) -> bool:
    return not info.base_name.startswith((".", "_"))


def _read_file_table(loc: _Location, path: str) -> pa.Table:
    """Read one Parquet file in one GET, so a concurrent replace can never mix two versions' bytes."""
    try:
        with loc.fs.open_input_stream(path) as f:
            data = f.read()
        return pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- store
class ResultsStore:
    """Writes and reads one sweep's results: ``<root>/<sweep>/trial-<trial_id>.parquet``.

    ``root`` is a local folder or a ``file://``, ``s3://`` or ``gs://`` URI. Writers of different trials
    never touch the same file, so trials may write concurrently from different processes; one trial must
    have one writer at a time (Ray Tune runs each trial once).
    """

    def __init__(self, root: str | Path, sweep: str) -> None:
        if not isinstance(sweep, str) or not _NAME_RE.match(sweep):
            raise ResultsError(
                f"sweep name {sweep!r} must match {_NAME_RE.pattern} (letters, digits, '_', '.', '-'; "
                "not starting with '.' or '_', which dataset readers skip)"
            )
        self.sweep = sweep
        self._root = _locate(root)
        self._dir = self._root.child(sweep)

    @property
    def uri(self) -> str:
        """The sweep folder: an absolute local path, or the URI form when the root was a URI."""
        return self._dir.display

    def __repr__(self) -> str:
        return f"ResultsStore({self.uri!r})"

    # ---- paths
    @staticmethod
    def _check_trial_id(trial_id: str) -> None:
        if not isinstance(trial_id, str) or not _NAME_RE.match(trial_id):
            raise ResultsError(f"trial_id {trial_id!r} must match {_NAME_RE.pattern}")

    def _file(self, trial_id: str) -> _Location:
        self._check_trial_id(trial_id)
        return self._dir.child(f"{TRIAL_FILE_PREFIX}{trial_id}{SUFFIX}")

    def trial_ids(self) -> list[str]:
        """Trials that have a results file, sorted."""
        if _info(self._dir).type == pafs.FileType.NotFound:
            return []
        return [
            i.base_name[len(TRIAL_FILE_PREFIX) : -len(SUFFIX)]
            for i in _list(self._dir)
            if i.is_file and i.base_name.startswith(TRIAL_FILE_PREFIX) and i.base_name.endswith(SUFFIX)
        ]

    # ---- write
    def write_trial(self, trial_id: str, rows: Sequence[Mapping[str, Any]], status: str) -> str | None:
        """Replace the trial's file with exactly ``rows`` (all its rows so far), all marked ``status``.

        Rows are dicts keyed by column name (docs/results.md): required ``seed, phase, step, test_set,
        wall_s, device_s, config_hash, protocol, weights``; optional ``psnr, ssim, lpips, git_commit``
        (absent = null = not computed) and ``created_at`` (default: now, UTC); ``param.*`` and any other
        scalar keys become columns. ``sweep``/``trial_id``/``status`` may be present (rows read back with
        :meth:`read_trial`) but must match; the ``status`` argument wins. Two rows with the same
        (phase, step, test_set) are an error. No rows means the trial has no results: its file is
        removed (a warning says so when ``status`` is final). Returns the file written, or None.
        """
        self._check_trial_id(trial_id)
        if status not in STATUSES:
            raise ResultsError(f"trial {trial_id!r}: status {status!r} is not one of {list(STATUSES)}")
        target = self._file(trial_id)
        if not rows:
            if status != "running":
                warnings.warn(
                    f"trial {trial_id!r} ended {status!r} with no result rows: it will not appear in "
                    f"{self.uri} (nor in summaries' n_diverged)",
                    stacklevel=2,
                )
            if _info(target).type == pafs.FileType.File:
                target.fs.delete_file(target.path)
            return None
        now = datetime.now(UTC)
        clean = [_normalise_row(r, self.sweep, trial_id, i, now) for i, r in enumerate(rows)]
        seen: dict[tuple[Any, ...], int] = {}
        for i, r in enumerate(clean):
            key = tuple(r[k] for k in _ROW_KEY)
            if key in seen:
                raise ResultsError(
                    f"trial {trial_id!r}: rows {seen[key]} and {i} share (phase, step, test_set) = {key}"
                )
            seen[key] = i
        table = _build_table(clean, self.sweep, trial_id, status)
        self._warn_if_schema_differs(table, target)
        _atomic_write(target, _to_parquet_bytes(table))
        return target.display

    def _warn_if_schema_differs(self, table: pa.Table, target: _Location) -> None:
        """Compare with one sibling file (pyarrow infers a folder's schema from one file)."""
        siblings = [
            i
            for i in _list(self._dir)
            if i.is_file and _visible(i) and i.base_name.endswith(SUFFIX) and i.path != target.path
        ]
        if not siblings:
            return
        other = siblings[0]
        try:
            with self._dir.fs.open_input_file(other.path) as f:
                theirs = pq.read_schema(f)
        except (OSError, pa.ArrowException):
            return  # being replaced right now or unreadable: the reader will report it with context
        mine = {f.name: f.type for f in table.schema}
        them = {f.name: f.type for f in theirs}
        diff = sorted(
            f"{c}: {mine.get(c, 'absent')} here vs {them.get(c, 'absent')} in {other.base_name}"
            for c in set(mine) | set(them)
            if mine.get(c) != them.get(c)
        )
        if diff:
            warnings.warn(
                ResultsSchemaWarning(
                    f"{target.display}: columns differ from a sibling trial file ({'; '.join(diff)}). "
                    "pd.read_parquet on the folder infers one file's schema and may fail or drop columns; "
                    "read it with csrgan.results.read_results, which unifies the schemas"
                ),
                stacklevel=3,
            )

    # ---- read
    def read_trial(self, trial_id: str) -> pd.DataFrame | None:
        """The trial's rows as written (same dtypes as :meth:`read`), or None if it has no file."""
        target = self._file(trial_id)
        if _info(target).type != pafs.FileType.File:
            return None
        return _read_file_table(target, target.path).to_pandas()

    def read(self) -> pd.DataFrame:
        """All trials' rows; an empty frame with the fixed columns while no trial has written yet."""
        if not self.trial_ids():
            return FIXED_SCHEMA.empty_table().to_pandas()
        return read_results(self.uri)


def _to_parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _atomic_write(target: _Location, data: bytes) -> None:
    """Publish ``data`` at ``target`` all at once (see the module docstring for why each way is atomic)."""
    fs = target.fs
    parent = target.path.rsplit("/", 1)[0]
    if target.is_local:
        os.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{target.path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    if fs.type_name not in _OBJECT_STORES:
        raise ResultsError(
            f"{target.display}: cannot write atomically to a {fs.type_name!r} filesystem; use a local "
            "folder, file://, s3:// or gs://"
        )
    fs.create_dir(parent, recursive=True)  # a no-op prefix on object stores
    with fs.open_output_stream(target.path) as out:  # the object appears only when the stream closes
        out.write(data)


# --------------------------------------------------------------------------------------------- reader
def _result_files(loc: _Location) -> list[str]:
    """Parquet files of a sweep folder, or of every sweep folder under a results root."""
    info = _info(loc)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"results folder not found: {loc.display}")
    if info.type == pafs.FileType.File:
        return [loc.path]
    entries = [i for i in _list(loc) if _visible(i)]
    files = [i.path for i in entries if i.is_file and i.base_name.endswith(SUFFIX)]
    if files:
        return files
    for d in (i for i in entries if i.type == pafs.FileType.Directory):
        files += [
            i.path
            for i in _list(_Location(loc.fs, d.path, d.path))
            if i.is_file and _visible(i) and i.base_name.endswith(SUFFIX)
        ]
    if not files:
        raise ResultsError(f"no results (trial-*.parquet) in {loc.display} or its sweep folders")
    return files


def _unify(tables: list[tuple[str, pa.Table]]) -> pa.Table:
    """Concatenate trial tables whose param/extra columns may differ (see the module docstring)."""
    types: dict[str, pa.DataType] = {}
    where: dict[str, str] = {}
    for path, t in tables:
        missing = [c for c in FIXED_COLUMNS if c not in t.column_names]
        if missing:
            raise ResultsError(f"{path} is not a csrgan results file: missing columns {missing}")
        for f in t.schema:
            if f.name in _FIXED_TYPES:
                if f.type != _FIXED_TYPES[f.name]:
                    raise ResultsError(
                        f"{path}: column {f.name!r} is {f.type}, expected {_FIXED_TYPES[f.name]}"
                    )
                continue
            if t.column(f.name).null_count == t.num_rows or pa.types.is_null(f.type):
                types.setdefault(f.name, pa.null())
                continue
            known = types.get(f.name)
            if known is not None and not pa.types.is_null(known) and known != f.type:
                raise ResultsError(
                    f"column {f.name!r} is {known} in {where[f.name]} but {f.type} in {path}; "
                    "the trials disagree on this parameter's type"
                )
            types[f.name] = f.type
            where[f.name] = path
    types = {c: (pa.string() if pa.types.is_null(t) else t) for c, t in types.items()}
    order = _column_order([*FIXED_COLUMNS, *types])
    schema = pa.schema([_field(c, types.get(c, _FIXED_TYPES.get(c))) for c in order])
    parts = []
    for _, t in tables:
        cols = [
            t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
            for f in schema
        ]
        parts.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(parts)


def read_results(path_or_uri: str | Path) -> pd.DataFrame:
    """Read results into a DataFrame: a sweep folder, one trial file, or a results root (all sweeps).

    Same dtypes as ``pd.read_parquet(folder)`` when the files agree, but each file is read on its own
    and the schemas are unified, so trials with different parameter sets still read as one table.
    """
    loc = _locate(path_or_uri)
    files = _result_files(loc)
    table = _unify([(p, _read_file_table(loc, p)) for p in files])
    return table.to_pandas()


# -------------------------------------------------------------------------------------------- summary
Which = Literal["final", "best"]
Format = Literal["markdown", "csv", "json"]


def param_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if str(c).startswith(PARAM_PREFIX))


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """``sr.mix_prob`` or ``param.sr.mix_prob`` -> ``param.sr.mix_prob``; other non-metric columns
    (``sweep``, an extra such as ``cyclegan_key``) may be named as they are."""
    for cand in (name, PARAM_PREFIX + name):
        if cand.startswith(PARAM_PREFIX) and cand in df.columns:
            return cand
    if name in df.columns and name not in (*METRICS, "step", "trial_id", "created_at", "wall_s", "device_s"):
        return name
    avail = ", ".join(c.removeprefix(PARAM_PREFIX) for c in param_columns(df)) or "(none)"
    raise ResultsError(f"unknown parameter {name!r}; parameter columns: {avail}")


def _choose_phase(df: pd.DataFrame, phase: str | None) -> str:
    phases = sorted(df["phase"].dropna().unique().tolist())
    if phase is not None:
        if phase not in phases:
            raise ResultsError(f"no rows with phase {phase!r}; phases: {phases}")
        return phase
    if len(phases) == 1:
        return phases[0]
    if "gan" in phases:  # a sweep trial's own phase; pre-training rows are shared-stage context
        return "gan"
    raise ResultsError(
        f"the results hold several phases {phases} whose steps are not comparable: choose one (--phase)"
    )


def summarize(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> pd.DataFrame:
    """Per-configuration mean ± std over trials (seeds) of each test set's metrics.

    Per trial and test set one value per metric is taken from ``phase`` (needed when the results hold
    several phases): ``final`` = the row with the largest step; ``best`` = the best value over steps
    (max PSNR/SSIM, min LPIPS), chosen per metric — note that picking the best step *on the test set*
    is optimistic. Trials are then grouped by the ``by`` parameters. Columns: the ``by`` columns, ``n``
    (trials in the means), ``n_diverged`` (diverged/error trials, left out of the means), ``n_unfinished``
    (running/stopped trials, included), and ``<test_set>/<metric> mean|std|n`` (std: sample std, ddof=1,
    NaN for one trial; the metric's n counts trials that have a value, it is < ``n`` when some lack it).
    """
    if df.empty:
        raise ResultsError("no results to summarise (the table is empty)")
    df = df.reset_index(drop=True)  # idxmax below needs unique labels
    need = [c for c in ("sweep", "trial_id", "status", "phase", "step", "test_set") if c not in df.columns]
    if need:
        raise ResultsError(f"not a results table: missing columns {need}")
    if which not in ("final", "best"):
        raise ResultsError(f"which must be 'final' or 'best', got {which!r}")
    by_cols = [resolve_column(df, b) for b in by]
    if len(set(by_cols)) != len(by_cols):
        raise ResultsError(f"--by names a column twice: {list(by)}")
    phase = _choose_phase(df, phase)
    rows = df[df["phase"] == phase]

    present = [m for m in METRICS if m in df.columns and df[m].notna().any()]
    if metrics is None:
        metrics = present
        if not metrics:
            raise ResultsError("no metric (psnr, ssim, lpips) has any value in these results")
    else:
        bad = [m for m in metrics if m not in METRICS or m not in df.columns]
        if bad:
            raise ResultsError(f"unknown metric(s) {bad}; known: {list(METRICS)}")
        metrics = list(dict.fromkeys(metrics))
    all_sets = sorted(rows["test_set"].unique().tolist())
    if test_sets is None:
        test_sets = all_sets
    else:
        bad = [t for t in test_sets if t not in all_sets]
        if bad:
            raise ResultsError(f"unknown test set(s) {bad} in phase {phase!r}; test sets: {all_sets}")
        test_sets = list(dict.fromkeys(test_sets))
    rows = rows[rows["test_set"].isin(test_sets)]

    trial = ["sweep", "trial_id"]
    varying = [c for c in ["status", *by_cols] if (df.groupby(trial)[c].nunique(dropna=False) > 1).any()]
    if varying:
        raise ResultsError(f"column(s) {varying} change within a trial; they must be constant per trial")
    trials = df.groupby(trial, sort=False)[["status", *by_cols]].first()

    # One value per (trial, test set, metric).
    keys = [*trial, "test_set"]
    if which == "final":
        last = rows.loc[rows.groupby(keys)["step"].idxmax()]
        values = last.set_index(keys)[list(metrics)]
    else:
        g = rows.groupby(keys)
        values = pd.concat({m: (g[m].max() if HIGHER_IS_BETTER[m] else g[m].min()) for m in metrics}, axis=1)
    wide = values.unstack("test_set") if not values.empty else pd.DataFrame(index=trials.index)
    wide.columns = [f"{ts}/{m}" for m, ts in wide.columns] if not values.empty else []
    per_trial = trials.join(wide, how="left")

    group_keys = by_cols or ["_all"]
    if not by_cols:
        per_trial = per_trial.assign(_all="all")
    out = []
    for key, g in per_trial.groupby(group_keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[~g["status"].isin(EXCLUDED_STATUSES)]
        rec: dict[str, Any] = dict(zip(group_keys, key, strict=True))
        rec |= {
            "n": len(ok),
            "n_diverged": len(g) - len(ok),
            "n_unfinished": int(ok["status"].isin(UNFINISHED_STATUSES).sum()),
        }
        for ts in test_sets:
            for m in metrics:
                col = f"{ts}/{m}"
                v = ok[col].astype("float64") if col in ok.columns else pd.Series(dtype="float64")
                rec[f"{col} mean"] = v.mean()
                rec[f"{col} std"] = v.std(ddof=1)
                rec[f"{col} n"] = int(v.notna().sum())
        out.append(rec)
    result = pd.DataFrame(out)
    if not by_cols:
        result = result.drop(columns="_all")
    result.attrs = {
        "which": which,
        "phase": phase,
        "metrics": list(metrics),
        "test_sets": list(test_sets),
        "by": by_cols,
    }
    return result


# ------------------------------------------------------------------------------------------ formatting
_DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4}


def _fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if _is_real(v):
        return f"{float(v):g}"
    return str(v)


def _metric_cells(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(header, metric) for each ``<test_set>/<metric>`` in the summary, in column order."""
    heads = [c.removesuffix(" mean") for c in summary.columns if c.endswith(" mean")]
    return [(h, h.rsplit("/", 1)[1]) for h in heads]


def format_summary(summary: pd.DataFrame, fmt: Format = "markdown") -> str:
    """Render :func:`summarize`'s table: ``markdown`` ("28.41 ± 0.05" cells), ``csv`` or ``json``."""
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        records = [
            {
                k: (
                    None
                    if isinstance(v, float) and math.isnan(v)
                    else v.item()
                    if isinstance(v, np.generic)
                    else v
                )
                for k, v in r.items()
            }
            for r in summary.to_dict("records")
        ]
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    if fmt != "markdown":
        raise ResultsError(f"format must be markdown, csv or json, got {fmt!r}")
    cells = _metric_cells(summary)
    plain = [c for c in summary.columns if not any(c.startswith(h + " ") for h, _ in cells)]
    header = [c.removeprefix(PARAM_PREFIX) for c in plain] + [h for h, _ in cells]
    body = []
    for r in summary.to_dict("records"):
        line = [_fmt_value(r[c]) for c in plain]
        for h, m in cells:
            mean, std, k = r[f"{h} mean"], r[f"{h} std"], r[f"{h} n"]
            d = _DECIMALS.get(m, 4)
            if k == 0 or math.isnan(mean):
                line.append("–")
                continue
            cell = f"{mean:.{d}f} ± " + ("n/a" if math.isnan(std) else f"{std:.{d}f}")
            line.append(cell + (f" (n={k})" if k != r.get("n", k) else ""))
        body.append(line)
    esc = [[x.replace("|", "\\|") for x in row] for row in [header, *body]]
    widths = [max(3, *(len(x) for x in col)) for col in zip(*esc, strict=True)]

    def fmt_row(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                x.rjust(w) if i >= 1 else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "| " + " | ".join(("-" * w) if i == 0 else ("-" * (w - 1) + ":") for i, w in enumerate(widths)) + " |"
    )
    return "\n".join([fmt_row(esc[0]), sep, *(fmt_row(r) for r in esc[1:])]) + "\n"


# ----------------------------------------------------------------------------------------------- plot
def plot(
    df: pd.DataFrame,
    by: str,
    out: str | Path,
    metrics: Sequence[str] | None = None,
    which: Which = "final",
    test_sets: Sequence[str] | None = None,
    phase: str | None = None,
) -> Path:
    """PNG of metric vs ``by``: one subplot per metric, one line per test set, error bars = std over seeds.

    Numeric parameters are plotted on a numeric axis (log when they span >= 2 decades, all positive);
    others (and parameters with missing values) as categories.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize(df, [by], metrics, which, test_sets, phase)
    by_col = summary.attrs["by"][0]
    metrics, test_sets = summary.attrs["metrics"], summary.attrs["test_sets"]
    xs = summary[by_col]
    numeric = pd.api.types.is_numeric_dtype(xs) and not pd.api.types.is_bool_dtype(xs) and xs.notna().all()
    x = xs.to_numpy(dtype=float) if numeric else np.arange(len(xs))
    label = by_col.removeprefix(PARAM_PREFIX)

    fig = Figure(figsize=(4.6 * len(metrics), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics, strict=True):
        for ts in test_sets:
            mean, std = summary[f"{ts}/{m} mean"].to_numpy(float), summary[f"{ts}/{m} std"].to_numpy(float)
            ax.errorbar(x, mean, yerr=np.nan_to_num(std, nan=0.0), marker="o", capsize=3, label=ts)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{m.upper()} ({'higher' if HIGHER_IS_BETTER[m] else 'lower'} is better)")
        ax.set_title(f"{m} ({which} step)")
        ax.grid(alpha=0.3)
        if numeric and (x > 0).all() and x.max() / x.min() >= 100:
            ax.set_xscale("log")
        elif numeric and len(x) <= 12:
            ax.set_xticks(x, [_fmt_value(v) for v in xs])
        if not numeric:
            ax.set_xticks(x, [_fmt_value(v) for v in xs])
        ax.legend(title="test set", fontsize="small")
    ns = ", ".join(
        f"{_fmt_value(v)}: n={n}" + (f" (+{d} diverged)" if d else "")
        for v, n, d in zip(xs, summary["n"], summary["n_diverged"], strict=True)
    )
    fig.suptitle(f"phase {summary.attrs['phase']}; mean ± std over seeds; {label} {ns}", fontsize="small")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out
