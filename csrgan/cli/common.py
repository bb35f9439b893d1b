"""Helpers shared by CLI modules: user-facing errors and exit codes, option parsing, lazy imports.

The CLI modules are all imported to build ``csrgan --help``, so none of them may import torch, Ray,
pandas or pydantic at import time: they import the library inside their commands, or through
:class:`LazyModule` (tests/test_cli_hygiene.py checks it).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1  # the command ran and failed (missing file, missing weights, ...)
EXIT_CONFIG = 2  # bad input found before anything started


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors(
    config: tuple[type[BaseException], ...] = (), failures: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Expected failures become one clear message on stderr and a non-zero exit, not a traceback.

    Bad input (``ConfigError`` and the ``config`` types) exits 2; a command that ran and failed (missing
    weights or files, unreadable images, the ``failures`` types, any ``ValueError``) exits 1.
    """
    from csrgan.config import ConfigError
    from csrgan.data.io import ImageReadError
    from csrgan.weights import MissingWeightsError

    try:
        yield
    except (ConfigError, *config) as exc:
        fail(str(exc), EXIT_CONFIG)
    except (MissingWeightsError, ImageReadError, FileNotFoundError, ValueError, *failures) as exc:
        fail(str(exc))


def split_csv(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        fail(f"--{what}: unknown {bad or value!r}; choose from {', '.join(allowed)}", EXIT_CONFIG)
    return items


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class LazyModule:
    """A module imported on its first attribute access: ``results = LazyModule("csrgan.results")``
    lets a CLI module use ``results.read_results`` in its commands without importing pandas (and, through
    csrgan.metrics, torch) when ``--help`` imports the CLI module."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def weights_named_as(where: str) -> Callable[[F], F]:
    """Decorator for a command: while it runs, messages about weights name its own options (``where``
    is a key of :data:`csrgan.names.WEIGHTS_SETTINGS`, e.g. ``evaluate`` -> ``--lpips-weights PATH``)
    instead of the experiment file's keys."""

    def wrap(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            from csrgan.names import settings_named_for

            with settings_named_for(where):
                return command(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
