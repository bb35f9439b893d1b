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

**Prefetch.** Because the batch of step ``s + 1`` is known as soon as step ``s`` is read,
:meth:`IterationSampler.read` hands the next batch to a background thread and returns; the next
``read(dataset, s + 1)`` usually finds it built, so data loading overlaps the optimisation step. A read
of any other step (a resume, random access, another dataset) waits for the thread to go idle, builds
that batch synchronously and prefetches from there. The batch is the same either way (the same
:func:`make_batch` of the same ``(epoch, index)`` list; ``tests/test_prefetch.py`` checks bit
equality), and an exception raised while prefetching is raised by the ``read`` that asks for that batch.

Why a thread and not DataLoader-style worker processes: a batch here is a few milliseconds of numpy on
small patches (tens with an on-the-fly degradation pipeline), next to a step of tenths of a second, so
one batch ahead on one thread hides it; processes would each hold their own copy of the decoded
images (per rank under DDP), pay pickling of every batch and a start-up per sampler, and need the
dataset to be picklable. ``benchmarks/train_phase.py`` measures both (its bare loop is a
``DataLoader``). One thread per sampler, never a pool: csrgan's patch datasets carry the epoch as state
(``set_epoch``), so two threads must not read one dataset at once. While a prefetch runs, the dataset
is the thread's: read it only through the sampler (epoch-independent helpers such as
``PairedPatchDataset.pair`` are fine). A dataset must draw its randomness only from its per-sample
streams (never a global RNG), or the thread would make its samples depend on timing.

The thread is a daemon, started by the first :meth:`~IterationSampler.read`, and stopped by
:meth:`~IterationSampler.close`, when the sampler is garbage-collected (``weakref.finalize``, which
also runs at interpreter exit) or in a forked child (which starts its own). It holds no reference to
the sampler, only to the dataset of the batch it is building.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["IterationSampler", "PREFETCH_THREAD_PREFIX", "make_batch"]

#: Name prefix of the prefetch threads (``threading.enumerate()`` finds them: tests, leak checks).
PREFETCH_THREAD_PREFIX = "csrgan-prefetch"
#: How long :meth:`IterationSampler.close` waits for a batch being built before leaving the daemon be.
_CLOSE_TIMEOUT_S = 30.0
_thread_ids = itertools.count()


