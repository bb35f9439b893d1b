"""No-reference quality metrics of SR images (NIQE), for test sets without ground truth (RealSRSet).

The metric is a library's: deepinv's ``deepinv.loss.metric.NIQE`` (BSD-3-Clause), a port of the LIVE
MATLAB release (Mittal, Soundararajan, Bovik 2012). csrgan supplies only its model and its input
(docs/metrics.md, "No-reference metrics", says why deepinv and not pyiqa):

* The model, the multivariate Gaussian (``mu_prisparam``, ``cov_prisparam``) of pristine-image patch
  features, is the LIVE release's ``modelparameters.mat``, found in the torch cache as
  ``niqe_modelparameters.mat`` (:data:`csrgan.weights.SPECS` ``"niqe"`` records its URL and SHA-256;
  ``csrgan weights download niqe`` fetches it on a connected machine), or an explicit file: a
  LIVE-format ``.mat`` or the ``.pt`` that deepinv's ``NIQE.create_weights(save_path=...)`` writes.
  Nothing is downloaded at run time (deepinv is built with ``weights_path=None``, so its own
  downloader never runs) and nothing falls back: a missing file is a
  :class:`~csrgan.weights.MissingWeightsError` naming the file, the path and the command.
* The input is the uint8 SR image cropped by ``scale`` px per side (as for every csrgan metric), as
  float64 in [0, 255]. NIQE turns RGB into grey as MATLAB ``rgb2gray`` does on uint8 (rounded) and
  scores whole 96x96 blocks, so the cropped image needs at least :data:`NIQE_MIN_BLOCKS` of them.

Each scorer carries a ``provenance`` string that results record: ``"niqe:<file> sha256:<12 hex> (LIVE
release model)"``, or ``"(custom model, not the LIVE release)"`` for any other file.

This module imports no torch at import time (:mod:`csrgan.preflight` uses its size rule).
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "NIQE_BLOCK",
    "NIQE_MIN_BLOCKS",
    "NOREF_PROTOCOL",
    "NIQEMetric",
    "NIQEModel",
    "build_noref",
    "cached_noref",
    "load_niqe_model",
    "niqe_blocks",
    "score_noref",
]

#: NIQE's block side (the LIVE model was fitted on 96x96 patches) and the fewest whole blocks an image
#: must hold: the score needs a covariance of the image's block features (deepinv refuses one block).
NIQE_BLOCK = 96
NIQE_MIN_BLOCKS = 2
#: Stored next to no-reference numbers, like :data:`csrgan.metrics.PROTOCOL` ``.id``.
NOREF_PROTOCOL = "niqe-live96-rgb2gray-u8-crop=scale-deepinv-f64-v1"
#: Feature count of NIQE's model: 18 per scale, 2 scales.
_NIQE_FEATURES = 36
_LIVE_MODEL = "LIVE release model"
_CUSTOM_MODEL = "custom model, not the LIVE release"


# --------------------------------------------------------------------------------------------- sizes
def niqe_blocks(height: int, width: int, crop_border: int) -> int:
    """Whole NIQE blocks in an image of ``height`` x ``width`` after cropping ``crop_border`` px per side."""
    h, w = height - 2 * crop_border, width - 2 * crop_border
    return max(h, 0) // NIQE_BLOCK * (max(w, 0) // NIQE_BLOCK)


# --------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class NIQEModel:
    """A NIQE model read from ``path``: ``mu`` (36,) and ``cov`` (36, 36), float64."""

    mu: np.ndarray
    cov: np.ndarray
    path: Path
    sha256: str
    official: bool

    @property
    def provenance(self) -> str:
        kind = _LIVE_MODEL if self.official else _CUSTOM_MODEL
        return f"niqe:{self.path.name} sha256:{self.sha256[:12]} ({kind})"


def _pick(state: Any, keys: tuple[str, str], path: Path) -> tuple[Any, Any]:
    from csrgan.weights import CorruptWeightsError

    if not isinstance(state, Mapping) or not all(k in state for k in keys):
        raise CorruptWeightsError(f"{path}: not a NIQE model: expected the keys {list(keys)}")
    return state[keys[0]], state[keys[1]]


def _read_niqe_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, cov)`` as stored: LIVE ``.mat`` keys ``mu_prisparam``/``cov_prisparam``, or deepinv's
    ``.pt`` ``{"mu", "cov"}`` (read with ``weights_only=True``)."""
    from csrgan.weights import CorruptWeightsError

    try:
        if path.suffix.lower() == ".pt":
            import torch

            mu, cov = _pick(torch.load(path, map_location="cpu", weights_only=True), ("mu", "cov"), path)
            return torch.as_tensor(mu).double().numpy(), torch.as_tensor(cov).double().numpy()
        import scipy.io

        mu, cov = _pick(scipy.io.loadmat(path), ("mu_prisparam", "cov_prisparam"), path)
        return np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    except CorruptWeightsError:
        raise
    except Exception as exc:  # scipy/torch raise many types for a file that is not what it claims
        raise CorruptWeightsError(
            f"{path}: cannot read as a NIQE model (.mat or deepinv .pt): {exc}"
        ) from exc


