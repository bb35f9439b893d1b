"""Generator artefacts: the one on-disk format for a trained generator, its spec, and building from it.

Every stage exports one generator into its ``final/`` folder (the CycleGAN's ``G: X -> Y``, the SR
stages' SRResNet):

* ``generator.pt`` — the state dict (CPU tensors), loaded with ``torch.load(weights_only=True)``;
* ``generator.json`` — the :class:`GeneratorSpec`: which registry (``role``), which registered
  network (``type``) with which arguments (``args``), the data ``scale`` it was trained for, and free
  ``meta`` (stage key, step, seed).

A checkpoint folder (``state.pt``, :mod:`csrgan.train.checkpoint`) can be read as a generator too:
it carries the same spec under ``export`` and the weights under ``nets``. Building goes through the
registries, with the arguments csrgan injects (RGB channels, the scale) added here, so a trainer and a
loader build exactly the same network from the same spec.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from csrgan.registry import DEGRADATION_GENERATORS, SR_GENERATORS, Registry

__all__ = [
    "GENERATOR_CONFIG_FILE",
    "GENERATOR_FILE",
    "GeneratorSpec",
    "build_generator",
    "load_generator",
    "load_with_spec",
    "read_generator",
    "save_generator",
]

GENERATOR_FILE = "generator.pt"
GENERATOR_CONFIG_FILE = "generator.json"
STATE_FILE = "state.pt"
FORMAT = "csrgan.generator/v2"

Role = Literal["sr", "degradation"]
#: role -> (registry, what the role means). SR generators upscale by ``scale``; degradation generators
#: map an LR image to an LR image of the same size.
_ROLES: dict[str, tuple[Registry, str]] = {
    "sr": (SR_GENERATORS, "an SR generator (LR -> HR)"),
    "degradation": (DEGRADATION_GENERATORS, "a degradation generator (bicubic LR -> real-like LR)"),
}


@dataclass(frozen=True)
class GeneratorSpec:
    """What ``generator.json`` holds: enough to rebuild the network before loading its weights."""

    role: Role
    type: str
    args: dict[str, Any]
    scale: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> GeneratorSpec:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(
                f"{source}: not a csrgan {FORMAT} generator spec (format {got!r}); artefacts of csrgan "
                "0.1 cannot be read by this version: retrain the stage"
            )
        missing = sorted({"role", "type", "args", "scale"} - set(data))
        if missing:
            raise ValueError(f"{source}: generator spec lacks {missing}")
        if data["role"] not in _ROLES:
            raise ValueError(f"{source}: unknown generator role {data['role']!r}; known: {sorted(_ROLES)}")
        meta = dict(data.get("meta", {}))
        return cls(data["role"], data["type"], dict(data["args"]), int(data["scale"]), meta)


def _injected(spec: GeneratorSpec) -> dict[str, Any]:
    """The arguments csrgan fills in: RGB in and out, and the SR scale."""
    if spec.role == "sr":
        return {"in_ch": 3, "scale": spec.scale}
    return {"in_ch": 3, "out_ch": 3}


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """A freshly initialised network for ``spec`` (the registry's constructor with ``spec.args``)."""
    registry, _ = _ROLES[spec.role]
    try:
        return registry.build(spec.type, **spec.args, **_injected(spec))
    except TypeError as exc:
        raise ValueError(f"generator spec {spec}: arguments do not fit {spec.type!r}: {exc}") from None


def save_generator(directory: str | Path, generator: nn.Module, spec: GeneratorSpec) -> Path:
    """Write ``generator.pt`` + ``generator.json`` into ``directory`` (created); returns it.

    ``generator`` may be DDP-wrapped. The weights are checked against the spec before anything is
    written, so a mismatched pair never reaches disk.
    """
    directory = Path(directory)
    plain = getattr(generator, "module", generator)
    state = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
    try:
        build_generator(spec).load_state_dict(state)  # strict
    except RuntimeError as exc:
        raise ValueError(f"save_generator({directory}): the weights do not fit {spec}: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    torch.save(state, tmp)
    tmp.replace(directory / GENERATOR_FILE)
    text = json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n"
    (directory / GENERATOR_CONFIG_FILE).write_text(text, encoding="utf-8")
    return directory


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def _load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem: say which file
        raise ValueError(f"{path}: cannot load generator weights: {exc}") from exc


def read_generator(path: str | Path) -> tuple[dict[str, torch.Tensor], GeneratorSpec]:
    """(state dict, spec) from a ``final/`` folder, a ``generator.pt`` file or a checkpoint folder."""
    p = Path(path)
    if p.is_dir() and (p / GENERATOR_FILE).is_file():
        p = p / GENERATOR_FILE
    if p.is_file() and p.name != STATE_FILE:
        config = p.with_name(GENERATOR_CONFIG_FILE)
        if not config.is_file():
            raise FileNotFoundError(f"{p}: its spec {config} is missing")
        return _load_tensors(p), GeneratorSpec.from_json(_read_json(config), str(config))
    state_file = p / STATE_FILE if p.is_dir() else p
    if state_file.is_file():
        state = _load_tensors(state_file)
        export = state.get("export") if isinstance(state, dict) else None
        if not isinstance(export, dict):
            raise ValueError(f"{state_file}: not a csrgan checkpoint with an exported generator")
        return state["nets"][export["net"]], GeneratorSpec.from_json(export["spec"], str(state_file))
    raise FileNotFoundError(
        f"no generator at {p}: expected a folder with {GENERATOR_FILE} + {GENERATOR_CONFIG_FILE} (a stage's "
        f"final/), a {GENERATOR_FILE} file, or a checkpoint folder with {STATE_FILE}"
    )


def load_with_spec(
    path: str | Path, role: Role, device: str | torch.device = "cpu", scale: int | None = None
) -> tuple[nn.Module, GeneratorSpec]:
    """:func:`load_generator`, and the spec it was built from."""
    state, spec = read_generator(path)
    if spec.role != role:
        raise ValueError(f"{path}: holds {_ROLES[spec.role][1]}, but {_ROLES[role][1]} is needed here")
    if scale is not None and spec.scale != int(scale):
        raise ValueError(
            f"{path}: the generator was trained for x{spec.scale}, not x{scale} (scale {scale} was asked for)"
        )
    model = build_generator(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match its spec {spec}: {exc}") from None
    return model.to(device).eval().requires_grad_(False), spec


def load_generator(
    path: str | Path, role: Role, device: str | torch.device = "cpu", scale: int | None = None
) -> nn.Module:
    """The trained generator at ``path``: built from its spec, weights loaded strictly, eval mode, frozen.

    ``role`` must match (an SR model is not a degradation model); with ``scale``, so must the data
    scale it was trained for (a G trained on x2 LR does not make x4 LR real-like).
    """
    return load_with_spec(path, role, device, scale)[0]
