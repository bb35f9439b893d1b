"""Helpers shared by CLI modules: user-facing errors and exit codes, option parsing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

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
