"""The model server: a Seldon Core python-wrapper class serving one registry version.

    seldon-core-microservice deployments.model_server.ModelServer \\
        --parameters '[{"name": "model_dir", "value": "...", "type": "STRING"}, ...]'

Parameters (Seldon passes them to the constructor): `model_dir` (the version's folder: a
registry version folder, or where Seldon's storage initializer put `modelUri` in a cluster),
`role` (main | canary | shadow), `model_name`, `version` and `project` (if given, the folder's
version and its contract's Feast project must match them, or the load fails), `online_store`
(the SQLite online store's file, or Feast's Redis store as redis://host:port/db; without it
only requests carrying their features are served),
`log_dir` (the request and labels logs, deployments/request_log.py), `max_rows` (a larger
batch is answered 413), the request log's segment size, age and fsync interval, and how often
metrics are handed to Seldon (`metrics_interval_s`).

Two request forms, both Seldon's protocol:

    {"data": {"names": [<the version's features, in order>], "ndarray": [[...], ...]}}
    {"jsonData": {"rows": [{<join keys>, <request fields>}, ...]}}

The second reads the stored features from the online store (deployments/online_reader.py, the
reader the platform uses too) and computes the on-demand features with the functions Feast's
on-demand views call in training (deployments/contract.py). The answer holds calibrated
probabilities in `data.ndarray`, and the model, version, role, request id and the count of
missing and expired stored features in `meta.tags`. A bad request gets a 4xx naming the
problem and the server keeps serving, bodies Seldon's own parsing cannot read included
(`model_error_handler`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deployments.contract import SERVING, ContractError, ServingContract
from deployments.online_reader import OnlineReader, OnlineStoreError, ViewReader, key_value
from deployments.predictor import LoadedModel, ModelLoadError, load_folder
from deployments.redis_reader import RedisOnlineReader
from deployments.request_log import LABELS, REQUESTS, SegmentWriter, jsonable, utc_now

logger = logging.getLogger(__name__)

SERVER_CLASS = "deployments.model_server.ModelServer"  # what seldon-core-microservice runs
ROLES = ("main", "canary", "shadow")
SCORE_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]  # cumulative, as a `le`
NUMBER = (int, float)


class BadRequest(ValueError):
    """A request the server refuses: an HTTP status, a reason code and a message."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def _bad_value(value: Any) -> bool:
    return value is not None and (type(value) not in NUMBER)


