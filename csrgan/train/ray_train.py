"""Ray Train (Train V2): the worker-group back-end of :mod:`csrgan.train.launch`.

How the pieces fit (see also ``/work/shared/notes/ray-2.60.md``):

* :func:`run_worker_group` runs in the *driver* (a CLI process, a Ray task or a Tune trial). It checks
  that the workers fit the cluster and builds a ``TorchTrainer`` whose ``train_loop_per_worker`` is
  :func:`_worker_entry`, with the stage name, the validated config as JSON, the stage's inputs and an
  optional reporter factory in ``train_loop_config``.
* :func:`_worker_entry` runs once per worker: it validates the config again (workers never trust a
  dict), builds a :class:`RayTrainContext` and calls the stage's loop from the stage table
  (:mod:`csrgan.train.stages`), the same function in-process runs use.
* Layout: Ray's run is ``storage_path=<out_dir>``, ``name="checkpoints"``, so its checkpoints land in
  ``<out_dir>/checkpoints/step_XXXXXXXX`` — where a :class:`csrgan.train.context.LocalContext` puts
  them — and rank 0 writes ``final/``, ``metrics.jsonl`` and ``grids/`` to ``<out_dir>`` directly
  (``<out_dir>`` must be visible to every worker: on a multi-node cluster, shared storage).
* Failures: a worker failure restarts the whole worker group (``FailureConfig(max_failures)``) and
  :meth:`RayTrainContext.latest_checkpoint` hands the newest persisted checkpoint to the loop, which
  continues from it. Running :func:`run_worker_group` again on the same ``out_dir`` resumes the same way
  (Train V2 resumes a run that reuses ``(storage_path, name)``). A checkpoint counts once Ray's
  controller has *registered* it, which happens when it polls the workers (every
  ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, default 2 s): a worker killed right after a report may take
  that checkpoint with it, and the restart then uses the one before.
* Report rate: each worker's result queue holds one report and is drained at those polls, so
  reporting more often than every ~2 s stalls training (fine for ``eval_every``-sized intervals;
  tests lower the interval — the variable is propagated from the driver to the workers).

Loops never import Ray: everything Ray-specific is in this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from csrgan.config import ExperimentConfig, validate_config
from csrgan.train import embedded
from csrgan.train.context import CHECKPOINTS_DIR, ContextBase, ReporterFactory

__all__ = [
    "LOOPBACK_NODE_IP",
    "RayResourceError",
    "RayTrainContext",
    "check_resources",
    "ddp_kwargs",
    "ensure_ray",
    "run_worker_group",
    "worker_threads",
]

#: Node IP for an embedded cluster: 127.0.0.1, so that every Ray server also *listens* on loopback only
#: (see :mod:`csrgan.train.embedded`: Ray keeps this IP as given only while ``EMBEDDED_ENV`` is set).
LOOPBACK_NODE_IP = embedded.NODE_IP


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


def worker_threads(cfg: ExperimentConfig) -> int:
    """Threads for a worker that holds ``resources.cpus_per_worker`` CPUs (or ``threads_per_worker``)."""
    return cfg.resources.threads_per_worker or max(1, int(cfg.resources.cpus_per_worker))


# ------------------------------------------------------------------------------------------- the context
class RayTrainContext(ContextBase):
    """:class:`csrgan.train.context.TrainContext` over ``ray.train``; built inside a Train worker.

    Rank 0 appends each report to ``out_dir/metrics.jsonl`` (as a :class:`LocalContext` does), so a
    run's history lives next to its checkpoints. After a worker failure the rows continue from the
    restored checkpoint's step, i.e. steps between that checkpoint and the failure appear twice.
    """

    def __init__(self, out_dir: Path, reporter: ReporterFactory | None, threads: int) -> None:
        import ray.train
        import ray.train.torch

        tc = ray.train.get_context()
        super().__init__(
            out_dir, tc.get_world_rank(), tc.get_world_size(), ray.train.torch.get_device(), reporter, threads
        )
        self._resume_root: Path | None = None
        self._resume_dir: Path | None = None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to this worker's device; wrap in DDP (with :func:`ddp_kwargs`) when ``world_size > 1``."""
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs())

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        """``ray.train.report`` — a barrier: every rank must call it equally often."""
        import ray.train

        if checkpoint_dir is not None and self.rank != 0:
            raise RuntimeError(f"rank {self.rank} passed a checkpoint to report(); only rank 0 may")
        plain = self._observe(metrics)
        self._log(plain, None if checkpoint_dir is None else Path(checkpoint_dir).name)
        if checkpoint_dir is None:
            ray.train.report(plain)
        else:
            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
            ray.train.report(plain, checkpoint=ckpt, checkpoint_dir_name=Path(checkpoint_dir).name)

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


