"""Fixtures of the runtime tests: the real Dask cluster (tests/dask_cluster.py)."""

from __future__ import annotations

from tests.dask_cluster import dask_cluster

__all__ = ["dask_cluster"]
