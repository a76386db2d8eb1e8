"""Every use of Optuna's private internals, behind one wall.

hpsearch reaches past Optuna's public API in a few places, for speed (one SQL query instead of
reading every trial) or for something the public API cannot do (count trials by state in SQL,
find RUNNING trials that never recorded a heartbeat). Every such use is in this module and
nowhere else (a test greps the package for private Optuna names).

Contract:
- Written for Optuna 5.0 and checked with every version in ``TESTED_WITH`` (the whole suite,
  with and without the fallbacks below); ``check_optuna_version()`` (called when a store is
  opened) logs one warning if another major.minor version is installed.
- Each function with a public-API fallback takes it when the private name is missing (an
  Optuna upgrade that moves it), or always when ``HPSEARCH_OPTUNA_PUBLIC_ONLY=1`` (the test
  suite runs the storage suite that way), so an upgrade degrades speed, never correctness.
- Functions without a public equivalent (``storage_of``, ``orphan_trial_ids``) say so.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger("hpsearch.storage")
TESTED_WITH = ((5, 0), (5, 1))
PUBLIC_ONLY_ENV = "HPSEARCH_OPTUNA_PUBLIC_ONLY"
# Optuna logs a failed trial's traceback on this logger (hpsearch filters it to one line).
OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"
_warned_version = False


def public_only() -> bool:
    """True when every function here must take its public-API fallback."""
    return os.environ.get(PUBLIC_ONLY_ENV, "").lower() in ("1", "true", "yes")


def check_optuna_version() -> None:
    """One warning when the installed Optuna's major.minor is not one this wall was tested with."""
    global _warned_version
    import optuna

    installed = tuple(int(part) for part in optuna.__version__.split(".")[:2])
    if installed not in TESTED_WITH and not _warned_version:
        _warned_version = True
        logger.warning(
            "Optuna %s is installed; hpsearch's storage shortcuts were tested with %s (it "
            "falls back to the public API where a private name moved)",
            optuna.__version__,
            ", ".join(f"{major}.{minor}" for major, minor in TESTED_WITH),
        )


# -- handles --------------------------------------------------------------------------------


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage (Optuna has no public accessor; ``Study._storage``)."""
    return study._storage


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's in-process trial cache (it wraps RDB stores)."""
    backend: BaseStorage = getattr(storage, "_backend", storage)
    return backend


def rdb_of(storage: BaseStorage) -> RDBStorage | None:
    """The SQL store behind ``storage`` for the SQL shortcuts, or None (not SQL, or public
    API only)."""
    from optuna.storages import RDBStorage

    backend = backend_of(storage)
    if public_only() or not isinstance(backend, RDBStorage):
        return None
    return backend


def study_id_of(study: optuna.Study) -> int:
    """The study's storage id (``Study._study_id``; public fallback: a lookup by name)."""
    study_id = None if public_only() else getattr(study, "_study_id", None)
    if study_id is None:
        study_id = storage_of(study).get_study_id_from_name(study.study_name)
    return int(study_id)


def trial_id_of(trial: optuna.Trial) -> int:
    """A trial's storage id, unique in the database (``Trial._trial_id``; public fallback: a
    lookup by study id and trial number)."""
    trial_id = None if public_only() else getattr(trial, "_trial_id", None)
    if trial_id is None:
        study_id = study_id_of(trial.study)
        trial_id = trial.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    return int(trial_id)


def frozen_trial_id(study: optuna.Study, trial: FrozenTrial) -> int:
    """A finished or listed trial's storage id (``FrozenTrial._trial_id``; public fallback:
    a lookup by study id and trial number)."""
    trial_id = None if public_only() else getattr(trial, "_trial_id", None)
    if trial_id is None:
        storage = storage_of(study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id_of(study), trial.number)
    return int(trial_id)


def with_trial_cache(storage: BaseStorage) -> BaseStorage:
    """``storage`` behind Optuna's trial cache (``optuna.storages.get_storage``, "only for
    internal usage"), as a study opened by Optuna has it: a finished trial is read from SQL
    once, later reads fetch only unfinished and new trials. RDB stores only (the others are
    returned as they are, as is every store with the public API only)."""
    if public_only():
        return storage
    try:
        from optuna.storages import get_storage
    except ImportError:
        return storage
    return get_storage(storage)


