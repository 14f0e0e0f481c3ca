"""The feature-set fingerprint as plain data: comparable in any process, with or without Feast."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any


def fingerprint(service: str, views: Sequence[Mapping[str, Any]]) -> str:
    """`<service>:<sha256 prefix>` of the service's view descriptions (any JSON-able dicts)."""
    ordered = sorted(views, key=lambda v: str(v.get("name", "")))
    digest = hashlib.sha256(json.dumps(ordered, sort_keys=True).encode()).hexdigest()
    return f"{service}:{digest[:16]}"
