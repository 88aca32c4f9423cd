"""Shared fixtures: the real benchmark images in ../shared/datasets (tests skip without them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SR_TEST_DATA", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/datasets`` (benchmark/ and T91/), or skip with the reason."""
    if not (SHARED_DATA / "benchmark" / "Set5" / "HR").is_dir():
        pytest.skip(f"real benchmark images not found at {SHARED_DATA} (set SR_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A decoded-image cache private to the test session."""
    return tmp_path_factory.mktemp("sr_cache")
