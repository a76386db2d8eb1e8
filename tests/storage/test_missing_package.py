"""A store whose optional package is missing names the package, not the server."""

from __future__ import annotations

import sys

import pytest

from hpsearch.errors import StorageError
from hpsearch.storage import open_storage


def test_a_redis_url_without_the_redis_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(StorageError, match=r"needs the Python package redis: pip install redis"):
        open_storage("redis://127.0.0.1:6379/0")
