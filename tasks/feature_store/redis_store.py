"""Feast's Redis online store, plus what a reader without Feast needs to read it.

Values are written and read exactly as Feast's RedisOnlineStore does. When Feast applies the
views, each view's join-key types, feature types and TTL are also written to the hash
`_mlops_views:<project>` (deployments/redis_reader.py reads it), as the SQLite store keeps them
in `_feast_views`.

    online_store: {type: tasks.feature_store.redis_store.ViewsRedisOnlineStore, ...}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from feast import Entity, FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.repo_config import RepoConfig

from deployments.redis_reader import VIEWS_KEY
from tasks.feature_store.online_store import _key_type, _schema

REDIS_STORE_TYPE = "tasks.feature_store.redis_store.ViewsRedisOnlineStore"


class ViewsRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["tasks.feature_store.redis_store.ViewsRedisOnlineStore"] = (
        "tasks.feature_store.redis_store.ViewsRedisOnlineStore"  # type: ignore[assignment]
    )


def view_description(table: FeatureView) -> str:
    """What a reader needs of a view: join-key types, feature types, TTL in seconds."""
    return json.dumps(
        {
            "join_keys": {c.name: _key_type(c.dtype) for c in table.entity_columns},
            "features": _schema(table),
            "ttl_s": int(table.ttl.total_seconds()) if table.ttl else 0,
        }
    )


class ViewsRedisOnlineStore(RedisOnlineStore):
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        client = self._get_client(config.online_store)
        key = VIEWS_KEY.format(project=config.project)
        with client.pipeline(transaction=True) as pipe:
            for table in tables_to_delete:
                pipe.hdel(key, table.name)
            if tables_to_keep:
                pipe.hset(key, mapping={t.name: view_description(t) for t in tables_to_keep})
            pipe.execute()

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        super().teardown(config, tables, entities)
        client = self._get_client(config.online_store)
        if tables:
            client.hdel(VIEWS_KEY.format(project=config.project), *(t.name for t in tables))


def redis_url(connection_string: str) -> str:
    """Feast's `host:port[,password=...][,ssl=true][,db=N]` as a redis:// URL."""
    host, *options = [p.strip() for p in connection_string.split(",")]
    settings = dict(o.split("=", 1) for o in options if "=" in o)
    scheme = "rediss" if settings.get("ssl", "").lower() == "true" else "redis"
    password = f":{settings['password']}@" if settings.get("password") else ""
    return f"{scheme}://{password}{host}/{settings.get('db', 0)}"
