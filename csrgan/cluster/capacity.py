"""Does one trial fit the cluster? The check the sweep driver runs before ``tuner.fit()``.

Ray waits forever for resources no node has (a ``WorkerGroupStartupTimeoutError`` loop every 60 s), so
the driver refuses a sweep whose single trial cannot fit, naming the ``resources.*`` fields.

A cluster with an autoscaler can grow: a trial that fits none of the nodes up now may still fit a node
type the autoscaler may launch. :func:`cluster_capacity` reads those node types; :func:`trial_fit`
accepts such a trial with a line saying what is waited for, and refuses one that fits no node type.

Where the launchable node types come from (Ray 2.60 has no public API for them):

1. the cluster config in the GCS (``ray._private.state.state.get_cluster_config()``: per node group
   its resources and max count), what Ray Train and Ray Data read; published where the platform
   reports it;
2. otherwise the autoscaler's own config file, read on the head node by a 0-CPU task: the
   ``--autoscaling-config`` of the monitor process of this cluster (``ray start --head
   --autoscaling-config``, the fake multi-node test provider), else ``~/ray_bootstrap_config.yaml``
   (where ``ray up`` puts it). A monitor without a config is Ray's read-only mirror of a fixed cluster.

Nothing found: the cluster is taken as fixed (what is up now). Nothing here imports torch; Ray is
imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from csrgan.config import ExperimentConfig

__all__ = [
    "Capacity",
    "CapacityError",
    "Fit",
    "NodeType",
    "check_fits",
    "cluster_capacity",
    "trial_fit",
    "trial_needs",
]

_HEAD = "node:__internal_head__"


class CapacityError(ValueError):
    """One trial cannot fit the cluster. The message is user-facing."""


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler may launch: resources per node, and how many (``max_workers``)."""

    name: str
    resources: dict[str, float]
    max_workers: int
    min_workers: int = 0

    def describe(self) -> str:
        return f"{self.name} nodes ({_amount(self.resources)} each, up to {self.max_workers})"


@dataclass(frozen=True)
class Capacity:
    """What the cluster has now (``resources``: totals; ``nodes``: per alive node) and, when it can
    grow, the node types the autoscaler may launch (``max_workers``: its cluster-wide cap)."""

    resources: dict[str, float]
    nodes: tuple[dict[str, float], ...] = ()
    node_types: tuple[NodeType, ...] = ()
    max_workers: int | None = None
    source: str = ""

    @property
    def can_grow(self) -> bool:
        return any(t.max_workers > 0 for t in self.node_types)

    def largest(self) -> dict[str, float]:
        """Totals once the autoscaler has launched all it may: the head as up now plus every node
        type at its max (within the cluster-wide cap, in config order); never less than what is up."""
        head = next((n for n in self.nodes if n.get(_HEAD)), {})
        total = {k: float(v) for k, v in head.items()}
        left = self.max_workers if self.max_workers is not None else math.inf
        for t in self.node_types:
            n = int(min(t.max_workers, left))
            left -= n
            for k, v in t.resources.items():
                total[k] = total.get(k, 0.0) + v * n
        return {k: max(v, self.resources.get(k, 0.0)) for k, v in {**self.resources, **total}.items()}


@dataclass(frozen=True)
class Fit:
    """How many trials may run at once (``slots`` >= 1), and a line for the user (``message``; None
    when there is nothing to say: a fixed cluster that fits)."""

    slots: int
    message: str | None = None
    waiting: bool = False  # True: no node up now fits a trial; the autoscaler must add one


def trial_needs(cfg: ExperimentConfig) -> tuple[float, float]:
    """(CPUs, GPUs) one trial takes: its workers, plus 1 CPU for the trial driver of a worker group."""
    r = cfg.resources
    return r.cpus_per_worker * r.workers + (1.0 if r.workers > 1 else 0.0), r.gpus_per_worker * r.workers


