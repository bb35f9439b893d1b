"""Where sweep results live and how they are written and read: :class:`ResultsStore` and :func:`read_results`.

Layout: ``<root>/<sweep>/trial-<trial_id>.parquet``, one file per trial holding *all* its rows, one row
per (phase, evaluation step, test set). Every write replaces the whole file atomically:

* local folders (and ``file://``): the bytes go to a hidden temp file in the same folder (``.trial-…``;
  dataset readers skip names starting with ``.`` or ``_``), are fsync'ed, then ``os.replace``'d over
  the old file, so a reader sees the old or the new file, never half of one;
* object stores (``s3://``, ``gs://``): one PUT of the complete bytes; a PUT is atomic there, while
  their "rename" is copy + delete (not atomic, so not used).

So a crash never leaves a half-written file, a resumed trial rewrites its own file (no duplicate rows)
and ``pd.read_parquet("results/<sweep>")`` works at any moment. Files whose columns differ are unified
on reading (see :mod:`csrgan.results.schema`).
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from csrgan.results.schema import (
    _FIXED_TYPES,
    _ROW_KEY,
    ADDED_COLUMNS,
    FIXED_COLUMNS,
    FIXED_SCHEMA,
    STATUSES,
    ResultsError,
    ResultsSchemaWarning,
    _build_table,
    _column_order,
    _field,
    _normalise_row,
)

TRIAL_FILE_PREFIX = "trial-"
SUFFIX = ".parquet"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OBJECT_STORES = ("s3", "gcs")  # single-PUT writes are atomic; their move is copy + delete


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
    """Concatenate trial tables whose param/extra columns may differ (rules: :mod:`csrgan.results.schema`)."""
    types: dict[str, pa.DataType] = {}
    where: dict[str, str] = {}
    for path, t in tables:
        missing = [c for c in FIXED_COLUMNS if c not in t.column_names and c not in ADDED_COLUMNS]
        if missing:  # columns added since (ADDED_COLUMNS) are read as nulls from older files
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
