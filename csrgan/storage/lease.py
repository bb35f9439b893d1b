"""Leases: one holder at a time for a key (the stage cache's "I build this stage" step), on a local folder
and on object storage (``s3://``, ``gs://``), with expiry and a takeover rule that do not trust clocks.

**The lease object.** One object (file) per key, ``<location>/<key>``; the stage cache uses the key
``_stages/<stage>-<key>/.lease``. It holds JSON::

    {"owner": "host:pid:uuid", "host": ..., "pid": ..., "acquired_at": ..., "renewed_at": ...,
     "ttl_s": ..., "seq": ..., "released": false}

``owner`` is new for every acquisition (the uuid part), ``seq`` counts renewals, so every write has new
bytes and therefore a new *token*: the S3 ETag, the GCS generation, or a hash of the file's content. The
times are the holder's wall clock and are **informative only** (messages); no decision reads them.

**Acquire** is a conditional create: S3 ``PutObject If-None-Match: *``, GCS ``if_generation_match=0``, a
local ``open(O_CREAT | O_EXCL)``. The store lets exactly one of any number of racing creators succeed.

**Renew.** The holder rewrites the object conditioned on its last token (S3 ``If-Match: <ETag>``, GCS
``if_generation_match=<generation>``, locally compare-then-rename under a short guard lock), every
``ttl_s / 3`` from a background thread (:meth:`Lease.start_heartbeat`). A failed precondition means
someone took the lease over: the lease is **lost** for good (:attr:`Lease.lost`, :meth:`Lease.confirm`
raises :class:`LeaseLostError`). A holder that has not renewed successfully for ``ttl_s`` on its own
monotonic clock also reports ``lost`` (a waiter may have taken over meanwhile); a later successful renewal
proves nobody did and clears that. **Check** :attr:`Lease.lost` **or call** :meth:`Lease.confirm` **before
publishing** anything only the holder may publish.

**Expiry without trusting clocks.** A waiter judges a lease expired when its token has not changed for the
lease's ``ttl_s`` measured on the *waiter's own* monotonic clock, counted from when the waiter first saw
that token. Clock skew between machines therefore cannot cause a takeover; only a holder that stopped
renewing (dead, hung, partitioned) for ``ttl_s`` can lose its lease. Because the waiter's count starts
after the holder's write and the holder's own count (above) starts before it, the holder always learns
it may be expired no later than any waiter acts. **Takeover** overwrites the object conditioned on the
stale token; exactly one waiter can win it, the others see a new token and start counting again.

**Release** first overwrites the object with a ``"released": true`` tombstone conditioned on the holder's
token (nothing happens if the lease was lost), then deletes the tombstone conditioned on *its* token
(S3 ``DeleteObject If-Match``, GCS ``if_generation_match``). So a release after losing the lease never
touches the new holder's lease, even on S3-compatible servers that ignore a conditional delete. A
tombstone left behind (a crash between the two steps) counts as free.

**Ambiguous writes.** When a conditional write fails its precondition, the object is read back: if it
holds exactly the bytes just written, a retried request had already succeeded, and the write counts.

**Backends.** ``lease_store(location)``: a folder (path, ``~/...``, ``file://...``); ``s3://bucket/prefix``
through ``boto3`` (pyarrow's S3 filesystem cannot write conditionally), with the same query pyarrow takes:
``?endpoint_override=HOST:PORT&scheme=http&region=...`` (``access_key``/``secret_key``/``session_token``
too); credentials otherwise from the usual AWS environment / config chain. ``gs://bucket/prefix`` through
``google-cloud-storage`` when it is installed (it is not a csrgan dependency: ``pip install
google-cloud-storage``); that backend is written to the library's documented preconditions but has not run
against a real GCS server (none is reachable from the test machines). The local backend needs a filesystem
with atomic ``O_EXCL`` create and rename (any local disk; NFSv3+).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = [
    "Lease",
    "LeaseError",
    "LeaseInfo",
    "LeaseLostError",
    "LeaseStore",
    "acquire",
    "lease_store",
]

log = logging.getLogger(__name__)

#: The holder's wall clock, written into the lease for humans only (tests shift it to prove that).
_wall: Callable[[], float] = time.time
_SECRET_PARAMS = ("access_key", "secret_key", "session_token")


class LeaseError(RuntimeError):
    """The lease store cannot be used (missing bucket, unreachable endpoint, no credentials ...).

    The message names the location and says what to check; it is user-facing."""


class LeaseLostError(LeaseError):
    """The lease was taken over (or could not be renewed within its ttl): do not publish."""


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease object says, plus its ``token`` (ETag / generation / content hash)."""

    key: str
    token: str
    owner: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float
    ttl_s: float
    released: bool = False

    def describe(self) -> str:
        """One line for messages: who holds it, since when (the holder's clock)."""

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "?"

        return (
            f"held by {self.owner} (host {self.host}, pid {self.pid}) since {iso(self.acquired_at)}, "
            f"renewed {iso(self.renewed_at)} by its clock, ttl {self.ttl_s:g} s"
        )


