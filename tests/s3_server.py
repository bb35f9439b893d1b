"""A real S3-protocol server on loopback for the object-storage tests: ``moto`` in server mode.

``moto_server`` (session fixture) starts ``python -m moto.server`` on 127.0.0.1 at a free port, once per
test session, and sets the (fake) AWS credentials in this process's environment, so Ray processes
started afterwards inherit them. ``s3_bucket`` (function fixture) makes a fresh bucket per test and
gives :class:`S3Bucket`: ``uri("prefix")`` is a storage URI every part of csrgan understands — pyarrow
reads ``endpoint_override``/``scheme``/``region`` from its query, and so does the lease
(:mod:`csrgan.storage.lease`) — and ``client`` is a boto3 client for assertions.

Nothing leaves loopback: the endpoint is 127.0.0.1 and boto3/pyarrow are told so explicitly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "csrgan-test",
    "AWS_SECRET_ACCESS_KEY": "csrgan-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for credentials
}


@dataclass(frozen=True)
class MotoServer:
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")


@dataclass(frozen=True)
class S3Bucket:
    server: MotoServer
    name: str

    @property
    def client(self) -> Any:
        return self.server.client()

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>?endpoint_override=127.0.0.1:P&scheme=http&region=us-east-1``."""
        path = f"{self.name}/{prefix.strip('/')}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.server.endpoint}&scheme=http&region=us-east-1"

    def object_keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (all pages)."""
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        for page in pages:
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_moto(host: str = "127.0.0.1", timeout_s: float = 30.0) -> tuple[subprocess.Popen, MotoServer]:
    """Start ``moto.server`` and wait until it answers."""
    port = _free_port(host)
    env = {**os.environ, **CREDENTIALS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto.server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc, MotoServer(host, port)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto.server did not listen on {host}:{port} within {timeout_s:g} s")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    old = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    proc, server = start_moto()
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> S3Bucket:
    name = f"csrgan-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=name)
    return S3Bucket(moto_server, name)
