"""Running sweeps on a multi-node Ray cluster: storage every node sees, and sweeps submitted as Ray Jobs.

Three small modules, all about "the same sweep, beyond one machine":

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
from csrgan.cluster.storage import (
    CHECK_DIR,
    SHARED_STORAGE_HOWTO,
    NodeRef,
    alive_nodes,
    check_shared_storage,
)
from csrgan.storage import StorageError

__all__ = [
    "CHECK_DIR",
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
