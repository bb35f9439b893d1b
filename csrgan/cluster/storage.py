"""Storage every node sees: the multi-node check the sweep driver runs once Ray is up.

Results, Tune checkpoints and the shared stages are written by trials on *any* node and read back by
others (a retried trial on another node, the driver's summary), so on a multi-node cluster the storage
folder must be the same folder on every node. A node-local path would "work" per node and silently
split the results; :func:`check_shared_storage` refuses it up front by writing a marker from the
driver and checking, with one tiny Ray task pinned to each alive node, that every node reads the
driver's marker and writes a reply the driver can read.

Which locations are storage at all (folders, and s3:// / gs:// object stores, which need no check) is
:mod:`csrgan.storage`'s URI policy; a folder not every node sees is the same
:class:`~csrgan.storage.StorageError`. Nothing here imports torch; Ray is imported lazily.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from csrgan.storage import StorageError

#: Hidden folder under the storage root for the visibility check (removed afterwards; the leading dot
#: keeps it out of ``pd.read_parquet`` and ``csrgan results``).
CHECK_DIR = ".csrgan-storage-check"

SHARED_STORAGE_HOWTO = (
    "On a multi-node cluster, results, checkpoints and the shared stages must live on storage every "
    "node sees: a shared filesystem mounted at the same path on every node (NFS, EFS, Filestore, a "
    "ReadWriteMany volume), set with `storage:` in the experiment file or --storage, or an object store "
    "(s3://bucket/prefix, gs://bucket/prefix; see cluster/README.md, Object storage)."
)


@dataclass(frozen=True)
class NodeRef:
    """An alive Ray node, as the storage check names it to users."""

    node_id: str
    ip: str
    hostname: str = ""

    def describe(self) -> str:
        host = f", host {self.hostname}" if self.hostname and self.hostname != self.ip else ""
        return f"{self.ip} (node {self.node_id[:12]}{host})"


#: ``probe(nodes, marker, token)`` -> ``{node_id: None if the node sees the storage, else why not}``.
Probe = Callable[[Sequence[NodeRef], Path, str], Mapping[str, str | None]]


def alive_nodes() -> list[NodeRef]:
    """The cluster's alive nodes (Ray must be initialised)."""
    import ray

    return [
        NodeRef(
            str(n["NodeID"]), str(n.get("NodeManagerAddress", "?")), str(n.get("NodeManagerHostname", ""))
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _is_ray_client() -> bool:
    """``ray://`` mode: the driver runs on a machine that may be no node at all."""
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except ImportError:  # pragma: no cover - ray[client] ships with ray[default]
        return False


def check_shared_storage(
    storage_root: Path,
    *,
    nodes: Sequence[NodeRef] | None = None,
    probe: Probe | None = None,
    wait_s: float = 10.0,
) -> None:
    """Raise :class:`StorageError` unless every alive node sees ``storage_root`` as the driver does.

    Skipped (returns at once) for a single-node cluster: trials and the stages they share all live on
    that node. A Ray Client driver (``ray://``) is the exception: it runs on another machine and writes
    ``_sweep.json`` and reads results there, so its machine is checked against the node(s) even then.

    How: the driver writes a marker holding a random token under ``storage_root/.csrgan-storage-check``;
    ``probe`` (default: one ``num_cpus=0`` Ray task pinned to each node with
    ``NodeAffinitySchedulingStrategy``) waits up to ``wait_s`` for the marker to appear there with the
    same token (shared filesystems may show new files after a short attribute-cache delay), and
    writes a reply the driver must then see. ``nodes`` and ``probe`` are for tests.
    """
    root = Path(storage_root)
    if nodes is None:
        nodes = alive_nodes()
        if len(nodes) <= 1 and not _is_ray_client():
            return
    elif len(nodes) <= 1:
        return
    run_dir = root / CHECK_DIR / uuid.uuid4().hex
    token = uuid.uuid4().hex
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / "driver"
        marker.write_text(token, encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"storage {root}: the driver cannot write there ({exc})") from None
    try:
        answers = (probe or _RayProbe(wait_s))(nodes, marker, token)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when no other sweep is checking right now
            (root / CHECK_DIR).rmdir()
    blind = {n.node_id: answers.get(n.node_id, "gave no answer") for n in nodes}
    problems = [f"  - {n.describe()}: {blind[n.node_id]}" for n in nodes if blind[n.node_id] is not None]
    if problems:
        raise StorageError(
            f"storage {root} is not shared by every node of the Ray cluster ({len(problems)} of "
            f"{len(nodes)} node(s) cannot see what the driver wrote there):\n"
            + "\n".join(problems)
            + f"\n{SHARED_STORAGE_HOWTO}"
        )


def _probe_on_node(marker: str, token: str, reply: str, wait_s: float) -> str | None:
    """Runs on one node: wait for the driver's marker (with its token), then leave a reply for the driver.

    Returns None when the node sees the storage, else a user-facing reason.
    """
    path = Path(marker)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            content = path.read_text(encoding="utf-8")
            if content == token:
                break
            seen = "exists there but holds another token (a different folder with the same path?)"
        except FileNotFoundError:
            seen = "does not exist there"
        except OSError as exc:
            seen = f"cannot be read there ({exc})"
        if time.monotonic() >= deadline:
            return f"the driver's marker {marker} {seen} (waited {wait_s:g} s)"
        time.sleep(0.25)
    try:
        Path(reply).write_text(token, encoding="utf-8")
    except OSError as exc:
        return f"sees the driver's marker but cannot write next to it ({exc})"
    return None


class _RayProbe:
    """The default probe: one ``num_cpus=0`` task per node, pinned with NodeAffinitySchedulingStrategy."""

    def __init__(self, wait_s: float, answer_timeout_s: float = 120.0) -> None:
        self.wait_s = wait_s
        self.answer_timeout_s = answer_timeout_s  # a busy node may take a while to start a worker

    def __call__(self, nodes: Sequence[NodeRef], marker: Path, token: str) -> dict[str, str | None]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(_probe_on_node)
        refs = {}
        for node in nodes:
            reply = marker.with_name(f"reply-{node.node_id}")
            refs[node.node_id] = task.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False),
            ).remote(str(marker), token, str(reply), self.wait_s)
        ready, _ = ray.wait(
            list(refs.values()), num_returns=len(refs), timeout=self.wait_s + self.answer_timeout_s
        )
        answers: dict[str, str | None] = {}
        for node_id, ref in refs.items():
            if ref not in ready:
                ray.cancel(ref, force=True)
                answers[node_id] = (
                    f"the check task did not finish within {self.wait_s + self.answer_timeout_s:g} s"
                )
                continue
            try:
                answers[node_id] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a node that cannot run the check is reported
                answers[node_id] = f"the check task failed there ({type(exc).__name__}: {exc})"
        # The nodes wrote; now the driver must see every reply (same attribute-cache patience).
        deadline = time.monotonic() + self.wait_s
        pending = {nid for nid, why in answers.items() if why is None}
        while pending:
            for nid in list(pending):
                try:
                    if marker.with_name(f"reply-{nid}").read_text(encoding="utf-8") == token:
                        pending.discard(nid)
                except OSError:
                    pass
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        for nid in pending:
            answers[nid] = (
                f"reads the driver's marker, but the reply it wrote ({marker.with_name(f'reply-{nid}')}) "
                f"never appeared on the driver's side within {self.wait_s:g} s"
            )
        return answers
