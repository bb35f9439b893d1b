"""Export a trained SR generator as ``safetensors`` or ONNX, checked against PyTorch: ``csrgan export``.

The generator is read by :func:`csrgan.models.artifacts.load_with_spec`, the loader behind ``csrgan
upscale`` / ``csrgan evaluate``, so anything they accept exports (a run's ``final/`` folder or a
checkpoint folder ``checkpoints/step_XXXXXXXX/``). Every exported file carries its provenance as
string metadata (:func:`export_metadata`): the :class:`~csrgan.models.artifacts.GeneratorSpec` as
JSON (enough to rebuild the network), scale, stage, step, which weights, the csrgan version.

EMA convention: a checkpoint's ``state.pt`` may hold an exponential-moving-average copy of the exported
net under ``nets[<net> + "_ema"]`` (``nets["G_ema"]`` for the SR stages, whose exported net is ``G``).
When present it is exported by default (it is the copy one would deploy); ``ema=False`` exports the raw
weights. The metadata says which (``weights``: ``ema`` | ``raw``, ``weights_entry``: where they came from).

* ``safetensors``: the generator's state dict; :func:`load_safetensors_generator` rebuilds the network
  from the file's own metadata.
* ONNX: input ``lr`` ``(N, 3, H, W)`` float32 RGB in [0, 1], output ``sr`` ``(N, 3, s*H, s*W)``, with
  batch, height and width dynamic. Made with the torch.export-based exporter (``dynamo=True``): it
  either captures the shapes symbolically or refuses, where the legacy TorchScript tracer (deprecated)
  silently bakes Python-int shape arithmetic of the example input into the graph. Both were tried on
  SRResNet (conv + PixelShuffle + bicubic skip) with torch 2.14: both gave the same outputs (max abs
  difference ~2e-7 vs PyTorch), the legacy one ~10x faster to export (1 s vs ~10 s on CPU).

Each export is checked before it is put in place: the file is loaded back (onnxruntime on CPU, or a
fresh generator from the safetensors) and run on seeded random images of :data:`CHECK_SHAPES` (two
batch sizes, non-square, neither the example size), against the PyTorch generator. The max abs
difference is returned; above ``atol`` the export fails and nothing is written.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import csrgan
from csrgan.models.artifacts import (
    GENERATOR_FILE,
    STATE_FILE,
    GeneratorSpec,
    build_generator,
    load_with_spec,
)

__all__ = [
    "CHECK_SHAPES",
    "DEFAULT_ATOL",
    "EMA_SUFFIX",
    "EXPORT_FORMAT",
    "FORMATS",
    "ExportFailedError",
    "ExportInputError",
    "ExportResult",
    "ExportSource",
    "check_onnx",
    "default_output",
    "export_generator",
    "export_metadata",
    "load_export_source",
    "load_safetensors_generator",
]

FORMATS = ("safetensors", "onnx")
DEFAULT_ATOL = 1e-4
EXPORT_FORMAT = "csrgan.export/v1"
#: ``nets[<exported net> + EMA_SUFFIX]`` in ``state.pt`` is the EMA copy of the exported generator.
EMA_SUFFIX = "_ema"
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
#: The ONNX trace input. Batch 2 and sides > 1: torch.export specialises a dimension whose example
#: size is 0 or 1 to that constant, which would make it static.
EXAMPLE_SHAPE = (2, 3, 24, 32)
#: The images every export is checked on: other sizes than the example, non-square, two batch sizes.
CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 48, 40), (2, 3, 23, 37))
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


class ExportInputError(ValueError):
    """Bad input to an export (no generator there, unknown format, bad tolerance): exit 2 in the CLI."""


class ExportFailedError(ValueError):
    """The export ran and failed: the exporter refused the network, or the check exceeded ``atol``."""


@dataclass(frozen=True)
class ExportSource:
    """The generator to export, in eval mode on the CPU, and where its weights came from."""

    model: nn.Module
    spec: GeneratorSpec
    used_ema: bool
    weights_entry: str  # "nets/G_ema", "nets/G" or "generator.pt"
    stage: str | None
    step: int | None


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_generator` wrote and how well the written file reproduces PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    atol: float
    used_ema: bool
    weights_entry: str
    spec: GeneratorSpec
    metadata: dict[str, str]
    checked_shapes: tuple[tuple[int, ...], ...]


def _state_file(checkpoint: Path) -> Path | None:
    """The ``state.pt`` that belongs to ``checkpoint`` (a folder, its ``generator.pt`` or itself)."""
    if checkpoint.is_dir():
        path = checkpoint / STATE_FILE
    else:
        path = checkpoint if checkpoint.name == STATE_FILE else checkpoint.with_name(STATE_FILE)
    return path if path.is_file() else None


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem: say which file
        raise ExportInputError(f"{path}: cannot load the checkpoint state: {exc}") from None
    return state if isinstance(state, dict) else {}


def load_export_source(checkpoint: str | Path, ema: bool = True) -> ExportSource:
    """The SR generator at ``checkpoint`` (what ``csrgan upscale`` accepts), EMA weights when present.

    Raises :class:`ExportInputError` when there is no SR generator there, or the EMA entry does not
    fit the generator's spec.
    """
    path = Path(checkpoint)
    try:
        model, spec = load_with_spec(path, "sr")
    except (FileNotFoundError, ValueError) as exc:
        raise ExportInputError(str(exc)) from None
    state_file = _state_file(path)
    state = _read_state(state_file) if state_file is not None else {}
    export = state.get("export") if isinstance(state.get("export"), Mapping) else {}
    net = str(export.get("net", "G"))  # what generator.pt holds: "G_ema" for an SR stage with sr.ema
    nets = state.get("nets") if isinstance(state.get("nets"), Mapping) else {}
    raw_net = net.removesuffix(EMA_SUFFIX)
    ema_net = raw_net + EMA_SUFFIX
    want = ema_net if ema and ema_net in nets else raw_net if not ema and raw_net in nets else net
    from_file = path.name == GENERATOR_FILE or (path.is_dir() and (path / GENERATOR_FILE).is_file())
    entry = GENERATOR_FILE if from_file and want == net else f"nets/{want}"
    if want != net:
        try:
            model.load_state_dict(nets[want], strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ExportInputError(
                f"{state_file}: nets[{want!r}] does not fit the generator spec {spec}: {exc}"
            ) from None
    stage = state.get("stage", spec.meta.get("stage"))
    step = state.get("step", spec.meta.get("step"))
    return ExportSource(
        model=model.eval().requires_grad_(False),
        spec=spec,
        used_ema=want == ema_net,
        weights_entry=entry,
        stage=None if stage is None else str(stage),
        step=None if step is None else int(step),
    )


def export_metadata(source: ExportSource) -> dict[str, str]:
    """The string metadata every exported file carries (safetensors header / ONNX ``metadata_props``)."""
    meta = {
        "format": EXPORT_FORMAT,
        "csrgan_version": csrgan.__version__,
        "torch_version": torch.__version__,
        "spec": json.dumps(source.spec.to_json(), sort_keys=True),
        "role": source.spec.role,
        "type": source.spec.type,
        "scale": str(source.spec.scale),
        "weights": "ema" if source.used_ema else "raw",
        "weights_entry": source.weights_entry,
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W), RGB in [0, 1]",
        "output": f"{OUTPUT_NAME}: float32 (N, 3, {source.spec.scale}*H, {source.spec.scale}*W), RGB ~[0, 1]",
    }
    if source.stage is not None:
        meta["stage"] = source.stage
    if source.step is not None:
        meta["step"] = str(source.step)
    return meta


def _check_images() -> list[torch.Tensor]:
    """Seeded uniform [0, 1] images of :data:`CHECK_SHAPES` (the same ones on every call)."""
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(shape, generator=gen) for shape in CHECK_SHAPES]


def _max_abs_diff(run: Any, model: nn.Module) -> float:
    """Max abs difference of ``run(x) -> np.ndarray`` from ``model(x)`` over the check images."""
    worst = 0.0
    for x in _check_images():
        with torch.no_grad():
            want = model(x).numpy()
        with torch.no_grad():
            got = np.asarray(run(x))
        if got.shape != want.shape:
            raise ExportFailedError(
                f"the exported generator maps {tuple(x.shape)} to {got.shape}, PyTorch to {want.shape}"
            )
        worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()))
    return worst


def check_onnx(path: str | Path, model: nn.Module) -> float:
    """Max abs difference of the ONNX file ``path`` (onnxruntime, CPU) from ``model`` on the check images."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _max_abs_diff(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0], model)


