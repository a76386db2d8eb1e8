"""The runnable ``Example:`` sections of the public API's docstrings (``run``,
``best_configs``, ``load_spec``, ``try_config``, ``Trainer``, ``Rule``, the registries)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hpsearch.runner",
    "hpsearch.query",
    "hpsearch.search_spaces",
    "hpsearch.trainers.base",
    "hpsearch.pruners.base",
    "hpsearch.registry",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_the_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.attempted > 0, f"{module_name} has no example"
    assert result.failed == 0
