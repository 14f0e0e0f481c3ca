"""Publishing survives interruption: at every step, KeyboardInterrupt and SystemExit leave the
previous snapshot or the new one, offline and online alike, never a mix, never a loss."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.data import publish
from tasks.data.publish import current_snapshot, features_uri, new_snapshot_id, prune, switch
from tasks.feature_store import sync
from tasks.feature_store.online_store import RowSqliteOnlineStore
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    online_features,
    open_store,
    snapshot_store,
    training_set,
)

pytestmark = pytest.mark.unit
SERVICE = "credit_risk_default_v1"
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 20, tzinfo=UTC)
CUSTOMERS = list(range(1, 40))


def _settings(root: Path) -> StoreSettings:
    return StoreSettings(
        repo_path=str(ROOT / "features"),
        registry_path=str(root / "feast" / "registry.db"),
        sqlite_path=str(root / "feast" / "online.db"),
    )


def _stage(features: Path, output: Path, snapshot: str, income_factor: float) -> str:
    """A built run: its tables (incomes scaled, to tell runs apart) and a quarantine."""
    staging = Path(publish.staging_uri(str(output), snapshot))
    shutil.copytree(features, staging / "features")
    profile = pd.read_parquet(staging / "features" / "customer_profile")
    shutil.rmtree(staging / "features" / "customer_profile")
    (staging / "features" / "customer_profile").mkdir()
    profile.assign(annual_income=profile["annual_income"] * income_factor).to_parquet(
        staging / "features" / "customer_profile" / "part-0.parquet", index=False
    )
    (staging / "quarantine" / "customers").mkdir(parents=True)
    (staging / "quarantine" / "customers" / "part-0.parquet").write_bytes(b"rejected")
    return str(staging)


def _run(spec, root: Path, features: Path, factor: float) -> str:
    snapshot = new_snapshot_id()
    staging = _stage(features, root / "out", snapshot, factor)
    publish.keep_quarantine(staging, str(root / "out"), snapshot)
    sync.publish_run(spec, staging, str(root / "out"), snapshot, _settings(root), NOW, 0.0, 50, 2)
    return snapshot


def _incomes(spec, root: Path) -> tuple[list[float | None], list[float | None]]:
    """What an offline reader and an online reader see now."""
    store, _ = snapshot_store(_settings(root), str(root / "out"))
    entity_df = pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": NOW})
    offline = training_set(store, spec, entity_df, SERVICE, stored_only=True)
    rows = [{"customer_id": c} for c in CUSTOMERS]
    online = online_features(open_store(_settings(root)), spec, SERVICE, rows, as_of=NOW)
    return _plain(offline["annual_income"]), _plain(online["annual_income"])


def _plain(values: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in values]


def _scaled(values: list[float | None], factor: float) -> list[float | None]:
    return [None if v is None else v * factor for v in values]


def _copy(spec, published: Path, tmp_path: Path) -> Path:
    """A copy of a published root whose Feast registry points at the copy's own tables."""
    root = tmp_path / "root"
    shutil.copytree(published, root)
    apply_definitions(open_store(_settings(root)), spec, f"{root / 'out'}/features")
    return root


@pytest.fixture(scope="module")
def published(credit_spec, tiny_features: Path, tmp_path_factory):
    """One published run (incomes x1): its root and the incomes readers see."""
    root = tmp_path_factory.mktemp("published")
    _run(credit_spec, root, tiny_features, 1.0)
    offline, online = _incomes(credit_spec, root)
    assert offline == online and sum(v is not None for v in offline) > 20
    return root, offline


def test_a_run_becomes_visible_at_once_and_old_runs_are_pruned(
    credit_spec, tiny_features, published, tmp_path
) -> None:
    root = _copy(credit_spec, published[0], tmp_path)
    first = current_snapshot(str(root / "out"))
    second = _run(credit_spec, root, tiny_features, 2.0)
    offline, online = _incomes(credit_spec, root)
    assert offline == online == _scaled(published[1], 2)
    assert current_snapshot(str(root / "out")) == second
    third = _run(credit_spec, root, tiny_features, 3.0)
    snapshots = sorted(p.name for p in (root / "out" / "snapshots").iterdir())
    assert snapshots == sorted([second, third])  # keep=2: the first is gone
    assert first not in snapshots
    assert len(list((root / "out" / "quarantine").iterdir())) == 2
    assert Path(features_uri(str(root / "out"))).parent.name == third


