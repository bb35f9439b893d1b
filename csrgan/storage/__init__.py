"""Where everything a sweep writes lives, and the one policy for storage locations.

**URI policy** (the only place it is stated; every writer goes through :func:`check_storage`,
:func:`storage_root` or :meth:`SweepLayout.of`):

* A storage location is a folder — relative (to the current directory), absolute, ``~/...`` or
  ``file:///...`` — or an object-store URI, ``s3://bucket/prefix`` (S3 and S3-compatible servers:
  ``?endpoint_override=HOST:PORT&scheme=http&region=...``) or ``gs://bucket/prefix``. On a multi-node
  cluster a folder must be a shared filesystem mounted at the same path everywhere (the sweep checks that,
  see :mod:`csrgan.cluster.storage`); an object store is shared by construction.
* Sweeps (``csrgan sweep``, ``csrgan submit``) write to either. With an object store every process works in
  a local mirror and syncs at fixed points (:mod:`csrgan.storage.remote`); the stage cache's "one builder"
  step is a lease object with conditional writes (:mod:`csrgan.storage.lease`), and the Optuna study is a
  journal file the driver owns and uploads (:meth:`SweepLayout.optuna_journal`).
* Any other scheme is refused. Reading results (``csrgan results summary s3://...``,
  :func:`csrgan.results.read_results`) accepts any pyarrow URI.

**Layout** of one sweep under a storage root (:class:`SweepLayout`)::

    <root>/_stages/<stage>-<key>/     shared stages (CycleGAN, pre-training): stage.json, final/, checkpoints/
    <root>/<sweep>/trial-<id>.parquet  the results, one file per trial
    <root>/<sweep>/_sweep.json         config, trial plan, timings, stage reuse
    <root>/<sweep>/_optuna.db          the Optuna study (method optuna; object storage: _optuna.journal)
    <root>/<sweep>/_tune/              Ray Tune's experiment state (``--resume``)
    <root>/<sweep>/_trials/<id>/       one trial's GAN phase: final/ (its model), checkpoints/step_XXXXXXXX/
                                       (newest two), metrics.jsonl, grids/gan/<set>_step<N>.png, timing.json

Names starting with ``_`` (or ``.``) are ignored by ``pd.read_parquet(<root>/<sweep>)``, so the
results folder is a plain Parquet dataset. Every stage run, whatever runs it, has the same inside
(:class:`csrgan.train.launch` writes it): ``final/``, ``checkpoints/step_XXXXXXXX/``,
``metrics.jsonl``, ``grids/``, ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from csrgan.storage.remote import OBJECT_SCHEMES, Remote, is_object_uri, mirror_base

__all__ = [
    "STAGES_DIR",
    "Remote",
    "StorageError",
    "SweepLayout",
    "check_storage",
    "is_object_uri",
    "is_uri",
    "storage_root",
]

STAGES_DIR = "_stages"
TUNE_DIR = "_tune"
TRIALS_DIR = "_trials"
OPTUNA_FILE = "_optuna.db"
OPTUNA_JOURNAL = "_optuna.journal"
META_FILE = "_sweep.json"


class StorageError(ValueError):
    """A storage location csrgan cannot write to. The message is user-facing."""


def is_uri(value: str | Path) -> bool:
    """Whether ``value`` names a location with a scheme (``s3://``, ``file://`` ...)."""
    return "://" in str(value)


def check_storage(value: str | Path) -> None:
    """Raise :class:`StorageError` unless ``value`` is a storage location a sweep can write (policy above)."""
    text = str(value)
    if is_object_uri(text):
        return
    storage_root(text)


def storage_root(value: str | Path) -> Path:
    """The absolute folder a folder-type storage setting means (see the URI policy above).

    Raises :class:`StorageError` for object-store URIs (only sweeps write there, through
    :meth:`SweepLayout.of`) and for other schemes.
    """
    text = str(value)
    if is_object_uri(text):
        raise StorageError(
            f"storage {text!r}: an object store; only sweeps (csrgan sweep / submit) write to object "
            "storage, this command needs a folder"
        )
    if is_uri(text) and not text.startswith("file://"):
        raise StorageError(
            f"storage {text!r}: unsupported scheme; use a folder (absolute, relative, ~/..., file://...) or "
            f"an object store ({', '.join(s + '://' for s in OBJECT_SCHEMES[:2])}; cluster/README.md)"
        )
    return Path(text.removeprefix("file://")).expanduser().resolve()


@dataclass(frozen=True)
class SweepLayout:
    """The folders and files of one sweep, built once by the driver and handed down (picklable).

    ``root`` is where this process reads and writes files. For a folder storage that is the storage
    itself; for an object store (``remote`` set) it is this process's local mirror, and the store is the
    truth (:mod:`csrgan.storage.remote`): a process Ray starts calls :meth:`here` to move to its node's
    mirror.
    """

    root: Path
    sweep: str
    remote: Remote | None = None

    @classmethod
    def of(cls, storage: str | Path, sweep: str) -> SweepLayout:
        text = str(storage)
        if is_object_uri(text):
            return cls(mirror_base(text) / "driver", sweep, Remote(text))
        return cls(storage_root(storage), sweep)

    def here(self) -> SweepLayout:
        """This layout for the current process: on object storage, the mirror of the Ray node it runs on
        (the driver keeps its own); unchanged for folder storage."""
        if self.remote is None:
            return self
        node = _ray_node_id()
        who = "driver" if node is None else f"node-{node[:16]}"
        return replace(self, root=mirror_base(self.remote.uri) / who)

    @property
    def results_root(self) -> str:
        """What :class:`csrgan.results.ResultsStore` writes rows to: the store itself (not the mirror)."""
        return self.remote.uri if self.remote is not None else str(self.root)

    @property
    def results_uri(self) -> str:
        """The sweep's results folder as the user names it (a path, or a URI on object storage)."""
        return self.remote.child(self.sweep) if self.remote is not None else str(self.results)

    def rel(self, path: Path) -> str:
        """``path`` (under :attr:`root`) relative to the storage root: its object key suffix."""
        return path.relative_to(self.root).as_posix()

    @property
    def results(self) -> Path:
        """The sweep's Parquet dataset folder (``pd.read_parquet`` it)."""
        return self.root / self.sweep

    @property
    def stages(self) -> Path:
        """Shared stage artefacts; shared by every sweep under the same root."""
        return self.root / STAGES_DIR

    def stage_dir(self, stage: str, key: str) -> Path:
        return self.stages / f"{stage}-{key}"

    @property
    def tune(self) -> Path:
        return self.results / TUNE_DIR

    @property
    def trials(self) -> Path:
        return self.results / TRIALS_DIR

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials / trial_id

    @property
    def meta(self) -> Path:
        return self.results / META_FILE

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.results / OPTUNA_FILE}"

    @property
    def optuna_journal(self) -> Path:
        """On object storage the study is an Optuna journal file in the driver's mirror, uploaded next to
        the results (``<sweep>/_optuna.journal``) after every finished trial (see docs/storage.md)."""
        return self.results / OPTUNA_JOURNAL


def _ray_node_id() -> str | None:
    """The Ray node this process runs on when Ray started it (a trial, a task, a worker); else None."""
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    try:
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != ray.WORKER_MODE:
            return None
        return str(ctx.get_node_id())
    except Exception:  # noqa: BLE001 - outside a Ray worker: the driver's mirror
        return None
