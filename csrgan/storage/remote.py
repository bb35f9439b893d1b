"""Object storage (``s3://``, ``gs://``) as a sweep's storage: the store is the truth, each process works
in a local mirror and syncs at fixed points.

Training code writes ordinary files (checkpoints, ``final/``, ``metrics.jsonl``, grids) and the stage cache
reads them back as files, so with object storage every process — the sweep driver, a trial, a stage task —
works in a **local mirror** of the part of the store it needs and copies between the two at the points the
sweep defines (:mod:`csrgan.sweep.stages`, :mod:`csrgan.sweep.trial`):

* a finished stage is *pushed* whole and *pulled* (without its checkpoints) by every process that uses it;
* a stage being built pushes its newest checkpoints at each lease heartbeat, so a builder that takes the
  build over (:mod:`csrgan.storage.lease`) resumes from them;
* a trial pulls its own folder when it starts (it may be a retry on another node, or a resume after the
  driver died) and pushes it after every report, deleting checkpoints it pruned locally;
* results rows go straight to the store (:class:`csrgan.results.ResultsStore` writes each trial's Parquet
  file with one PUT), and Ray Tune keeps its experiment state there itself (``storage_filesystem``).

**Where the mirror is.** ``$CSRGAN_STORAGE_CACHE`` (default ``~/.cache/csrgan/storage``) ``/<hash of the
URI>/<who>``, where ``who`` is ``driver`` for the sweep driver and ``node-<Ray node id>`` for Ray processes
on a node: trials on one node share pulled stages; the driver never reads a trial's files except through
the store, so a missing push cannot hide behind a shared folder even on one machine.

URIs are pyarrow's: ``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http&region=...`` for
S3-compatible servers; credentials come from the usual AWS / Google environment and config files.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CACHE_ENV", "OBJECT_SCHEMES", "FolderSync", "Remote", "is_object_uri", "mirror_base"]

#: Schemes csrgan writes to through pyarrow's filesystems (``gs`` and ``gcs`` name the same store).
OBJECT_SCHEMES = ("s3", "gs", "gcs")
CACHE_ENV = "CSRGAN_STORAGE_CACHE"


def is_object_uri(value: str | Path) -> bool:
    return urlsplit(str(value)).scheme in OBJECT_SCHEMES


def mirror_base(uri: str) -> Path:
    """The local folder under which every mirror of ``uri`` lives (one sub-folder per process kind)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "csrgan" / "storage").expanduser()
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return root / digest


@functools.lru_cache(maxsize=32)
def _filesystem(uri: str) -> tuple[Any, str]:
    """One pyarrow filesystem per URI and process (building one resolves credentials and the region:
    not something to repeat for every object a sync reads or writes). pyarrow filesystems are
    thread-safe, so the lease heartbeat's uploads may share it."""
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(uri)
    return fs, base.rstrip("/")


