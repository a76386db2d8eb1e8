"""Where ``pareto-asha`` finds the objective vectors of the trials that reached a rung.

Every trial keeps its per-epoch objective vectors in user attr ``intermediate_objectives``
(``{"<epoch>": {"values": [...], "constraints": [...]}}``, written by the objective after each
epoch), so any worker can read them. Reading them back for a rung decision would mean loading
every trial of the study, so RDB stores (SQLite, PostgreSQL) also get a small side table in the
same database, ``hpsearch_rung_values``: one row per trial and rung, keyed by
``(study_id, rung, trial_id)``, so a decision reads only the rows of its own rung with one
indexed query. Each row holds the values as JSON and the total violation (readable), and the
same numbers packed as float64 (``packed``: number, violation, values), which PostgreSQL
concatenates into one bytea for NumPy to read without parsing text or building a Python
object per row. Its ``trial_id`` references Optuna's ``trials`` table with
``ON DELETE CASCADE`` (PostgreSQL enforces it: deleting a study deletes its rows). On
PostgreSQL the row is committed without waiting for the disk flush
(``synchronous_commit off``): a crash can lose the last rows, which only leaves those trials
out of a later comparison. Journal, Redis and gRPC stores fall back to
``TrialAttrRungStore``, which reads every trial's user attr (slower, same decisions).

The side table has a schema version, kept in ``hpsearch_schema`` (one row per hpsearch table):
opening it runs the migration steps from the stored version to ``SCHEMA_VERSION`` (as Optuna
runs alembic for its own tables), and a store written by a newer hpsearch is refused with a
clear error rather than misread.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage

from hpsearch.errors import StorageError
from hpsearch.storage.internals import rdb_of, trial_id_of

VECTORS_ATTR = "intermediate_objectives"
TABLE_NAME = "hpsearch_rung_values"


def vector_entry(values: Sequence[float], constraints: Sequence[float | None]) -> dict[str, Any]:
    """One epoch's entry of ``intermediate_objectives``: objective values in spec order and
    constraint values (Optuna's convention, <= 0 holds; None where the metric is unknown)."""
    return {"values": [float(v) for v in values], "constraints": list(constraints)}


def violation_of(constraints: Sequence[float | None]) -> float:
    """Total violation of the known constraint values: 0 when every known one holds."""
    return float(sum(max(float(c), 0.0) for c in constraints if c is not None))


def entry_at(user_attrs: Mapping[str, Any], epoch: int) -> tuple[list[float], float] | None:
    """(values, violation) a trial stored for ``epoch``, or None when it did not reach it."""
    entry = (user_attrs.get(VECTORS_ATTR) or {}).get(str(epoch))
    if not entry:
        return None
    return [float(v) for v in entry["values"]], violation_of(entry.get("constraints") or [])


@dataclass(frozen=True)
class RungEntries:
    """The trials that reached one rung: numbers, objective values ``(n, m)`` as reported
    (not yet turned into losses) and total constraint violations."""

    numbers: np.ndarray
    values: np.ndarray
    violations: np.ndarray

    def index_of(self, number: int) -> int:
        matches = np.flatnonzero(self.numbers == number)
        if matches.size == 0:
            raise KeyError(f"trial {number} is not at this rung")
        return int(matches[0])

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, Sequence[float], float]]) -> RungEntries:
        """From ``(number, values, violation)`` rows."""
        numbers = np.array([row[0] for row in rows], dtype=int)
        values = np.array([list(row[1]) for row in rows], dtype=float)
        violations = np.array([row[2] for row in rows], dtype=float)
        return cls(numbers, values, violations)


class RungStore(ABC):
    """Records a trial's vector at a rung and returns every vector of that rung."""

    @abstractmethod
    def record(
        self, trial: optuna.Trial, rung: int, values: Sequence[float], violation: float
    ) -> RungEntries:
        """Add ``trial``'s entry at ``rung`` (replacing an earlier one) and return all entries
        of the rung in the study, this trial's included."""


class TrialAttrRungStore(RungStore):
    """Reads user attr ``intermediate_objectives`` of every trial (any storage; slower)."""

    def record(
        self, trial: optuna.Trial, rung: int, values: Sequence[float], violation: float
    ) -> RungEntries:
        rows: list[tuple[int, Sequence[float], float]] = [(trial.number, values, violation)]
        for other in trial.study.get_trials(deepcopy=False):
            if other.number == trial.number:
                continue
            entry = entry_at(other.user_attrs, rung)
            if entry is not None:
                rows.append((other.number, entry[0], entry[1]))
        return RungEntries.from_rows(rows)