# ------------------------------------------------------------------------------------------- the cluster
def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to Ray once; returns the cluster's total resources.

    ``address=None`` starts an embedded single-node cluster (:func:`csrgan.train.embedded.start`) that
    stays on loopback: node IP :data:`LOOPBACK_NODE_IP` (127.0.0.1), so GCS, raylet (node and object
    manager), every core worker (driver, tasks, actors, Tune trials, Train workers), the dashboard agent
    (gRPC, HTTP, metrics export), the runtime-env agent and the dashboard's and autoscaler's metrics ports
    all listen on 127.0.0.1, and so does the dashboard (``dashboard_host``; it must stay on, or placement
    groups of stopped trials leak); nothing is disabled. For that, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    is set (unless the user set it) while Ray's processes start, then taken out of ``os.environ`` again.
    A reaper process ends the session's Ray processes once this driver exits, even by SIGKILL (the
    dashboard and runtime-env agents would otherwise listen on for 60 s). Not covered: torch's c10d
    TCPStore in rank 0 of a Ray Train group listens on ``[::]`` (torch has no bind address for it).

    Any other address (``"auto"``, ``"ray://..."``, ``"host:port"``) joins an existing cluster, where
    ``num_cpus`` is an error (the cluster already has its size); nothing above applies to it.
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
            embedded.start(num_cpus)
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


# -------------------------------------------------------------------------------------------- the group
def run_worker_group(
    stage: str,
    cfg: ExperimentConfig,
    out_dir: Path,
    inputs: Mapping[str, Path],
    reporter: ReporterFactory | None = None,
    *,
    max_failures: int = 2,
    callbacks: Sequence[Any] = (),
    address: str | None = None,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Run ``stage`` on ``resources.workers`` Ray Train workers; returns rank 0's last report.

    ``inputs`` must be visible to every worker. ``callbacks`` go to the Train ``RunConfig`` (inside a
    Tune trial: ``TuneReportCallback()``). Ray is started with :func:`ensure_ray` if needed. Raises
    :class:`RayResourceError` before starting when the workers cannot fit, and Ray's
    ``TrainingFailedError`` when the workers failed more than ``max_failures`` times.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    ensure_ray(address, num_cpus)
    check_resources(cfg)
    r = cfg.resources
    use_gpu = r.gpus_per_worker > 0
    resources: dict[str, float] = {
        "CPU": r.cpus_per_worker,
        **({"GPU": r.gpus_per_worker} if use_gpu else {}),
    }
    trainer = TorchTrainer(
        train_loop_per_worker=_worker_entry,
        train_loop_config={
            "stage": stage,
            "cfg": cfg.model_dump(mode="json"),
            "inputs": {k: str(v) for k, v in inputs.items()},
            "out_dir": str(out_dir),
            "reporter": reporter,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=r.placement.upper(),  # resources.placement: "PACK" | "SPREAD"
        ),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS_DIR,
            storage_path=str(out_dir),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )
    return dict(trainer.fit().metrics or {})


def _worker_entry(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: rebuild the config, make the context, run the stage's loop."""
    from csrgan.train.stages import get_stage

    cfg = validate_config(config["cfg"], source=f"train_loop_config[{config['stage']}]")
    ctx = RayTrainContext(Path(config["out_dir"]), config["reporter"], worker_threads(cfg))
    try:
        inputs = {k: Path(v) for k, v in config["inputs"].items()}
        get_stage(config["stage"]).loop(cfg, ctx, inputs)
    finally:
        ctx.close()
