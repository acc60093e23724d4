"""Shared fixtures: tiny models built from configs, and the real data slices in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HF_MTL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets of ../shared/data; tests that need them skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (set HF_MTL_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def examples_data() -> Path:
    return REPO_ROOT / "examples" / "data"
