"""Shared fixtures: an isolated tensor cache for every test and one small synthetic dataset."""

from __future__ import annotations

import pytest
import torch

from lstmbench.config import DataConfig
from lstmbench.data import ImageData, load

# Tiny models on a two-core machine: more threads than cores only adds contention.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own empty decoded-tensor cache (never ~/.cache/lstmbench)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LSTMBENCH_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def small_data_config(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    return DataConfig(
        dataset="synthetic",
        synthetic_train=600,
        synthetic_test=200,
        cache_dir=str(tmp_path_factory.mktemp("session-cache")),
    )


@pytest.fixture(scope="session")
def small_data(small_data_config: DataConfig) -> ImageData:
    """600 synthetic training images (540 fit + 60 validation) and 200 test images."""
    return load(small_data_config)
