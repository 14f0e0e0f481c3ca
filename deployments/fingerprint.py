"""The feature-set fingerprint as plain data: comparable in any process, with or without Feast.

A view is described by a JSON-able dict (name, entities, features and dtypes, TTL, and the
digest of its definition: spec entry and transform source). The fingerprint digests all views;
the per-view digests say which view changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(service: str, views: Sequence[Mapping[str, Any]]) -> str:
    """`<service>:<sha256 prefix>` of the service's view descriptions."""
    return f"{service}:{_digest(sorted(views, key=lambda v: str(v.get('name', ''))))}"


def view_digests(views: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """View name -> digest of its description."""
    return {str(v["name"]): _digest(v) for v in views}


def changed_views(trained: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Views added, removed or changed between two `view_digests`."""
    return sorted(v for v in {*trained, *now} if trained.get(v) != now.get(v))
