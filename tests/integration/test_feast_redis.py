from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import redis

from deployments.model_server import open_reader
from deployments.online_reader import OnlineStoreError
from deployments.redis_reader import RedisOnlineReader
from tasks.feature_store.local_redis import LocalRedis
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    materialize,
    online_features,
    online_reader,
    open_store,
    stored_features,
    stored_refs,
)
from tests.servers import ROOT

pytestmark = pytest.mark.integration
SERVICE = "credit_risk_default_v1"


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server not installed (make setup installs it)",
)
def test_redis_online_store_serves_what_sqlite_serves(
    credit_spec, tiny_features: Path, tmp_path: Path
) -> None:
    with LocalRedis(tmp_path / "redis.log") as server:
        _compare(server.port, credit_spec, tiny_features, tmp_path)


def _compare(port: int, credit_spec, tiny_features: Path, tmp_path: Path) -> None:
    end = datetime(2026, 7, 1, tzinfo=UTC)
    lookups, stores = {}, {}
    for kind, extra in {
        "sqlite": {},
        "redis": {"redis_connection_string": f"127.0.0.1:{port}"},
    }.items():
        settings = StoreSettings(
            repo_path=str(ROOT / "features"),
            registry_path=str(tmp_path / kind / "registry.db"),
            sqlite_path=str(tmp_path / kind / "online.db"),
            online_store=kind,  # type: ignore[arg-type]
            **extra,
        )
        store = open_store(settings)
        apply_definitions(store, credit_spec, str(tiny_features))
        materialize(store, credit_spec, end=end, start=datetime(2016, 1, 1, tzinfo=UTC))
        rows = [{"customer_id": i} for i in range(1, 60)]
        lookups[kind] = online_features(store, credit_spec, SERVICE, rows).sort_index(axis=1)
        stores[kind] = store
    assert redis.Redis(host="127.0.0.1", port=port).dbsize() > 0  # served from Redis itself
    assert lookups["redis"]["annual_income"].notna().sum() > 0
    assert lookups["redis"].equals(lookups["sqlite"])

    # the serving path reads Redis without Feast, and answers what Feast's SDK answers
    url = f"redis://127.0.0.1:{port}/0"
    views = stored_features(stores["redis"], SERVICE)
    assert online_reader(stores["redis"], SERVICE).__class__ is RedisOnlineReader
    customers = pd.read_parquet(tiny_features / "customer_profile")["customer_id"].unique()
    rows = [{"customer_id": int(c)} for c in customers[:150]] + [{"customer_id": 10**9}]
    sdk = stores["redis"].get_online_features(features=stored_refs(views), entity_rows=rows)
    expected = sdk.to_df()
    for location in (url, str(tmp_path / "sqlite" / "online.db")):  # what a predictor opens
        reader = open_reader(location, "mlops", views)
        gaps: list = []
        fast = pd.DataFrame(reader.read(rows, as_of=end, gaps=gaps))  # Feast's SDK has no TTL
        assert fast.iloc[:-1].notna().any().all() and fast.iloc[-1].drop("customer_id").isna().all()
        pd.testing.assert_frame_equal(fast[expected.columns], expected, check_dtype=False)
        assert {(i, kind) for i, _, kind in gaps} >= {(len(rows) - 1, "missing")}
        # as of after the views' 10-year TTL, every value has expired, in both stores
        later = pd.DataFrame(reader.read(rows, as_of=datetime(2037, 1, 1, tzinfo=UTC)))
        assert later.drop(columns="customer_id").isna().all().all()
        assert sum(reader.expired.values()) == 2 * (len(rows) - 1)
        reader.close()
    with pytest.raises(OnlineStoreError, match="view 'nope' is not in the Redis online store"):
        RedisOnlineReader(url, "mlops", {"nope": ["x"]})
    with pytest.raises(OnlineStoreError, match=r"Redis online store redis://127.0.0.1:1/0"):
        RedisOnlineReader("redis://:hunter2@127.0.0.1:1/0", "mlops", views)
