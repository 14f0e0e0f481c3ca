"""Batch scoring, the model as data: a registered version applied to entity rows directly.

Entity rows (join keys, the spec's request fields and an event time; Parquet or CSV at any
fsspec URI) get their point-in-time features from Feast's offline store, the same retrieval
that built the training set, partition by partition on Dask; each partition is scored by the
version's own `LoadedModel.predict` (calibration included). The scores are written as one
Parquet file, whole or not at all: into a hidden temporary file beside the target, renamed over
it only once complete, so a reader sees the previous output or the new one, and a failure or an
interrupt leaves the previous output as it was.

One file rather than a folder of parts: a rename of a file is atomic on a local disk and an
object appears whole on an object store, while a folder can be neither; the scores are small
(keys, time, score), so the driver writes them as the partitions finish, one row group each.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dask
import dask.dataframe as dd
import distributed
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from deployments.fingerprint import changed_views
from deployments.predictor import LoadedModel
from tasks.data.publish import pin_published
from tasks.feature_store.store import (
    StoreSettings,
    feature_set,
    open_store,
    stored_features,
    training_set,
)
from tasks.specs.dataset_spec import DatasetSpec

SCORE = "score"
MODEL_COLUMNS = {
    "model": pa.string(),
    "model_version": pa.int64(),
    "feature_fingerprint": pa.string(),
}
METADATA_KEY = b"mlops.batch_scoring"  # the Parquet file's key-value metadata
Format = Literal["parquet", "csv"]
ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.timestamp("ns", tz="UTC"),
}


class BatchScoringError(ValueError):
    """Entity rows or a version that cannot be scored; the message names the file, column or
    feature view."""


class FeatureSetChanged(BatchScoringError):
    """The feature views a version was trained on have changed since."""


@dataclass(frozen=True)
class ScoringJob:
    """What every partition needs besides its rows (plain data: it travels to Dask workers)."""

    spec: DatasetSpec
    settings: StoreSettings
    service: str
    fingerprint: str
    pins: dict[str, str]  # output root -> snapshot id: every partition reads the same data
    timestamp: str  # the entity rows' event-time column
    where: str  # the entity rows' URI, for messages


@dataclass(frozen=True)
class BatchScoringResult:
    output_uri: str
    rows: int
    partitions: int
    model: str
    version: int
    feature_fingerprint: str
    snapshots: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def entity_columns(spec: DatasetSpec, service: str, timestamp: str) -> list[str]:
    """What an entity row needs for a service: join keys, event time, request fields."""
    return [*spec.service_keys(service), timestamp, *spec.service_request_fields(service)]


def _dtypes(spec: DatasetSpec, service: str) -> dict[str, str]:
    """Spec dtypes of the join keys and request fields (the label table's columns)."""
    table = spec.tables[spec.label.table].columns
    request = spec.request.fields if spec.request is not None else {}
    names = [*spec.service_keys(service), *spec.service_request_fields(service)]
    return {c: str(request.get(c) or table[c].dtype) for c in names}


def file_format(uri: str) -> Format:
    """Parquet unless the name says CSV (`.csv`, `.csv.gz`, ...)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    return "csv" if ".csv" in name else "parquet"


def read_entities(
    uri: str,
    fmt: Format | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dd.DataFrame:
    """Entity rows at `uri` (a file, a folder of Parquet files or a glob) as a Dask frame,
    one partition per Parquet file or 64 MB of CSV. CSV columns are read as text and
    converted by `prepare_rows`, so blocks never disagree on inferred dtypes."""
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if not fs.exists(path) and not fs.glob(path):
        raise BatchScoringError(f"{uri}: no entity rows there")
    try:
        if (fmt or file_format(uri)) == "csv":
            compressed = uri.lower().endswith((".gz", ".bz2", ".xz", ".zst", ".zip"))
            return dd.read_csv(
                uri,
                dtype=object,
                blocksize=None if compressed else "64MB",  # a compressed file is one block
                compression="infer",
                storage_options=options,
            )
        return dd.read_parquet(uri, storage_options=options)
    except Exception as exc:
        raise BatchScoringError(f"{uri}: cannot read the entity rows: {exc}") from exc


def check_columns(
    columns: Iterable[str], spec: DatasetSpec, service: str, timestamp: str, where: str
) -> None:
    """Every needed column present, and no second column under the spec's event-time name."""
    have = list(columns)
    needed = entity_columns(spec, service, timestamp)
    missing = [c for c in needed if c not in have]
    if missing:
        raise BatchScoringError(
            f"{where}: entity rows lack column(s) {missing}; feature service '{service}' needs "
            f"{needed} (join keys, event time '{timestamp}', request fields)"
        )
    if timestamp != spec.timestamp_field and spec.timestamp_field in have:
        raise BatchScoringError(
            f"{where}: event time is '{timestamp}', but column '{spec.timestamp_field}' (the "
            "spec's event-time name) is there too: drop or rename one"
        )


def _convert(values: pd.Series, dtype: str, column: str, where: str) -> pd.Series:
    """`values` as the spec's `dtype`; a value that is not one is an error naming it."""
    if dtype == "string":
        return values.astype("string")  # string[python], as data_prep's label rows
    if dtype == "datetime":
        converted = pd.to_datetime(values, utc=True, errors="coerce")
    elif dtype == "bool":
        text = values.astype("string").str.strip().str.lower()
        converted = text.map({"true": True, "false": False, "1": True, "0": False})
    else:
        converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if dtype == "int64":
        bad |= converted.notna() & (converted != np.floor(converted))
    if bad.any():
        raise BatchScoringError(
            f"{where}: column '{column}': {values[bad].iloc[0]!r} is not a {dtype}"
        )
    if dtype in ("int64", "bool") and converted.isna().any():
        raise BatchScoringError(
            f"{where}: column '{column}' ({dtype}) has {int(converted.isna().sum())} "
            "missing value(s)"
        )
    target = {"datetime": "datetime64[ns, UTC]"}.get(dtype, dtype)
    return converted.astype(target)


def prepare_rows(
    frame: pd.DataFrame, spec: DatasetSpec, service: str, timestamp: str, where: str
) -> pd.DataFrame:
    """The entity rows Feast retrieves for: the needed columns only, converted to the spec's
    dtypes, the event time (UTC; naive times are taken as UTC) under the spec's name."""
    check_columns(frame.columns, spec, service, timestamp, where)
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for column, dtype in _dtypes(spec, service).items():
        out[column] = _convert(frame[column].reset_index(drop=True), dtype, column, where).values
    times = _convert(frame[timestamp].reset_index(drop=True), "datetime", timestamp, where)
    if times.isna().any():
        raise BatchScoringError(
            f"{where}: column '{timestamp}' has {int(times.isna().sum())} missing time(s): "
            "features are read as of each row's time"
        )
    out[spec.timestamp_field] = times.astype("datetime64[ns, UTC]").values
    keys = spec.service_keys(service)
    return out[
        [*keys, spec.timestamp_field, *(c for c in out if c not in {*keys, spec.timestamp_field})]
    ]


def source_pins(store: FeatureStore, service: str) -> dict[str, str]:
    """The snapshot each of the service's stored views reads now (output root -> id)."""
    repo = Path(store.config.repo_path or ".")
    paths = []
    for view in stored_features(store, service):
        path = str(store.get_feature_view(view).batch_source.path)  # type: ignore[attr-defined]
        paths.append(path if Path(path).is_absolute() or "://" in path else str(repo / path))
    return pin_published(paths)


def check_fingerprint(store: FeatureStore, model: LoadedModel) -> str:
    """The version's feature fingerprint, if the store's feature set still has it; otherwise
    FeatureSetChanged naming the views that changed."""
    service = model.metadata["feature_service"]
    trained = str(model.metadata["feature_fingerprint"])
    now, views = feature_set(store, service)
    if now != trained:
        changed = changed_views(model.metadata.get("feature_views", {}), views) or ["(unknown)"]
        raise FeatureSetChanged(
            f"model '{model.name}' v{model.version} was trained on feature set {trained}; the "
            f"store now has {now} (changed views: {', '.join(changed)}). Retrain on the new "
            "features, or score with the feature definitions it was trained on"
        )
    return trained


def point_in_time(rows: pd.DataFrame, job: ScoringJob) -> pd.DataFrame:
    """`rows` (prepared) with the service's features as of each row's time."""
    store = open_store(job.settings, pins=job.pins)
    if feature_set(store, job.service)[0] != job.fingerprint:  # changed while scoring
        raise FeatureSetChanged(
            f"{job.where}: feature service '{job.service}' changed during the run"
        )
    return training_set(store, job.spec, rows, job.service)


def output_schema(spec: DatasetSpec, service: str, timestamp: str) -> pa.Schema:
    keys = _dtypes(spec, service)
    return pa.schema(
        [
            *(pa.field(k, ARROW_TYPES[keys[k]]) for k in spec.service_keys(service)),
            pa.field(timestamp, ARROW_TYPES["datetime"]),
            pa.field(SCORE, pa.float64()),
            *(pa.field(name, kind) for name, kind in MODEL_COLUMNS.items()),
        ]
    )


def score_partition(frame: pd.DataFrame, model: LoadedModel, job: ScoringJob) -> pd.DataFrame:
    """One partition of entity rows scored: keys, event time (as named in the input), score,
    and the model's name, version and feature fingerprint; in the input's row order."""
    rows = prepare_rows(frame, job.spec, job.service, job.timestamp, job.where)
    keys = [*job.spec.service_keys(job.service), job.spec.timestamp_field]
    if rows.empty:
        out = rows[keys]
    else:
        features = point_in_time(rows, job)
        out = features[keys].copy()
        out[SCORE] = np.asarray(model.predict(features), dtype="float64")
    out = out.rename(columns={job.spec.timestamp_field: job.timestamp})
    if SCORE not in out:
        out[SCORE] = pd.Series(dtype="float64")
    return out.assign(
        model=model.name, model_version=model.version, feature_fingerprint=job.fingerprint
    )


def score_frame(
    model: LoadedModel,
    entities: pd.DataFrame,
    spec: DatasetSpec,
    settings: StoreSettings,
    timestamp: str | None = None,
) -> pd.DataFrame:
    """Batch scoring of entity rows in memory, in this process (one partition): what
    `batch_score` writes for them, for parity checks against other paths."""
    job = scoring_job(
        model,
        spec,
        settings,
        timestamp or spec.timestamp_field,
        "entity rows",
        open_store(settings),
    )
    return score_partition(entities, model, job)


def scoring_job(
    model: LoadedModel,
    spec: DatasetSpec,
    settings: StoreSettings,
    timestamp: str,
    where: str,
    store: FeatureStore,
) -> ScoringJob:
    """The job for a version's entity rows: its feature set checked against the store's
    (FeatureSetChanged otherwise), the sources pinned to their published snapshots."""
    service = model.metadata["feature_service"]
    return ScoringJob(
        spec=spec,
        settings=settings,
        service=service,
        fingerprint=check_fingerprint(store, model),
        pins=source_pins(store, service),
        timestamp=timestamp,
        where=where,
    )


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


def write_scores(
    parts: Iterable[pd.DataFrame],
    output_uri: str,
    schema: pa.Schema,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write `parts` as one Parquet file at `output_uri`, one row group each, atomically:
    a hidden temporary file beside it, renamed over it once complete. On any failure or
    interrupt the temporary file goes and the previous output stays. Returns the rows."""
    fs, path = fsspec.core.url_to_fs(output_uri, **dict(storage_options or {}))
    parent, _, name = path.rstrip("/").rpartition("/")
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex}"
    if parent:
        fs.makedirs(parent, exist_ok=True)
    rows = 0
    try:
        with fs.open(tmp, "wb") as fh:
            with pq.ParquetWriter(fh, schema) as writer:
                for part in parts:
                    table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
                    if table.num_rows:
                        writer.write_table(table.replace_schema_metadata(schema.metadata))
                        rows += table.num_rows
            if _is_local(fs):
                fh.flush()
                os.fsync(fh.fileno())
        if _is_local(fs):
            os.replace(tmp, path)
        else:  # a copy to the final key: the object appears whole or not at all
            fs.mv(tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        finally:
            raise
    return rows


def _computed(parts: list[Any]) -> Generator[pd.DataFrame, None, None]:
    """The partitions' results in order: streamed from the current distributed client (each
    released once taken), else computed with Dask's local scheduler."""
    try:
        client = distributed.Client.current()
    except ValueError:
        yield from dask.compute(*parts)
        return
    futures = client.compute(parts)
    try:
        for future in futures:
            yield future.result()
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def check_output(
    output_uri: str, entities_uri: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    fs, path = fsspec.core.url_to_fs(output_uri, **dict(storage_options or {}))
    if fs.isdir(path):
        raise BatchScoringError(f"{output_uri}: a folder; the scores are one Parquet file")
    if output_uri.rstrip("/") == entities_uri.rstrip("/"):
        raise BatchScoringError(f"{output_uri}: the output would replace the entity rows")


def batch_score(
    model: LoadedModel,
    entities_uri: str,
    output_uri: str,
    spec: DatasetSpec,
    settings: StoreSettings,
    timestamp: str | None = None,
    partitions: int | None = None,
    fmt: Format | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> BatchScoringResult:
    """Score the entity rows at `entities_uri` with `model` and write them to `output_uri`.

    Refuses a version whose feature fingerprint the store no longer has. `timestamp` names the
    rows' event-time column (default: the spec's); `partitions` re-partitions the rows (default:
    one per Parquet file or 64 MB of CSV). The scoring runs on the current Dask client if there
    is one, otherwise on Dask's local threads.
    """
    started = time.perf_counter()
    service = model.metadata["feature_service"]
    if model.metadata.get("dataset") not in (None, spec.name):
        raise BatchScoringError(
            f"model '{model.name}' v{model.version} was trained on dataset "
            f"'{model.metadata['dataset']}', not '{spec.name}'"
        )
    event_time = timestamp or spec.timestamp_field
    check_output(output_uri, entities_uri, storage_options)
    job = scoring_job(model, spec, settings, event_time, entities_uri, open_store(settings))
    entities = read_entities(entities_uri, fmt, storage_options)
    check_columns(entities.columns, spec, service, event_time, entities_uri)
    if partitions and partitions != entities.npartitions:
        entities = entities.repartition(npartitions=partitions)
    # one node each for the model and the job: shipped once, not traversed by Dask
    model_node = dask.delayed(model, traverse=False)
    job_node = dask.delayed(job, traverse=False)
    scored = [dask.delayed(score_partition)(p, model_node, job_node) for p in entities.to_delayed()]
    metadata = {
        "model": model.name,
        "version": model.version,
        "feature_fingerprint": job.fingerprint,
        "feature_service": service,
        "dataset": spec.name,
        "snapshots": job.pins,
        "entities_uri": entities_uri,
        "scored_at": datetime.now(UTC).isoformat(),
        "calibration": (model.metadata.get("calibration") or {}).get("method", "none"),
    }
    schema = output_schema(spec, service, event_time).with_metadata(
        {METADATA_KEY: json.dumps(metadata).encode()}
    )
    results = _computed(scored)
    try:
        rows = write_scores(_nonempty(results, entities_uri), output_uri, schema, storage_options)
    finally:
        results.close()  # cancels what is still running when the write failed
    return BatchScoringResult(
        output_uri=output_uri,
        rows=rows,
        partitions=len(scored),
        model=model.name,
        version=model.version,
        feature_fingerprint=job.fingerprint,
        snapshots=job.pins,
        seconds=time.perf_counter() - started,
    )


def _nonempty(parts: Iterable[pd.DataFrame], where: str) -> Iterator[pd.DataFrame]:
    """`parts`, failing (before anything is published) when they hold no row at all."""
    rows = 0
    for part in parts:
        rows += len(part)
        yield part
    if rows == 0:
        raise BatchScoringError(f"{where}: no entity rows to score")


def read_scores_metadata(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model name, version, fingerprint and lineage a scores file carries."""
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as fh:
        meta = pq.read_schema(fh).metadata or {}
    if METADATA_KEY not in meta:
        raise BatchScoringError(f"{uri}: not a batch-scoring output (no {METADATA_KEY.decode()})")
    return dict(json.loads(meta[METADATA_KEY]))