def test_readers_resolve_the_pointer_once(credit_spec, tiny_features, published, tmp_path):
    """A store opened before a publish keeps reading its snapshot to the end."""
    root = _copy(credit_spec, published[0], tmp_path)
    before, _ = snapshot_store(_settings(root), str(root / "out"))
    _run(credit_spec, root, tiny_features, 2.0)
    entity_df = pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": NOW})
    old = training_set(before, credit_spec, entity_df, SERVICE, stored_only=True)
    assert _plain(old["annual_income"]) == published[1]


def test_a_read_started_before_a_publish_sees_one_snapshot(
    credit_spec, tiny_features, published, tmp_path
) -> None:
    """An unpinned store resolves the pointer when a read starts, for all its views."""
    root = _copy(credit_spec, published[0], tmp_path)
    store = open_store(_settings(root))  # no pins
    entity_df = pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": NOW})
    job = store.get_historical_features(
        entity_df=entity_df,
        features=[
            "credit_risk__customer_profile:annual_income",
            "credit_risk__transaction_windows:txn_count_7d",
        ],
    )
    _run(credit_spec, root, tiny_features, 2.0)  # published while the read is under way
    assert _plain(job.to_df()["annual_income"]) == published[1]


def _raise_before(real: Callable[..., Any], exc: type[BaseException]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        raise exc("injected")

    return wrapped


def _raise_after(real: Callable[..., Any], exc: type[BaseException]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise exc("injected")

    return wrapped


def _raise_on_second_call(real: Callable[..., Any], exc: type[BaseException]):
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc("injected")
        return real(*args, **kwargs)

    return wrapped


STEPS = [
    ("seal", sync, "seal", _raise_before),
    ("after seal", sync, "seal", _raise_after),
    ("apply", sync, "apply_definitions", _raise_before),
    ("stage tables", sync, "begin_stage", _raise_before),
    ("mid-materialization", RowSqliteOnlineStore, "online_write_batch", _raise_on_second_call),
    ("skew check", sync, "check_skew", _raise_before),
    ("promote", sync, "promote", _raise_before),
    ("after promote", sync, "promote", _raise_after),
    ("switch", sync, "switch", _raise_before),
    ("after switch", sync, "switch", _raise_after),
    ("drop previous", sync, "drop_previous", _raise_before),
    ("prune", sync, "prune", _raise_before),
]


@pytest.mark.parametrize(("step", "owner", "name", "inject"), STEPS, ids=[s[0] for s in STEPS])
def test_an_interrupted_publish_leaves_old_or_new_never_a_mix(
    credit_spec, tiny_features, published, tmp_path, monkeypatch, step, owner, name, inject
) -> None:
    root = _copy(credit_spec, published[0], tmp_path)
    old = current_snapshot(str(root / "out"))
    state = published[1]
    for factor, exc in ((2.0, KeyboardInterrupt), (3.0, SystemExit)):
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, inject(getattr(owner, name), exc))
            with pytest.raises(exc):
                _run(credit_spec, root, tiny_features, factor)
        offline, online = _incomes(credit_spec, root)
        assert offline == online, step  # offline and online agree
        now = current_snapshot(str(root / "out"))
        new = _scaled(published[1], factor)
        assert offline in (state, new), step  # the previous state or this run's, whole
        if offline == new:
            assert now != old
            state, old = new, now
        else:
            assert now == old
        assert Path(features_uri(str(root / "out"))).is_dir()  # nothing published was lost
        leftovers = [p.name for p in (root / "out" / "snapshots").iterdir()]
        assert not [p for p in leftovers if p.startswith(".staging")], step
        assert now in leftovers
    # an interrupted run is harmless to the next one
    final = _run(credit_spec, root, tiny_features, 5.0)
    assert current_snapshot(str(root / "out")) == final
    assert _incomes(credit_spec, root)[0] == _scaled(published[1], 5)


def test_prune_never_deletes_the_published_snapshot(tmp_path) -> None:
    out = tmp_path / "out"
    for name in ("a", "b", "c"):
        (out / "snapshots" / name / "features").mkdir(parents=True)
    switch(str(out), "a")
    assert prune(str(out), 1) == []
    switch(str(out), "c")
    gone = prune(str(out), 1)
    assert sorted(Path(g).name for g in gone) == ["a", "b"]
    assert [p.name for p in (out / "snapshots").iterdir()] == ["c"]
