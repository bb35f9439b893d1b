"""Resumable HTTP downloads into a ``.part`` file, used by :mod:`csrgan.weights` and :mod:`csrgan.data.div2k`.

:func:`fetch_resumable` streams a URL into ``part``. If ``part`` already holds bytes it asks for the rest
with ``Range: bytes=N-`` and appends; a server that answers 200 (ignores ``Range``) makes it start over,
and a 206 whose ``Content-Range`` does not start at ``N`` is an error. A dropped connection or a short
body is retried (resuming) up to ``retries`` times. Every failure raises :class:`DownloadError` (or the
subclass the caller passes) and keeps ``part`` for the next run. What the finished file must be (hash,
archive checks) and where it goes is the caller's business.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
from tqdm.auto import tqdm

__all__ = ["CHUNK", "DownloadError", "fetch_resumable"]

log = logging.getLogger(__name__)

#: Download read size. Small enough that a dropped connection loses little of what arrived (a read that
#: fails mid-chunk discards that chunk), large enough not to matter for throughput.
CHUNK = 1 << 16

#: Network failures worth retrying (resuming from what is on disk); any other request error is final.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes (?:\d+-\d+|\*)/(\d+)")


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, truncated body). Any partial file is kept for resume."""


def kept(part: Path) -> str:
    """The sentence every download error ends with: where the partial file is, or that there is none."""
    if part.is_file() and part.stat().st_size > 0:
        return f"The partial file is kept at {part}; run the download again to resume."
    return "Nothing was kept."


def _size(part: Path) -> int:
    return part.stat().st_size if part.is_file() else 0


def fetch_resumable(
    url: str,
    part: Path,
    *,
    timeout: float,
    progress: bool,
    desc: str | None = None,
    retries: int = 0,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notify: Callable[[str], None] = log.warning,
    error: type[DownloadError] = DownloadError,
) -> bool:
    """Stream ``url`` into ``part``, continuing an existing ``part`` with an HTTP Range request.

    Returns True when the finished ``part`` relies on bytes from before this call (so a failed check
    of the whole file may be a stale part's fault). A 416 answer to the Range request means ``part``
    is already complete if the server's size equals it; otherwise ``part`` does not belong to this
    file and is restarted from zero. ``desc`` labels the progress bar and the messages (default: the
    file name without ``.part``); ``notify`` receives the restart/retry notices; ``sleep`` waits
    between retries. Raises ``error`` (a :class:`DownloadError`) naming ``url`` and the kept part.
    """
    desc = desc if desc is not None else part.name.removesuffix(".part")
    get = session.get if session is not None else requests.get
    attempt = 0
    while True:
        try:
            outcome = _get_once(
                get, url, part, timeout=timeout, progress=progress, desc=desc, notify=notify, error=error
            )
        except _TRANSIENT as exc:
            reason = f"{type(exc).__name__}: {exc}"
            total = None
        except requests.RequestException as exc:
            raise error(f"downloading {url} failed: {exc}. {kept(part)}") from exc
        else:
            if outcome is None:  # the partial file did not fit the remote file; it was deleted
                continue
            complete, resumed, total = outcome
            if complete:
                return resumed
            reason = "the connection closed early"
        attempt += 1
        have = _size(part)
        of = f" of {total}" if total else ""
        if attempt > retries:
            after = f" after {retries} retries" if retries else ""
            raise error(f"downloading {url} stopped at {have}{of} bytes{after} ({reason}). {kept(part)}")
        notify(f"{desc}: {reason} at {have}{of} bytes; retry {attempt}/{retries} from byte {have}")
        sleep(min(2.0**attempt, 30.0))


def _get_once(
    get: Callable[..., requests.Response],
    url: str,
    part: Path,
    *,
    timeout: float,
    progress: bool,
    desc: str,
    notify: Callable[[str], None],
    error: type[DownloadError],
) -> tuple[bool, bool, int | None] | None:
    """One GET appending to ``part``: (complete?, relies on earlier bytes?, total size if known), or
    None after deleting a ``part`` the server says does not fit (416 with another size)."""
    offset = _size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset:
            m = _UNSATISFIED_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
            total = int(m.group(1)) if m else None
            if total == offset:
                return True, True, total
            notify(f"{desc}: partial file ({offset} B) does not fit the remote file ({total} B); restarting")
            part.unlink()
            return None
        if r.status_code not in (200, 206):
            raise error(f"{url}: HTTP {r.status_code} {r.reason}. {kept(part)}")
        length = r.headers.get("Content-Length")
        if r.status_code == 206:
            content_range = r.headers.get("Content-Range")
            m = _CONTENT_RANGE.fullmatch((content_range or "").strip())
            if m is None or int(m.group(1)) != offset:
                raise error(
                    f"{url}: asked to resume at byte {offset} but the server sent Content-Range "
                    f"{content_range!r}. {kept(part)}"
                )
            total = int(m.group(2)) if m.group(2) != "*" else None
        else:
            if offset:
                notify(f"{desc}: the server ignored the Range request (no resume support); restarting from 0")
            offset = 0
            total = None
        if total is None and length is not None:
            total = offset + int(length)
        with (
            part.open("ab" if offset else "wb") as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
            ) as bar,
        ):
            for chunk in r.iter_content(chunk_size=CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    size = _size(part)
    return (total is None or size == total), offset > 0, total
