from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from tasks.data.publish import discard, publish, staging_uri

pytestmark = pytest.mark.unit


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _stage(out: Path, version: str, tables: tuple[str, ...] = ("a", "b")) -> str:
    staging = staging_uri(str(out))
    for table in tables:
        path = Path(staging) / "features" / table
        path.mkdir(parents=True)
        (path / "part-0.parquet").write_text(version)
    return staging


def test_publish_replaces_tables_and_cleans_up(tmp_path: Path) -> None:
    publish(_stage(tmp_path, "v1"), str(tmp_path), {"features": "features"})
    publish(_stage(tmp_path, "v2", ("a",)), str(tmp_path), {"features": "features"})
    assert _tree(tmp_path) == {"features/a/part-0.parquet": "v2", "features/b/part-0.parquet": "v1"}


def test_failed_move_restores_every_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(_stage(tmp_path, "v1"), str(tmp_path), {"features": "features"})
    before = _tree(tmp_path)
    staging = _stage(tmp_path, "v2")
    fs = fsspec.filesystem("file")
    real_mv = type(fs).mv
    calls = {"n": 0}

    def flaky_mv(self, src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # after table a is swapped, while b moves in
            raise OSError("disk went away")
        return real_mv(self, src, dst, **kw)

    monkeypatch.setattr(type(fs), "mv", flaky_mv)
    with pytest.raises(OSError, match="disk went away"):
        publish(staging, str(tmp_path), {"features": "features"})
    assert _tree(tmp_path) == before


def test_discard_removes_staging(tmp_path: Path) -> None:
    staging = _stage(tmp_path, "v1")
    discard(staging)
    assert _tree(tmp_path) == {}
