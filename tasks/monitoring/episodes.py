"""Episodes: a drift or a degradation that was announced and awaits a retraining.

An event can be lost: the open-source Prefect server keeps its event queue in memory, so a
restart between the event and its trigger drops it. Monitoring therefore keeps each announced
episode until a retraining answers it (a version registered after the episode, with a cause),
and emits it again from the next run once `reemit_after_s` has passed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class Episode:
    event: str
    version: int
    record: str
    payload: dict[str, Any]
    detected_at: str
    emitted_at: str
    emitted: int = 1
    event_ids: list[str] = field(default_factory=list)


def load_episodes(path: Path, model: str) -> list[Episode]:
    if not path.is_file():
        return []
    try:
        return [Episode(**e) for e in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not the open episodes of '{model}' ({exc})") from exc


def save_episodes(path: Path, episodes: list[Episode]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump([asdict(e) for e in episodes], fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def answered(episode: Episode, retrained_at: list[datetime]) -> bool:
    """A retraining registered a version after the episode was detected."""
    detected = datetime.fromisoformat(episode.detected_at.replace("Z", "+00:00"))
    return any(t >= detected for t in retrained_at)


def due(episode: Episode, now: datetime, reemit_after_s: float) -> bool:
    emitted = datetime.fromisoformat(episode.emitted_at.replace("Z", "+00:00"))
    return (now - emitted).total_seconds() >= reemit_after_s
