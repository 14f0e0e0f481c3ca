"""What Prefect artifacts are made of, as plain data: keys and markdown tables."""

from __future__ import annotations

import re
from typing import Any


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table of `rows`, one column per key in first-seen order."""
    if not rows:
        return ["(none)"]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines
