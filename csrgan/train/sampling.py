"""Deterministic, resumable, rank-sharded batch sampling without any DataLoader state.

Why not a ``DataLoader`` + ``DistributedSampler``: their position lives in iterator objects that
cannot be checkpointed, so a resumed run either repeats or skips samples. Here the batch of a
training step is a pure function of ``(seed, step, rank, world_size, batch_size, dataset_len)``:

* The sample stream is an endless concatenation of epoch permutations; epoch ``e`` is
  ``np.random.default_rng([seed, e]).permutation(dataset_len)``.
* Step ``s`` consumes the global stream positions ``[s*G, (s+1)*G)`` with ``G = batch_size *
  world_size``; rank ``r`` takes the contiguous chunk ``[s*G + r*B, s*G + (r+1)*B)``. Within an epoch
  the ranks' samples are disjoint; a batch may straddle an epoch boundary (also when
  ``dataset_len < G``), and each item then carries its own epoch.

The data position of a run is therefore just its step: resuming at step ``s`` reproduces exactly the
batches a straight run would have drawn. Per-sample randomness (crop position, flips) comes from the
dataset: csrgan's patch datasets draw it from ``np.random.default_rng([seed, epoch, index])``, and
:func:`make_batch` sets each item's epoch before reading it, so every sample is a function of
``(seed, step, slot)`` as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["IterationSampler", "make_batch"]


class _IndexedDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.setflags(write=False)  # cached and shared
    return perm


class IterationSampler:
    """The indices (and their epochs) each rank reads at each step; stateless, so nothing to checkpoint.

    >>> s = IterationSampler(dataset_len=10, batch_size=2, seed=0, rank=1, world_size=2)
    >>> len(s.batch_indices(0))
    2
    """

    def __init__(
        self, dataset_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        for name, value, minimum in (
            ("dataset_len", dataset_len, 1),
            ("batch_size", batch_size, 1),
            ("world_size", world_size, 1),
            ("seed", seed, 0),
            ("rank", rank, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"IterationSampler: {name} must be an integer >= {minimum}, got {value!r}")
        if rank >= world_size:
            raise ValueError(f"IterationSampler: rank {rank} is not < world_size {world_size}")
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    @property
    def global_batch(self) -> int:
        """Samples consumed per step over all ranks."""
        return self.batch_size * self.world_size

    def _positions(self, step: int) -> range:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"IterationSampler: step must be an integer >= 0, got {step!r}")
        start = step * self.global_batch + self.rank * self.batch_size
        return range(start, start + self.batch_size)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """``[(epoch, index), ...]`` for this rank at ``step`` (``batch_size`` items)."""
        n = self.dataset_len
        out = []
        for pos in self._positions(step):
            epoch, offset = divmod(pos, n)
            out.append((epoch, int(_epoch_permutation(self.seed, epoch, n)[offset])))
        return out

    def batch_indices(self, step: int) -> list[int]:
        """Dataset indices this rank reads at ``step``; depends only on (seed, step, rank) and the sizes."""
        return [i for _, i in self.batch(step)]

    def batch_epochs(self, step: int) -> list[int]:
        """The epoch of each item of :meth:`batch_indices` (pass to :func:`make_batch`)."""
        return [e for e, _ in self.batch(step)]

    def read(self, dataset: _IndexedDataset, step: int) -> dict[str, torch.Tensor]:
        """This rank's batch at ``step`` from ``dataset`` (:func:`make_batch` of :meth:`batch`)."""
        items = self.batch(step)
        return make_batch(dataset, [i for _, i in items], [e for e, _ in items])

    def epoch_at(self, step: int) -> float:
        """Fractional epochs completed (over all ranks) before ``step``: a monotonic progress counter."""
        return step * self.global_batch / self.dataset_len


def make_batch(
    dataset: _IndexedDataset, indices: Sequence[int], epochs: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Read ``dataset[i]`` for each index and stack the fields into a batch.

    Items are dicts of tensors / numbers (``{"lr": (3,h,w), "hr": (3,H,W), "index": i}``); tensors are
    stacked on a new first axis, numbers become a 1-D tensor. With ``epochs``, ``dataset.set_epoch(e)``
    is called before each item, so a dataset whose per-sample randomness is seeded by
    ``(seed, epoch, index)`` gives the same sample wherever the batch is rebuilt.
    """
    if not indices:
        raise ValueError("make_batch: no indices")
    if epochs is not None:
        if len(epochs) != len(indices):
            raise ValueError(f"make_batch: {len(indices)} indices but {len(epochs)} epochs")
        if not hasattr(dataset, "set_epoch"):
            raise TypeError(f"make_batch: epochs given but {type(dataset).__name__} has no set_epoch()")
    items = []
    for k, i in enumerate(indices):
        if epochs is not None:
            dataset.set_epoch(int(epochs[k]))  # type: ignore[attr-defined]
        item = dataset[int(i)]
        if not isinstance(item, dict):
            raise TypeError(
                f"make_batch: {type(dataset).__name__}[{i}] returned {type(item).__name__}, not dict"
            )
        items.append(item)
    keys = list(items[0])
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise ValueError(f"make_batch: field {key!r} has differing shapes {sorted(shapes)}")
            out[key] = torch.stack(values)
        elif isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        else:
            out[key] = torch.as_tensor(values)
    return out
