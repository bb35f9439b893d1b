"""Running sweeps on a multi-node Ray cluster: where you are, what fits, storage every node sees, jobs.

Small modules, all about "the same sweep, beyond one machine":

* :mod:`csrgan.cluster.where` — which cluster a driver joins: ``auto`` resolved (refused when this
  machine runs several clusters), the token checked before Ray's 20 s of retries, the joined cluster
  described in one line, and the node a row's trial ran on (``node_ip``, ``node_id``).
* :mod:`csrgan.cluster.capacity` — does one trial fit the cluster, or a node type its autoscaler can
  launch.
* :mod:`csrgan.cluster.local` — local multi-node clusters whose nodes have private temp dirs, and
  stopping exactly those nodes (``csrgan cluster stop --temp-dir``), never every Ray process.

* :mod:`csrgan.cluster.storage` — :func:`check_shared_storage`, called by the sweep driver once Ray
  is up: on a multi-node cluster the storage folder must be the same folder on every node, and a
  node-local path (which would silently split the results) is refused up front.
* :mod:`csrgan.cluster.connect` — :func:`connect_error_hint`: what to tell a user whose
  ``ray.init(address=...)`` failed (wrong address, missing token).
* :mod:`csrgan.cluster.jobs` — :func:`plan_submission` / :func:`submit` and the ``job_*`` helpers
  behind ``csrgan submit`` and ``csrgan jobs``: the sweep runs as a Ray Job (Jobs API on the
  dashboard, ``http://HOST:8265``) with the project as its ``working_dir``; every request carries the
  cluster's token.

Which storage locations are accepted at all is :mod:`csrgan.storage`'s one URI policy; its
:class:`~csrgan.storage.StorageError` is also the error for storage that not every node sees.

Nothing here imports torch; Ray is imported lazily.
"""

from __future__ import annotations

from csrgan.cluster.connect import connect_error_hint
from csrgan.cluster.jobs import (
    DEFAULT_EXCLUDES,
    ClusterError,
    SweepSubmission,
    auth_headers,
    job_client,
    job_logs,
    job_status,
    plan_submission,
    project_root,
    stop_job,
    submit,
    tail_job_logs,
    wait_for_job,
)
from csrgan.cluster.local import (
    LocalCluster,
    LocalClusterError,
    LocalNode,
    local_nodes,
    node_processes,
    stop_nodes,
)
from csrgan.cluster.storage import (
    CHECK_DIR,
    SHARED_STORAGE_HOWTO,
    NodeRef,
    alive_nodes,
    check_shared_storage,
)
from csrgan.cluster.where import (
    ClusterAuthError,
    ClusterSummary,
    check_auth,
    describe_cluster,
    node_columns,
    prepare_join,
    resolve_address,
)
from csrgan.storage import StorageError

__all__ = [
    "CHECK_DIR",
    "ClusterAuthError",
    "ClusterSummary",
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "check_auth",
    "describe_cluster",
    "local_nodes",
    "node_columns",
    "node_processes",
    "prepare_join",
    "resolve_address",
    "stop_nodes",
    "ClusterError",
    "DEFAULT_EXCLUDES",
    "NodeRef",
    "SHARED_STORAGE_HOWTO",
    "StorageError",
    "SweepSubmission",
    "alive_nodes",
    "auth_headers",
    "check_shared_storage",
    "connect_error_hint",
    "job_client",
    "job_logs",
    "job_status",
    "plan_submission",
    "project_root",
    "stop_job",
    "submit",
    "tail_job_logs",
    "wait_for_job",
]
