"""Run a training stage under Ray Train (Train V2): a :class:`TrainContext` over ``ray.train`` and the driver.

How the pieces fit (see also ``/work/shared/notes/ray-2.60.md``):

* :func:`run_stage` runs in the *driver* (a CLI process, or a Ray Tune trial function). It resolves the
  data paths, checks that the workers fit the cluster, and builds a ``TorchTrainer`` whose
  ``train_loop_per_worker`` is :func:`_worker_entry` and whose ``train_loop_config`` carries the stage
  name, the validated config as JSON and the stage's extra inputs (checkpoint paths).
* :func:`_worker_entry` runs once per worker: it validates the config again (workers never trust a
  dict), builds a :class:`RayTrainContext` and calls the stage's trainer through
  :func:`csrgan.train.run.call_stage` — the same function local runs use.
* Checkpoints: rank 0 hands a ``step_XXXXXXXX`` directory to :meth:`RayTrainContext.report`, Ray copies
  it to ``{storage_path}/{name}/`` and keeps the newest two. A worker failure restarts the whole worker
  group (``FailureConfig(max_failures)``) and :meth:`RayTrainContext.latest_checkpoint` hands the
  newest persisted checkpoint to the trainer, which continues from it. Running :func:`run_stage` again
  with the same ``(storage_path, name)`` resumes the same way (Train V2 resumes automatically).
  A checkpoint counts once Ray's controller has *registered* it, which happens when it polls the
  workers (every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, default 2 s): a worker killed right after a
  report may take that checkpoint with it, and the restart then uses the one before.
* Report rate: each worker's result queue holds one report and is drained at those polls, so
  reporting more often than every ~2 s stalls training (fine for ``eval_every``-sized intervals;
  tests lower the interval — the variable is propagated from the driver to the workers).
* Artefacts that are not checkpoints (``metrics.jsonl``, evaluation grids) go to
  ``{storage_path}/{name}/artifacts`` (:func:`artifact_dir`), written by rank 0 only.

Trainers never import Ray: everything Ray-specific is in this module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from csrgan.config import ExperimentConfig, validate_config
from csrgan.train.context import _jsonable
from csrgan.train.run import ARTIFACTS_DIR, STAGES, RunResult, final_of

__all__ = [
    "RayResourceError",
    "RayTrainContext",
    "artifact_dir",
    "check_resources",
    "ddp_kwargs",
    "ensure_ray",
    "run_stage",
]

#: Node IP for an embedded cluster. Ray rewrites 127.0.0.1 into the machine's external address; any
#: other 127.x.y.z is taken as given, which keeps every connection on loopback (checked with ``ss``).
LOOPBACK_NODE_IP = "127.0.0.2"


def ddp_kwargs() -> dict[str, Any]:
    """DDP options for GAN training, where G and D (and both CycleGAN generators) are wrapped separately.

    * No buffer sync in ``forward`` (``forward_sync_buffers=False``; ``broadcast_buffers=False`` on
      torch versions without it). By default every *forward* of a DDP module broadcasts its buffers
      (BatchNorm running stats) from rank 0. A GAN runs a network several times per step before one
      backward, and the in-place broadcast then invalidates tensors autograd saved ("modified by an
      inplace operation"); it would also turn a rank-0-only forward (evaluation) into a one-sided
      collective, i.e. a hang. Training-mode BatchNorm normalises with batch statistics, so gradients
      do not depend on the running stats; rank 0's are the ones checkpointed and evaluated. Buffers
      are still synced once when DDP wraps the module (all ranks start equal).
    * ``find_unused_parameters=False`` (the default, no per-step graph walk). This relies on the
      trainers' rule that every parameter of a wrapped module gets a gradient in each backward
      through that wrapper: the generator steps call the frozen discriminators *unwrapped*
      (``unwrap(D)(fake)``), so D's reducer never waits for gradients that cannot come. A trainer
      that breaks the rule fails loudly at the next step ("Expected to have finished reduction in
      the prior iteration"), never silently.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    return {**no_sync, "find_unused_parameters": False}


class RayResourceError(RuntimeError):
    """The requested workers can never fit the Ray cluster (Ray itself would retry forever)."""


# ------------------------------------------------------------------------------------------- the context
def _scalar(v: Any) -> Any:
    """Tensors to Python numbers; everything else unchanged (Ray metrics must be plain data)."""
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


@dataclass
class RayTrainContext:
    """:class:`csrgan.train.context.TrainContext` over ``ray.train``; built inside a Train worker.

    ``out_dir`` is this run's artefact folder; only rank 0 writes there. When it is a local staging
    folder for remote storage (``upload_to`` set), rank 0 copies it to storage after every report.
    Rank 0 also appends each report to ``out_dir/metrics.jsonl`` (the same file a :class:`LocalContext`
    writes), so a run's history survives on storage next to its checkpoints. After a worker failure
    the rows continue from the restored checkpoint's step, i.e. steps between that checkpoint and the
    failure appear twice.
    """

    out_dir: Path
    rank: int
    world_size: int
    device: torch.device
    upload_to: str | None = None
    _resume_root: Path | None = field(default=None, repr=False)
    _resume_dir: Path | None = field(default=None, repr=False)
    _t0: float = field(default_factory=time.time, repr=False)
    _uploaded: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_ray(cls, out_dir: str | Path, upload_to: str | None = None) -> RayTrainContext:
        import ray.train
        import ray.train.torch

        tc = ray.train.get_context()
        device = ray.train.torch.get_device()
        out = Path(out_dir)
        if tc.get_world_rank() == 0:
            out.mkdir(parents=True, exist_ok=True)
        return cls(
            out_dir=out,
            rank=tc.get_world_rank(),
            world_size=tc.get_world_size(),
            device=device,
            upload_to=upload_to,
        )

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to this worker's device; wrap in DDP (with :func:`ddp_kwargs`) when ``world_size > 1``."""
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        """``ray.train.report`` — a barrier: every rank must call it equally often."""
        import ray.train

        if checkpoint_dir is not None and self.rank != 0:
            raise RuntimeError(f"rank {self.rank} passed a checkpoint to report(); only rank 0 may")
        plain = {k: _scalar(v) for k, v in metrics.items()}
        if self.rank == 0:
            self._append_metrics(plain, checkpoint_dir)
        if checkpoint_dir is None:
            ray.train.report(plain)
        else:
            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
            ray.train.report(plain, checkpoint=ckpt, checkpoint_dir_name=Path(checkpoint_dir).name)
        if self.rank == 0 and self.upload_to is not None:
            upload_dir(self.out_dir, self.upload_to, self._uploaded)

    def latest_checkpoint(self) -> Path | None:
        """The newest persisted checkpoint (``ray.train.get_checkpoint()``) as a local directory, or None.

        Downloaded once per worker into a temporary folder that keeps the checkpoint's directory name
        (``step_XXXXXXXX``).
        """
        import ray.train

        if self._resume_dir is not None:
            return self._resume_dir
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        self._resume_root = Path(tempfile.mkdtemp(prefix="csrgan-resume-"))
        dest = self._resume_root / Path(ckpt.path).name
        self._resume_dir = Path(ckpt.to_directory(str(dest)))
        return self._resume_dir

    def close(self) -> None:
        """Remove the downloaded resume checkpoint (the persisted one on storage stays)."""
        if self._resume_root is not None:
            shutil.rmtree(self._resume_root, ignore_errors=True)
            self._resume_root = self._resume_dir = None

    def _append_metrics(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None) -> None:
        row = {k: _jsonable(v) for k, v in metrics.items()}
        row.setdefault("wall_s", round(time.time() - self._t0, 3))
        if checkpoint_dir is not None:
            row["checkpoint"] = Path(checkpoint_dir).name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def upload_dir(local: Path, uri: str, seen: dict[str, tuple[int, int]] | None = None) -> None:
    """Copy the files under ``local`` to ``uri`` (``s3://``, ``gs://``, ``file://`` ...) with pyarrow.

    Hidden entries (``.staging/``, ``.ckpt-*``: the trainers' checkpoint staging, which Ray persists
    itself) are skipped. With ``seen`` (path -> (mtime_ns, size), updated in place) files unchanged
    since the last call are not copied again.
    """
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    for path in sorted(Path(local).rglob("*")):
        rel = path.relative_to(local)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if seen is not None:
            if seen.get(rel.as_posix()) == stamp:
                continue
            seen[rel.as_posix()] = stamp
        dest = f"{root.rstrip('/')}/{rel.as_posix()}"
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as src, fs.open_output_stream(dest) as out:
            shutil.copyfileobj(src, out)


# ------------------------------------------------------------------------------------------- the cluster
def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to Ray once; returns the cluster's total resources.

    ``address=None`` starts an embedded single-node cluster that keeps all traffic on loopback (node
    IP :data:`LOOPBACK_NODE_IP`, dashboard on 127.0.0.1; the dashboard must stay on, or placement
    groups of stopped trials leak). Any other address (``"auto"``, ``"ray://..."``, ``"host:port"``)
    joins an existing cluster, where ``num_cpus`` is an error (the cluster already has its size).
    Idempotent: when Ray is already initialised nothing is started and the running cluster is used.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from an embedded or joined driver
    import ray

    if address is not None and num_cpus is not None:
        raise ValueError(
            f"num_cpus={num_cpus} applies only to an embedded cluster, not to address={address!r}"
        )
    if not ray.is_initialized():
        if address is None:
            ray.init(
                address="local",
                _node_ip_address=LOOPBACK_NODE_IP,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                num_cpus=num_cpus,
                log_to_driver=True,
            )
        else:
            ray.init(address=address)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _own_cpus() -> float:
    """CPUs held by the calling Ray task/actor (a Tune trial's driver holds 1); 0 in a plain driver."""
    import ray

    try:
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    except Exception:  # noqa: BLE001 - outside any task (plain driver) there is nothing assigned
        return 0.0


def check_resources(cfg: ExperimentConfig) -> None:
    """Raise :class:`RayResourceError` when ``cfg.resources`` can never be scheduled on this cluster.

    Ray would otherwise loop on a 60 s ``WorkerGroupStartupTimeoutError`` forever. Checked against the
    cluster's *total* resources (another trial using them now is a wait, not an impossibility): the
    caller's own CPUs (a Tune trial function holds one) plus ``workers x cpus_per_worker`` must fit the
    cluster, ``workers x gpus_per_worker`` its GPUs, and one worker must fit a single node.
    """
    import ray

    r = cfg.resources
    total = ray.cluster_resources()
    own = _own_cpus()
    need_cpu = r.workers * r.cpus_per_worker
    have_cpu = float(total.get("CPU", 0.0))
    problems = []
    if need_cpu + own > have_cpu + 1e-9:
        problems.append(
            f"{r.workers} worker(s) x {r.cpus_per_worker} CPU"
            + (f" + {own:g} CPU held by this trial's driver" if own else "")
            + f" = {need_cpu + own:g} CPUs, but the cluster has {have_cpu:g}"
        )
    need_gpu = r.workers * r.gpus_per_worker
    have_gpu = float(total.get("GPU", 0.0))
    if need_gpu > have_gpu + 1e-9:
        problems.append(
            f"{r.workers} worker(s) x {r.gpus_per_worker:g} GPU = {need_gpu:g} GPUs, "
            f"but the cluster has {have_gpu:g}"
        )
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if nodes and not any(
        n.get("CPU", 0.0) >= r.cpus_per_worker and n.get("GPU", 0.0) >= r.gpus_per_worker for n in nodes
    ):
        problems.append(
            f"no single node has {r.cpus_per_worker:g} CPU and {r.gpus_per_worker:g} GPU for one worker"
        )
    if problems:
        raise RayResourceError(
            "resources.workers / cpus_per_worker / gpus_per_worker do not fit the Ray cluster: "
            + "; ".join(problems)
            + ". Lower resources.workers or resources.cpus_per_worker (e.g. --workers 1), or start Ray "
            "with more CPUs/GPUs."
        )


# -------------------------------------------------------------------------------------------- the driver
def _is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def artifact_dir(storage_path: str | Path, name: str) -> str:
    """Where a run's non-checkpoint artefacts live: ``{storage_path}/{name}/artifacts``."""
    if _is_uri(storage_path):
        return f"{str(storage_path).rstrip('/')}/{name}/{ARTIFACTS_DIR}"
    return str(Path(storage_path).expanduser().resolve() / name / ARTIFACTS_DIR)


def run_stage(
    stage: str,
    cfg: ExperimentConfig,
    storage_path: str | Path,
    name: str,
    extra: Mapping[str, Any] | None = None,
    *,
    max_failures: int = 2,
    callbacks: Sequence[Any] = (),
    address: str | None = None,
    num_cpus: int | None = None,
    record: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run ``stage`` (``"cyclegan"``, ``"pretrain"``, ``"gan"``) on ``resources.workers`` Ray Train workers.

    ``extra`` holds the stage inputs passed to :func:`csrgan.train.run.call_stage` (``init_from``: a
    pre-training checkpoint for ``"gan"``; ``cyclegan_g``: a CycleGAN checkpoint when
    ``sr.mix_prob > 0``); paths must be visible to every worker. The same ``(storage_path, name)``
    resumes a previous run from its newest checkpoint. ``callbacks`` go to the Train ``RunConfig``
    (a Tune trial passes ``TuneReportCallback()``); ``record`` makes rank 0 write the trial's Parquet
    rows (see ``csrgan.sweep.trial.recording_context``). Ray is started with :func:`ensure_ray` if needed.
    Raises :class:`RayResourceError` before starting when the workers cannot fit, and Ray's
    ``TrainingFailedError`` when the workers failed more than ``max_failures`` times.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from csrgan.data.layout import resolve_data

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    ensure_ray(address, num_cpus)
    cfg = resolve_data(cfg)
    check_resources(cfg)
    storage = str(storage_path) if _is_uri(storage_path) else str(Path(storage_path).expanduser().resolve())
    if not _is_uri(storage):
        Path(storage).mkdir(parents=True, exist_ok=True)
    r = cfg.resources
    use_gpu = r.gpus_per_worker > 0
    resources: dict[str, float] = {"CPU": r.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = r.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=_worker_entry,
        train_loop_config={
            "stage": stage,
            "cfg": cfg.model_dump(mode="json"),
            "extra": _jsonable_extra(extra or {}),
            "artifacts": artifact_dir(storage, name),
            "record": dict(record) if record else None,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    run_dir = str(result.path)
    artifacts = artifact_dir(storage, name)
    return RunResult(
        stage=stage,
        name=name,
        run_dir=run_dir,
        artifacts=artifacts,
        checkpoint=None if result.checkpoint is None else str(result.checkpoint.path),
        metrics=dict(result.metrics or {}),
        final=None if _is_uri(artifacts) else final_of(Path(artifacts).parent),
    )


def _jsonable_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in extra.items():
        if isinstance(v, Path):
            v = str(v.expanduser().resolve())
        if not isinstance(v, str | int | float | bool | type(None)):
            raise TypeError(f"run_stage extra[{k!r}]: expected a path or plain value, got {type(v).__name__}")
        out[k] = v
    return out


def _worker_entry(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: rebuild the config, make the context, run the stage's trainer."""
    from csrgan.train.run import call_stage

    cfg = validate_config(config["cfg"], source=f"train_loop_config[{config['stage']}]")
    threads = cfg.resources.threads_per_worker or max(1, int(cfg.resources.cpus_per_worker))
    torch.set_num_threads(threads)
    artifacts = config["artifacts"]
    if _is_uri(artifacts):
        staging = Path(tempfile.mkdtemp(prefix="csrgan-artifacts-"))
        ctx = RayTrainContext.from_ray(staging, upload_to=artifacts)
    else:
        ctx = RayTrainContext.from_ray(artifacts)
    run_ctx: Any = ctx
    if config.get("record"):  # a sweep trial: rank 0 records Parquet rows (csrgan.sweep.trial)
        from csrgan.sweep.trial import recording_context

        run_ctx = recording_context(ctx, cfg, config["record"])
    try:
        call_stage(config["stage"], cfg, run_ctx, config["extra"])
    finally:
        ctx.close()
