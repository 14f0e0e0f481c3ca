from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.cli import main
from tasks.registry.store import Registry, RegistryError

pytestmark = pytest.mark.unit


def _register(root: str, i: int) -> int:
    registry = Registry(root)
    return registry.register("churn", {"model.txt": f"model {i}".encode()}, {"i": i}).version


def test_versions_are_numbered_immutable_and_readable(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    v1 = registry.register("churn", {"model.txt": b"one"}, {"trainer": "lightgbm", "auc": 0.8})
    v2 = registry.register("churn", {"model.txt": b"two", "reference.parquet": b"ref"}, {})
    assert (v1.version, v2.version) == (1, 2)
    assert registry.read("churn", 1, "model.txt") == b"one"
    assert registry.get("churn", 2).files == ["model.txt", "reference.parquet"]
    assert registry.get("churn", 1).metadata == {"trainer": "lightgbm", "auc": 0.8}
    assert registry.models() == ["churn"]
    assert [v.version for v in registry.versions("churn")] == [1, 2]
    assert not list((tmp_path / "churn").glob(".staging-*"))


def test_aliases_move_atomically_and_resolve(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    for content in (b"a", b"b"):
        registry.register("churn", {"model.txt": content}, {})
    registry.set_alias("churn", "champion", 1)
    registry.set_alias("churn", "challenger", 2)
    assert registry.read("churn", "champion", "model.txt") == b"a"
    registry.set_alias("churn", "champion", "challenger")  # promote
    assert registry.aliases("churn") == {"challenger": 2, "champion": 2}
    assert sorted(p.name for p in (tmp_path / "churn" / "aliases").iterdir()) == [
        "challenger",
        "champion",
    ]
    with pytest.raises(RegistryError, match=r"model 'churn' has no version 7; versions: \[1, 2\]"):
        registry.set_alias("churn", "champion", 7)
    with pytest.raises(RegistryError, match=r"has no alias 'shadow'"):
        registry.get("churn", "shadow")
    assert registry.aliases("churn")["champion"] == 2  # unchanged by the failed move


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        threads = list(pool.map(lambda i: _register(str(tmp_path), i), range(8)))
    with mp.get_context("spawn").Pool(4) as pool:
        processes = pool.starmap(_register, [(str(tmp_path), i) for i in range(8, 16)])
    assert sorted(threads + processes) == list(range(1, 17))
    registry = Registry(str(tmp_path))
    contents = {registry.read("churn", v, "model.txt") for v in range(1, 17)}
    assert len(contents) == 16  # every version holds its own writer's file
    for v in registry.versions("churn"):
        assert registry.read("churn", v.version, "model.txt") == f"model {v.metadata['i']}".encode()


def test_failed_registration_leaves_the_registry_unchanged(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    registry.register("churn", {"model.txt": b"one"}, {})
    with pytest.raises(TypeError):  # the second file cannot be written: nothing is registered
        registry.register("churn", {"model.txt": b"two", "reference.parquet": object()}, {})  # type: ignore[dict-item]
    assert [v.version for v in registry.versions("churn")] == [1]
    assert not list((tmp_path / "churn").glob(".staging-*"))
    with pytest.raises(RegistryError, match="invalid model name 'Churn!'"):
        registry.register("Churn!", {"model.txt": b""}, {})
    with pytest.raises(RegistryError, match=r"invalid file name 'metadata\.json'"):
        registry.register("churn", {"metadata.json": b"{}"}, {})


def test_cli_lists_models_versions_and_one_version(tmp_path: Path, capsys) -> None:
    registry = Registry(str(tmp_path))
    registry.register("churn", {"model.txt": b"one"}, {"auc": 0.9})
    registry.set_alias("churn", "champion", 1)
    main(["models", "--root", str(tmp_path)])
    assert "churn: 1 version(s), aliases {'champion': 1}" in capsys.readouterr().out
    main(["models", "churn", "--root", str(tmp_path)])
    listing = capsys.readouterr().out
    assert "churn v1" in listing and "champion" in listing
    main(["models", "churn", "champion", "--root", str(tmp_path)])
    assert '"auc": 0.9' in capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:
        main(["models", "churn", "3", "--root", str(tmp_path)])
    assert missing.value.code == 2  # a bad parameter, said in one line
    assert "mlops: error: model 'churn' has no version 3" in capsys.readouterr().err


def test_records_attach_evidence_without_touching_the_version(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    version = registry.register("m", {"model.txt": b"x"}, {"trainer": "t"})
    first = registry.record("m", 1, "validation", {"evidence.json": b"{}", "plot.png": b"p"})
    second = registry.record("m", 1, "validation", {"evidence.json": b"{}"})
    assert registry.records("m", 1, "validation") == [first, second] and first < second
    assert registry.read_record("m", 1, "validation", first, "plot.png") == b"p"
    assert registry.get("m", 1) == version  # metadata and files unchanged
    assert registry.records("m", 1, "decision") == []
    with pytest.raises(RegistryError, match="invalid record kind"):
        registry.record("m", 1, "../x", {"a": b""})
    with pytest.raises(RegistryError, match="has no version 2"):
        registry.record("m", 2, "validation", {"a": b""})
    with pytest.raises(RegistryError, match="invalid file name 'a/b'"):
        registry.record("m", 1, "validation", {"a/b": b""})
    assert registry.records("m", 1, "validation") == [first, second]
    assert not list(tmp_path.glob("m/.staging-*"))