def _bundles(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """What one trial asks Ray for, each a unit that must land on one node (see the driver's
    ``trial_resources``): a 1-worker trial is one bundle; an N-worker one is a 1-CPU driver + N."""
    r = cfg.resources
    worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    return [worker] if r.workers == 1 else [{"CPU": 1.0, "GPU": 0.0}] + [worker] * r.workers


def _amount(res: Mapping[str, float], gpu: bool = False) -> str:
    """``2 CPU`` / ``4 CPU, 1 GPU``: GPUs when there are any (or ``gpu``)."""
    n_gpu = res.get("GPU", 0.0)
    return f"{res.get('CPU', 0.0):g} CPU" + (f", {n_gpu:g} GPU" if n_gpu or gpu else "")


def _needs_text(cfg: ExperimentConfig) -> str:
    r = cfg.resources
    need_cpu, need_gpu = trial_needs(cfg)
    return (
        f"one trial needs {need_cpu:g} CPU and {need_gpu:g} GPU "
        f"(resources.workers={r.workers} × cpus_per_worker={r.cpus_per_worker:g}, gpus_per_worker="
        f"{r.gpus_per_worker:g}{', plus 1 CPU for the trial driver' if r.workers > 1 else ''})"
    )


def _slots(cfg: ExperimentConfig, total: Mapping[str, float]) -> int:
    need_cpu, need_gpu = trial_needs(cfg)
    fits = int(total.get("CPU", 0.0) // need_cpu)
    if need_gpu:
        fits = min(fits, int(total.get("GPU", 0.0) // need_gpu))
    return max(1, fits)


def _fits_now(cfg: ExperimentConfig, have: Mapping[str, float]) -> bool:
    need_cpu, need_gpu = trial_needs(cfg)
    return need_cpu <= have.get("CPU", 0.0) and need_gpu <= have.get("GPU", 0.0)


def check_fits(cfg: ExperimentConfig, cluster: Mapping[str, float] | Capacity) -> int:
    """How many trials fit at once; raise :class:`CapacityError` if not even one does.

    ``cluster`` is the resources up now (``ray.cluster_resources()``: a fixed cluster) or a
    :class:`Capacity` (autoscaling taken into account: :func:`trial_fit`, whose line this drops)."""
    return trial_fit(cfg, cluster).slots


def trial_fit(cfg: ExperimentConfig, cluster: Mapping[str, float] | Capacity) -> Fit:
    """Does one trial fit what is up now or, on a cluster that can grow, a node type the autoscaler may
    launch? Raises :class:`CapacityError` (naming the ``resources.*`` fields and the node types) if not.

    Fixed cluster: the totals decide, as they always did. Autoscaling: every unit Ray places (a trial's
    bundle) must fit one node, up or launchable, and the trial must fit the largest the cluster may
    become; ``slots`` counts trials in that largest cluster, so Tune's pending trials make the
    autoscaler grow it."""
    cap = cluster if isinstance(cluster, Capacity) else Capacity(resources=dict(cluster))
    have = cap.resources
    if not cap.can_grow:
        if not _fits_now(cfg, have):
            raise CapacityError(
                f"resources: {_needs_text(cfg)}, but the cluster has {have.get('CPU', 0.0):g} CPU "
                f"and {have.get('GPU', 0.0):g} GPU"
            )
        return Fit(_slots(cfg, have))
    return _autoscaling_fit(cfg, cap)


def _autoscaling_fit(cfg: ExperimentConfig, cap: Capacity) -> Fit:
    launchable = [t for t in cap.node_types if t.max_workers > 0]
    types = "; ".join(t.describe() for t in launchable)
    largest = cap.largest()
    if not (_placeable(cfg, [*cap.nodes, *(t.resources for t in launchable)]) and _fits_now(cfg, largest)):
        raise CapacityError(
            f"resources: {_needs_text(cfg)}, but no node fits it: up now {_amount(cap.resources, True)} "
            f"in {len(cap.nodes)} node(s); the autoscaler may launch {types} (the cluster at most "
            f"{_amount(largest, True)}). Lower resources.workers / cpus_per_worker / gpus_per_worker, or "
            "add a node type that large to the autoscaler's config"
        )
    slots = _slots(cfg, largest)
    if _placeable(cfg, cap.nodes) and _fits_now(cfg, cap.resources):
        return Fit(
            slots, f"autoscaling cluster: up to {slots} trial(s) at once; the autoscaler may add {types}"
        )
    need_cpu, need_gpu = trial_needs(cfg)
    need = f"{need_cpu:g} CPU" + (f" and {need_gpu:g} GPU" if need_gpu else "")
    return Fit(
        slots,
        f"waiting for the autoscaler: one trial needs {need}, more than the nodes up now have; it may "
        f"launch {types}",
        waiting=True,
    )


def _placeable(cfg: ExperimentConfig, shapes: list[dict[str, float]] | tuple[dict[str, float], ...]) -> bool:
    """Every unit of one trial fits some single node of ``shapes``."""
    return all(any(_fits_now_bundle(b, s) for s in shapes) for b in _bundles(cfg))


def _fits_now_bundle(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(v <= node.get(k, 0.0) for k, v in bundle.items() if v > 0)


# ---------------------------------------------------------------------------------- reading the cluster
def cluster_capacity(timeout_s: float = 30.0) -> Capacity:
    """What the cluster Ray is connected to has now and, if an autoscaler may grow it, the node types it
    may launch (module docstring: where they are read from). Ray must be initialised."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    nodes = tuple({k: float(v) for k, v in n.get("Resources", {}).items()} for n in alive)
    resources = {k: float(v) for k, v in ray.cluster_resources().items()}
    found = _gcs_node_types()
    if found is None:
        head = next((n["NodeID"] for n in alive if n.get("Resources", {}).get(_HEAD)), None)
        found = _head_node_types(head, timeout_s) if head else None
    if found is None:
        return Capacity(resources, nodes)
    types, cap, source = found
    return Capacity(resources, nodes, types, cap, source)


def _gcs_node_types() -> tuple[tuple[NodeType, ...], int | None, str] | None:
    """The node groups of the cluster config in the GCS (None: none published)."""
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: absent or changed means "not published"
        return None
    if config is None or not config.node_group_configs:
        return None
    types = tuple(
        NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, _count(g.max_count), g.min_count)
        for g in config.node_group_configs
        if _count(g.max_count) > 0
    )
    return (types, None, "the cluster config in the GCS") if types else None


def _count(n: int) -> int:
    return 10**6 if n == -1 else int(n)  # -1: unlimited


def _head_node_types(head: str, timeout_s: float) -> tuple[tuple[NodeType, ...], int | None, str] | None:
    """The autoscaler's config, read on the head node (None: no autoscaler config there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_read_autoscaling_config).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False), max_retries=0
    )
    try:
        found = ray.get(task.remote(ray.get_runtime_context().gcs_address), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - no answer: treat the cluster as fixed (what is up now)
        return None
    if found is None:
        return None
    path, config = found
    return _config_node_types(config), config.get("max_workers"), path


def _config_node_types(config: Mapping[str, Any]) -> tuple[NodeType, ...]:
    """The worker node types of an autoscaler config (``available_node_types`` less the head's)."""
    head_type = config.get("head_node_type")
    cap = config.get("max_workers")
    out = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head_type or not isinstance(spec, Mapping):
            continue
        most = int(spec.get("max_workers", cap if cap is not None else 0))
        res = {k: float(v) for k, v in (spec.get("resources") or {}).items() if isinstance(v, int | float)}
        out.append(NodeType(str(name), res, most, int(spec.get("min_workers", 0))))
    return tuple(out)


def _read_autoscaling_config(gcs_address: str) -> tuple[str, dict[str, Any]] | None:
    """On the head node: the config of the monitor (autoscaler) process of the cluster at
    ``gcs_address``, else ``~/ray_bootstrap_config.yaml``; None if neither names a node type."""
    import os
    from pathlib import Path

    import yaml

    candidates: list[str] = []
    monitor_seen = False
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in argv) or f"--gcs-address={gcs_address}" not in argv:
            continue
        monitor_seen = True
        candidates += [a.split("=", 1)[1] for a in argv if a.startswith("--autoscaling-config=")]
    if not monitor_seen:
        candidates.append("~/ray_bootstrap_config.yaml")
    for raw in candidates:
        path = Path(os.path.expanduser(raw))
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict) and config.get("available_node_types"):
            return str(path), config
    return None
