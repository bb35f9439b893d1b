"""Exact resume: the sampler's batches are a function of the step, and a run interrupted after N steps
and continued in a FRESH PROCESS ends bit-for-bit where an uninterrupted run of 2N steps ends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage import data as skdata

from csrgan.config import ExperimentConfig, validate_config
from csrgan.data.io import write_image
from csrgan.train.checkpoint import CheckpointMismatchError, load_state
from csrgan.train.context import LocalContext
from csrgan.train.sampling import IterationSampler, make_batch
from csrgan.train.srgan import train_sr

REPO = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------- sampler
def test_batches_depend_only_on_seed_step_and_rank() -> None:
    a = IterationSampler(50, 4, seed=1, rank=1, world_size=2)
    b = IterationSampler(50, 4, seed=1, rank=1, world_size=2)
    assert [b.batch_indices(s) for s in (9, 3, 0)] == [a.batch_indices(s) for s in (9, 3, 0)]  # any order
    assert a.batch_indices(3) != IterationSampler(50, 4, seed=2, rank=1, world_size=2).batch_indices(3)
    assert a.batch_indices(3) != a.batch_indices(4)


def test_ranks_take_disjoint_shards_covering_each_epoch_once() -> None:
    n, bs, world = 24, 3, 2
    samplers = [IterationSampler(n, bs, seed=0, rank=r, world_size=world) for r in range(world)]
    steps_per_epoch = n // (bs * world)
    for epoch in range(3):
        seen = [
            i
            for s in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
            for smp in samplers
            for i in smp.batch_indices(s)
        ]
        assert sorted(seen) == list(range(n)), f"epoch {epoch} is a permutation"
        assert all(e == epoch for smp in samplers for e in smp.batch_epochs(epoch * steps_per_epoch))
    # epochs are shuffled differently
    assert samplers[0].batch_indices(0) != samplers[0].batch_indices(steps_per_epoch)


def test_batches_may_straddle_epochs_and_tiny_datasets_work() -> None:
    s = IterationSampler(3, 4, seed=0)
    items = s.batch(0) + s.batch(1) + s.batch(2)  # 12 samples = 4 epochs of 3
    assert [e for e, _ in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for epoch in range(4):
        assert sorted(i for e, i in items if e == epoch) == [0, 1, 2]
    assert s.epoch_at(3) == 4.0


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank 2 is not < world_size 2"):
        IterationSampler(10, 2, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="dataset_len"):
        IterationSampler(0, 2, seed=0)
    with pytest.raises(ValueError, match="step"):
        IterationSampler(10, 2, seed=0).batch_indices(-1)


class _EpochDataset:
    """Item = f(epoch, index), like csrgan's patch datasets."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.full((2,), float(10 * self.epoch + i)), "index": i}


def test_make_batch_sets_each_items_epoch_and_stacks() -> None:
    s = IterationSampler(3, 4, seed=0)
    batch = make_batch(_EpochDataset(), s.batch_indices(0), s.batch_epochs(0))
    assert batch["x"].shape == (4, 2) and batch["index"].dtype == torch.int64
    expected = [10 * e + i for e, i in s.batch(0)]
    assert batch["x"][:, 0].tolist() == expected


def test_paired_patches_are_a_function_of_the_step(tmp_path: Path) -> None:
    from csrgan.data.datasets import PairedPatchDataset

    make_images(tmp_path)
    ds1 = PairedPatchDataset(tmp_path / "train", scale=4, patch_size=32, seed=5)
    ds2 = PairedPatchDataset(tmp_path / "train", scale=4, patch_size=32, seed=5)
    s = IterationSampler(len(ds1), 3, seed=5)
    late = make_batch(ds1, s.batch_indices(7), s.batch_epochs(7))
    for step in range(7):  # a different history before step 7 ...
        make_batch(ds2, s.batch_indices(step), s.batch_epochs(step))
    again = make_batch(ds2, s.batch_indices(7), s.batch_epochs(7))
    assert torch.equal(late["hr"], again["hr"]) and torch.equal(late["lr"], again["lr"])  # ... same batch


# ------------------------------------------------------------------------------------- exact resume
def make_images(root: Path) -> None:
    astro = skdata.astronaut()
    for i in range(4):
        tile = np.ascontiguousarray(astro[100 + 64 * i : 164 + 64 * i, 150:214])
        write_image(root / "train" / f"{i}.png", tile)


