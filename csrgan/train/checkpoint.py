"""Full training state on disk, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a directory ``step_XXXXXXXX/`` holding ``state.pt``: a plain nested dict of tensors,
numbers, strings, lists and dicts — everything needed to continue bit-for-bit: model and optimiser
state dicts, schedulers, grad scalers, iteration, RNG states (python, numpy, torch CPU/CUDA, any
explicit generators), image pool and data position. No pickled objects, so ``weights_only=True`` works
and a checkpoint can't run code when loaded.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def save_state(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/state.pt`` atomically (temp file then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    torch.save(state, tmp)
    tmp.replace(directory / STATE_FILE)
    return directory


def load_state(directory: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint state at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def numpy_state(gen: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state with its 128-bit integers as strings (safe for weights_only)."""
    return _ints_to_str(gen.bit_generator.state)


def set_numpy_state(gen: np.random.Generator, state: dict[str, Any]) -> None:
    gen.bit_generator.state = _str_to_ints(state)


def capture_rng() -> dict[str, Any]:
    """Global RNG states: python ``random``, numpy's legacy global, torch CPU (+ CUDA if present)."""
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _ints_to_str(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _ints_to_str(v) for k, v in obj.items()}
    if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= 2**63:
        return {"__bigint__": str(obj)}
    return obj


def _str_to_ints(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__bigint__"}:
            return int(obj["__bigint__"])
        return {k: _str_to_ints(v) for k, v in obj.items()}
    return obj