class _IndexedDataset(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.setflags(write=False)  # cached and shared
    return perm


@lru_cache(maxsize=1)
def _openmp_runtimes() -> tuple[Any, ...]:
    """The OpenMP runtimes loaded in this process (Linux: from ``/proc/self/maps``); () when unknown."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    found = sorted(set(re.findall(r"(/\S*/lib(?:gomp|iomp5|omp)\b[^/\s]*\.so[.\d]*)$", maps, re.M)))
    libs = []
    for path in found:
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            continue
        libs.append(lib)
    return tuple(libs)


def _serial_intra_op() -> None:
    """Run torch's CPU kernels single-threaded in the calling thread only.

    The prefetch thread would otherwise get an OpenMP team of ``torch.get_num_threads()`` threads of
    its own for every kernel above torch's grain size (32768 elements: an HR patch over ~104 px), on
    top of the training step's team: oversubscribed cores for microseconds of copying.
    ``torch.set_num_threads`` cannot do this (it also changes the process-wide default that threads
    started later inherit); OpenMP's ``omp_set_num_threads`` is per thread. torch sets each thread up
    once, on its first kernel; ``get_num_threads`` makes that happen now, so torch does not undo this
    afterwards. Elsewhere (no ``/proc``, another threading backend) this does nothing.
    """
    torch.get_num_threads()
    for lib in _openmp_runtimes():
        lib.omp_set_num_threads(1)


@dataclass(frozen=True)
class _Job:
    """One batch to build: ``make_batch(dataset, indices, epochs)`` for ``step``."""

    step: int
    dataset: _IndexedDataset
    indices: tuple[int, ...]
    epochs: tuple[int, ...]

    def matches(self, step: int, dataset: _IndexedDataset) -> bool:
        return self.step == step and self.dataset is dataset


class _Prefetcher:
    """A daemon thread that builds at most one batch ahead; the sampler's side is :meth:`take`/:meth:`submit`.

    States of the one job: queued (``_job``), being built (``_running``), built (``_done``: the batch or
    the exception). A new :meth:`submit` replaces whatever was queued or built and not taken.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: _Job | None = None
        self._running: _Job | None = None
        self._done: tuple[_Job, dict[str, torch.Tensor] | BaseException] | None = None
        self._closed = False
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._serve, name=f"{PREFETCH_THREAD_PREFIX}-{next(_thread_ids)}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        _serial_intra_op()
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
                self._running = job
            out: dict[str, torch.Tensor] | BaseException
            try:
                out = make_batch(job.dataset, job.indices, job.epochs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
                out = exc
            with self._cv:
                self._running = None
                self._done = (job, out)
                del job, out  # the built batch is referenced by _done only
                self._cv.notify_all()

    def take(self, step: int, dataset: _IndexedDataset) -> dict[str, torch.Tensor] | None:
        """The prefetched batch of ``step`` (waiting for it if queued or being built), or None when it
        was not prefetched; then nothing else is queued and the thread is idle, so the caller may use
        ``dataset``. Raises the exception that building the batch raised."""
        with self._cv:
            while True:
                if self._done is not None and self._done[0].matches(step, dataset):
                    out = self._done[1]
                    self._done = None
                    if isinstance(out, BaseException):
                        raise out
                    return out
                pending = [j for j in (self._job, self._running) if j is not None]
                if not any(j.matches(step, dataset) for j in pending):
                    self._job = None  # not what the caller wants: cancel it, wait for the thread
                    if self._running is None:
                        self._done = None
                        return None
                if not self._thread.is_alive():
                    raise RuntimeError("IterationSampler: the prefetch thread has stopped")
                self._cv.wait()

    def submit(self, job: _Job) -> None:
        with self._cv:
            if self._closed:
                return
            self._job, self._done = job, None
            self._cv.notify_all()

    def close(self) -> None:
        """Stop the thread (after the batch it is building, if any) and drop every batch it holds."""
        with self._cv:
            self._closed = True
            self._job = self._done = None
            self._cv.notify_all()
        if self._thread is not threading.current_thread() and self.pid == os.getpid():
            self._thread.join(_CLOSE_TIMEOUT_S)


class IterationSampler:
    """The indices (and their epochs) each rank reads at each step; stateless, so nothing to checkpoint.

    ``prefetch``: :meth:`read` builds the next step's batch in a background thread (module doc); off,
    every read is synchronous. Either way the batches are identical.

    >>> s = IterationSampler(dataset_len=10, batch_size=2, seed=0, rank=1, world_size=2)
    >>> len(s.batch_indices(0))
    2
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        prefetch: bool = False,
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
        self.prefetch = bool(prefetch)
        self._worker: _Prefetcher | None = None
        self._finalizer: weakref.finalize | None = None
        self._wait_s = 0.0

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

    def read(self, dataset: _IndexedDataset, step: int, ahead: bool = True) -> dict[str, torch.Tensor]:
        """This rank's batch at ``step`` from ``dataset`` (:func:`make_batch` of :meth:`batch`).

        With ``prefetch``, taken from the background thread when it built it, and (unless ``ahead`` is
        False: the caller's last step) the batch of ``step + 1`` is queued there before returning.
        The time spent here adds to :meth:`pop_wait_s`.
        """
        t0 = time.perf_counter()
        try:
            items = self.batch(step)  # validates step
            worker = self._live_worker()
            batch = None if worker is None else worker.take(step, dataset)
            if batch is None:
                batch = make_batch(dataset, [i for _, i in items], [e for e, _ in items])
            if worker is not None and ahead:
                nxt = self.batch(step + 1)
                worker.submit(_Job(step + 1, dataset, tuple(i for _, i in nxt), tuple(e for e, _ in nxt)))
            return batch
        finally:
            self._wait_s += time.perf_counter() - t0

    def pop_wait_s(self) -> float:
        """Seconds the caller spent in :meth:`read` (blocked on data) since the previous call."""
        out, self._wait_s = self._wait_s, 0.0
        return out

    def _live_worker(self) -> _Prefetcher | None:
        """The prefetch thread (started on first use; again in a forked child), or None without prefetch."""
        if not self.prefetch:
            return None
        if self._worker is not None and self._worker.pid != os.getpid():
            assert self._finalizer is not None
            self._finalizer.detach()  # forked: the parent's thread does not exist here
            self._worker = self._finalizer = None
        if self._worker is None:
            self._worker = _Prefetcher()
            # closes the thread when the sampler is collected, or at exit; holds no reference to self
            self._finalizer = weakref.finalize(self, self._worker.close)
        return self._worker

    def close(self) -> None:
        """Stop the prefetch thread; later reads are synchronous. Idempotent."""
        self.prefetch = False
        if self._finalizer is not None:
            self._finalizer()
        self._worker = self._finalizer = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the thread (a copy starts its own on first read)."""
        state = dict(self.__dict__)
        state["_worker"] = state["_finalizer"] = None
        state["_wait_s"] = 0.0
        return state

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
