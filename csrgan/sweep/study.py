"""Where a sweep's Optuna study lives, and how it survives the driver.

Only the driver talks to the study: Tune's searcher (``OptunaSearch``) runs inside the Tune controller,
in the driver process, and trials never touch it. So the study does not have to be reachable from every
node; it has to survive the driver (a kill, a resume from another machine):

* **Folder storage**: SQLite beside the results (``<sweep>/_optuna.db``), through ``RDBStorage``; the
  folder is the one every node sees, and a resumed driver finds it there.
* **Object storage**: an Optuna **journal** file (``JournalStorage`` + ``JournalFileBackend``) in the
  driver's local mirror, uploaded whole to ``<sweep>/_optuna.journal`` after every trial result and at the
  end (:class:`JournalUpload`), and downloaded by ``--resume`` before Tune restores its searcher. SQLite
  cannot live on an object store (no byte-range writes, no locks); a journal is an append-only log, the
  file storage Optuna documents for this, and a copy taken mid-append is still a readable prefix. A
  database server (``postgresql://``) would also do, but it is one more service a user must run.

What a kill can lose: results Tune had reported since the last upload (at most one trial's latest
result); Tune re-runs unfinished trials on resume, and the searcher learns their results again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from csrgan.storage import Remote, SweepLayout

__all__ = ["JournalUpload", "journal_callbacks", "pull_journal", "study_storage"]


def study_storage(layout: SweepLayout) -> Any:
    """The Optuna storage for this sweep (see the module docstring for which and why)."""
    import optuna

    if layout.remote is None:
        return optuna.storages.RDBStorage(layout.optuna_url)
    from optuna.storages.journal import JournalFileBackend

    layout.optuna_journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(layout.optuna_journal)))


def pull_journal(layout: SweepLayout) -> bool:
    """Object storage, ``--resume``: copy the store's journal into the driver's mirror (True if found)."""
    if layout.remote is None:
        return False
    data = layout.remote.read_bytes(layout.rel(layout.optuna_journal))
    if data is None:
        return False
    layout.optuna_journal.parent.mkdir(parents=True, exist_ok=True)
    layout.optuna_journal.write_bytes(data)
    return True


def journal_callbacks(layout: SweepLayout, optuna: bool) -> list[Any]:
    """The Tune callbacks the study needs: the journal upload on object storage with method optuna."""
    if layout.remote is None or not optuna:
        return []
    return [JournalUpload(layout.remote, layout.optuna_journal, layout.rel(layout.optuna_journal))]


def _callback_base() -> type:
    from ray.tune import Callback

    return Callback


class JournalUpload(_callback_base()):  # type: ignore[misc]
    """Upload the journal after trial results (at most every ``min_interval_s``), after every finished
    trial, and when the experiment ends. An upload is one PUT of the whole file (small: ~1 KB a trial)."""

    def __init__(self, remote: Remote, local: Path, rel: str, min_interval_s: float = 5.0) -> None:
        self.remote, self.local, self.rel = remote, Path(local), rel
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def _upload(self, force: bool) -> None:
        if not force and time.monotonic() - self._last < self.min_interval_s:
            return
        if self.local.is_file():
            self.remote.write_bytes(self.rel, self.local.read_bytes())
            self._last = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._upload(force=False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._upload(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._upload(force=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._upload(force=True)
