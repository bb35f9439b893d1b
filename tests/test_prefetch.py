"""IterationSampler's prefetch thread: the batches it builds are the synchronous ones, bit for bit;
jumps fall back to a synchronous read; its errors reach the reader; the thread never outlives the sampler."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from csrgan.data.datasets import PairedPatchDataset, PipelineLR
from csrgan.data.degradations import default_pipeline
from csrgan.data.io import write_image
from csrgan.train.sampling import PREFETCH_THREAD_PREFIX, IterationSampler, _openmp_runtimes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefetch") / "HR"
    for i, (h, w) in enumerate([(64, 80), (72, 56), (96, 64)]):
        write_image(root / f"{i:04d}.png", np.random.default_rng(i).integers(0, 256, (h, w, 3), np.uint8))
    return root


def _dataset(hr_dir: Path, mix_prob: float = 0.5) -> PairedPatchDataset:
    """Bicubic and on-the-fly pipeline LR mixed per sample: both paths of the dataset in one batch."""
    alt = PipelineLR(default_pipeline(), 4)
    return PairedPatchDataset(hr_dir, patch_size=32, cache=True, length=7, seed=3, alt=alt, mix_prob=mix_prob)


class _Recording:
    """Wraps a dataset; records ``(thread name, epoch, index)`` of every item read."""

    def __init__(self, inner: Any, fail_at: tuple[int, int] | None = None, delay_s: float = 0.0) -> None:
        self.inner, self.fail_at, self.delay_s = inner, fail_at, delay_s
        self.calls: list[tuple[str, int, int]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.calls.append((threading.current_thread().name, self.inner.epoch, index))
        if (self.inner.epoch, index) == self.fail_at:
            raise ValueError(f"broken sample: epoch {self.inner.epoch} index {index}")
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner[index]


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(PREFETCH_THREAD_PREFIX) and t.is_alive()]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _built_on_thread(ds: _Recording, sampler: IterationSampler, step: int) -> set[str]:
    """Names of the threads that read the items of ``step``'s batch (by its (epoch, index) list)."""
    want = set(sampler.batch(step))
    return {name for name, e, i in ds.calls if (e, i) in want}


def test_prefetched_batches_equal_the_synchronous_ones(hr_dir: Path) -> None:
    sync = IterationSampler(7, 3, seed=5, prefetch=False)
    pre = IterationSampler(7, 3, seed=5, prefetch=True)
    ds_sync, ds_pre = _dataset(hr_dir), _Recording(_dataset(hr_dir))
    alts = 0
    for step in range(20):
        a, b = sync.read(ds_sync, step), pre.read(ds_pre, step)
        _assert_same(a, b)
        alts += int(b["alt"].sum())
    assert 0 < alts < 60  # both LR sources were in the compared batches
    # after the first read, every batch was built on the prefetch thread, none in the caller
    by_main = {(e, i) for name, e, i in ds_pre.calls if name == threading.current_thread().name}
    assert by_main == set(pre.batch(0))
    assert all(name.startswith(PREFETCH_THREAD_PREFIX) for name, _, _ in ds_pre.calls[len(by_main) :])
    pre.close()
    assert not _prefetch_threads()


def test_a_jump_reads_synchronously_then_prefetches_from_there(hr_dir: Path) -> None:
    sync = IterationSampler(7, 3, seed=1, rank=1, world_size=2, prefetch=False)
    pre = IterationSampler(7, 3, seed=1, rank=1, world_size=2, prefetch=True)
    ds_sync, ds_pre = _dataset(hr_dir), _Recording(_dataset(hr_dir))
    main = threading.current_thread().name
    for step in [0, 1, 2, 50, 51, 52, 3, 3, 4, 0]:
        _assert_same(sync.read(ds_sync, step), pre.read(ds_pre, step))
    assert _built_on_thread(ds_pre, pre, 50) == {main}  # the jump: read in the caller
    assert all(n.startswith(PREFETCH_THREAD_PREFIX) for n in _built_on_thread(ds_pre, pre, 51))
    # step 3 twice: the second read is a jump back (the thread had step 4 queued), still correct
    pre.close()


