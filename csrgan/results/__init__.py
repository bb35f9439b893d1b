"""Sweep results as Parquet: the per-trial store, the reader, the ablation summary and its plot.

Layout: ``<root>/<sweep>/trial-<trial_id>.parquet``, one file per trial holding all its rows, each file
replaced atomically so ``pd.read_parquet("<root>/<sweep>")`` works at any moment. docs/results.md
documents the layout and every column.

Modules: :mod:`~csrgan.results.schema` (columns, row validation, one trial's table),
:mod:`~csrgan.results.store` (:class:`ResultsStore`, :func:`read_results`), :mod:`~csrgan.results.summary`
(:func:`summarize`, :func:`format_summary`) and :mod:`~csrgan.results.plot` (:func:`plot`).
"""

from csrgan.results.plot import plot
from csrgan.results.schema import (
    DECIMALS,
    EXCLUDED_STATUSES,
    EXTRA_PREFIX,
    FIXED_COLUMNS,
    FIXED_SCHEMA,
    HIGHER_IS_BETTER,
    METRICS,
    PARAM_PREFIX,
    STATUSES,
    UNFINISHED_STATUSES,
    ResultsError,
    ResultsSchemaWarning,
    flatten_params,
)
from csrgan.results.store import SUFFIX, TRIAL_FILE_PREFIX, ResultsStore, read_results
from csrgan.results.summary import Format, Which, format_summary, param_columns, resolve_column, summarize

__all__ = [
    "DECIMALS",
    "EXCLUDED_STATUSES",
    "EXTRA_PREFIX",
    "FIXED_COLUMNS",
    "FIXED_SCHEMA",
    "HIGHER_IS_BETTER",
    "METRICS",
    "PARAM_PREFIX",
    "STATUSES",
    "SUFFIX",
    "TRIAL_FILE_PREFIX",
    "UNFINISHED_STATUSES",
    "Format",
    "ResultsError",
    "ResultsSchemaWarning",
    "ResultsStore",
    "Which",
    "flatten_params",
    "format_summary",
    "param_columns",
    "plot",
    "read_results",
    "resolve_column",
    "summarize",
]
