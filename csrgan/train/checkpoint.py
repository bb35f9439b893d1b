"""Full training state on disk, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a directory ``step_XXXXXXXX/`` holding ``state.pt``: a plain nested dict of tensors,
numbers, strings, lists and dicts — everything needed to continue bit-for-bit. No pickled objects, so
``weights_only=True`` works and a checkpoint can't run code when loaded. Every stage writes the same
layout (:class:`csrgan.train.loop.TrainLoop` builds it)::

    format      CHECKPOINT_FORMAT
    stage       "cyclegan" | "pretrain" | "gan"
    key         the stage key of the config that wrote it (resuming under another config is refused)
    step        iterations done; the data position too (batches are a function of the step)
    world_size  workers that wrote it (the data shards depend on it)
    metrics     the last report
    nets / optimizers / schedulers   {name: state_dict}
    ranks       per rank: global RNG states (python, numpy, torch CPU/CUDA) + the loop's own extras
    export      {"net": name, "spec": generator spec}: the generator the stage exports
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
CHECKPOINT_FORMAT = "csrgan.checkpoint/v2"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to this run (other stage, config or world size)."""


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


def check_state(state: dict[str, Any], where: Path, stage: str, key: str, world_size: int) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` was written by this stage and config."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{where}: not a {CHECKPOINT_FORMAT} checkpoint (format {state.get('format')!r}); "
            "start in a new output folder"
        )
    if state["stage"] != stage:
        raise CheckpointMismatchError(
            f"{where}: a checkpoint of stage {state['stage']!r}, this run is {stage!r}"
        )
    if state["key"] != key:
        raise CheckpointMismatchError(
            f"{where}: written by a different {stage} configuration (stage key {state['key']} != {key}); "
            "resume with the original config or start in a new output folder"
        )
    if state["world_size"] != world_size:
        raise CheckpointMismatchError(
            f"{where}: written by {state['world_size']} worker(s), this run has {world_size}; "
            "the data shards differ, so it cannot continue exactly"
        )