def test_ahead_false_queues_nothing(hr_dir: Path) -> None:
    ds = _Recording(_dataset(hr_dir))
    pre = IterationSampler(7, 3, seed=0, prefetch=True)
    pre.read(ds, 0, ahead=False)
    time.sleep(0.5)  # time enough for a queued batch to be built
    assert {name for name, _, _ in ds.calls} == {threading.current_thread().name} and len(ds.calls) == 3
    pre.close()


def test_another_dataset_at_the_next_step_is_not_served_the_prefetched_batch(hr_dir: Path) -> None:
    pre, sync = IterationSampler(7, 3, seed=2, prefetch=True), IterationSampler(7, 3, seed=2, prefetch=False)
    ds_a, ds_b = _dataset(hr_dir, mix_prob=0.0), _dataset(hr_dir, mix_prob=1.0)
    pre.read(ds_a, 0)  # queues step 1 of ds_a
    got = pre.read(ds_b, 1)
    _assert_same(got, sync.read(ds_b, 1))
    assert bool(got["alt"].all())
    pre.close()


def test_an_error_while_prefetching_is_raised_by_the_read_of_that_batch(hr_dir: Path) -> None:
    probe = IterationSampler(7, 3, seed=4, prefetch=False)
    broken = probe.batch(5)[1]  # (epoch, index) of slot 1 at step 5
    ds = _Recording(_dataset(hr_dir), fail_at=broken)
    pre = IterationSampler(7, 3, seed=4, prefetch=True)
    for step in range(5):
        if broken not in probe.batch(step):
            pre.read(ds, step)
    with pytest.raises(ValueError, match=f"broken sample: epoch {broken[0]} index {broken[1]}") as info:
        pre.read(ds, 5)
    assert any(frame.name == "__getitem__" for frame in info.traceback)  # the dataset's own frame
    (failed_on,) = {n for n, e, i in ds.calls if (e, i) == broken}
    assert failed_on.startswith(PREFETCH_THREAD_PREFIX)  # it failed in the thread, first
    # the reader may go on elsewhere; the failed batch is not cached
    _assert_same(pre.read(ds, 8), probe.read(_dataset(hr_dir), 8))
    with pytest.raises(ValueError, match="broken sample"):
        pre.read(ds, 5)  # synchronously this time, same error
    pre.close()


def test_an_error_in_a_batch_nobody_reads_is_not_raised(hr_dir: Path) -> None:
    probe = IterationSampler(7, 3, seed=4, prefetch=False)
    ds = _Recording(_dataset(hr_dir), fail_at=probe.batch(1)[0])
    pre = IterationSampler(7, 3, seed=4, prefetch=True)
    pre.read(ds, 0)  # prefetches step 1, which fails in the thread
    _assert_same(pre.read(ds, 9), probe.read(_dataset(hr_dir), 9))
    pre.close()


def test_close_stops_the_thread_and_later_reads_are_synchronous(hr_dir: Path) -> None:
    ds = _Recording(_dataset(hr_dir))
    pre = IterationSampler(7, 3, seed=0, prefetch=True)
    assert not _prefetch_threads()  # started by the first read, not by the constructor
    pre.read(ds, 0)
    (thread,) = _prefetch_threads()
    pre.close()
    assert not thread.is_alive() and not _prefetch_threads()
    pre.close()  # idempotent
    n = len(ds.calls)
    pre.read(ds, 1)
    assert {name for name, _, _ in ds.calls[n:]} == {threading.current_thread().name}
    assert not _prefetch_threads()


def test_many_samplers_leave_no_thread_behind(hr_dir: Path) -> None:
    ds = _dataset(hr_dir)
    before = threading.active_count()
    for k in range(40):
        s = IterationSampler(7, 3, seed=k, prefetch=True)
        s.read(ds, 0)
        s.read(ds, 1)
        assert len(_prefetch_threads()) == 1  # the previous sampler's thread went with it
    del s
    gc.collect()
    assert not _prefetch_threads()
    assert threading.active_count() == before