_METADATA = sa.MetaData()
# Only declared so that the foreign key below resolves; Optuna creates and owns this table.
sa.Table("trials", _METADATA, sa.Column("trial_id", sa.Integer, primary_key=True))
RUNG_TABLE = sa.Table(
    TABLE_NAME,
    _METADATA,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("rung", sa.Integer, primary_key=True),
    sa.Column(
        "trial_id",
        sa.Integer,
        sa.ForeignKey("trials.trial_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("values_json", sa.Text, nullable=False),
    sa.Column("violation", sa.Float, nullable=False),
    sa.Column("packed", sa.LargeBinary, nullable=False),
)


SCHEMA_VERSION = 1
SCHEMA_TABLE = sa.Table(
    "hpsearch_schema",
    _METADATA,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
# version -> the step that takes the side table from that version to the next one
MIGRATIONS: dict[int, Any] = {}


def migrate(connection: sa.Connection) -> int:
    """Bring the side table to ``SCHEMA_VERSION``; the version it had (0: new)."""
    row = connection.execute(
        sa.select(SCHEMA_TABLE.c.version).where(SCHEMA_TABLE.c.component == TABLE_NAME)
    ).first()
    if row is None:
        connection.execute(
            SCHEMA_TABLE.insert().values(component=TABLE_NAME, version=SCHEMA_VERSION)
        )
        return 0
    stored = int(row[0])
    if stored > SCHEMA_VERSION:
        raise StorageError(
            f"the store's {TABLE_NAME} table is at schema version {stored}, newer than this "
            f"hpsearch knows ({SCHEMA_VERSION}); upgrade hpsearch to use this store"
        )
    for version in range(stored, SCHEMA_VERSION):
        MIGRATIONS[version](connection)
    if stored < SCHEMA_VERSION:
        connection.execute(
            SCHEMA_TABLE.update()
            .where(SCHEMA_TABLE.c.component == TABLE_NAME)
            .values(version=SCHEMA_VERSION)
        )
    return stored


class SqlRungStore(RungStore):
    """The ``hpsearch_rung_values`` side table in the RDB store's own database."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        self._study_ids: dict[str, int] = {}
        self._ready = False

    def ensure_table(self) -> None:
        """Create the side table if it is missing (several workers may race to do it)."""
        if self._ready:
            return
        for table in (RUNG_TABLE, SCHEMA_TABLE):
            try:
                table.create(self.engine, checkfirst=True)
            except sa.exc.SQLAlchemyError:
                if not sa.inspect(self.engine).has_table(table.name):
                    raise
        try:
            with self.engine.begin() as connection:
                migrate(connection)
        except sa.exc.IntegrityError:  # another worker wrote the version row first
            with self.engine.begin() as connection:
                migrate(connection)
        self._ready = True

    def study_id(self, trial: optuna.Trial) -> int:
        name = trial.study.study_name
        if name not in self._study_ids:
            self._study_ids[name] = trial.storage.get_study_id_from_name(name)
        return self._study_ids[name]

    def record(
        self, trial: optuna.Trial, rung: int, values: Sequence[float], violation: float
    ) -> RungEntries:
        self.ensure_table()
        study_id, trial_id = self.study_id(trial), _trial_id(trial)
        row = _row(study_id, rung, trial_id, trial.number, values, violation)
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            connection.execute(
                RUNG_TABLE.delete().where(
                    RUNG_TABLE.c.trial_id == trial_id, RUNG_TABLE.c.rung == rung
                )
            )
            connection.execute(RUNG_TABLE.insert().values(**row))
            return _select_rung(connection, study_id, rung)

    def add_entries(
        self, study_id: int, rung: int, rows: Sequence[tuple[int, int, Sequence[float], float]]
    ) -> None:
        """Bulk insert ``(trial_id, trial_number, values, violation)`` rows (backfills and
        benchmarks; trials record themselves through ``record``)."""
        self.ensure_table()
        payload = [_row(study_id, rung, *entry) for entry in rows]
        with self.engine.begin() as connection:
            connection.execute(RUNG_TABLE.insert(), payload)


def _row(
    study_id: int,
    rung: int,
    trial_id: int,
    number: int,
    values: Sequence[float],
    violation: float,
) -> dict[str, Any]:
    floats = [float(v) for v in values]
    packed = np.array([number, violation, *floats], dtype="<f8").tobytes()
    return {
        "study_id": study_id,
        "rung": rung,
        "trial_id": trial_id,
        "trial_number": number,
        "values_json": json.dumps(floats),
        "violation": float(violation),
        "packed": packed,
    }


def _select_rung(connection: sa.Connection, study_id: int, rung: int) -> RungEntries:
    """Every entry of one rung from the ``packed`` column: PostgreSQL concatenates the rows
    into one bytea; other databases return one row each."""
    table = RUNG_TABLE.c
    where = (table.study_id == study_id) & (table.rung == rung)
    if connection.dialect.name == "postgresql":
        concatenated = sa.func.string_agg(table.packed, sa.literal(b"", sa.LargeBinary))
        blob, count = connection.execute(
            sa.select(concatenated, sa.func.count()).where(where)
        ).one()
    else:
        rows = connection.execute(sa.select(table.packed).where(where)).all()
        blob, count = b"".join(row[0] for row in rows), len(rows)
    numbers = np.frombuffer(blob, dtype="<f8").reshape(count, -1)
    return RungEntries(numbers[:, 0].astype(int), numbers[:, 2:], numbers[:, 1].copy())


def _trial_id(trial: optuna.Trial) -> int:
    """Optuna's storage id of a trial (unique in the database, unlike its number)."""
    return trial_id_of(trial)


def rung_store_for(storage: BaseStorage) -> RungStore:
    """The side table for RDB stores, the user-attr fallback for every other store (and
    when Optuna's internals are not to be used: the table's key references Optuna's own)."""
    rdb = rdb_of(storage)
    if rdb is not None:
        return SqlRungStore(rdb.engine)
    return TrialAttrRungStore()
