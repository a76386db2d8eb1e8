"""Cluster backends of ``hpsearch launch``: Slurm (a job array) and Ray (one actor per worker).

A backend only starts, watches and stops ``hpsearch worker`` processes; the worker loop, the
study-wide budget and the retries of failed trials are the same for every backend."""

from __future__ import annotations

BACKENDS = ("local", "slurm", "ray")
