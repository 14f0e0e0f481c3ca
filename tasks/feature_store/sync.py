"""Publishing a snapshot to readers offline and online at once.

With the SQLite online store (the embedded default) the new snapshot is materialized into
staged tables, checked for train/serve skew against the same snapshot offline, then made live:
the staged tables by one SQLite transaction, the offline tables by one pointer rename. A failure
at any point, `BaseException` included, leaves both old or, once the pointer has moved, both
new. With Redis (Feast's own store, which writes live keys) the pointer moves first and a
failed materialization is compensated by re-materializing the previous snapshot.
"""

from __future__ import annotations

from datetime import datetime

from tasks.data.publish import (
    CURRENT,
    FEATURES,
    LABELS,
    absolute_uri,
    current_snapshot,
    discard,
    features_uri,
    prune,
    seal,
    snapshot_uri,
    switch,
)
from tasks.feature_store.definitions import view_name
from tasks.feature_store.online_store import (
    discard_stage,
    drop_previous,
    promote,
    published_snapshots,
    restore_previous,
)
from tasks.feature_store.online_store import (
    store_path as online_path,
)
from tasks.feature_store.skew import SkewReport, enforce_skew, sample_entities, skew_check
from tasks.feature_store.store import (
    StoreSettings,
    apply_definitions,
    begin_stage,
    materialize,
    open_store,
)
from tasks.specs.dataset_spec import DatasetSpec


def check_skew(
    store_settings: StoreSettings,
    spec: DatasetSpec,
    output_uri: str,
    snapshot: str,
    now: datetime,
    sample: int,
    seed: int,
    stage: str | None,
) -> dict[str, SkewReport]:
    root = absolute_uri(output_uri)
    store = open_store(store_settings, stage=stage, pins={root: snapshot})
    labels = f"{features_uri(root, snapshot)}/{LABELS}"
    return {
        service: skew_check(
            store, spec, service, sample_entities(spec, labels, service, sample, seed), now
        )
        for service in spec.feature_services
    }


def publish_snapshot(
    spec: DatasetSpec,
    settings: StoreSettings,
    output_uri: str,
    snapshot: str,
    now: datetime,
    max_skew_rate: float,
    sample: int = 200,
    seed: int = 0,
) -> dict[str, SkewReport]:
    """Apply the definitions, materialize `snapshot` as of `now`, check skew (past
    `max_skew_rate` a SkewError), then publish it offline and online together."""
    root = absolute_uri(output_uri)
    store = open_store(settings)
    apply_definitions(store, spec, f"{root}/{FEATURES}")
    if settings.online_store != "sqlite":
        return _publish_live(spec, settings, output_uri, snapshot, now, max_skew_rate, sample, seed)
    path = online_path(store.config)
    project = settings.project
    views = [view_name(spec, t) for t in spec.feature_tables]
    staged = open_store(settings, stage=snapshot, pins={root: snapshot})
    try:
        begin_stage(staged, spec)
        materialize(staged, spec, end=now)
        reports = check_skew(settings, spec, output_uri, snapshot, now, sample, seed, snapshot)
        enforce_skew(reports, max_skew_rate)
        promote(path, project, views, snapshot, snapshot)
        switch(output_uri, snapshot)
    except BaseException:
        if current_snapshot(output_uri) != snapshot:  # offline still old: online old too
            if set(published_snapshots(path, project, views).values()) == {snapshot}:
                restore_previous(path, project, views)
            discard_stage(path, project, views, snapshot)
            raise
        # the pointer moved: the new state is complete, finish it
        drop_previous(path, project, views)
        raise
    drop_previous(path, project, views)
    return reports


def _publish_live(
    spec: DatasetSpec,
    settings: StoreSettings,
    output_uri: str,
    snapshot: str,
    now: datetime,
    max_skew_rate: float,
    sample: int,
    seed: int,
) -> dict[str, SkewReport]:
    """An online store that writes live keys: move the pointer, materialize; on failure move
    it back and re-materialize the previous snapshot. Keys only the failed run wrote stay until
    the next run (a limit of this path, stated in the README)."""
    store = open_store(settings)
    previous = switch(output_uri, snapshot)
    try:
        materialize(store, spec, end=now)
        reports = check_skew(settings, spec, output_uri, snapshot, now, sample, seed, None)
        enforce_skew(reports, max_skew_rate)
    except BaseException:
        if previous is None:
            discard(f"{output_uri.rstrip('/')}/{CURRENT}")
        else:
            switch(output_uri, previous)
            materialize(store, spec, end=now)
        raise
    return reports


def publish_run(
    spec: DatasetSpec,
    staging: str,
    output_uri: str,
    snapshot: str,
    settings: StoreSettings | None,
    now: datetime,
    max_skew_rate: float,
    sample: int,
    keep: int,
) -> dict[str, SkewReport] | None:
    """A built and checked run, published: its tables sealed as `snapshot`, published offline
    and (with `settings`) online together, older snapshots pruned. Whatever fails,
    `BaseException` included, readers see the previous state or this one, never a mix, and
    nothing of an unpublished snapshot remains."""
    reports = None
    try:
        seal(staging, output_uri, snapshot)
        if settings is None:
            switch(output_uri, snapshot)
        else:
            reports = publish_snapshot(
                spec, settings, output_uri, snapshot, now, max_skew_rate, sample
            )
    except BaseException:
        if current_snapshot(output_uri) != snapshot:
            discard(staging)
            discard(snapshot_uri(output_uri, snapshot))
        raise
    prune(output_uri, keep)
    return reports