def cached_trials(study: optuna.Study) -> list[FrozenTrial] | None:
    """Inside ``study.optimize``, the trial list the sampler read for the running trial
    (``Study._thread_local.cached_all_trials``), else None (the caller reads the trials)."""
    if public_only():
        return None
    cached = getattr(getattr(study, "_thread_local", None), "cached_all_trials", None)
    return cached if isinstance(cached, list) else None


def trials_in_states(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """The study's trials in ``states``, not copied. Optuna's trial cache (which wraps RDB
    stores) reads every trial of the study and filters afterwards; the SQL store below it
    filters in SQL, so a read of the 2,500 COMPLETE trials of a 10,000-trial study reads only
    those. Other stores, or public API only: ``study.get_trials``."""
    rdb = rdb_of(storage_of(study))
    if rdb is None:
        return study.get_trials(deepcopy=False, states=states)
    return rdb.get_all_trials(study_id_of(study), deepcopy=False, states=states)


# -- writes ---------------------------------------------------------------------------------


def upsert_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> bool:
    """Write ``attrs`` as the trial's user attributes in one transaction (one multi-row upsert
    into Optuna's ``trial_user_attributes``) on SQLite and PostgreSQL; False when that is not
    possible here (the caller then sets them one by one through the public API)."""
    return upsert_trial_attrs(trial, attrs, system=False)


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """One trial system attribute through the storage API (Optuna 5's ``Trial`` has no public
    setter; the storage's needs the trial id)."""
    trial.storage.set_trial_system_attr(trial_id_of(trial), key, value)


def upsert_trial_attrs(trial: optuna.Trial, attrs: Mapping[str, Any], *, system: bool) -> bool:
    """``upsert_user_attrs``, into ``trial_system_attributes`` when ``system``."""
    rdb = rdb_of(trial.storage)
    if rdb is None:
        return False
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite
    except ImportError:
        return False
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(rdb.engine.name)
    if dialect is None:
        return False
    trial_id = trial_id_of(trial)
    table = models.TrialSystemAttributeModel if system else models.TrialUserAttributeModel
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    insert = dialect.insert(table).values(rows)
    upsert = insert.on_conflict_do_update(
        index_elements=[table.trial_id, table.key],
        set_={"value_json": insert.excluded.value_json},
    )
    with _create_scoped_session(rdb.scoped_session, True) as session:
        stored = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, stored.state)  # type: ignore[arg-type, unused-ignore]
        session.execute(upsert)
    return True


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes (Optuna 5's ``Study`` has no public reader)."""
    return dict(storage_of(study).get_study_system_attrs(study_id_of(study)))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """One study system attribute (no public setter in Optuna 5)."""
    storage_of(study).set_study_system_attr(study_id_of(study), key, value)


# -- SQL reads ------------------------------------------------------------------------------


@contextmanager
def _session(storage: RDBStorage) -> Iterator[Any]:
    """A session of the store, committed and closed after use."""
    session = storage.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def count_states(
    storage: RDBStorage, study_id: int, states: tuple[TrialState, ...]
) -> Counter[TrialState]:
    """How many of the study's trials are in each of ``states``: one grouped SQL query."""
    from optuna.storages._rdb import models
    from sqlalchemy import func

    trial = models.TrialModel
    with _session(storage) as session:
        rows = (
            session.query(trial.state, func.count(trial.trial_id))
            .filter(trial.study_id == study_id, trial.state.in_(states))
            .group_by(trial.state)
            .all()
        )
    return Counter({state: count for state, count in rows})


def count_attr_values(
    storage: RDBStorage, study_id: int, state: TrialState, key: str
) -> Counter[str]:
    """How many of the study's trials in ``state`` have each value of user attr ``key`` (one
    grouped SQL query over Optuna's ``trial_user_attributes``)."""
    from optuna.storages._rdb import models
    from sqlalchemy import func

    trial, attr = models.TrialModel, models.TrialUserAttributeModel
    with _session(storage) as session:
        rows = (
            session.query(attr.value_json, func.count(attr.trial_id))
            .join(trial, trial.trial_id == attr.trial_id)
            .filter(trial.study_id == study_id, trial.state == state, attr.key == key)
            .group_by(attr.value_json)
            .all()
        )
    return Counter({str(json.loads(value)): count for value, count in rows})


def trial_states_above(
    storage: RDBStorage, study_id: int, above: int
) -> list[tuple[int, TrialState]]:
    """(trial id, state) of the study's trials with ids above ``above``, ascending."""
    from optuna.storages._rdb import models
    from sqlalchemy import and_

    trial = models.TrialModel
    if above < 0:
        where = trial.study_id == study_id
    else:  # "+ 0": walk the primary key from ``above``, not the study's index (all its trials)
        where = and_(trial.trial_id > above, (trial.study_id + 0) == study_id)
    with _session(storage) as session:
        rows = session.query(trial.trial_id, trial.state).filter(where)
        return [(trial_id, state) for trial_id, state in rows.order_by(trial.trial_id).all()]


@dataclass(frozen=True)
class TrialPoint:
    """What ranking a COMPLETE trial needs: its ids, objective values and constraints."""

    trial_id: int
    number: int
    values: tuple[float, ...]
    constraints: dict[str, float]


def complete_trial_points(study: optuna.Study) -> list[TrialPoint] | None:
    """The values and constraints of the study's COMPLETE trials, read by three SQL queries
    that leave every other attribute unread (a 10,000-trial study's trials carry megabytes of
    them); None on stores that are not SQL, or public API only (the caller reads the trials)."""
    storage = rdb_of(storage_of(study))
    read_constraints = _constraints_reader()
    if storage is None or read_constraints is None:
        return None
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    trial, value, attr = models.TrialModel, models.TrialValueModel, models.TrialSystemAttributeModel
    complete = (trial.study_id == study_id_of(study), trial.state == TrialState.COMPLETE)
    with _session(storage) as session:
        numbers = dict(session.query(trial.trial_id, trial.number).filter(*complete).all())
        value_rows = (
            session.query(value.trial_id, value.objective, value.value, value.value_type)
            .join(trial, trial.trial_id == value.trial_id)
            .filter(*complete)
            .all()
        )
        attr_rows = (
            session.query(attr.trial_id, attr.key, attr.value_json)
            .join(trial, trial.trial_id == attr.trial_id)
            .filter(*complete, (attr.key == "constraints") | attr.key.like("constraints:%"))
            .all()
        )
    values: dict[int, dict[int, float]] = {trial_id: {} for trial_id in numbers}
    for trial_id, objective, stored, kind in value_rows:
        values[trial_id][objective] = value.stored_repr_to_value(stored, kind)
    attrs: dict[int, dict[str, Any]] = {trial_id: {} for trial_id in numbers}
    for trial_id, key, value_json in attr_rows:
        attrs[trial_id][key] = json.loads(value_json)
    return [
        TrialPoint(
            trial_id,
            number,
            tuple(values[trial_id][k] for k in sorted(values[trial_id])),
            dict(read_constraints(attrs[trial_id])),
        )
        for trial_id, number in sorted(numbers.items(), key=lambda item: item[1])
    ]


def _constraints_reader() -> Any:
    """Optuna's reader of a trial's constraints from its system attrs (what
    ``FrozenTrial.constraints`` returns), or None where Optuna moved it."""
    try:
        from optuna.study._constrained_optimization import _get_constraints_from_system_attrs
    except ImportError:
        return None
    return _get_constraints_from_system_attrs


def trial_by_id(study: optuna.Study, trial_id: int) -> FrozenTrial:
    """One trial of the study by storage id, read alone."""
    return storage_of(study).get_trial(trial_id)


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int] | None:
    """Ids of the study's RUNNING trials whose heartbeat stopped more than the grace period ago
    (``_get_stale_trial_ids`` of Optuna's heartbeat stores); None when not available (the
    public fallback is ``optuna.storages.fail_stale_trials``, which records no reason)."""
    find = None if public_only() else getattr(storage, "_get_stale_trial_ids", None)
    return None if find is None else [int(trial_id) for trial_id in find(study_id)]


def orphan_trial_ids(storage: RDBStorage, study_id: int, grace_s: float) -> list[int]:
    """Ids of the study's RUNNING trials with no heartbeat row that started more than
    ``grace_s`` seconds ago (no public equivalent: Optuna exposes no heartbeat rows)."""
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import exists, select

    trial, heartbeat = models.TrialModel, models.TrialHeartbeatModel
    started = trial.__table__.c.datetime_start  # Optuna 5 stores it as naive UTC
    now_utc = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    query = select(trial.trial_id).where(
        trial.study_id == study_id,
        trial.state == TrialState.RUNNING,
        started < now_utc - datetime.timedelta(seconds=grace_s),
        ~exists().where(heartbeat.trial_id == trial.trial_id),
    )
    with _session(storage) as session:
        return [int(trial_id) for trial_id in session.execute(query).scalars()]