class ModelServer:
    """One registry version behind Seldon's REST API (see the module docstring)."""

    def __init__(
        self,
        model_dir: str,
        role: str = "main",
        model_name: str = "",
        version: int | str = "",
        project: str = "",
        online_store: str = "",
        log_dir: str = "data/serving/logs",
        max_rows: int | str = 1000,
        segment_mb: float | str = 64,
        segment_age_s: float | str = 300,
        fsync_s: float | str = 1.0,
        metrics_interval_s: float | str = 1.0,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role '{role}' is not one of {ROLES}")
        self.model_dir = model_dir
        self.role = role
        self.expected = {"model": model_name, "version": str(version), "project": project}
        self.online_store = online_store
        self.log_dir = Path(log_dir)
        self.max_rows = int(max_rows)
        self.metrics_interval_s = float(metrics_interval_s)
        self._metrics_lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
        self._timers: list[dict[str, Any]] = []
        self._flushed = 0.0
        self._log_settings = (int(float(segment_mb) * 2**20), float(segment_age_s), float(fsync_s))
        self.model: LoadedModel | None = None
        self.contract: ServingContract | None = None
        self.reader: ViewReader | None = None

    # -- loading and health -------------------------------------------------------------------

    def load(self) -> None:
        """Load the version, its contract and the online store; any failure is a ModelLoadError
        (never an AttributeError, which Seldon's wrapper would swallow)."""
        try:
            model = load_folder(self.model_dir)
            contract = ServingContract.from_json((Path(self.model_dir) / SERVING).read_bytes())
            transforms = contract.transforms()  # a bad path fails the load, not a request
            reader = None
            if self.online_store:
                reader = open_reader(self.online_store, contract.project, contract.views)
        except (OSError, ContractError, OnlineStoreError, ModelLoadError) as exc:
            raise ModelLoadError(f"{self.model_dir}: cannot serve: {exc}") from exc
        found = {"model": model.name, "version": str(model.version), "project": contract.project}
        wrong = {k: v for k, v in self.expected.items() if v and v != found[k]}
        if wrong:
            raise ModelLoadError(f"{self.model_dir}: holds {found}, not the {wrong} asked for")
        if model.features != contract.features:
            raise ModelLoadError(f"{self.model_dir}: {SERVING} and features.json disagree")
        sources = {*contract.stored_features(), *contract.request_fields}
        sources |= {o for od in contract.on_demand for o in od.outputs}
        unknown = [f for f in contract.features if f not in sources]
        if unknown:
            raise ModelLoadError(f"{self.model_dir}: no source for feature(s) {unknown}")
        size, age, fsync = self._log_settings
        self.requests = SegmentWriter(self.log_dir / REQUESTS, REQUESTS, size, age, fsync)
        self.labels = SegmentWriter(self.log_dir / LABELS, LABELS, size, age, fsync)
        self._transforms = transforms
        self._strict = [i for i, f in enumerate(contract.features) if f not in contract.nullable]
        self._tags = {"model": model.name, "version": str(model.version), "role": self.role}
        self.model, self.contract, self.reader = model, contract, reader
        logger.info("serving %s v%s as %s", model.name, model.version, self.role)

    def health_status(self) -> dict[str, Any]:
        """Fails until the model is loaded and the online store answers."""
        if self.model is None or self.contract is None:
            raise RuntimeError(f"{self.model_dir}: model not loaded")
        if self.reader is not None:
            self.reader.ping()
        return {**self._tags, "fingerprint": self.contract.fingerprint}

    @property
    def model_error_handler(self) -> Any:
        """A Flask blueprint Seldon's wrapper registers: see `error_blueprint`."""
        return error_blueprint()

    # -- predictions --------------------------------------------------------------------------

    def predict_raw(self, request: Any) -> dict[str, Any]:
        started = time.perf_counter()
        meta = request.get("meta") if isinstance(request, dict) else None
        puid = meta.get("puid") if isinstance(meta, dict) else None
        request_id = str(puid or _ingress_id() or uuid.uuid4().hex)
        try:
            if self.model is None:
                raise BadRequest("NOT_LOADED", "the model is not loaded", 503)
            values, extra, lookup_ms = self._values(request)
        except BadRequest as exc:
            return self._refused(exc, request_id)
        scores = self._predict(values)
        latency_ms = (time.perf_counter() - started) * 1000
        self._log(request_id, values, scores, extra, latency_ms)
        tags = {
            **self._tags,
            "request_id": request_id,
            "missing_features": self._count(extra, "missing"),
            "expired_features": self._count(extra, "expired"),
        }
        return {
            "data": {"names": ["probability"], "ndarray": scores.tolist()},
            "meta": {
                "puid": request_id,
                "tags": tags,
                "metrics": self._batched(self._metrics(scores, latency_ms, lookup_ms, extra)),
            },
        }

    def _count(self, extra: list[dict[str, Any]], kind: str) -> int:
        """Stored feature values of `kind` (missing, expired) over a request's rows."""
        assert self.contract is not None
        views = self.contract.views
        return sum(len(views[v]) for row in extra for v in row[kind])

    def _refused(self, exc: BadRequest, request_id: str) -> dict[str, Any]:
        metric = {
            "type": "COUNTER",
            "key": "mlops_bad_requests",
            "value": 1,
            "tags": {**getattr(self, "_tags", {}), "reason": exc.reason},
        }
        return {
            "status": {
                "code": exc.status,
                "info": str(exc),
                "reason": exc.reason,
                "status": "FAILURE",
            },
            "meta": {"puid": request_id, "metrics": self._batched([metric])},
        }

    def _predict(self, values: np.ndarray) -> np.ndarray:
        assert self.model is not None
        if self.model.predict_matrix is not None:  # no DataFrame: 0.4 ms less a request
            return self.model.predict_matrix(values)
        return self.model.predict(pd.DataFrame(values, columns=self.model.features))

    def _values(self, request: Any) -> tuple[np.ndarray, list[dict[str, Any]], float | None]:
        """The feature vectors (rows in the version's order), per-row lookup details, and the
        online lookup's time; BadRequest if the request cannot be scored."""
        if not isinstance(request, dict):
            raise BadRequest("BAD_JSON", "the request must be a JSON object")
        if "jsonData" in request:
            return self._from_entities(request["jsonData"])
        if "data" in request:
            return self._from_features(request["data"]), [], None
        raise BadRequest(
            "BAD_FORM", "the request needs 'data' (names + ndarray) or 'jsonData' (rows)"
        )

    def _batch(self, rows: Any, where: str) -> list[Any]:
        if not isinstance(rows, list):
            raise BadRequest("BAD_FORM", f"{where} must be a list of rows")
        if not rows:
            raise BadRequest("EMPTY_BATCH", f"{where} is empty: send at least one row")
        if len(rows) > self.max_rows:
            raise BadRequest(
                "TOO_LARGE", f"{where} has {len(rows)} rows; the limit is {self.max_rows}", 413
            )
        return rows

    def _from_features(self, data: Any) -> np.ndarray:
        assert self.contract is not None
        features = self.contract.features
        if not isinstance(data, dict) or "ndarray" not in data:
            raise BadRequest("BAD_FORM", "data needs 'names' and 'ndarray' (rows of features)")
        names = data.get("names")
        if names != features:
            raise BadRequest("BAD_FEATURES", _names_problem(names, features))
        rows = self._batch(data["ndarray"], "data.ndarray")
        width = len(features)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                count = len(row) if isinstance(row, list) else "not a list"
                raise BadRequest(
                    "BAD_FEATURES", f"row {i}: {count} values; the version takes {width}"
                )
        flat = [v for row in rows for v in row]
        wrong = next((i for i, v in enumerate(flat) if _bad_value(v)), None)
        if wrong is not None:
            row, col = divmod(wrong, width)
            raise BadRequest(
                "NOT_A_NUMBER",
                f"row {row}, feature '{features[col]}': {flat[wrong]!r} is not a number",
            )
        try:
            values = np.array(flat, dtype="float64").reshape(len(rows), width)
        except OverflowError:  # an integer beyond float64
            raise BadRequest("NOT_A_NUMBER", "a feature value is too large for a float") from None
        self._check_finite(values, strict=True)
        return values

    def _check_finite(self, values: np.ndarray, strict: bool) -> None:
        assert self.contract is not None
        infinite = np.argwhere(np.isinf(values))
        if len(infinite):
            row, col = infinite[0]
            raise BadRequest(
                "NOT_FINITE", f"row {row}, feature '{self.contract.features[col]}': infinite"
            )
        if strict and self._strict:
            nan = np.argwhere(np.isnan(values[:, self._strict]))
            if len(nan):
                row, col = nan[0]
                name = self.contract.features[self._strict[col]]
                raise BadRequest(
                    "NOT_FINITE",
                    f"row {row}, feature '{name}': missing (NaN or null), which this version "
                    "does not allow (it had no missing values in training)",
                )

    def _from_entities(self, payload: Any) -> tuple[np.ndarray, list[dict[str, Any]], float | None]:
        assert self.contract is not None
        contract = self.contract
        if self.reader is None:
            raise BadRequest(
                "NO_ONLINE_STORE", "this server has no online store: send the features (data)"
            )
        rows = payload.get("rows") if isinstance(payload, dict) else None
        rows = self._batch(rows, "jsonData.rows")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequest("BAD_FORM", f"jsonData.rows[{i}] must be an object")
            for key, dtype in contract.join_keys.items():
                if key not in row:
                    raise BadRequest("BAD_ENTITY", f"jsonData.rows[{i}] lacks join key '{key}'")
                try:
                    key_value(key, row[key], dtype)
                except OnlineStoreError as exc:
                    raise BadRequest("BAD_ENTITY", f"jsonData.rows[{i}]: {exc}") from None
            for name, dtype in contract.request_fields.items():
                if name not in row:
                    raise BadRequest(
                        "BAD_REQUEST_FIELD", f"jsonData.rows[{i}] lacks request field '{name}'"
                    )
                problem = _field_problem(row[name], dtype)
                if problem:
                    raise BadRequest(
                        "BAD_REQUEST_FIELD", f"jsonData.rows[{i}], field '{name}': {problem}"
                    )
        gaps: list[tuple[int, str, str]] = []
        started = time.perf_counter()
        stored = self.reader.read(rows, gaps=gaps)
        lookup_ms = (time.perf_counter() - started) * 1000
        logged = [*contract.join_keys, *contract.request_fields]  # checked above; not the rest
        extra: list[dict[str, Any]] = [
            {"entity": {k: row[k] for k in logged}, "missing": [], "expired": []} for row in rows
        ]
        for i, view, kind in gaps:
            extra[i][kind].append(view)
        views = len(contract.views)
        unknown = next(
            (i for i, e in enumerate(extra) if views and len(e["missing"]) == views), None
        )
        if unknown is not None:
            keys = {k: rows[unknown][k] for k in contract.join_keys}
            raise BadRequest(
                "UNKNOWN_ENTITY", f"jsonData.rows[{unknown}]: unknown entity {keys}", 404
            )
        columns: dict[str, Sequence[Any]] = {
            **{f: [row[f] for row in rows] for f in contract.request_fields},
            **stored,
        }
        for transform, spec in self._transforms:
            outputs = transform(columns)
            columns.update({name: outputs[name] for name in spec.outputs})
        try:
            values = np.column_stack(
                [np.asarray(columns[f], dtype="float64") for f in contract.features]
            )
        except (TypeError, ValueError) as exc:
            raise BadRequest("NOT_A_NUMBER", f"a feature is not numeric: {exc}") from None
        self._check_finite(values, strict=False)
        return values, extra, lookup_ms

    # -- the request log and metrics ----------------------------------------------------------

    def _log(
        self,
        request_id: str,
        values: np.ndarray,
        scores: np.ndarray,
        extra: list[dict[str, Any]],
        latency_ms: float,
    ) -> None:
        assert self.model is not None
        now = utc_now()
        assert self.contract is not None
        names = self.contract.features
        base = {
            "request_id": request_id,
            "time": now,
            "model": self.model.name,
            "version": self.model.version,
            "role": self.role,
            "form": "entities" if extra else "features",
            "latency_ms": round(latency_ms, 3),
        }
        records = []
        rows = values.tolist()  # a frame's itertuples cost 0.6 ms a request
        for i, (row, score) in enumerate(zip(rows, scores.tolist(), strict=True)):
            record = {
                **base,
                "row": i,
                # NaN (missing) as null; inf was refused before scoring
                "features": {n: None if v != v else v for n, v in zip(names, row, strict=True)},
                "score": score,
            }
            if extra:
                record.update(
                    {k: _jsonable_row(v) if k == "entity" else v for k, v in extra[i].items()}
                )
            records.append(record)
        self.requests.append(records)

    def _batched(self, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Metrics for Seldon, handed over at most once per `metrics_interval_s`: each hand-over
        is a round trip to Seldon's multiprocessing manager (0.7 ms), so counters are summed
        here and timer observations queued, and Prometheus sees them up to that much later."""
        with self._metrics_lock:
            for metric in metrics:
                if metric["type"] == "COUNTER":
                    key = (metric["key"], tuple(sorted(metric["tags"].items())))
                    if key in self._counters:
                        self._counters[key]["value"] += metric["value"]
                    else:
                        self._counters[key] = dict(metric)
                else:
                    self._timers.append(metric)
            now = time.monotonic()
            if now - self._flushed < self.metrics_interval_s:
                return []
            out = [*self._counters.values(), *self._timers]
            self._counters, self._timers, self._flushed = {}, [], now
            return out

    def _metrics(
        self,
        scores: np.ndarray,
        latency_ms: float,
        lookup_ms: float | None,
        extra: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        tags = self._tags  # each metric gets its own copy: Seldon adds a `method` tag in place
        out: list[dict[str, Any]] = [
            {
                "type": "COUNTER",
                "key": "mlops_predictions",
                "value": len(scores),
                "tags": dict(tags),
            },
            {"type": "TIMER", "key": "mlops_request", "value": latency_ms, "tags": dict(tags)},
            {
                "type": "COUNTER",
                "key": "mlops_score_sum",
                "value": float(scores.sum()),
                "tags": dict(tags),
            },
        ]
        counts = np.searchsorted(np.sort(scores), SCORE_BUCKETS, side="right")
        out += [
            {
                "type": "COUNTER",
                "key": "mlops_score_bucket",
                "value": int(c),
                "tags": {**tags, "le": str(b)},
            }
            for b, c in [*zip(SCORE_BUCKETS, counts, strict=True), ("+Inf", len(scores))]
        ]
        if lookup_ms is not None:
            out.append(
                {
                    "type": "TIMER",
                    "key": "mlops_online_lookup",
                    "value": lookup_ms,
                    "tags": dict(tags),
                }
            )
        by_view: Counter[tuple[str, str]] = Counter(
            (kind, view) for row in extra for kind in ("missing", "expired") for view in row[kind]
        )
        out += [
            {
                "type": "COUNTER",
                "key": f"mlops_{kind}_features",
                "value": n,
                "tags": {**tags, "view": view},
            }
            for (kind, view), n in sorted(by_view.items())
        ]
        return out

    # -- feedback -----------------------------------------------------------------------------

    def send_feedback_raw(self, feedback: Any) -> Any:
        """Record the true outcome of an earlier request (by its id) in the labels log."""
        from google.protobuf import json_format
        from seldon_core.flask_utils import SeldonMicroserviceException
        from seldon_core.proto import prediction_pb2

        message = json_format.MessageToDict(feedback)
        try:
            records = self._labels(message)
        except BadRequest as exc:
            raise SeldonMicroserviceException(
                str(exc), status_code=exc.status, reason=exc.reason
            ) from None
        self.labels.append(records)
        return prediction_pb2.SeldonMessage()

    def _labels(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        assert self.model is not None
        tags = message.get("response", {}).get("meta", {}).get("tags", {})
        request_id = tags.get("request_id") or message.get("request", {}).get("meta", {}).get(
            "puid"
        )
        if not request_id:
            raise BadRequest(
                "NO_REQUEST_ID",
                "feedback needs the request id: response.meta.tags.request_id or request.meta.puid",
            )
        truth = message.get("truth", {}).get("data", {}).get("ndarray")
        if not isinstance(truth, list) or not truth:
            raise BadRequest("NO_TRUTH", "feedback needs truth.data.ndarray: one label per row")
        flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in truth]
        if any(type(v) not in NUMBER or not math.isfinite(v) for v in flat):
            raise BadRequest("NO_TRUTH", "truth.data.ndarray: labels must be finite numbers")
        now = utc_now()
        return [
            {
                "request_id": str(request_id),
                "row": i,
                "time": now,
                "label": float(v),
                "model": self.model.name,  # the version that scored it: by id, in the requests
            }
            for i, v in enumerate(flat)
        ]


FEEDBACK_PATHS = ("/api/v1.0/feedback", "/api/v0.1/feedback", "/send-feedback")
API_PATHS = (*FEEDBACK_PATHS, "/api/v1.0/predictions", "/api/v0.1/predictions", "/predict")


def error_blueprint() -> Any:
    """Bodies Seldon parses before the model sees them, answered 400 in the form `_refused`
    uses instead of Seldon's 500: a `json` form field that is not JSON (Seldon calls
    `json.loads` on it unguarded), JSON nested deeper than Python's recursion limit, and a
    feedback body that is not a Feedback message (Seldon's parse of `false` raises TypeError).
    The body is parsed once here, before Seldon's handler (Flask caches a JSON body's parse),
    so only the client's body is judged: an error of the server's own stays a 500."""
    from flask import Blueprint, jsonify, request

    blueprint = Blueprint("mlops_bad_requests", __name__)

    def refuse(reason: str, message: str) -> Any:
        logger.info("refused a request body: %s: %s", reason, message)
        body = {"status": {"code": 400, "info": message, "reason": reason, "status": "FAILURE"}}
        return jsonify(body), 400

    @blueprint.before_app_request
    def readable_body() -> Any:
        if request.path not in API_PATHS:
            return None
        from google.protobuf import json_format
        from seldon_core.flask_utils import get_request
        from seldon_core.proto import prediction_pb2

        try:  # what else it refuses is answered 400 by Seldon's own handler
            message = get_request()
        except RecursionError:
            return refuse("BAD_JSON", "the request's JSON is nested too deeply")
        except json.JSONDecodeError as exc:
            return refuse("BAD_JSON", f"a 'json' form field or query parameter is not JSON: {exc}")
        if request.path not in FEEDBACK_PATHS:
            return None
        try:
            json_format.ParseDict(message, prediction_pb2.Feedback())
        except Exception as exc:  # parsing the client's body, nothing of the server's
            return refuse("BAD_FEEDBACK", f"not a Seldon Feedback message: {exc}")
        return None

    return blueprint


def open_reader(location: str, project: str, views: dict[str, list[str]]) -> ViewReader:
    """The online store's reader: Feast's Redis store at a redis:// URL, else the SQLite file."""
    if location.startswith(("redis://", "rediss://")):
        return RedisOnlineReader(location, project, views)
    return OnlineReader(location, project, views)


def _ingress_id() -> str | None:
    """The ingress's request id (nginx's X-Request-Id; a shadow's mirror carries the same one,
    so both predictors log the request under one id)."""
    try:
        from flask import has_request_context, request
    except ImportError:
        return None
    return request.headers.get("X-Request-Id") if has_request_context() else None


def _names_problem(names: Any, features: list[str]) -> str:
    if not isinstance(names, list):
        return f"data.names must list the version's {len(features)} features in order"
    missing = [f for f in features if f not in names]
    unknown = [n for n in names if n not in features]
    if missing or unknown:
        return f"data.names: missing {missing}, unknown {unknown}"
    if len(names) != len(features):
        return f"data.names: {len(names)} names; the version takes {len(features)}"
    first = next(i for i, (a, b) in enumerate(zip(names, features, strict=True)) if a != b)
    return (
        f"data.names: wrong order at position {first}: '{names[first]}' where the version "
        f"takes '{features[first]}'"
    )


def _field_problem(value: Any, dtype: str) -> str | None:
    if value is None:
        return None  # missing: the on-demand functions take None as missing
    if dtype == "string":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if dtype == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if type(value) not in NUMBER:
        return f"{value!r} is not a number"
    try:
        finite = math.isfinite(value)
    except OverflowError:
        return "too large for a float"
    if not finite:
        return f"{value!r} is not finite"
    if dtype == "int64" and not (type(value) is int or float(value).is_integer()):
        return f"{value!r} is not an integer"
    return None


def _jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in row.items()}