def _checked_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from csrgan.weights import CorruptWeightsError

    mu, cov = _read_niqe_arrays(path)
    mu = np.ravel(mu)
    n = _NIQE_FEATURES
    if mu.shape != (n,) or cov.shape != (n, n):
        raise CorruptWeightsError(
            f"{path}: a NIQE model has a mean of {n} and a {n}x{n} covariance, got {mu.shape} and {cov.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()) or not np.allclose(cov, cov.T):
        raise CorruptWeightsError(f"{path}: the NIQE covariance is not finite and symmetric")
    return mu, cov


def load_niqe_model(source: str | Path | None = None) -> NIQEModel:
    """The NIQE model from the torch cache (the LIVE release file, SHA-256 checked) or from ``source``.

    ``source``: a model file of any name (``.mat`` in the LIVE format, or deepinv's ``.pt``) or a folder
    holding ``niqe_modelparameters.mat``. A file under the official name in the cache that is not the
    release file is a :class:`~csrgan.weights.CorruptWeightsError`; an explicit file may be any valid
    model (a user's own fit) and its provenance then says "custom model".
    """
    from csrgan import weights as W

    spec = W.SPECS["niqe"]
    path = W.resolve("niqe", source)  # MissingWeightsError: which file, where, `csrgan weights download niqe`
    digest = W.file_sha256(path)
    if source is None and digest != spec.sha256:
        raise W.CorruptWeightsError(
            f"{path}: sha256 {digest[:16]}... is not the {spec.filename} csrgan expects "
            f"({spec.sha256[:16]}..., the LIVE NIQE release model). The file is truncated, corrupt or "
            f"another model; delete it and run `csrgan weights download niqe --force`, or pass your own "
            f"model explicitly (csrgan evaluate --niqe-params PATH)."
        )
    mu, cov = _checked_arrays(path)
    return NIQEModel(mu=mu, cov=cov, path=path, sha256=digest, official=digest == W.NIQE_LIVE_SHA256)


# -------------------------------------------------------------------------------------------- metric
class NIQEMetric:
    """NIQE of one uint8 SR image (lower is better), by deepinv's implementation with a csrgan-loaded model.

    ``source`` as in :func:`load_niqe_model`. :attr:`provenance` names the model file; :attr:`library`
    the implementation. Scoring runs in float64 on ``device`` (CPU by default: a few 96x96 blocks).
    """

    name = "niqe"

    def __init__(self, source: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        import torch
        from deepinv.loss.metric import NIQE  # ~1 s on top of torch: imported when a NIQE is built

        self.model = load_niqe_model(source)
        self.device = torch.device(device)
        # weights_path=None: deepinv would otherwise download its own copy at construction time.
        self._niqe = NIQE(weights_path=None, round_tensor=True, dtype=torch.float64, device=self.device)
        self._niqe.mu_p = torch.from_numpy(self.model.mu).to(self.device)
        self._niqe.cov_p = torch.from_numpy(self.model.cov).to(self.device)
        self.provenance: str = self.model.provenance
        self.library = f"deepinv {importlib.metadata.version('deepinv')}"

    def __call__(self, sr: np.ndarray, crop_border: int) -> float:
        import torch

        if not isinstance(sr, np.ndarray) or sr.dtype != np.uint8 or sr.ndim not in (2, 3):
            raise TypeError("NIQEMetric: expected a uint8 (H, W) or (H, W, 3) image (quantise SR first)")
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        h, w = sr.shape[:2]
        blocks = niqe_blocks(h, w, crop_border)
        if blocks < NIQE_MIN_BLOCKS:
            raise ValueError(
                f"NIQE needs at least {NIQE_MIN_BLOCKS} whole {NIQE_BLOCK}x{NIQE_BLOCK} blocks after "
                f"cropping {crop_border} px per side; a {w}x{h} image has {blocks}"
            )
        img = sr[crop_border : h - crop_border, crop_border : w - crop_border]
        x = torch.from_numpy(np.ascontiguousarray(img)).to(self.device, torch.float64)
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        with torch.no_grad():
            return float(self._niqe(x).reshape(-1)[0])


#: No-reference metric name -> (scorer class, csrgan.weights name of its model file).
_BUILDERS: dict[str, tuple[type[NIQEMetric], str]] = {"niqe": (NIQEMetric, "niqe")}


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown no-reference metric(s) {unknown}; known: {', '.join(_BUILDERS)}")


def build_noref(
    names: Sequence[str],
    sources: Mapping[str, str | Path | None] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, NIQEMetric]:
    """``{name: scorer}`` for the no-reference metrics ``names``; ``sources``: name -> model file."""
    _check_names(names)
    sources = sources or {}
    return {n: _BUILDERS[n][0](source=sources.get(n), device=device) for n in dict.fromkeys(names)}


_cache: dict[tuple[str, str, int, int], NIQEMetric] = {}
_cache_lock = threading.Lock()


def cached_noref(names: Sequence[str]) -> dict[str, NIQEMetric]:
    """:func:`build_noref` from the torch cache, kept per process: a trainer evaluates every few steps.

    Keyed by the model file's path, mtime and size, so a replaced or re-downloaded file is reloaded.
    """
    from csrgan.weights import resolve

    _check_names(names)
    out: dict[str, NIQEMetric] = {}
    for name in dict.fromkeys(names):
        path = resolve(_BUILDERS[name][1])
        st = path.stat()
        key = (name, str(path.resolve()), st.st_mtime_ns, st.st_size)
        with _cache_lock:
            scorer = _cache.get(key)
        if scorer is None:
            scorer = _BUILDERS[name][0]()
            with _cache_lock:
                _cache[key] = scorer
        out[name] = scorer
    return out


def score_noref(sr: np.ndarray, crop_border: int, scorers: Mapping[str, NIQEMetric]) -> dict[str, float]:
    """``{name: value}`` of every scorer on one uint8 SR image."""
    return {name: scorer(sr, crop_border) for name, scorer in scorers.items()}
