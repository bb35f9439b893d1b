"""Check image folders before anything trains: every problem as one line naming the field and the file.

Training reads images lazily, inside Ray workers; a truncated PNG, a 1x1 image or an LR folder that is
not HR/scale would otherwise surface tens of seconds later as a trial traceback. Each function here
returns a list of problems (never raises for bad data), so the caller can report all of them at once.

Headers are always read (size and mode, nothing decoded). Pixels are decoded too when asked, or when a
folder is small enough that decoding it is cheap (:data:`DECODE_PIXELS`): a truncated file has a valid
header, so only a decode finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from csrgan.data.datasets import lr_stem_candidates
from csrgan.data.io import IMAGE_SUFFIXES, ImageReadError, image_header, read_image

#: A folder whose images have at most this many pixels in total is fully decoded by default (~1-2 s
#: on one core; Set5/Set14/BSD100 and the demo set are far below it, DIV2K's 800 train images above).
DECODE_PIXELS = 50_000_000
#: Problems listed per check before "... and N more".
MAX_LISTED = 8


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: the readable images' sizes and the problems."""

    field: str
    folder: Path
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)  # (width, height)
    problems: list[str] = field(default_factory=list)
    decoded: bool = False


def capped(lines: Sequence[str], what: str) -> list[str]:
    """The first :data:`MAX_LISTED` lines, then one line saying how many more ``what`` there are."""
    lines = list(lines)
    if len(lines) <= MAX_LISTED:
        return lines
    return [*lines[:MAX_LISTED], f"... and {len(lines) - MAX_LISTED} more {what}"]


def scan_folder(folder: str | Path, field_name: str, *, decode: bool | None = None) -> FolderScan:
    """Header-check every image of ``folder`` (and decode them: ``decode=True``, or ``None`` = if small)."""
    folder = Path(folder)
    scan = FolderScan(field_name, folder)
    if not folder.exists():
        scan.problems.append(f"{field_name}: folder not found: {folder}")
        return scan
    if not folder.is_dir():
        scan.problems.append(f"{field_name}: {folder} is a file, not a folder of images")
        return scan
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        others = f"; it holds {len(entries)} other file(s), e.g. {entries[0].name}" if entries else " (empty)"
        scan.problems.append(f"{field_name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}{others}")
        return scan
    bad: list[str] = []
    for p in images:
        try:
            w, h, _ = image_header(p)
        except ImageReadError as exc:
            bad.append(f"{field_name}: {exc}")
            continue
        scan.sizes[p] = (w, h)
    pixels = sum(w * h for w, h in scan.sizes.values())
    scan.decoded = decode if decode is not None else pixels <= DECODE_PIXELS
    if scan.decoded:
        for p in list(scan.sizes):
            try:
                read_image(p)
            except ImageReadError as exc:
                bad.append(f"{field_name}: {exc}")
                del scan.sizes[p]
    scan.problems.extend(capped(bad, f"unreadable images in {folder}"))
    return scan


def check_min_size(scan: FolderScan, side: int, why: str) -> list[str]:
    """Images of the scan with a side shorter than ``side`` px (``why``: what needs that size); when
    every image of a folder is too small, one line says so."""
    small = [(p, w, h) for p, (w, h) in scan.sizes.items() if min(w, h) < side]
    if len(small) > 1 and len(small) == len(scan.sizes):
        w, h = max(((w, h) for _, w, h in small), key=min)
        return [
            f"{scan.field}: all {len(small)} images in {scan.folder} are smaller than {side}x{side} ({why}); "
            f"the largest is {w}x{h}"
        ]
    lines = [f"{scan.field}: {p} is {w}x{h}, smaller than {side}x{side} ({why})" for p, w, h in small]
    return capped(lines, f"images smaller than {side} px in {scan.folder}")


def check_pairs(hr: FolderScan, lr: FolderScan, scale: int) -> list[str]:
    """Every HR has exactly one LR by name, every LR an HR, and each LR is the modcropped HR / ``scale``."""
    by_stem: dict[str, list[Path]] = {}
    for p in lr.sizes:
        by_stem.setdefault(p.stem, []).append(p)
    used: set[Path] = set()
    lines: list[str] = []
    for hp, (w, h) in hr.sizes.items():
        found = [q for n in lr_stem_candidates(hp.stem, scale) for q in by_stem.get(n, [])]
        if not found:
            looked = ", ".join(n + ".*" for n in lr_stem_candidates(hp.stem, scale))
            lines.append(f"{lr.field}: no LR image for {hp.name} in {lr.folder} (looked for {looked})")
            continue
        if len(found) > 1:
            lines.append(f"{lr.field}: several LR images match {hp.name}: {', '.join(q.name for q in found)}")
        used.update(found)
        lw, lh = lr.sizes[found[0]]
        if (lw, lh) != (w // scale, h // scale):
            lines.append(
                f"{lr.field}: {found[0]} is {lw}x{lh}, but its HR {hp.name} is {w}x{h}, so at x{scale} "
                f"the LR must be {w // scale}x{h // scale}"
            )
    orphans = [f"{lr.field}: {q} has no HR image in {hr.folder}" for q in lr.sizes if q not in used]
    return capped(lines, f"pairing problems in {lr.folder}") + capped(orphans, f"LR orphans in {lr.folder}")
