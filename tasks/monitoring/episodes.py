"""Episodes: a drift or a degradation that was announced and awaits a retraining.

An event can be lost: the open-source Prefect server keeps its event queue in memory, so a
restart between the event and its trigger drops it. Monitoring therefore keeps each announced
episode until a retraining answers it (a version registered after the episode, with a cause),
and emits it again from the next run once `reemit_after_s` has passed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.monitoring.check import ModelCheck
from tasks.monitoring.traffic import stamp, write_json

DRIFT = "mlops.model.drift-detected"
DEGRADED = "mlops.model.performance-degraded"


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
    write_json(path, [asdict(e) for e in episodes])


def answered(episode: Episode, retrained_at: list[datetime]) -> bool:
    """A retraining registered a version after the episode was detected."""
    detected = datetime.fromisoformat(episode.detected_at.replace("Z", "+00:00"))
    return any(t >= detected for t in retrained_at)


def due(episode: Episode, now: datetime, reemit_after_s: float) -> bool:
    emitted = datetime.fromisoformat(episode.emitted_at.replace("Z", "+00:00"))
    return (now - emitted).total_seconds() >= reemit_after_s


def record_id(name: str, version: int, kind: str, stamp_: str) -> str:
    return f"{name}.{version}.{kind}.{stamp_}"


def new_episodes(
    check: ModelCheck, records: dict[int, str], auc_floor: float, champion: int | None
) -> list[Episode]:
    """This run's findings about the champion's main traffic, the one a retraining can fix:
    its newest window drifted, its live accuracy below the floor. (A canary's or shadow's are
    the rollout's to judge; a replaced version's late labels are history.) Every window is in
    the records either way."""
    now = stamp(datetime.now(UTC))
    found = []
    windows = [c for c in check.checks if c["version"] == champion and c["role"] == "main"]
    if windows and windows[-1]["drift"]:
        c = windows[-1]
        payload = {
            "model": check.model,
            "version": c["version"],
            "role": c["role"],
            "window": {"first": c["first"], "last": c["last"], "rows": c["rows"]},
            "drifted_features": c["drifted_features"],
            "p_values": {f["feature"]: f["p_value"] for f in c["features"]},
            "distances": {f["feature"]: f["distance"] for f in c["features"]},
            "score_p_value": c["score"]["p_value"],
            "record": records[c["version"]],
        }
        found.append(Episode(DRIFT, c["version"], records[c["version"]], payload, now, now))
    for a in check.accuracy:
        if a.below_floor and a.version == champion and a.role == "main":
            payload = {
                "model": check.model,
                "version": a.version,
                "role": a.role,
                "metric": "auc",
                "value": a.auc,
                "floor": auc_floor,
                "labelled_rows": a.labelled,
                "brier": a.brier,
                "ece": a.ece,
                "record": records[a.version],
            }
            found.append(Episode(DEGRADED, a.version, records[a.version], payload, now, now))
    return found


def episodes_to_emit(
    open_episodes: list[Episode],
    found: list[Episode],
    retrained_at: list[datetime],
    reemit_after_s: float,
    champion: int | None = None,
) -> tuple[list[Episode], list[Episode]]:
    """(episodes still open after this run, those to emit now).

    One open episode per event: a new finding is emitted and replaces the open one (keeping
    when it was first detected); an open one that no retraining has answered, whose version
    still serves, is emitted again once `reemit_after_s` has passed since its last emission.
    """
    now = datetime.now(UTC)
    still = {
        e.event: e
        for e in open_episodes
        if not answered(e, retrained_at) and (champion is None or e.version == champion)
    }
    emit = []
    for episode in found:
        before = still.get(episode.event)
        if before is not None:
            episode.detected_at = before.detected_at
            episode.emitted = before.emitted + 1
            episode.event_ids = before.event_ids
        still[episode.event] = episode
        emit.append(episode)
    fresh = {id(e) for e in emit}
    for episode in still.values():
        if id(episode) not in fresh and due(episode, now, reemit_after_s):
            episode.emitted += 1
            episode.emitted_at = stamp(now)
            emit.append(episode)
    return list(still.values()), emit
