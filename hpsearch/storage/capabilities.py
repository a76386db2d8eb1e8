"""What each kind of study store can do: the one place that says a backend lacks a feature.

Every store keeps the same behaviours (create/load, ask/tell, user attributes, rung values,
budget counting, concurrent workers with unique trial numbers, each queued trial claimed by
one worker (SQLite through ``hpsearch.storage.claims``): ``tests/storage`` runs them all
against every backend). Some stores do part of it a faster or safer way; where a store cannot,
it is said here, and hpsearch falls back to a way that works on every store:

=============  =========  ========  ===========  ===========  =========
backend        heartbeat  rung      attrs in one budget       trial
               (retries)  table     transaction  SQL count    numbers
=============  =========  ========  ===========  ===========  =========
sqlite         yes        yes       yes          yes          unique
postgresql     yes        yes       yes          yes          unique
redis          no         no        no           no           unique
journal        no         no        no           no           unique
grpc           no         no        no           no           unique
=============  =========  ========  ===========  ===========  =========

- heartbeat: a killed worker's RUNNING trial is failed after the grace period and retried
  with the same params. Without it (Optuna's journal stores and its gRPC client have none), a
  killed worker's trial stays RUNNING until ``hpsearch launch`` (which watches its own
  workers) fails it; a budget does not wait for it then only under ``launch``.
- rung table: pareto-asha reads one indexed side table per decision; otherwise it reads the
  ``intermediate_objectives`` attribute of every trial (same decisions, slower).
- attrs in one transaction: a trial's attributes are written by one multi-row upsert, so a
  reader sees all or none; otherwise they are written one by one (each is still atomic).
- budget SQL count: the study-wide budget is counted by one SQL query past a watermark;
  otherwise by reading the study's trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Capabilities:
    """The features a kind of store has (see the module's table)."""

    backend: str
    heartbeat: bool
    rung_table: bool
    attrs_in_one_transaction: bool
    budget_sql_count: bool


_SQL = {"heartbeat": True, "rung_table": True, "attrs_in_one_transaction": True}
_OTHER = {"heartbeat": False, "rung_table": False, "attrs_in_one_transaction": False}
CAPABILITIES: dict[str, Capabilities] = {
    "sqlite": Capabilities("sqlite", **_SQL, budget_sql_count=True),
    "postgresql": Capabilities("postgresql", **_SQL, budget_sql_count=True),
    "redis": Capabilities("redis", **_OTHER, budget_sql_count=False),
    "journal": Capabilities("journal", **_OTHER, budget_sql_count=False),
    "grpc": Capabilities("grpc", **_OTHER, budget_sql_count=False),
}


def backend_of_url(url: str) -> str:
    """``sqlite``, ``postgresql``, ``redis``, ``journal`` or ``grpc`` (ValueError otherwise)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("postgresql"):
        return "postgresql"
    if scheme == "rediss":
        return "redis"
    if scheme in CAPABILITIES:
        return scheme
    raise ValueError(f"no known store behind the URL scheme {scheme!r}")


def capabilities_of(url: str) -> Capabilities:
    """What the store at ``url`` can do."""
    return CAPABILITIES[backend_of_url(url)]