def resume_config(root: Path, phase: str, n: int) -> ExperimentConfig:
    """2N iterations, a checkpoint every N; 1 thread so every process computes identically."""
    iters = {"iters": 2 * n, "lr": 1e-3}
    return validate_config(
        {
            "name": "resume",
            "seed": 11,
            "data": {"train_hr": str(root / "train"), "scale": 4},
            "sr": {
                "generator": {"channels": 8, "n_blocks": 1},
                "discriminator": {"channels": 8},
                "mix_prob": 0.0,
                "pretrain": iters if phase == "pretrain" else {"iters": 0},
                "gan": {**iters, "content": {"type": "vgg"}, "pixel_weight": 0.1}
                if phase == "gan"
                else {"iters": 0},
                "batch_size": 3,  # 4 images: batches straddle epochs
                "patch_size": 32,
                "eval_every": 1,  # an event every step: reports between steps must not perturb anything
                "checkpoint_every": n,
            },
            "weights": {"random_vgg": True},  # explicit: no pretrained VGG offline
            "resources": {"threads_per_worker": 1},
        }
    )


class _Crash(Exception):
    pass


class CrashAfterCheckpoint(LocalContext):
    """Dies (like a killed worker) right after the checkpoint of ``crash_at`` has been persisted."""

    crash_at: int = 0

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if checkpoint_dir is not None and metrics["step"] == self.crash_at:
            raise _Crash


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from csrgan.config import validate_config
    from csrgan.train.context import LocalContext
    from csrgan.train.srgan import train_sr

    cfg = validate_config(json.loads(Path(sys.argv[1]).read_text()))
    ctx = LocalContext(Path(sys.argv[2]))
    assert ctx.latest_checkpoint() is not None, "nothing to resume from"
    result = train_sr(cfg, ctx, sys.argv[3])
    print("RESUMED_FROM", ctx.reports[0]["step"] - 1, "TO", result["step"])
    """
)


def _assert_identical(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, Mapping):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("phase", ["pretrain", "gan"])
def test_interrupted_run_resumed_in_a_fresh_process_matches_a_straight_run(
    phase: str, tmp_path: Path
) -> None:
    n = 3
    make_images(tmp_path)
    cfg = resume_config(tmp_path, phase, n)

    straight = LocalContext(tmp_path / "straight")
    train_sr(cfg, straight, phase)  # type: ignore[arg-type]

    broken = CrashAfterCheckpoint(tmp_path / "resumed")
    broken.crash_at = n
    with pytest.raises(_Crash):
        train_sr(cfg, broken, phase)  # type: ignore[arg-type]
    assert not (tmp_path / "resumed" / "final").exists()
    assert broken.latest_checkpoint() is not None and broken.latest_checkpoint().name == "step_00000003"

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(cfg_file), str(tmp_path / "resumed"), phase],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"RESUMED_FROM {n} TO {2 * n}" in proc.stdout

    a, b = load_state(tmp_path / "straight" / "final"), load_state(tmp_path / "resumed" / "final")
    assert a["step"] == b["step"] == 2 * n
    nets = {"G", "D"} if phase == "gan" else {"G"}
    assert set(a["nets"]) == set(a["optimizers"]) == nets
    for key in ("nets", "optimizers", "schedulers", "ranks"):
        _assert_identical(a[key], b[key], key)
    # the losses the resumed process reported for steps N+1..2N are the straight run's, too
    straight_losses = [{k: v for k, v in r.items() if k.startswith("loss/")} for r in straight.reports[n:]]
    resumed_rows = [
        json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ][n:]
    assert [{k: v for k, v in r.items() if k.startswith("loss/")} for r in resumed_rows] == straight_losses


def test_resuming_a_checkpoint_of_another_phase_is_refused(tmp_path: Path) -> None:
    make_images(tmp_path)
    cfg = resume_config(tmp_path, "pretrain", 1)
    ctx = LocalContext(tmp_path / "run")
    train_sr(cfg, ctx, "pretrain")
    raw = cfg.model_dump(mode="json")
    raw["sr"]["gan"] = {"iters": 2, "content": {"type": "mse"}}
    with pytest.raises(CheckpointMismatchError, match="a checkpoint of stage 'pretrain', this run is 'gan'"):
        train_sr(validate_config(raw), LocalContext(tmp_path / "run"), "gan")


# ---------------------------------------------------------------------------------- two DDP ranks
DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from csrgan.config import validate_config
    from csrgan.train.context import LocalContext, unwrap
    from csrgan.train.srgan import train_sr

    rank, port, cfg_file, out, crash_at, resume_from = sys.argv[1:7]
    rank, crash_at = int(rank), int(crash_at)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    seen = {}

    class DDPContext(LocalContext):
        def __init__(self, out_dir, rank, world_size):
            super().__init__(out_dir)
            self.rank, self.world_size = rank, world_size

        # what RayTrainContext does: DDP per model, GAN-safe options (csrgan.train.ray_train.ddp_kwargs)
        def prepare_model(self, model):
            seen.setdefault("models", []).append(model)
            return DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)

        def report(self, metrics, checkpoint_dir=None):
            super().report(metrics, checkpoint_dir)
            if metrics["step"] == crash_at:
                raise SystemExit(3)  # every rank "dies" at the same event

        def latest_checkpoint(self):
            return Path(resume_from) if resume_from != "-" else None

    ctx = DDPContext(Path(out) / f"rank{rank}", rank=rank, world_size=2)
    cfg = validate_config(json.loads(Path(cfg_file).read_text()))
    result = train_sr(cfg, ctx, "gan")
    torch.save({"G": unwrap(seen["models"][0]).state_dict(), "D": unwrap(seen["models"][1]).state_dict()},
               Path(out) / f"rank{rank}_nets.pt")
    losses = [[r[k] for k in sorted(r) if k.startswith("loss/")] for r in ctx.reports]
    torch.save(losses, Path(out) / f"rank{rank}_losses.pt")
    print("REPORTS", len(ctx.reports), "STEP", result["step"])
    """
)


