"""Where everything a sweep writes lives, and the one policy for storage locations.

**URI policy** (the only place it is stated; every writer goes through :func:`storage_root`):

* A storage location is a folder: relative (to the current directory), absolute, ``~/...`` or
  ``file:///...``. On a multi-node cluster it must be a shared filesystem mounted at the same path
  everywhere (the sweep checks that, see :mod:`csrgan.cluster.storage`).
* Object stores (``s3://``, ``gs://``, any other scheme) are refused for *writing* — sweeps, stage
  artefacts, ``csrgan train`` — because the stage cache uses file locks and Optuna's study is SQLite.
  Reading results (``csrgan results summary s3://...``, :func:`csrgan.results.read_results`) accepts
  any pyarrow URI.

**Layout** of one sweep under a storage root (:class:`SweepLayout`)::

    <root>/_stages/<stage>-<key>/     shared stages (CycleGAN, pre-training): stage.json, final/, checkpoints/
    <root>/<sweep>/trial-<id>.parquet  the results, one file per trial
    <root>/<sweep>/_sweep.json         config, trial plan, timings, stage reuse
    <root>/<sweep>/_optuna.db          the Optuna study (method optuna)
    <root>/<sweep>/_tune/              Ray Tune's experiment state (``--resume``)
    <root>/<sweep>/_trials/<id>/       one trial's GAN phase: final/ (its model), checkpoints/step_XXXXXXXX/
                                       (newest two), metrics.jsonl, grids/gan/<set>_step<N>.png, timing.json

Names starting with ``_`` (or ``.``) are ignored by ``pd.read_parquet(<root>/<sweep>)``, so the
results folder is a plain Parquet dataset. Every stage run, whatever runs it, has the same inside
(:class:`csrgan.train.launch` writes it): ``final/``, ``checkpoints/step_XXXXXXXX/``,
``metrics.jsonl``, ``grids/``, ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "STAGES_DIR",
    "StorageError",
    "SweepLayout",
    "is_uri",
    "storage_root",
]

STAGES_DIR = "_stages"
TUNE_DIR = "_tune"
TRIALS_DIR = "_trials"
OPTUNA_FILE = "_optuna.db"
META_FILE = "_sweep.json"


class StorageError(ValueError):
    """A storage location csrgan cannot write to. The message is user-facing."""


def is_uri(value: str | Path) -> bool:
    """Whether ``value`` names a location with a scheme (``s3://``, ``file://`` ...)."""
    return "://" in str(value)


def storage_root(value: str | Path) -> Path:
    """The absolute folder a storage setting means (see the URI policy above).

    Raises :class:`StorageError` for object-store URIs and other schemes.
    """
    text = str(value)
    if is_uri(text) and not text.startswith("file://"):
        raise StorageError(
            f"storage {text!r}: object-store URIs are not supported for writing yet (the stage cache "
            "uses file locks, the Optuna study SQLite); use a folder every node can see, e.g. a shared "
            "filesystem path (cluster/README.md). Reading results from s3:// or gs:// works."
        )
    return Path(text.removeprefix("file://")).expanduser().resolve()


@dataclass(frozen=True)
class SweepLayout:
    """The folders and files of one sweep, built once by the driver and handed down (picklable)."""

    root: Path
    sweep: str

    @classmethod
    def of(cls, storage: str | Path, sweep: str) -> SweepLayout:
        return cls(storage_root(storage), sweep)

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
