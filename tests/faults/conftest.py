"""The fault suite's world: bench/load.py's (generated credit-risk data, data_prep, two trained
versions, the first served as champion behind nginx), built once on the session's Prefect
server (PostgreSQL, tests/conftest.py) and stopped by pid at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.load import World, build_world
from tests.servers import pointed_at


@pytest.fixture(scope="session")
def world(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = None
    try:
        with pointed_at(prefect_server):
            built = build_world(tmp_path_factory.mktemp("faults"), rows=150_000, blocks="faults")
        yield built
    finally:
        if built is not None:
            built.target.stop_all()