def _params(nets: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Learned parameters only (no BatchNorm running statistics / counters)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return {n: {k: v for k, v in sd.items() if not k.endswith(buffers)} for n, sd in nets.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(script: Path, cfg_file: Path, out: Path, crash_at: int, resume_from: str) -> list[Any]:
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), port, str(cfg_file), str(out), str(crash_at), resume_from],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        outs.append((p.returncode, stdout, stderr))
    return outs


@pytest.mark.slow
def test_two_ddp_ranks_stay_in_sync_and_resume_exactly(tmp_path: Path) -> None:
    """gloo on loopback, 2 processes: G and D identical on both ranks, per-rank RNG states in the
    checkpoint, and an interrupted 2-rank run resumed from it ends like the straight run. Half the
    training LR comes from the synthetic pipeline: its per-sample draws need no checkpointed state."""
    make_images(tmp_path)
    raw = resume_config(tmp_path, "gan", 2).model_dump(mode="json")
    raw["sr"].update(batch_size=2, eval_every=1000, mix_prob=0.5, lr_source="pipeline")
    raw["sr"]["gan"]["content"] = {"type": "mse"}
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(raw))
    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_SCRIPT)

    straight = _run_two_ranks(script, cfg_file, tmp_path / "straight", crash_at=-1, resume_from="-")
    for code, stdout, stderr in straight:
        assert code == 0, stderr[-3000:]
        assert "REPORTS 2 STEP 4" in stdout  # checkpoint at 2, final at 4: same count on both ranks
    nets = [torch.load(tmp_path / "straight" / f"rank{r}_nets.pt", weights_only=True) for r in range(2)]
    losses = [torch.load(tmp_path / "straight" / f"rank{r}_losses.pt", weights_only=True) for r in range(2)]
    assert len(losses[0]) == 2 and all(len(row) == 6 for row in losses[0])
    assert losses[0] == losses[1], "reported losses are the mean over ranks, the same on every rank"
    # DDP all-reduces gradients, so parameters agree; BatchNorm running stats are per rank (DDP_KWARGS
    # has broadcast_buffers=False), and only rank 0's are checkpointed and used for evaluation.
    _assert_identical(_params(nets[0]), _params(nets[1]), "rank0 vs rank1 parameters")
    assert not torch.equal(
        nets[0]["G"]["blocks.0.body.1.running_mean"], nets[1]["G"]["blocks.0.body.1.running_mean"]
    )
    state = load_state(tmp_path / "straight" / "rank0" / "final")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    # the LR mixing is drawn per sample from (seed, epoch, index): nothing of it is in the checkpoint
    assert [set(r) for r in state["ranks"]] == [{"rng"}, {"rng"}]
    assert not (tmp_path / "straight" / "rank1" / "final").exists(), "only rank 0 writes artefacts"

    crashed = _run_two_ranks(script, cfg_file, tmp_path / "resumed", crash_at=2, resume_from="-")
    assert [c for c, _, _ in crashed] == [3, 3]
    ckpt = tmp_path / "resumed" / "rank0" / "checkpoints" / "step_00000002"
    resumed = _run_two_ranks(script, cfg_file, tmp_path / "resumed", crash_at=-1, resume_from=str(ckpt))
    for code, stdout, stderr in resumed:
        assert code == 0, stderr[-3000:]
        assert "REPORTS 1 STEP 4" in stdout
    for r in range(2):
        a = torch.load(tmp_path / "straight" / f"rank{r}_nets.pt", weights_only=True)
        b = torch.load(tmp_path / "resumed" / f"rank{r}_nets.pt", weights_only=True)
        # rank 0: everything; rank 1: parameters (its running stats restart from rank 0's checkpoint)
        _assert_identical(a if r == 0 else _params(a), b if r == 0 else _params(b), f"rank {r}")
    a, b = (
        load_state(tmp_path / "straight" / "rank0" / "final"),
        load_state(tmp_path / "resumed" / "rank0" / "final"),
    )
    for key in ("optimizers", "ranks"):
        _assert_identical(a[key], b[key], key)
