"""Shared fixtures: the real benchmark images in ../shared/datasets (tests skip without them),
private caches, and tiers: tests marked ``slow`` (subprocesses, launchers, signals, several
processes) run only in ``make test``; ``make test-fast`` runs the rest in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHARED_DATA, compose_with_hydra, task_config, tiny_args
from omegaconf import DictConfig


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


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory) -> Path:
    """A cache for ``data=sample`` (scikit-image's photos), shared by the session."""
    pytest.importorskip("skimage", reason="data=sample needs scikit-image (the [sample] extra)")
    return tmp_path_factory.mktemp("sample_cache")


@pytest.fixture(scope="session")
def cfg_train_global(tmp_path_factory) -> DictConfig:
    """``train.py experiment=quickstart`` shrunk to a 1x8 EDSR (helpers.tiny_args), composed
    once per session as lightning-hydra-template's conftest does; tests take a copy."""
    return compose_with_hydra("train", tiny_args(tmp_path_factory.mktemp("quickstart_cache")))


@pytest.fixture
def cfg_train(cfg_train_global, tmp_path) -> DictConfig:
    """A copy of the session's tiny train config whose run folder is ``tmp_path/run``."""
    return task_config(cfg_train_global, tmp_path / "run")
