"""Pretrained weights: where they live, how they are checked, and how to get them onto offline machines.

Four pretrained pieces feed csrgan:

* VGG19 ImageNet weights (torchvision ``VGG19_Weights.IMAGENET1K_V1``) for the SRGAN content loss;
* AlexNet ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``), the LPIPS backbone; VGG16 for
  LPIPS ``net="vgg"``;
* the LPIPS v0.1 linear layers, which ship inside the ``lpips`` pip package (never downloaded).
* the NIQE model (``niqe_modelparameters.mat``, the LIVE release's ``modelparameters.mat``) for the
  no-reference metric of :mod:`csrgan.noref`, checked against its full SHA-256.

Training and evaluation machines are offline, so loading never downloads: torchvision checkpoints
are looked up in the normal torch cache (``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``) or at an explicit path, and a missing file raises
:class:`MissingWeightsError` that says exactly which file, where, and how to get it there. Models are
built with ``weights=None`` and the state dict is loaded with ``torch.load(weights_only=True)``, so
torchvision's own downloader is never reached. Random weights are only used when a caller asks for
them by name (``random_init`` / ``random_backbone``), and the provenance string then says so.

Every file is checked against torchvision's hash-prefix convention (``name-<sha256 prefix>.pth``)
when downloaded *and* when loaded: the SHA-256 is computed anyway for the provenance string, and a
truncated or substituted file under the official name must not silently train a model.

Provenance strings (stored with results so a run says what it was computed with):

* loaded file: ``"<name>:<filename> sha256:<first 12 hex>"``, e.g.
  ``"vgg19:vgg19-dcbb9e9d.pth sha256:dcbb9e9d1234"``;
* explicit random weights: ``"<name>:random-init (explicit)"``;
* LPIPS: ``"lpips-v0.1:<net>.pth sha256:<12 hex> + <backbone provenance>"``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import nn

from csrgan import download as _download
from csrgan.download import fetch_resumable
from csrgan.names import weights_place

if TYPE_CHECKING:  # lpips pulls in scipy (~0.4 s): imported only when an LPIPS model is built
    import lpips

log = logging.getLogger(__name__)

RANDOM_PROVENANCE = "random-init (explicit)"
#: torchvision's hash-prefix convention (cf. ``torch.hub.HASH_REGEX``), but demanding >= 8 hex digits
#: so an ordinary name such as ``vgg19-run-2.pth`` is not mistaken for a (1-digit) hash prefix.
HASH_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.")
LPIPS_VERSION = "0.1"
#: Download read size (see :data:`csrgan.download.CHUNK`).
DOWNLOAD_CHUNK = _download.CHUNK


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
class WeightsError(RuntimeError):
    """Base class of expected weight problems; ``str()`` is a complete, user-facing message."""


class MissingWeightsError(WeightsError):
    """A weights file is not where it must be. The message names the file, the path and the fix."""

    # Keyword defaults so that unpickling (``cls(message)``, then ``__dict__``) works: Ray re-raises a
    # worker's exception in the driver that way; without them the real message became a TypeError.
    def __init__(
        self,
        message: str,
        *,
        filename: str = "",
        expected_path: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.filename = filename
        self.expected_path = expected_path
        self.cache_dir = cache_dir


class CorruptWeightsError(WeightsError):
    """A weights file exists but is not what its name claims (hash mismatch, unreadable, wrong keys)."""


class DownloadError(WeightsError, _download.DownloadError):
    """A download failed (network, HTTP status, truncated body). Any partial file is kept for resume."""


# --------------------------------------------------------------------------------------------------
# What exists
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightSpec:
    """A torchvision checkpoint csrgan can use, or (``arch`` empty) another downloadable parameter file.

    ``arch`` is the ``torchvision.models`` builder the state dict belongs to; ``in_all`` marks the
    files ``csrgan weights download all`` fetches (the ones the default configs need). ``sha256`` is
    the full digest of a file whose official name carries no hash prefix (NIQE's model); it is
    checked on download and when the file is loaded from the cache.
    """

    name: str
    arch: str
    filename: str
    url: str
    used_for: str
    in_all: bool = True
    sha256: str | None = None

    @property
    def hash_prefix(self) -> str | None:
        return self.sha256 or hash_prefix_of(self.filename)


def _torchvision_spec(name: str, arch: str, weights: Any, used_for: str, in_all: bool) -> WeightSpec:
    url: str = weights.url
    return WeightSpec(name, arch, url.rsplit("/", 1)[-1], url, used_for, in_all)


#: File name of the NIQE model (:data:`SPECS` ``"niqe"``) in the cache, and the SHA-256 of the LIVE
#: release's ``modelparameters.mat`` (8347 bytes), which names a model "the LIVE release model".
NIQE_FILENAME = "niqe_modelparameters.mat"
NIQE_LIVE_SHA256 = "fa2aa4d12dd9595c3fb6bf8b4e1a15c79d5d1469238d0901c88dead195be578d"

#: Downloadable torchvision checkpoints (and NIQE's model, ``arch`` empty) by csrgan name. Checkpoint names
#: and URLs come from torchvision's weights API, so they are exactly what
#: ``torchvision.models.<arch>(weights=...)`` would cache.
SPECS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _torchvision_spec(
            "vgg19",
            "vgg19",
            torchvision.models.VGG19_Weights.IMAGENET1K_V1,
            "SRGAN content loss (VGG19 features)",
            True,
        ),
        _torchvision_spec(
            "alexnet",
            "alexnet",
            torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
            "LPIPS backbone (net='alex', default)",
            True,
        ),
        _torchvision_spec(
            "vgg16",
            "vgg16",
            torchvision.models.VGG16_Weights.IMAGENET1K_V1,
            "LPIPS backbone (net='vgg', optional)",
            False,
        ),
        # The NIQE model of the LIVE release (Mittal et al. 2012, niqe_release.zip `modelparameters.mat`,
        # 125 pristine images, 96x96 patches, sharpness 0.75), under the name pyiqa's weights repository
        # mirrors it as. Same bytes as the release file (sha256 checked here, see docs/metrics.md).
        WeightSpec(
            "niqe",
            "",
            NIQE_FILENAME,
            "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/" + NIQE_FILENAME,
            "NIQE no-reference metric (LIVE release model: mu_prisparam, cov_prisparam)",
            False,
            sha256=NIQE_LIVE_SHA256,
        ),
    )
}

#: LPIPS ``net`` -> csrgan name of its torchvision backbone checkpoint.
LPIPS_BACKBONES: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16"}


def _lpips_entry_name(net: str) -> str:
    return f"lpips-{net}"


def _spec(name: str) -> WeightSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(known_names())}") from None


def known_names() -> list[str]:
    """Names accepted by :func:`status`, :func:`weights_path` and the CLI (downloadable first)."""
    return [*SPECS, *(_lpips_entry_name(net) for net in LPIPS_BACKBONES)]


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The torch checkpoint cache, ``torch.hub.get_dir()/checkpoints`` (read at call time, so
    ``TORCH_HOME`` / ``torch.hub.set_dir`` changes are honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_lin_path(net: str = "alex") -> Path:
    """Where the ``lpips`` package keeps its v0.1 linear layers for ``net`` (may not exist)."""
    import lpips  # noqa: F811 - runtime import of the TYPE_CHECKING name

    return Path(lpips.__file__).resolve().parent / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"


def weights_path(name: str) -> Path:
    """Expected location of the named weights: the torch cache, or the lpips package for ``lpips-*``."""
    for net in LPIPS_BACKBONES:
        if name == _lpips_entry_name(net):
            return lpips_lin_path(net)
    return cache_dir() / _spec(name).filename


def _how_to_fix(spec: WeightSpec, cache: Path) -> str:
    return (
        f"To fix: on a machine with internet run `csrgan weights download {spec.name}` and copy "
        f"{spec.filename} into {cache}/ here (or copy that machine's whole checkpoints dir); "
        f"or give the file's path: {where_to_give(spec.name)}."
    )


#: Where a user names each weights file explicitly (config keys and CLI options that exist).
_WHERE_TO_GIVE = {
    "vgg19": "config key weights.vgg19",
    "alexnet": "config key eval.lpips.source",
    "vgg16": "config key eval.lpips.source with eval.lpips.net: vgg",
    "niqe": "csrgan evaluate --niqe-params PATH (experiments read the torch cache only)",
}

#: Where the user is at a command with its own flags (:func:`csrgan.names.settings_named_for`), and
#: the switches of optional / random LPIPS: what to name instead of :data:`_WHERE_TO_GIVE`'s key.
_BY_PLACE: dict[str, dict[str, str]] = {
    "config": {
        "lpips_optional": "eval.lpips.optional: true",
        "lpips_random": "eval.lpips.random_backbone: true",
    },
    "evaluate": {
        "alexnet": "--lpips-weights PATH (or --lpips-optional to leave LPIPS empty)",
        "lpips_optional": "--lpips-optional",
        "lpips_random": "--random-lpips",
        "niqe": "--niqe-params PATH (a LIVE-format .mat or a deepinv NIQE .pt)",
    },
}


def where_to_give(key: str) -> str:
    """How the user at hand gives ``key`` (a weights name, ``lpips_optional``, ``lpips_random``): a
    flag inside ``csrgan evaluate``, the experiment file's key elsewhere."""
    here = _BY_PLACE.get(weights_place(), {})
    return here.get(key) or _BY_PLACE["config"].get(key) or _WHERE_TO_GIVE.get(key, "see docs")


def resolve(name: str, source: str | Path | None = None) -> Path:
    """Path of the named torchvision checkpoint, without loading it.

    ``source`` may be a file (any name) or a directory holding the official file name; without it
    the torch cache is used. Never downloads: a missing file raises :class:`MissingWeightsError`.
    """
    spec = _spec(name)
    cache = cache_dir()
    if source is not None:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / spec.filename
        where = (
            f"{spec.name} weights (used for: {spec.used_for}) not found at the explicitly given path {path}"
        )
    else:
        path = cache / spec.filename
        where = (
            f"{spec.name} weights file {spec.filename} (used for: {spec.used_for}) not found: expected "
            f"{path} (torch cache dir {cache}, from TORCH_HOME / torch.hub.get_dir()). Nothing is "
            "downloaded at run time"
        )
    if not path.is_file():
        raise MissingWeightsError(
            f"{where}. " + _how_to_fix(spec, cache), filename=path.name, expected_path=path, cache_dir=cache
        )
    return path


# --------------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------------
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _hash_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, computed once per (path, mtime, size) in this process."""
    path = Path(path)
    key = _hash_key(path)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def hash_prefix_of(filename: str) -> str | None:
    """The SHA-256 prefix a file name carries by torchvision's convention (``x-<hex>.pth``), if any."""
    m = HASH_PREFIX_RE.search(filename)
    return m.group(1) if m else None


def verify_file(path: str | Path, expected_prefix: str | None = None) -> str:
    """Return the file's SHA-256, raising :class:`CorruptWeightsError` if it does not start with
    ``expected_prefix`` (default: the prefix in the file's own name; no prefix -> no check)."""
    path = Path(path)
    prefix = expected_prefix if expected_prefix is not None else hash_prefix_of(path.name)
    digest = file_sha256(path)
    if prefix is not None and not digest.startswith(prefix):
        raise CorruptWeightsError(
            f"{path}: sha256 {digest[:16]}... does not start with {prefix}, the hash prefix its "
            f"official name carries (torchvision convention). The file is truncated, corrupt or not "
            f"the published weights; delete it and download it again."
        )
    return digest


def file_provenance(name: str, path: Path, digest: str) -> str:
    return f"{name}:{path.name} sha256:{digest[:12]}"


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles / zip archives
        raise CorruptWeightsError(f"{path}: cannot read as a torch state dict: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = type(state).__name__
        raise CorruptWeightsError(f"{path}: expected a state dict (name -> tensor), got a {kind}")
    return state


def _load_torchvision(spec: WeightSpec, path: Path) -> nn.Module:
    """Build ``torchvision.models.<arch>(weights=None)`` and load ``path`` into it strictly.

    The model is built on the meta device and the file's tensors are assigned, so no random
    initialisation (seconds for VGG's classifier) is spent on values that are overwritten anyway.
    """
    state = _read_state_dict(path)
    with torch.device("meta"):
        model: nn.Module = getattr(torchvision.models, spec.arch)(weights=None)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CorruptWeightsError(f"{path}: not a torchvision {spec.arch} state dict: {exc}") from exc
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # pragma: no cover - strict loading makes this unreachable; guard against torch changes
        raise CorruptWeightsError(f"{path}: tensors not loaded: {', '.join(leftover)}")
    return model


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def _check_not_both(source: str | Path | None, random_flag: bool, flag_name: str) -> None:
    if source is not None and random_flag:
        raise WeightsError(f"got both a weights source ({source}) and {flag_name}=True; choose one")


def _random_vgg19_features() -> nn.Sequential:
    """Randomly initialised VGG19 ``features`` without paying for the 120M-parameter classifier.

    The init is torchvision's VGG conv init (``VGG.__init__``): Kaiming normal, fan_out, relu; zero bias.
    """
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features
    features = features.to_empty(device="cpu")
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return features


def load_vgg19_features(source: str | Path | None = None, random_init: bool = False) -> tuple[nn.Module, str]:
    """torchvision VGG19 ``.features`` with ImageNet weights, in eval mode with ``requires_grad=False``.

    Returns ``(module, provenance)``. ``source`` is an explicit file or directory (see
    :func:`resolve`); ``random_init=True`` gives random weights (provenance says so) and is the only
    way to get them. The module is on the CPU; the caller moves it.
    """
    _check_not_both(source, random_init, "random_init")
    if random_init:
        log.warning("VGG19 features with RANDOM weights (explicitly requested): not a perceptual loss")
        return _freeze(_random_vgg19_features()), f"vgg19:{RANDOM_PROVENANCE}"
    spec = _spec("vgg19")
    path = resolve("vgg19", source)
    digest = verify_file(path)
    features = _load_torchvision(spec, path).features
    provenance = file_provenance(spec.name, path, digest)
    log.info("loaded VGG19 features from %s (%s)", path, provenance)
    return _freeze(features), provenance


def _load_lpips_lin(model: lpips.LPIPS, net: str) -> str:
    """Load the package's v0.1 linear layers into ``model`` (strictly for the ``lin*`` keys); provenance.

    Done here rather than by ``lpips.LPIPS(pretrained=True)`` because lpips loads them with
    ``strict=False``, which would silently leave random linear layers if the file did not match.
    """
    path = lpips_lin_path(net)
    if not path.is_file():
        raise MissingWeightsError(
            f"LPIPS v{LPIPS_VERSION} linear layers {path.name} for net={net!r} not found at {path}. They "
            f"ship inside the lpips pip package; reinstall it (`pip install --force-reinstall --no-deps "
            f"lpips`).",
            filename=path.name,
            expected_path=path,
            cache_dir=None,
        )
    digest = file_sha256(path)
    state = _read_state_dict(path)
    expected = {f"lin{i}.model.1.weight" for i in range(len(model.chns))}
    unexpected = sorted(set(state) - expected)
    missing = sorted(expected - set(state))
    if unexpected or missing:
        raise CorruptWeightsError(
            f"{path}: not LPIPS linear layers for net={net!r} (missing {missing}, unexpected {unexpected})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise CorruptWeightsError(f"{path}: LPIPS linear layers do not fit net={net!r}: {exc}") from exc
    return f"lpips-v{LPIPS_VERSION}:{path.name} sha256:{digest[:12]}"


def _features_into_slices(slices: nn.Module, features: nn.Module, source: Path) -> None:
    """Copy torchvision ``features`` weights into lpips' ``slice<k>.<index>`` modules.

    lpips' pretrained_networks split ``tv.<arch>().features`` into slices that keep each layer's
    original index as its module name, so ``slice2.3.weight`` is ``features.3.weight``.
    """
    feature_state = features.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key in slices.state_dict():
        m = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key)
        if m is None or f"{m.group(1)}.{m.group(2)}" not in feature_state:
            raise CorruptWeightsError(f"{source}: no weight for lpips layer {key!r} in the backbone file")
        mapped[key] = feature_state[f"{m.group(1)}.{m.group(2)}"]
    slices.load_state_dict(mapped, strict=True)


def load_lpips(
    net: str = "alex", source: str | Path | None = None, random_backbone: bool = False
) -> tuple[lpips.LPIPS, str]:
    """``lpips.LPIPS`` v0.1 with its linear layers from the lpips package and an ImageNet backbone.

    ``net`` is ``"alex"`` (the standard LPIPS) or ``"vgg"``. The backbone (``alexnet`` / ``vgg16``
    checkpoint) comes from the torch cache or ``source``; ``random_backbone=True`` keeps a randomly
    initialised backbone (provenance says so). The model is built with ``pnet_rand=True`` so lpips
    never calls torchvision's downloader. Returns ``(model, provenance)``; eval mode, frozen, on CPU.
    """
    if net not in LPIPS_BACKBONES:
        raise WeightsError(f"unknown LPIPS net {net!r}; supported: {', '.join(LPIPS_BACKBONES)}")
    _check_not_both(source, random_backbone, "random_backbone")
    backbone_spec = _spec(LPIPS_BACKBONES[net])
    backbone_path = None if random_backbone else resolve(backbone_spec.name, source)

    import lpips  # noqa: F811 - runtime import of the TYPE_CHECKING name

    with warnings.catch_warnings():
        # lpips calls tv.<arch>(pretrained=False); torchvision's deprecation warnings are lpips' business.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        model = lpips.LPIPS(net=net, version=LPIPS_VERSION, pretrained=False, pnet_rand=True, verbose=False)
    lin_provenance = _load_lpips_lin(model, net)

    if backbone_path is None:
        log.warning("LPIPS with a RANDOM %s backbone (explicitly requested): scores are not LPIPS", net)
        backbone_provenance = f"{backbone_spec.name}:{RANDOM_PROVENANCE}"
    else:
        digest = verify_file(backbone_path)
        features = _load_torchvision(backbone_spec, backbone_path).features
        _features_into_slices(model.net, features, backbone_path)
        backbone_provenance = file_provenance(backbone_spec.name, backbone_path, digest)
    provenance = f"{lin_provenance} + {backbone_provenance}"
    log.info("loaded LPIPS (%s)", provenance)
    return _freeze(model), provenance


def lpips_disabled_message(exc: MissingWeightsError, scope: str = "run") -> str:
    """What optional LPIPS with missing weights says: the switch that made it optional as the user
    gave it (``eval.lpips.optional: true``, ``--lpips-optional``), then ``exc``'s fix."""
    return (
        f"LPIPS DISABLED for this {scope}: its backbone weights are missing and LPIPS is optional "
        f"({where_to_give('lpips_optional')}), so every lpips value is left empty (null).\n{exc}"
    )


_said: set[str] = set()


def first_time(message: str) -> bool:
    """True the first time this process asks about ``message``: a warning about missing weights is
    said once per process, however many stages, trainers or evaluations run into it."""
    with _hash_lock:
        if message in _said:
            return False
        _said.add(message)
        return True


def warn_once(message: str, logger: logging.Logger = log) -> bool:
    """``WARNING: message`` on stderr the first time this process says it (:func:`first_time`), and
    to ``logger`` where logging is configured: without a handler, logging's last-resort handler would
    print it a second time. True if it was said."""
    if not first_time(message):
        return False
    if logger.hasHandlers():
        logger.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
    return True


# --------------------------------------------------------------------------------------------------
# Status and download
# --------------------------------------------------------------------------------------------------
def status() -> list[dict[str, Any]]:
    """One row per known weights file: name, file, path, present, size (bytes or None), used_for,
    source ("torch cache" or "lpips package") and downloadable."""
    rows: list[dict[str, Any]] = []
    for spec in SPECS.values():
        rows.append(_status_row(spec.name, cache_dir() / spec.filename, spec.used_for, "torch cache", True))
    for net in LPIPS_BACKBONES:
        rows.append(
            _status_row(
                _lpips_entry_name(net),
                lpips_lin_path(net),
                f"LPIPS v{LPIPS_VERSION} linear layers (net='{net}')",
                "lpips package",
                False,
            )
        )
    return rows


def _status_row(name: str, path: Path, used_for: str, source: str, downloadable: bool) -> dict[str, Any]:
    present = path.is_file()
    return {
        "name": name,
        "file": path.name,
        "path": str(path),
        "present": present,
        "size": path.stat().st_size if present else None,
        "used_for": used_for,
        "source": source,
        "downloadable": downloadable,
    }


def download(
    name: str,
    url: str | None = None,
    dest_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the named torchvision checkpoint into ``dest_dir`` (default: the torch cache).

    Streams to ``<file>.part`` (resuming it with an HTTP Range request if present), checks the
    SHA-256 against the hash prefix in the official file name, then renames into place. ``url``
    overrides the source (a mirror, or a test server). An existing verified file is kept unless
    ``force``. Network failures raise :class:`DownloadError` and keep the ``.part`` for the next try.
    """
    for net in LPIPS_BACKBONES:
        if name == _lpips_entry_name(net):
            raise WeightsError(
                f"{name} ({lpips_lin_path(net).name}) ships inside the lpips pip package and is not "
                f"downloaded; reinstall lpips if it is missing"
            )
    spec = _spec(name)
    url = url or spec.url
    dest = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / spec.filename
    if final.is_file() and not force:
        try:
            verify_file(final, spec.hash_prefix)
        except CorruptWeightsError as exc:
            raise CorruptWeightsError(f"{exc} (or rerun the download with force / --force)") from None
        log.info("%s already present at %s", spec.filename, final)
        return final

    part = final.with_name(final.name + ".part")
    for _attempt in range(2):
        resumed = fetch_resumable(
            url, part, timeout=timeout, progress=progress, notify=log.warning, error=DownloadError
        )
        digest = file_sha256(part)
        if spec.hash_prefix is None or digest.startswith(spec.hash_prefix):
            break
        part.unlink()
        if resumed:
            # The bytes kept from an earlier try may be a stale .part (another URL or version).
            log.warning("%s: resumed download failed the hash check; downloading from the start", url)
            continue
        raise CorruptWeightsError(
            f"downloaded {url} but its sha256 {digest[:16]}... does not start with {spec.hash_prefix} "
            f"(the hash prefix of {spec.filename}); the download was deleted. Check the URL."
        )
    os.replace(part, final)
    with _hash_lock:
        _hash_cache[_hash_key(final)] = digest
    log.info("downloaded %s -> %s (sha256 %s)", url, final, digest[:12])
    return final