@dataclass(frozen=True)
class Remote:
    """An object-store folder (``uri``) and the file operations the sweep needs on it.

    Paths given to the methods are relative to ``uri`` and use ``/``. Picklable (the pyarrow filesystem is
    rebuilt from the URI in each process).
    """

    uri: str

    # ---- locations
    def fs(self) -> tuple[Any, str]:
        """(pyarrow filesystem, base path inside it) — what Ray Tune's ``storage_filesystem`` wants."""
        return _filesystem(self.uri)

    def child(self, rel: str) -> str:
        """The URI of ``rel`` under this folder (the query, if any, stays at the end)."""
        base, q, query = self.uri.partition("?")
        return f"{base.rstrip('/')}/{rel.strip('/')}{q}{query}"

    def path(self, rel: str = "") -> str:
        """``rel`` as a path inside :meth:`fs`'s filesystem."""
        _, base = self.fs()
        return f"{base}/{rel.strip('/')}".rstrip("/")

    # ---- single objects
    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        fs, _ = self.fs()
        return fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        fs, _ = self.fs()
        try:
            with fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """One PUT: readers see the old object or the new one, never a mix."""
        fs, _ = self.fs()
        with fs.open_output_stream(self.path(rel)) as out:
            out.write(data)

    def delete(self, rel: str) -> None:
        """Remove the object or every object under the prefix ``rel`` (nothing there: no error)."""
        import pyarrow.fs as pafs

        fs, _ = self.fs()
        info = fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            fs.delete_file(self.path(rel))

    def listing(self, rel: str) -> dict[str, tuple[int, float]]:
        """Every object under ``rel`` as ``{path relative to rel: (size, mtime in s)}`` (empty: none)."""
        import pyarrow.fs as pafs

        fs, _ = self.fs()
        top = self.path(rel)
        infos = fs.get_file_info(pafs.FileSelector(top, recursive=True, allow_not_found=True))
        return {
            i.path[len(top) + 1 :]: (i.size, i.mtime.timestamp() if i.mtime else 0.0)
            for i in infos
            if i.type == pafs.FileType.File
        }

    def check_writable(self) -> None:
        """Write, read back and delete a probe object; raise ``OSError`` naming the URI if that fails."""
        probe = f".csrgan-probe-{os.getpid()}"
        try:
            self.write_bytes(probe, b"ok")
            if self.read_bytes(probe) != b"ok":
                raise OSError("the probe object read back differently")
            self.delete(probe)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError and ArrowInvalid variants
            raise OSError(f"storage {self.uri}: cannot write there ({type(exc).__name__}: {exc})") from None

    # ---- folders
    def pull(self, rel: str, local: Path, skip: Iterable[str] = ()) -> int:
        """Copy every object under ``rel`` into ``local`` (same relative layout), except those whose first
        path part is in ``skip``, and files already there with the same size. Returns the files copied."""
        skip = set(skip)
        copied = 0
        for name, (size, _) in self.listing(rel).items():
            if name.split("/", 1)[0] in skip:
                continue
            target = local / name
            if target.is_file() and target.stat().st_size == size:
                continue
            data = self.read_bytes(f"{rel}/{name}")
            if data is None:  # deleted meanwhile (a pruned checkpoint)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pull")
            tmp.write_bytes(data)
            tmp.replace(target)
            copied += 1
        return copied

    def push(
        self,
        local: Path,
        rel: str,
        *,
        skip: Iterable[str] = (),
        seen: dict[str, tuple[int, int]] | None = None,
        mirror_deletes: str | None = None,
    ) -> int:
        """Upload the files under ``local`` to ``rel``; returns how many were uploaded.

        ``skip``: first path parts to leave out; names ending ``.tmp`` (a checkpoint being written) are
        always left out, and files that vanish while walking (pruned) are ignored. ``seen`` (the caller
        keeps it between calls) maps relative names to (size, mtime_ns) already uploaded: unchanged files
        are not sent again. ``mirror_deletes``: a sub-folder (``"checkpoints"``) whose objects are deleted
        from the store when they are gone locally, so the store keeps what the trainer keeps.
        """
        skip, seen = set(skip), seen if seen is not None else {}
        sent, present = 0, set()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            name = path.relative_to(local).as_posix()
            if name.split("/", 1)[0] in skip or any(part.endswith(".tmp") for part in name.split("/")):
                continue
            try:
                st = path.stat()
                stamp = (st.st_size, st.st_mtime_ns)
                present.add(name)
                if seen.get(name) == stamp:
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            self.write_bytes(f"{rel}/{name}", data)
            seen[name] = stamp
            sent += 1
        if mirror_deletes is not None:
            for name in self.listing(f"{rel}/{mirror_deletes}"):
                if f"{mirror_deletes}/{name}" not in present:
                    self.delete(f"{rel}/{mirror_deletes}/{name}")
                    seen.pop(f"{mirror_deletes}/{name}", None)
        return sent


class FolderSync:
    """Keep one run folder's copy in the store up to date: call it after every report (cheap when
    nothing changed: a walk and a ``stat`` per file), :meth:`pull` before the run starts.

    Checkpoints the trainer pruned locally are deleted from the store too, so the store holds what a
    resume needs and no more. Not thread-safe; one writer per folder (one trial).
    """

    def __init__(self, remote: Remote, local: Path, rel: str) -> None:
        self.remote, self.local, self.rel = remote, local, rel
        self._seen: dict[str, tuple[int, int]] = {}
        self._checkpoints: frozenset[str] = frozenset()

    def pull(self) -> int:
        """Bring the store's copy (checkpoints included: the run resumes from them) into ``local``."""
        return self.remote.pull(self.rel, self.local)

    def __call__(self) -> int:
        steps = self.local / "checkpoints"
        now = frozenset(p.name for p in steps.iterdir()) if steps.is_dir() else frozenset()
        pruned = self._checkpoints - now
        self._checkpoints = now
        return self.remote.push(
            self.local, self.rel, seen=self._seen, mirror_deletes="checkpoints" if pruned else None
        )