@pytest.mark.skipif(not _openmp_runtimes(), reason="no OpenMP runtime found in /proc/self/maps")
def test_the_thread_runs_torch_single_threaded_and_leaves_the_rest_alone(hr_dir: Path) -> None:
    """No second OpenMP team beside the step's (oversubscribed cores); the caller and threads started
    later keep the process's setting."""
    seen: dict[str, int] = {}

    class Probe(_Recording):
        def __getitem__(self, index: int) -> dict[str, Any]:
            seen[threading.current_thread().name] = torch.get_num_threads()
            return super().__getitem__(index)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pre, ds = IterationSampler(7, 3, seed=0, prefetch=True), Probe(_dataset(hr_dir))
        for step in range(3):
            pre.read(ds, step)
        pre.close()
        later: list[int] = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        main = threading.current_thread().name
        assert seen.pop(main) == 2 and set(seen.values()) == {1} and len(seen) == 1
        assert torch.get_num_threads() == 2 and later == [2]
    finally:
        torch.set_num_threads(before)


def test_pop_wait_s_measures_the_time_blocked_in_read(hr_dir: Path) -> None:
    delay = 0.05  # per item, 3 items: 0.15 s to build a batch
    sync = IterationSampler(7, 3, seed=0, prefetch=False)
    assert sync.pop_wait_s() == 0.0
    sync.read(_Recording(_dataset(hr_dir), delay_s=delay), 0)
    assert sync.pop_wait_s() >= 3 * delay
    assert sync.pop_wait_s() == 0.0  # popped
    pre = IterationSampler(7, 3, seed=0, prefetch=True)
    ds = _Recording(_dataset(hr_dir), delay_s=delay)
    pre.read(ds, 0)
    assert pre.pop_wait_s() >= 3 * delay  # the first read is synchronous
    time.sleep(1.0)  # a "step": the thread builds batch 1 meanwhile
    pre.read(ds, 1)
    assert pre.pop_wait_s() < 1.5 * delay  # found built (or nearly): not the 0.15 s build
    pre.close()


def test_a_pickled_sampler_reads_the_same_batches(hr_dir: Path) -> None:
    ds = _dataset(hr_dir)
    pre = IterationSampler(7, 3, seed=6, prefetch=True)
    pre.read(ds, 0)
    copy = pickle.loads(pickle.dumps(pre))
    assert copy.prefetch and copy.pop_wait_s() == 0.0
    for step in (1, 2, 3):
        _assert_same(copy.read(ds, step), pre.read(ds, step))
    copy.close()
    pre.close()


def test_a_forked_child_starts_its_own_thread(hr_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fork only the forking thread exists: the sampler must not wait on the parent's (faked
    here by changing the recorded pid, as a real fork would look from the child)."""
    ds, sync = _dataset(hr_dir), IterationSampler(7, 3, seed=8, prefetch=False)
    pre = IterationSampler(7, 3, seed=8, prefetch=True)
    pre.read(ds, 0)
    old = pre._worker
    assert old is not None
    monkeypatch.setattr(old, "pid", -1)
    _assert_same(pre.read(ds, 1), sync.read(ds, 1))
    assert pre._worker is not old and pre._worker is not None
    monkeypatch.undo()  # back in the "parent": its close() joins the old thread
    old.close()
    pre.close()
    assert not _prefetch_threads()


@pytest.mark.slow
def test_the_interpreter_exits_with_a_prefetch_in_flight(hr_dir: Path) -> None:
    """No close(): the finalizer runs at exit and waits only for the batch being built."""
    code = f"""
import time, threading
from pathlib import Path
from csrgan.data.datasets import PairedPatchDataset
from csrgan.train.sampling import IterationSampler

class Slow(PairedPatchDataset):
    def __getitem__(self, index):
        time.sleep(0.2)
        return super().__getitem__(index)

ds = Slow(Path({str(hr_dir)!r}), patch_size=32, length=7, seed=0)
s = IterationSampler(7, 3, seed=0, prefetch=True)
s.read(ds, 0)  # now building step 1 (0.6 s) in the thread
print("threads", sum(t.name.startswith("csrgan-prefetch") for t in threading.enumerate()), flush=True)
"""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "threads 1" in out.stdout
    assert "Exception" not in out.stderr and "Traceback" not in out.stderr
    assert time.perf_counter() - t0 < 60
