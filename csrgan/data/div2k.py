"""Download and extract DIV2K (Agustsson & Timofte, NTIRE 2017) into its official folder layout.

Archives (https://data.vision.ee.ethz.ch/cvl/DIV2K/): ``DIV2K_{train,valid}_HR.zip`` and
``DIV2K_{train,valid}_LR_{bicubic,unknown}_X4.zip``. They are saved to ``ROOT/archives/`` and extracted
to ``ROOT/DIV2K_train_HR/``, ``ROOT/DIV2K_train_LR_bicubic/X4/`` ... (``csrgan.data.datasets.div2k_paths``).

* Resumable: bytes go to ``NAME.zip.part``; a rerun (or an automatic retry after a dropped connection)
  asks the server for the rest with ``Range: bytes=N-``. A server that ignores ``Range`` makes us start
  over, and we say so.
* Idempotent: each extracted archive leaves ``ROOT/.csrgan_div2k/NAME.json`` (sha256, size, file count);
  with it and the extracted folder in place, the archive is skipped without any network access.
* Integrity. **We could not verify the official archive checksums or sizes** (the DIV2K site publishes
  none and this code was written offline), so none are hard-coded. Every archive is instead checked with
  ``zipfile.ZipFile.testzip()`` (the CRC-32 of every member) before extraction, and its sha256 is written
  to ``ROOT/archives/SHA256SUMS`` (``sha256sum`` format). Pass that file (or any such manifest) as
  ``checksums=`` / ``--checksums`` on other machines to pin exactly the archives you first downloaded;
  with a manifest, a mismatch or a missing entry is an error.
* Safe extraction: members outside the expected top folder are not extracted (and are listed), absolute
  paths and ``..`` are rejected, and the folder appears only once fully extracted (temp dir + rename).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm

from csrgan.data.datasets import DIV2K_SPLITS, DIV2K_TRACKS, DIV2KPaths, div2k_paths
from csrgan.data.io import IMAGE_SUFFIXES
from csrgan.download import DownloadError, fetch_resumable

__all__ = [
    "DIV2K_BASE_URL",
    "ArchiveError",
    "DIV2KArchive",
    "DownloadError",
    "div2k_archives",
    "download_div2k",
    "download_file",
    "extract_archive",
    "read_checksums",
    "sha256_file",
    "verify_archive",
]

DIV2K_BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K"
_STATE_DIR = ".csrgan_div2k"
_CHUNK = 1 << 16  # a dropped connection loses at most the chunk in flight; the rest is resumed


class ArchiveError(RuntimeError):
    """A corrupt archive, a checksum mismatch or an unexpected archive layout. Names the file."""


@dataclass(frozen=True)
class DIV2KArchive:
    """One official archive: its file name, what it holds, and the folder its images extract to."""

    split: str
    track: str | None  # None: the HR images
    scale: int = 4

    @property
    def filename(self) -> str:
        if self.track is None:
            return f"DIV2K_{self.split}_HR.zip"
        return f"DIV2K_{self.split}_LR_{self.track}_X{self.scale}.zip"

    @property
    def folder(self) -> str:
        """Folder (relative to ROOT, posix) holding the images inside the archive and after extraction."""
        if self.track is None:
            return f"DIV2K_{self.split}_HR"
        return f"DIV2K_{self.split}_LR_{self.track}/X{self.scale}"

    @property
    def n_images(self) -> int:
        """Images in the official archive (train 0001-0800, valid 0801-0900)."""
        return 800 if self.split == "train" else 100

    def target(self, paths: DIV2KPaths) -> Path:
        return paths.hr(self.split) if self.track is None else paths.lr(self.split, self.track, self.scale)


def div2k_archives(
    splits: Sequence[str] = DIV2K_SPLITS, tracks: Sequence[str] = DIV2K_TRACKS
) -> list[DIV2KArchive]:
    """The archives for ``splits`` x (HR + ``tracks``); HR is always included (LR alone cannot be scored)."""
    for s in splits:
        if s not in DIV2K_SPLITS:
            raise ValueError(f"unknown DIV2K split {s!r}; known: {', '.join(DIV2K_SPLITS)}")
    for t in tracks:
        if t not in DIV2K_TRACKS:
            raise ValueError(f"unknown DIV2K track {t!r}; known: {', '.join(DIV2K_TRACKS)}")
    if not splits:
        raise ValueError("no DIV2K split selected")
    out = []
    for s in dict.fromkeys(splits):
        out.append(DIV2KArchive(s, None))
        out.extend(DIV2KArchive(s, t) for t in dict.fromkeys(tracks))
    return out


# ------------------------------------------------------------------------------------------- checksums
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def read_checksums(path: str | Path) -> dict[str, str]:
    """A ``sha256sum``-format manifest (``HEX  FILENAME`` per line, ``#`` comments) -> {file name: hex}."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ArchiveError(f"cannot read checksum manifest {path}: {exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _SUM_LINE.match(line.strip())
        if m is None:
            raise ArchiveError(f"{path}:{n}: not a sha256sum line ('<64 hex>  <file name>'): {line!r}")
        out[PurePosixPath(m.group(2).strip()).name] = m.group(1).lower()
    return out


def _record_checksum(manifest: Path, filename: str, digest: str) -> None:
    entries = read_checksums(manifest) if manifest.exists() else {}
    entries[filename] = digest
    manifest.write_text("".join(f"{h}  {name}\n" for name, h in sorted(entries.items())))


# -------------------------------------------------------------------------------------------- download
def _say(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def download_file(
    url: str,
    dest: str | Path,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with HTTP Range.

    A dropped connection is retried (resuming) up to ``retries`` times; then ``DownloadError`` says how
    far it got and that a rerun resumes. ``dest`` only appears once all bytes are there.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetch_resumable(
        url,
        part,
        timeout=timeout,
        progress=progress,
        desc=dest.name,
        retries=retries,
        session=session or requests.Session(),
        sleep=sleep,
        notify=_say,
    )
    part.replace(dest)
    return dest


# ------------------------------------------------------------------------------------- verify, extract
def verify_archive(path: str | Path, expected_sha256: str | None = None) -> str:
    """Check a zip's CRCs (``testzip``) and, if given, its sha256. Returns the sha256 hex digest."""
    path = Path(path)
    fix = f"delete {path} and rerun the download"
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ArchiveError(f"{path}: sha256 {digest} does not match the manifest's {expected_sha256}; {fix}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"{path} is not a valid zip archive ({exc}); {fix}") from None
    except Exception as exc:  # zlib.error / NotImplementedError from a damaged member header
        raise ArchiveError(f"{path} is corrupt ({type(exc).__name__}: {exc}); {fix}") from None
    if bad is not None:
        raise ArchiveError(f"{path} is corrupt: CRC check failed for member {bad!r}; {fix}")
    return digest


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("\\") or (p.parts and ":" in p.parts[0]):
        raise ArchiveError(f"{archive}: unsafe member path {name!r}; refusing to extract")
    return p


def extract_archive(path: str | Path, folder: str, root: str | Path) -> tuple[Path, int]:
    """Extract the members under ``folder`` (posix, relative) of zip ``path`` to ``root/folder``.

    Goes through a temporary folder and a rename, so ``root/folder`` is either absent or complete.
    Members outside ``folder`` are skipped (and listed). Returns (target folder, number of images).
    """
    path, root = Path(path), Path(root)
    prefix = PurePosixPath(folder)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        wanted, skipped = [], []
        for info in infos:
            p = _safe_member(info.filename, path)
            if p == prefix or prefix in p.parents:
                if not info.is_dir():
                    wanted.append(info)
            elif not (info.is_dir() and p in prefix.parents):
                skipped.append(info.filename)
        images = [i for i in wanted if PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            first = ", ".join(i.filename for i in infos[:5]) or "(empty)"
            raise ArchiveError(f"{path}: no images under {folder}/ in the archive (first members: {first})")
        if skipped:
            shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            _say(f"{path.name}: not extracting {len(skipped)} member(s) outside {folder}/: {shown}")
        tmp = root / _STATE_DIR / f"tmp-{path.stem}"
        if tmp.exists():
            shutil.rmtree(tmp)
        for info in wanted:
            zf.extract(info, tmp)
    target = root / folder
    if target.exists():
        _say(f"replacing incomplete {target}")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp / folder).replace(target)
    shutil.rmtree(tmp)
    return target, len(images)


def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        return -1
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _already_extracted(a: DIV2KArchive, marker: Path, target: Path, expected: str | None) -> bool:
    """Whether ``a`` was extracted completely before (its marker agrees with the folder and manifest)."""
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        _say(f"{marker} is unreadable; checking {a.filename} again")
        info = {}
    if _count_images(target) == info.get("n_images"):
        if expected is None or info.get("sha256") == expected:
            _say(f"{a.filename}: already extracted to {target} ({info['n_images']} images), skipping")
            return True
        raise ArchiveError(
            f"{target} was extracted from {a.filename} with sha256 {info.get('sha256')}, which does "
            f"not match the manifest's {expected}; delete {target} and {marker} to redo"
        )
    _say(f"{a.filename}: {target} is incomplete; extracting again")
    marker.unlink()
    return False


def _extract_recorded(
    a: DIV2KArchive, zpath: Path, url: str, root: Path, marker: Path, expected: str | None
) -> None:
    """Verify, extract and write the marker that makes the next run skip this archive."""
    digest = verify_archive(zpath, expected)
    _record_checksum(zpath.parent / "SHA256SUMS", a.filename, digest)
    target, n = extract_archive(zpath, a.folder, root)
    if n != a.n_images:
        _say(f"{a.filename}: extracted {n} images; the official archive has {a.n_images}")
    info = {"archive": a.filename, "url": url, "sha256": digest, "size": zpath.stat().st_size, "n_images": n,
            "folder": a.folder}  # fmt: skip
    marker.write_text(json.dumps(info, indent=2))
    _say(f"{a.filename}: {n} images -> {target}")


# ------------------------------------------------------------------------------------------- top level
def download_div2k(
    root: str | Path,
    tracks: Sequence[str] = DIV2K_TRACKS,
    splits: Sequence[str] = DIV2K_SPLITS,
    base_url: str = DIV2K_BASE_URL,
    checksums: str | Path | None = None,
    keep_archives: bool = True,
    progress: bool = True,
    retries: int = 3,
) -> DIV2KPaths:
    """Download, verify and extract the DIV2K archives for ``splits`` x (HR + ``tracks``) under ``root``.

    Safe to rerun: finished archives are skipped, partial downloads resume. Returns the layout.
    """
    root = Path(root)
    archives = div2k_archives(splits, tracks)
    manifest = read_checksums(checksums) if checksums is not None else None
    if manifest is not None:
        absent = [a.filename for a in archives if a.filename not in manifest]
        if absent:
            raise ArchiveError(f"checksum manifest {checksums} has no entry for: {', '.join(absent)}")
    paths = div2k_paths(root)
    state = root / _STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    for a in archives:
        marker = state / f"{a.filename}.json"
        expected = None if manifest is None else manifest[a.filename]
        if _already_extracted(a, marker, a.target(paths), expected):
            continue
        url = f"{base_url.rstrip('/')}/{a.filename}"
        zpath = root / "archives" / a.filename
        if not zpath.exists():
            download_file(url, zpath, retries=retries, progress=progress, session=session)
        _extract_recorded(a, zpath, url, root, marker, expected)
        if not keep_archives:
            zpath.unlink()
    return paths
