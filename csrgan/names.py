"""Names the CLI shows before anything heavy is imported, and how messages name weights settings.

``csrgan --help`` builds every command's options when the CLI modules are imported. The choices those
options offer (metric names, DIV2K splits and tracks, weights names) are literals here, so that building
them imports neither torch nor pandas. The modules that own them (:mod:`csrgan.metrics`,
:mod:`csrgan.data.datasets`, :mod:`csrgan.weights`) keep the real definitions; tests/test_cli_hygiene.py
keeps the two equal.

Messages about missing weights name the setting that fixes them in the user's own terms: an experiment
file's key (``eval.lpips.source``) for ``csrgan sweep`` / ``train`` / ``submit``, a flag
(``--lpips-weights``) for ``csrgan evaluate``. :func:`settings_named_for` says which, for a block of
code (the texts themselves are :mod:`csrgan.weights`').
This module imports nothing of csrgan.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: :data:`csrgan.metrics.METRIC_NAMES`, in table order.
METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "lpips")
#: :data:`csrgan.data.datasets.DIV2K_SPLITS` and ``DIV2K_TRACKS``.
DIV2K_SPLITS: tuple[str, ...] = ("train", "valid")
DIV2K_TRACKS: tuple[str, ...] = ("bicubic", "unknown")
#: The downloadable torchvision checkpoints (:data:`csrgan.weights.SPECS`) and those ``all`` fetches.
WEIGHTS_DOWNLOADABLE: tuple[str, ...] = ("vgg19", "alexnet", "vgg16", "niqe")
WEIGHTS_IN_ALL: tuple[str, ...] = ("vgg19", "alexnet")
#: Every name ``csrgan weights status|path`` knows (:func:`csrgan.weights.known_names`).
WEIGHTS_KNOWN: tuple[str, ...] = (*WEIGHTS_DOWNLOADABLE, "lpips-alex", "lpips-vgg")

#: Where a user can be, for messages about weights: ``config`` (an experiment file: ``csrgan sweep`` /
#: ``train`` / ``submit``) or ``evaluate`` (the flags of ``csrgan evaluate``).
PLACES: tuple[str, ...] = ("config", "evaluate")

_place: ContextVar[str] = ContextVar("csrgan_weights_place", default="config")


@contextmanager
def settings_named_for(place: str) -> Iterator[None]:
    """Within the block, messages about weights name settings as ``place`` (one of :data:`PLACES`)
    spells them: ``--lpips-weights PATH`` for ``evaluate``, ``eval.lpips.source`` for ``config``."""
    if place not in PLACES:
        raise KeyError(f"unknown place {place!r}; known: {', '.join(PLACES)}")
    token = _place.set(place)
    try:
        yield
    finally:
        _place.reset(token)


def weights_place() -> str:
    """Where the user at hand is (see :func:`settings_named_for`); ``config`` unless a command said."""
    return _place.get()
