"""Optuna's private internals stay behind one wall (``hpsearch.storage.internals``), the wall
checks the Optuna versions it was tested with, and the rung side table migrates."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

import hpsearch
from hpsearch.errors import StorageError
from hpsearch.pruners import rung_store
from hpsearch.storage import internals

PACKAGE = Path(hpsearch.__file__).parent
PRIVATE_OPTUNA = re.compile(
    r"\._storage\b|\._trial_id\b|\._study_id\b|\._backend\b|[\"']_backend[\"']|_thread_local"
    r"|_create_scoped_session|optuna\.[\w.]*\._\w+|\b_rdb\b"
)


def test_no_private_optuna_name_is_used_outside_the_wall() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "internals.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE_OPTUNA.search(line)
    ]
    assert offenders == []


def test_the_wall_itself_is_found_by_the_pattern() -> None:  # the grep above can fail
    text = (PACKAGE / "storage" / "internals.py").read_text()
    assert len(PRIVATE_OPTUNA.findall(text)) >= 5


def test_another_optuna_version_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(optuna, "__version__", "9.1.0")
    monkeypatch.setattr(internals, "_warned_version", False)
    with caplog.at_level(logging.WARNING, logger="hpsearch.storage"):
        internals.check_optuna_version()
        internals.check_optuna_version()
    assert [r.getMessage() for r in caplog.records if "9.1.0" in r.getMessage()] == [
        caplog.records[0].getMessage()
    ]
    assert "public API" in caplog.records[0].getMessage()


def _engine(tmp_path: Path) -> sa.engine.Engine:
    from hpsearch.storage import open_storage

    url = f"sqlite:///{tmp_path / 'rungs.db'}"
    storage = internals.rdb_of(open_storage(url))
    assert storage is not None
    return storage.engine


def _version(engine: sa.engine.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT version FROM hpsearch_schema")).scalar())


def test_the_side_table_records_its_schema_version(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rung_store.SqlRungStore(engine).ensure_table()
    assert _version(engine) == rung_store.SCHEMA_VERSION


def test_an_older_side_table_is_migrated_step_by_step_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(tmp_path)
    rung_store.SqlRungStore(engine).ensure_table()
    steps: list[int] = []

    def add_column(connection: sa.Connection) -> None:
        steps.append(1)
        connection.execute(sa.text("ALTER TABLE hpsearch_rung_values ADD COLUMN note TEXT"))

    monkeypatch.setattr(rung_store, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(rung_store.MIGRATIONS, 1, add_column)
    rung_store.SqlRungStore(engine).ensure_table()
    rung_store.SqlRungStore(engine).ensure_table()
    assert steps == [1]
    assert _version(engine) == 2
    assert "note" in {c["name"] for c in sa.inspect(engine).get_columns("hpsearch_rung_values")}


def test_a_side_table_from_a_newer_hpsearch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(tmp_path)
    rung_store.SqlRungStore(engine).ensure_table()
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE hpsearch_schema SET version = 7"))
    with pytest.raises(StorageError, match="schema version 7, newer .* upgrade hpsearch"):
        rung_store.SqlRungStore(engine).ensure_table()