class _Backend(Protocol):
    """Conditional single-object operations; ``rel`` is a ``/`` path under the store's location."""

    def create(self, rel: str, data: bytes) -> str | None:
        """Write ``data`` only if no object exists; its token, or None when one existed."""

    def read(self, rel: str) -> tuple[bytes, str] | None:
        """(bytes, token), or None when there is no object."""

    def replace(self, rel: str, data: bytes, token: str) -> str | None:
        """Overwrite only if the object's token is ``token``; the new token, or None."""

    def delete(self, rel: str, token: str) -> bool:
        """Delete only if the object's token is ``token``; whether it did."""


# ----------------------------------------------------------------------------------------------- the store


class LeaseStore:
    """Leases under one location (see the module docstring); build it with :func:`lease_store`."""

    def __init__(self, backend: _Backend, location: str) -> None:
        self._backend = backend
        self.location = location

    def __repr__(self) -> str:
        return f"LeaseStore({self.location!r})"

    def try_acquire(self, key: str, ttl_s: float) -> Lease | None:
        """The lease on ``key`` if nobody holds it (a released tombstone counts as free); else None.

        Never waits and never takes over a live or expired lease (:func:`acquire` does that)."""
        rel = _check_key(key)
        if ttl_s <= 0:
            raise ValueError(f"lease ttl_s must be > 0, got {ttl_s!r}")
        lease = Lease(self, rel, ttl_s)
        started = time.monotonic()
        token = self._write(rel, lease._payload(), None)
        if token is None:
            current = self.holder(rel, include_released=True)
            if current is None or not current.released:
                return None
            token = self._write(rel, lease._payload(), current.token)
            if token is None:
                return None
        lease._held(token, started)
        return lease

    def holder(self, key: str, include_released: bool = False) -> LeaseInfo | None:
        """Who holds ``key`` now (None: nobody; a released tombstone counts as nobody unless asked)."""
        rel = _check_key(key)
        got = self._backend.read(rel)
        if got is None:
            return None
        info = _parse(rel, *got)
        return None if info.released and not include_released else info

    def take_over(self, stale: LeaseInfo, ttl_s: float) -> Lease | None:
        """Replace the lease ``stale`` describes (the caller judged it expired, see :func:`acquire`);
        None if its token changed meanwhile (renewed, released, or another waiter won)."""
        lease = Lease(self, stale.key, ttl_s)
        started = time.monotonic()
        token = self._write(stale.key, lease._payload(), stale.token)
        if token is None:
            return None
        log.info("lease %s: took over from %s", self.describe(stale.key), stale.describe())
        lease._held(token, started)
        return lease

    def describe(self, key: str) -> str:
        """``key`` under this store, for messages."""
        base, q, query = _redact(self.location).partition("?")
        return f"{base.rstrip('/')}/{key}{q}{query}"

    def _write(self, rel: str, data: bytes, expected: str | None) -> str | None:
        """Conditional create (``expected`` None) or replace; on a failed precondition, read back: the
        object holding exactly ``data`` means a retried request had already succeeded (module docstring)."""
        if expected is None:
            token = self._backend.create(rel, data)
        else:
            token = self._backend.replace(rel, data, expected)
        if token is not None:
            return token
        got = self._backend.read(rel)
        return got[1] if got is not None and got[0] == data else None

    def _delete(self, rel: str, token: str) -> bool:
        return self._backend.delete(rel, token)