def _write_onnx(model: nn.Module, path: Path, meta: Mapping[str, str]) -> None:
    example = torch.rand(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (deprecations inside torch/onnxscript)
            program = torch.onnx.export(
                model,
                (example,),
                None,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dict(_DYNAMIC_AXES),),
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; keep its message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportFailedError(f"torch.onnx.export could not export the generator: {first}") from exc
    assert program is not None
    program.model.metadata_props.update(meta)
    program.save(str(path), external_data=False)


def _write_safetensors(model: nn.Module, path: Path, meta: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=dict(meta))


def load_safetensors_generator(path: str | Path) -> tuple[nn.Module, GeneratorSpec, dict[str, str]]:
    """(generator, spec, metadata) from a ``.safetensors`` file written by :func:`export_generator`:
    the network is built from the spec in the file's metadata, its weights loaded strictly."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ExportInputError(f"{path}: not a readable safetensors file: {exc}") from None
    if meta.get("format") != EXPORT_FORMAT or "spec" not in meta:
        raise ExportInputError(f"{path}: not a csrgan export (metadata format {meta.get('format')!r})")
    spec = GeneratorSpec.from_json(json.loads(meta["spec"]), str(path))
    model = build_generator(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportInputError(f"{path}: weights do not match the spec in its metadata: {exc}") from None
    return model.eval().requires_grad_(False), spec, meta


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """``generator.<fmt>`` beside the checkpoint's weights (inside the ``final/`` or step folder)."""
    p = Path(checkpoint)
    return (p if p.is_dir() else p.parent) / f"generator.{fmt}"


def _check_arguments(fmt: str, atol: float) -> None:
    if fmt not in FORMATS:
        raise ExportInputError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not (math.isfinite(atol) and atol >= 0):
        raise ExportInputError(f"atol must be a finite number >= 0, got {atol}")


def export_generator(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    ema: bool = True,
) -> ExportResult:
    """Export the SR generator at ``checkpoint`` to ``out`` as ``fmt`` (``safetensors`` | ``onnx``).

    ``out``: a file path, or an existing folder (``generator.<fmt>`` goes into it); default
    :func:`default_output`. ``ema``: export ``nets["G_ema"]`` when the checkpoint has one. The file is
    written under a temporary name, loaded back and checked (module docstring); it replaces ``out``
    only when the max abs difference is <= ``atol``, else :class:`ExportFailedError` and nothing is
    written. Bad input raises :class:`ExportInputError`.
    """
    _check_arguments(fmt, atol)
    source = load_export_source(checkpoint, ema=ema)
    target = Path(out) if out is not None else default_output(checkpoint, fmt)
    if target.is_dir():
        target = target / f"generator.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(source)
    part = target.with_name(target.name + ".part")
    try:
        if fmt == "onnx":
            _write_onnx(source.model, part, meta)
            diff = check_onnx(part, source.model)
        else:
            _write_safetensors(source.model, part, meta)
            diff = _max_abs_diff(load_safetensors_generator(part)[0], source.model)
        if not diff <= atol:  # also catches NaN
            raise ExportFailedError(
                f"{fmt} check failed: max abs difference from PyTorch {diff:.3g} > atol {atol:g} "
                f"(on random images {', '.join(map(str, CHECK_SHAPES))}); nothing written to {target}"
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return ExportResult(
        path=target,
        format=fmt,
        max_abs_diff=diff,
        atol=atol,
        used_ema=source.used_ema,
        weights_entry=source.weights_entry,
        spec=source.spec,
        metadata=meta,
        checked_shapes=CHECK_SHAPES,
    )
