"""Shared fixtures. ``shared_datasets`` is the team's benchmark folder (../shared/datasets from the repo
root); tests that need it skip with a clear reason where it is absent (CI and dev machines have it)."""

from __future__ import annotations

from pathlib import Path

import pytest

# moto_server, s3_bucket: a real S3-protocol server on loopback (tests/s3_server.py)
pytest_plugins = ["tests.s3_server"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark images not found at {SHARED_DATASETS} (the team's ../shared/datasets)")
    return SHARED_DATASETS
