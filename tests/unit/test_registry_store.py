from __future__ import annotations

import itertools
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.cli import main
from tasks.registry.store import AliasConflict, Registry, RegistryError

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
    assert sorted(p.name for p in (tmp_path / "churn" / "aliases").glob("[!.]*")) == [
        "challenger.json",
        "champion.json",
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


def _move_forward(root: str, writer: int, moves: int) -> int:
    """`moves` compare-and-swap moves of `champion` to the next version; the count that won."""
    registry, won = Registry(root), 0
    while won < moves:
        now = registry.aliases("churn").get("champion")
        try:
            registry.set_alias(
                "churn", "champion", 1 + (now or 0) % 3, expected=now, by=f"writer {writer}"
            )
            won += 1
        except AliasConflict:
            continue
    return won


def test_aliases_move_by_compare_and_swap_and_every_move_is_in_the_history(
    tmp_path: Path, capsys
) -> None:
    registry = Registry(str(tmp_path))
    for content in (b"a", b"b", b"c"):
        registry.register("churn", {"model.txt": content}, {})
    registry.set_alias("churn", "champion", 1, expected=None, by="ci", reason="first")
    with pytest.raises(AliasConflict, match=r"alias 'champion' points to v1, not v2 as expected"):
        registry.set_alias("churn", "champion", 3, expected=2)
    with pytest.raises(AliasConflict, match="points to v1, not nothing"):
        registry.set_alias("churn", "champion", 3, expected=None)
    assert registry.aliases("churn") == {"champion": 1}  # the refused moves changed nothing
    # 4 processes x 5 conditional moves: each won move is one step of one unbroken chain
    with mp.get_context("spawn").Pool(4) as pool:
        assert pool.starmap(_move_forward, [(str(tmp_path), w, 5) for w in range(4)]) == [5] * 4
    history = registry.alias_history("churn", "champion")
    assert [m.seq for m in history] == list(range(1, 22))
    assert all(b.previous == a.version for a, b in itertools.pairwise(history))
    assert {m.by for m in history[1:]} == {f"writer {w}" for w in range(4)}
    assert registry.aliases("churn")["champion"] == history[-1].version
    # unconditional moves also each land in the history; a removal is a move to nothing
    registry.remove_alias("churn", "champion", by="ops", reason="retired")
    assert registry.aliases("churn") == {}
    assert registry.alias_history("churn", "champion")[-1].version is None
    with pytest.raises(RegistryError, match="has no alias 'champion'"):
        registry.get("churn", "champion")
    main(["models", "churn", "champion", "--history", "--root", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 22 and 'champion #1: - -> v1  by ci  reason: "first"' in lines[0]
    assert lines[-1].endswith(
        "champion #22: v" + str(history[-1].version) + ' -> -  by ops  reason: "retired"'
    )


def test_the_challenger_only_moves_forward(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    for content in (b"a", b"b", b"c"):
        registry.register("churn", {"model.txt": content}, {})
    assert registry.advance_alias("churn", "challenger", 3, by="validation of v3", reason="ok") == 3
    # a slower validation of an older version finishing later leaves the newer challenger
    assert registry.advance_alias("churn", "challenger", 2, by="validation of v2", reason="ok") == 3
    assert [m.version for m in registry.alias_history("churn", "challenger")] == [3]


def test_aliases_written_before_alias_documents_still_resolve(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path))
    registry.register("churn", {"model.txt": b"a"}, {})
    registry.register("churn", {"model.txt": b"b"}, {})
    (tmp_path / "churn" / "aliases").mkdir()
    (tmp_path / "churn" / "aliases" / "champion").write_text("1")  # the earlier layout
    assert registry.aliases("churn") == {"champion": 1}
    registry.set_alias("churn", "champion", 2, expected=1)
    assert registry.aliases("churn") == {"champion": 2}
    assert not (tmp_path / "churn" / "aliases" / "champion").exists()
    (move,) = registry.alias_history("churn", "champion")
    assert (move.previous, move.version, move.seq) == (1, 2, 1)


def test_a_store_without_conditional_writes_is_refused() -> None:
    with pytest.raises(RegistryError, match=r"registry root 'memory://reg'.*no conditional writes"):
        Registry("memory://reg")