# ----------------------------------------------------------------------------------------------- a lease


class Lease:
    """A held lease. Use it as a context manager (releases on exit) and keep it alive with
    :meth:`start_heartbeat`; check :attr:`lost` / call :meth:`confirm` before publishing."""

    def __init__(self, store: LeaseStore, key: str, ttl_s: float) -> None:
        self.store = store
        self.key = key
        self.ttl_s = float(ttl_s)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.acquired_at = _wall()
        self._seq = 0
        self._released_flag = False
        self._token = ""
        self._renewed_mono = 0.0
        self._lost = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.beat_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Lease({self.store.describe(self.key)!r}, owner={self.owner!r}, lost={self.lost})"

    def _payload(self) -> bytes:
        body = {
            "owner": self.owner,
            "host": self.host,
            "pid": self.pid,
            "acquired_at": self.acquired_at,
            "renewed_at": _wall(),
            "ttl_s": self.ttl_s,
            "seq": self._seq,
            "released": self._released_flag,
        }
        return json.dumps(body, sort_keys=True).encode()

    def _held(self, token: str, started: float) -> None:
        self._token, self._renewed_mono = token, started

    @property
    def token(self) -> str:
        return self._token

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease taken over or released, and while no renewal has succeeded
        for ``ttl_s`` on this process's clock (a waiter may have taken over; a later renewal may clear it)."""
        return self._lost or time.monotonic() - self._renewed_mono > self.ttl_s

    def renew(self) -> bool:
        """Rewrite the lease conditioned on its last token: True if still held, False if lost for good.

        Store errors (network, credentials) raise :class:`LeaseError`; the lease is not lost by them
        unless they last ``ttl_s`` (see :attr:`lost`)."""
        with self._lock:
            if self._lost:
                return False
            self._seq += 1
            started = time.monotonic()
            token = self.store._write(self.key, self._payload(), self._token)
            if token is None:
                self._lost = True
                log.warning("lease %s: lost (taken over by another holder)", self.store.describe(self.key))
                return False
            self._held(token, started)
            return True

    def confirm(self) -> None:
        """Renew now and raise :class:`LeaseLostError` unless the lease is still ours: call it right before
        publishing (it also gives a full ``ttl_s`` of margin)."""
        if not self.renew():
            raise LeaseLostError(
                f"lease {self.store.describe(self.key)}: lost; another process took it over "
                f"(this one, {self.owner}, did not renew it within ttl_s={self.ttl_s:g} s); do not publish"
            )

    def release(self) -> bool:
        """Give the lease up: True if it was still ours and is now free, False if it had been lost (then
        nothing of the new holder's is touched). Stops the heartbeat first. Idempotent."""
        self.stop_heartbeat()
        with self._lock:
            if self._lost or self._released_flag:
                return False
            self._released_flag = True
            self._seq += 1
            token = self.store._write(self.key, self._payload(), self._token)
            self._lost = True  # whatever happens next, this lease is no longer held
            if token is None:
                return False
            self.store._delete(self.key, token)  # fails only if a new holder took the tombstone: fine
            return True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- heartbeat
    def start_heartbeat(
        self, on_beat: Callable[[Lease], None] | None = None, beat_s: float | None = None
    ) -> Lease:
        """Renew every ``ttl_s / 3`` in a daemon thread until :meth:`stop_heartbeat`, :meth:`release` or
        loss. ``on_beat(lease)`` (e.g. upload checkpoints) runs every ``beat_s`` (default ``ttl_s / 3``)
        in a second thread, so a slow callback never delays a renewal; it is skipped once the lease is
        lost, and an exception it raises is logged and kept in :attr:`beat_error`. Returns ``self``."""
        if self._threads:
            raise RuntimeError(f"lease {self.store.describe(self.key)}: heartbeat already running")
        self._stop.clear()
        period = self.ttl_s / 3
        self._threads = [threading.Thread(target=self._renew_loop, args=(period,), daemon=True)]
        if on_beat is not None:
            args = (on_beat, beat_s or period)
            self._threads.append(threading.Thread(target=self._beat_loop, args=args, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop_heartbeat(self) -> None:
        """Stop renewing (waits for a running ``on_beat`` to return)."""
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        self._threads = []

    def _renew_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                if not self.renew():
                    return
            except Exception as exc:  # noqa: BLE001 - keep trying; `lost` turns True after ttl_s
                log.warning("lease %s: renewal failed, retrying: %s", self.store.describe(self.key), exc)

    def _beat_loop(self, on_beat: Callable[[Lease], None], period: float) -> None:
        while not self._stop.wait(period):
            if self.lost:
                return
            try:
                on_beat(self)
            except Exception as exc:  # noqa: BLE001 - the callback's failure must not kill the lease
                self.beat_error = exc
                log.warning("lease %s: on_beat failed: %s", self.store.describe(self.key), exc)


def acquire(
    store: LeaseStore,
    key: str,
    ttl_s: float,
    poll_s: float = 1.0,
    on_wait: Callable[[LeaseInfo], None] | None = None,
    timeout_s: float | None = None,
) -> Lease:
    """Block until this process holds the lease on ``key``, taking over an expired one.

    Expired = its token unchanged for the lease's ``ttl_s`` on *this* process's monotonic clock (module
    docstring). ``on_wait(info)`` is called when this call starts waiting on a holder and again whenever
    the holder changes. ``timeout_s`` (None: wait for ever) raises ``TimeoutError`` naming the holder."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen_token, seen_at, last_owner = "", 0.0, ""
    while True:
        lease = store.try_acquire(key, ttl_s)
        if lease is not None:
            return lease
        info = store.holder(key)
        if info is None:
            continue  # released between the two calls: try again at once
        now = time.monotonic()
        if info.token != seen_token:
            seen_token, seen_at = info.token, now
        elif now - seen_at >= info.ttl_s:
            lease = store.take_over(info, ttl_s)
            if lease is not None:
                return lease
            seen_token = ""
            continue
        if on_wait is not None and info.owner != last_owner:
            last_owner = info.owner
            on_wait(info)
        if deadline is not None and now >= deadline:
            raise TimeoutError(f"lease {store.describe(key)}: still {info.describe()} after {timeout_s:g} s")
        wait = min(poll_s, max(0.0, seen_at + info.ttl_s - now) + 0.01)
        time.sleep(wait if deadline is None else max(0.0, min(wait, deadline - now)))


def _parse(rel: str, data: bytes, token: str) -> LeaseInfo:
    """The lease object's content; anything unreadable is a lease of an unknown owner (it still expires:
    its ttl is then taken as 60 s, and a half-written local file gets a new token once complete)."""
    try:
        d = json.loads(data)
        return LeaseInfo(
            key=rel,
            token=token,
            owner=str(d["owner"]),
            host=str(d.get("host", "?")),
            pid=int(d.get("pid", -1)),
            acquired_at=float(d.get("acquired_at", 0.0)),
            renewed_at=float(d.get("renewed_at", 0.0)),
            ttl_s=float(d["ttl_s"]),
            released=bool(d.get("released", False)),
        )
    except (ValueError, KeyError, TypeError):
        return LeaseInfo(rel, token, "?", "?", -1, 0.0, 0.0, 60.0)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"lease key {key!r}: must be a relative path like '_stages/<id>/.lease'")
    return key


def _redact(location: str) -> str:
    """``location`` without secrets from its query (for messages)."""
    base, q, query = location.partition("?")
    if not q:
        return location
    params = [(k, "***" if k in _SECRET_PARAMS else v) for k, vs in parse_qs(query).items() for v in vs]
    return f"{base}?{urlencode(params, safe=':/')}"


# ----------------------------------------------------------------------------------------------- backends


def lease_store(location: str | Path) -> LeaseStore:
    """The lease store for a storage location: a folder (path, ``~/...``, ``file://...``), ``s3://...``
    (S3 and S3-compatible servers, pyarrow's query parameters) or ``gs://...`` (needs
    ``google-cloud-storage``). No request is made here; errors surface on first use, naming the URI."""
    text = str(location)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        root = Path(text.removeprefix("file://")).expanduser().resolve()
        return LeaseStore(_LocalBackend(root), str(root))
    if scheme == "s3":
        return LeaseStore(_S3Backend(text), text)
    if scheme in ("gs", "gcs"):
        return LeaseStore(_GcsBackend(text), text)
    raise ValueError(
        f"lease store {_redact(text)!r}: unsupported scheme {scheme!r}; use a folder, s3://bucket/prefix "
        "or gs://bucket/prefix"
    )


def _local_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


class _LocalBackend:
    """A folder: create with ``O_CREAT | O_EXCL``; replace and delete compare the content token and then
    rename / unlink while holding ``<file>.guard`` (a :mod:`filelock`, held for milliseconds, released by
    the OS if the process dies)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, rel: str) -> Path:
        return self.root.joinpath(*rel.split("/"))

    def create(self, rel: str, data: bytes) -> str | None:
        path = self._path(rel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        except OSError as exc:
            raise LeaseError(
                f"lease store {self.root}: cannot create {path} ({exc}); check the folder"
            ) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return _local_token(data)

    def read(self, rel: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(rel).read_bytes()
        except FileNotFoundError:
            return None
        return data, _local_token(data)

    def _guard(self, rel: str) -> Any:
        from filelock import FileLock

        path = self._path(rel)
        return FileLock(str(path.with_name(path.name + ".guard")), timeout=30)

    def replace(self, rel: str, data: bytes, token: str) -> str | None:
        path = self._path(rel)
        with self._guard(rel):
            got = self.read(rel)
            if got is None or got[1] != token:
                return None
            tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return _local_token(data)

    def delete(self, rel: str, token: str) -> bool:
        with self._guard(rel):
            got = self.read(rel)
            if got is None or got[1] != token:
                return False
            self._path(rel).unlink()
        return True


def _s3_settings(uri: str) -> tuple[str, str, dict[str, Any]]:
    """(bucket, key prefix, boto3 client kwargs) from a pyarrow-style ``s3://`` URI."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise LeaseError(f"lease store {_redact(uri)!r}: no bucket; write s3://BUCKET/prefix")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, Any] = {}
    endpoint = q.get("endpoint_override")
    if endpoint:
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{q.get('scheme', 'https')}://{endpoint}"
    if q.get("region"):
        kwargs["region_name"] = q["region"]
    boto_names = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
    for name, arg in zip(_SECRET_PARAMS, boto_names, strict=True):
        if q.get(name):
            kwargs[arg] = q[name]
    return parts.netloc, parts.path.strip("/"), kwargs


class _S3Backend:
    """S3 and S3-compatible servers through boto3's conditional requests (``If-None-Match: *``,
    ``If-Match: <ETag>`` on PutObject and DeleteObject)."""

    #: 409 ConditionalRequestConflict: another conditional write to the key is in flight; retried.
    _CONFLICT_RETRIES = 5

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.bucket, self.prefix, self._kwargs = _s3_settings(uri)
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _s3(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                cfg = Config(
                    connect_timeout=5, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"}
                )
                self._client = boto3.session.Session().client("s3", config=cfg, **self._kwargs)
            return self._client

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, op: str, **kw: Any) -> Any:
        """One request; None on a failed precondition (412) or a missing key; store errors as LeaseError."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(self._CONFLICT_RETRIES + 1):
            try:
                return getattr(self._s3(), op)(Bucket=self.bucket, **kw)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    return None
                if code == "ConditionalRequestConflict" and attempt < self._CONFLICT_RETRIES:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise LeaseError(self._explain(code, exc)) from None
            except BotoCoreError as exc:
                raise LeaseError(self._explain(type(exc).__name__, exc)) from None
        raise AssertionError("unreachable")

    def _explain(self, code: str, exc: Exception) -> str:
        where = f"lease store {_redact(self.uri)}"
        if code == "NoSuchBucket":
            return f"{where}: bucket {self.bucket!r} does not exist; create it or fix the storage URI"
        if code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
            return (
                f"{where}: cannot reach the S3 endpoint ({exc}); check endpoint_override/scheme in the URI "
                "(or AWS_ENDPOINT_URL) and that the server is up"
            )
        if code in ("NoCredentialsError", "PartialCredentialsError"):
            return f"{where}: no AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return f"{where}: access denied ({code}); check the AWS credentials and the bucket policy"
        return f"{where}: {type(exc).__name__}: {exc}"

    def create(self, rel: str, data: bytes) -> str | None:
        r = self._call("put_object", Key=self._key(rel), Body=data, IfNoneMatch="*")
        return None if r is None else str(r["ETag"])

    def read(self, rel: str) -> tuple[bytes, str] | None:
        r = self._call("get_object", Key=self._key(rel))
        return None if r is None else (r["Body"].read(), str(r["ETag"]))

    def replace(self, rel: str, data: bytes, token: str) -> str | None:
        r = self._call("put_object", Key=self._key(rel), Body=data, IfMatch=token)
        return None if r is None else str(r["ETag"])

    def delete(self, rel: str, token: str) -> bool:
        return self._call("delete_object", Key=self._key(rel), IfMatch=token) is not None


class _GcsBackend:
    """Google Cloud Storage through ``google-cloud-storage`` generation preconditions
    (``if_generation_match=0`` creates, ``=<generation>`` replaces / deletes). Not tested against a real
    server (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        try:
            from google.api_core import exceptions
            from google.cloud import storage
        except ImportError:
            raise LeaseError(
                f"lease store {uri}: gs:// leases need the google-cloud-storage package "
                "(pip install google-cloud-storage)"
            ) from None
        parts = urlsplit(uri)
        self.uri, self.prefix, self._exc = uri, parts.path.strip("/"), exceptions
        self._bucket_name = parts.netloc
        self._storage = storage
        self._bucket: Any = None

    def _blob(self, rel: str) -> Any:
        return self._bucket_obj().blob(self._name(rel))

    def _bucket_obj(self) -> Any:
        if self._bucket is None:
            self._bucket = self._storage.Client().bucket(self._bucket_name)
        return self._bucket

    def _name(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; None on a failed precondition or a missing object; other errors as LeaseError."""
        try:
            return fn()
        except (self._exc.PreconditionFailed, self._exc.NotFound) as exc:
            if "bucket does not exist" in str(exc).lower():
                raise LeaseError(
                    f"lease store {self.uri}: bucket {self._bucket_name!r} does not exist; "
                    "create it or fix the URI"
                ) from None
            return None
        except Exception as exc:  # noqa: BLE001 - google.auth and api_core errors: name the URI
            raise LeaseError(f"lease store {self.uri}: {type(exc).__name__}: {exc}") from None

    def _upload(self, rel: str, data: bytes, generation: int) -> str | None:
        blob = self._blob(rel)

        def put() -> str:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
            return str(blob.generation)

        return self._guarded(put)

    def create(self, rel: str, data: bytes) -> str | None:
        return self._upload(rel, data, 0)

    def replace(self, rel: str, data: bytes, token: str) -> str | None:
        return self._upload(rel, data, int(token))

    def read(self, rel: str) -> tuple[bytes, str] | None:
        name = self._name(rel)
        for _ in range(5):  # the object may change between reading its generation and its bytes
            blob = self._guarded(lambda: self._bucket_obj().get_blob(name))
            if blob is None:
                return None
            data = self._guarded(lambda b=blob: b.download_as_bytes(if_generation_match=b.generation))
            if data is not None:
                return data, str(blob.generation)
        return None

    def delete(self, rel: str, token: str) -> bool:
        blob = self._blob(rel)
        return self._guarded(lambda: blob.delete(if_generation_match=int(token)) or True) is not None
