"""The model server's request handling, in process: both request forms, the bad-input set,
the request and labels logs, loading failures (the HTTP layer runs in tests/flows/
test_deployment_flow.py, under seldon-core-microservice in the serving environment)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from deployments.contract import SERVING, ContractError, OnDemand, ServingContract, load_transform
from deployments.model_server import BadRequest, ModelServer
from deployments.online_reader import VIEWS_TABLE, entity_key, micros, table_name
from deployments.predictor import ModelLoadError, load_folder
from deployments.request_log import LABELS, REQUESTS, SCHEMA, read_log

FEATURES = ["annual_income", "txn_count_7d", "loan_amount", "loan_to_income", "purpose_code"]
PROJECT = "mlops"
NOW = datetime.now(UTC)


def _version(folder: Path, contract: ServingContract) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, len(FEATURES))), columns=FEATURES)
    label = (frame["loan_to_income"] + rng.normal(size=400) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(frame, label), 5
    )
    folder.mkdir(parents=True)
    files = {
        "model.txt": booster.model_to_string().encode(),
        "features.json": json.dumps({"features": FEATURES}).encode(),
        "calibration.json": json.dumps({"method": "platt", "a": 0.9, "b": -0.2}).encode(),
        SERVING: contract.to_json().encode(),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    metadata = {
        "name": "credit",
        "version": 3,
        "files": sorted(files),
        "metadata": {"trainer": "lightgbm"},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def _store(path: Path) -> Path:
    """The online store's layout (deployments/online_reader.py) written by hand: customer 1
    fresh in both views, 2 with an expired window row, 3 without one."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {VIEWS_TABLE} (name TEXT, join_keys TEXT, features TEXT, ttl_s)")
    views = {
        "profile": ({"annual_income": "Float64"}, 0),
        "windows": ({"txn_count_7d": "Int64"}, 7 * 86_400),
    }
    rows = {
        "profile": {1: (NOW, 52_000.0), 2: (NOW, 30_000.0), 3: (NOW, 80_000.0)},
        "windows": {1: (NOW, 4), 2: (NOW - timedelta(days=30), 9)},
    }
    for view, (dtypes, ttl) in views.items():
        table = table_name(PROJECT, view)
        conn.execute(
            f"INSERT INTO {VIEWS_TABLE} VALUES (?, ?, ?, ?)",
            (table, json.dumps({"customer_id": "INT64"}), json.dumps(dtypes), ttl),
        )
        conn.execute(
            f'CREATE TABLE "{table}" (entity_key TEXT PRIMARY KEY, event_us INTEGER, '
            'written_us INTEGER, "row" TEXT)'
        )
        name = next(iter(dtypes))
        for customer, (when, value) in rows[view].items():
            conn.execute(
                f'INSERT INTO "{table}" VALUES (?, ?, NULL, ?)',
                (entity_key([("customer_id", customer)]), micros(when), json.dumps({name: value})),
            )
    conn.commit()
    conn.close()
    return path


CONTRACT = ServingContract(
    features=FEATURES,
    join_keys={"customer_id": "INT64"},
    fingerprint="svc:abc",
    project=PROJECT,
    views={"profile": ["annual_income"], "windows": ["txn_count_7d"]},
    request_fields={
        "loan_amount": "float64",
        "term_months": "int64",
        "purpose": "string",
        "missed_payments_12m": "int64",
    },
    on_demand=[
        OnDemand(
            "features.credit_risk.on_demand:application_features",
            {"purpose_code": "int64", "loan_to_income": "float64", "payment_to_income": "float64"},
        )
    ],
    nullable=["txn_count_7d"],
)


@pytest.fixture
def server(tmp_path: Path) -> ModelServer:
    folder = _version(tmp_path / "v3", CONTRACT)
    model = ModelServer(
        str(folder),
        role="canary",
        online_store=str(_store(tmp_path / "online.db")),
        log_dir=str(tmp_path / "log"),
        max_rows=5,
    )
    model.load()
    return model


def _features(*rows: list[float | None]) -> dict:
    return {"data": {"names": FEATURES, "ndarray": [list(r) for r in rows]}}


def _entity(customer: int, **extra) -> dict:
    row = {
        "customer_id": customer,
        "loan_amount": 10_000.0,
        "term_months": 36,
        "purpose": "car",
        "missed_payments_12m": 0,
    }
    return {**row, **extra}


def test_features_are_scored_as_the_loaded_version_scores_them(server, tmp_path) -> None:
    rows = [[50_000.0, 3.0, 9_000.0, 0.18, 1.0], [20_000.0, None, 15_000.0, 0.75, 2.0]]
    answer = server.predict_raw({"meta": {"puid": "req-1"}, **_features(*rows)})
    expected = load_folder(tmp_path / "v3").predict(
        pd.DataFrame(rows, columns=FEATURES, dtype="float64")
    )
    assert answer["data"]["ndarray"] == expected.tolist()
    tags = answer["meta"]["tags"]
    assert tags | {} == {
        "model": "credit",
        "version": "3",
        "role": "canary",
        "request_id": "req-1",
        "missing_features": 0,
        "expired_features": 0,
    }
    keys = {m["key"] for m in answer["meta"]["metrics"]}
    assert {"mlops_predictions", "mlops_request", "mlops_score_bucket"} <= keys
    records = read_log(tmp_path / "log" / REQUESTS, REQUESTS).records
    assert [r["row"] for r in records] == [0, 1] and records[1]["features"]["txn_count_7d"] is None
    assert [r["score"] for r in records] == expected.tolist()
    schema = json.loads(SCHEMA.read_text())
    for record in records:
        jsonschema.validate(record, schema)


def test_entities_read_stored_features_and_compute_on_demand_ones(server, tmp_path) -> None:
    answer = server.predict_raw({"jsonData": {"rows": [_entity(1), _entity(2), _entity(3)]}})
    # recomputed by hand: the stored values, an expired or absent window is missing, and the
    # on-demand ratio and purpose code from the request
    expected_frame = pd.DataFrame(
        [
            [52_000.0, 4.0, 10_000.0, 10_000 / 52_000, 2.0],
            [30_000.0, math.nan, 10_000.0, 10_000 / 30_000, 2.0],
            [80_000.0, math.nan, 10_000.0, 10_000 / 80_000, 2.0],
        ],
        columns=FEATURES,
    )
    from features.credit_risk.on_demand import PURPOSE_CODES

    expected_frame["purpose_code"] = float(PURPOSE_CODES["car"])
    expected = load_folder(tmp_path / "v3").predict(expected_frame)
    assert answer["data"]["ndarray"] == expected.tolist()
    assert answer["meta"]["tags"]["expired_features"] == 1
    assert answer["meta"]["tags"]["missing_features"] == 1
    records = read_log(tmp_path / "log" / REQUESTS, REQUESTS).records
    assert [(r["missing"], r["expired"]) for r in records] == [
        ([], []),
        ([], ["windows"]),
        (["windows"], []),
    ]
    assert records[0]["entity"]["customer_id"] == 1
    metrics = {(m["key"], m["tags"].get("view")): m["value"] for m in answer["meta"]["metrics"]}
    assert metrics[("mlops_missing_features", "windows")] == 1
    assert metrics[("mlops_expired_features", "windows")] == 1


GOOD = [50_000.0, 3.0, 9_000.0, 0.18, 1.0]
BAD = [
    ("not an object", ["x"], 400, "BAD_JSON", "JSON object"),
    ("no form", {"strData": "x"}, 400, "BAD_FORM", "'data'"),
    ("empty batch", _features(), 400, "EMPTY_BATCH", "empty"),
    ("too large", _features(*[GOOD] * 6), 413, "TOO_LARGE", "limit is 5"),
    ("wrong count", _features(GOOD[:4]), 400, "BAD_FEATURES", "4 values"),
    (
        "wrong names",
        {"data": {"names": ["a", *FEATURES[1:]], "ndarray": [GOOD]}},
        400,
        "BAD_FEATURES",
        "missing ['annual_income'], unknown ['a']",
    ),
    (
        "wrong order",
        {"data": {"names": FEATURES[::-1], "ndarray": [GOOD]}},
        400,
        "BAD_FEATURES",
        "wrong order at position 0",
    ),
    (
        "string",
        _features([*GOOD[:2], "9000", *GOOD[3:]]),
        400,
        "NOT_A_NUMBER",
        "feature 'loan_amount': '9000' is not a number",
    ),
    ("boolean", _features([True, *GOOD[1:]]), 400, "NOT_A_NUMBER", "'annual_income'"),
    (
        "NaN not allowed",
        _features([math.nan, *GOOD[1:]]),
        400,
        "NOT_FINITE",
        "'annual_income': missing",
    ),
    (
        "inf",
        _features([*GOOD[:2], math.inf, *GOOD[3:]]),
        400,
        "NOT_FINITE",
        "'loan_amount': infinite",
    ),
    (
        "unknown entity",
        {"jsonData": {"rows": [_entity(1), _entity(99)]}},
        404,
        "UNKNOWN_ENTITY",
        "rows[1]: unknown entity {'customer_id': 99}",
    ),
    (
        "no join key",
        {"jsonData": {"rows": [{"loan_amount": 1.0}]}},
        400,
        "BAD_ENTITY",
        "lacks join key 'customer_id'",
    ),
    ("string key", {"jsonData": {"rows": [_entity("1")]}}, 400, "BAD_ENTITY", "not an integer"),
    (
        "no field",
        {"jsonData": {"rows": [{"customer_id": 1}]}},
        400,
        "BAD_REQUEST_FIELD",
        "lacks request field 'loan_amount'",
    ),
    (
        "text field",
        {"jsonData": {"rows": [_entity(1, term_months="36")]}},
        400,
        "BAD_REQUEST_FIELD",
        "field 'term_months': '36' is not a number",
    ),
    ("rows not a list", {"jsonData": {"rows": {"customer_id": 1}}}, 400, "BAD_FORM", "list"),
]


@pytest.mark.parametrize(
    ("case", "payload", "status", "reason", "text"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_input_is_answered_with_a_named_problem(server, case, payload, status, reason, text):
    answer = server.predict_raw(payload)
    assert answer["status"]["code"] == status, answer
    assert answer["status"]["reason"] == reason and text in answer["status"]["info"], answer
    assert answer["meta"]["metrics"][0]["tags"]["reason"] == reason
    assert server.predict_raw(_features(GOOD))["data"]["ndarray"]  # still serving


def test_missing_values_are_accepted_where_training_had_them(server) -> None:
    answer = server.predict_raw(_features([*GOOD[:1], None, *GOOD[2:]]))
    assert "status" not in answer and len(answer["data"]["ndarray"]) == 1


def test_feedback_records_labels_by_request_id(server, tmp_path) -> None:
    request_id = server.predict_raw(_features(GOOD, GOOD))["meta"]["tags"]["request_id"]
    message = {
        "response": {"meta": {"tags": {"request_id": request_id}}},
        "truth": {"data": {"ndarray": [[1], [0]]}},
    }
    server.labels.append(server._labels(message))
    labels = read_log(tmp_path / "log" / LABELS, LABELS).records
    assert [(r["request_id"], r["row"], r["label"]) for r in labels] == [
        (request_id, 0, 1.0),
        (request_id, 1, 0.0),
    ]
    for record in labels:
        jsonschema.validate(record, json.loads(SCHEMA.read_text()))
    with pytest.raises(BadRequest, match="request id"):
        server._labels({"truth": {"data": {"ndarray": [1]}}})
    with pytest.raises(BadRequest, match="finite numbers"):
        server._labels({"request": {"meta": {"puid": "x"}}, "truth": {"data": {"ndarray": ["y"]}}})


def test_a_version_that_cannot_be_served_fails_to_load(tmp_path) -> None:
    folder = _version(tmp_path / "v3", CONTRACT)
    unloaded = ModelServer(str(folder), log_dir=str(tmp_path / "log"))
    with pytest.raises(RuntimeError, match="not loaded"):
        unloaded.health_status()
    with pytest.raises(ModelLoadError, match="version"):
        ModelServer(str(folder), version="4", log_dir=str(tmp_path)).load()
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelServer(str(folder), online_store=str(tmp_path / "none.db")).load()
    (folder / SERVING).write_text(
        CONTRACT.to_json().replace("features.credit_risk.on_demand", "os")
    )
    with pytest.raises(ModelLoadError, match="not a function of the 'features' package"):
        ModelServer(str(folder), log_dir=str(tmp_path)).load()
    (folder / SERVING).unlink()
    with pytest.raises(ModelLoadError, match=r"serving\.json"):
        ModelServer(str(folder), log_dir=str(tmp_path)).load()


def test_unknown_fields_of_an_entity_row_are_neither_scored_nor_logged(server, tmp_path) -> None:
    # found by tests/faults/test_serving_fuzz.py: a NaN inside an unknown field reached the
    # request log, whose JSON refuses NaN: HTTP 500
    answer = server.predict_raw({"jsonData": {"rows": [_entity(1, note=[math.nan], x={"y": 1})]}})
    assert "status" not in answer and len(answer["data"]["ndarray"]) == 1
    (record,) = read_log(tmp_path / "log" / REQUESTS, REQUESTS).records
    assert record["entity"] == _entity(1)


SERVING_PY = Path(__file__).resolve().parents[2] / ".venv-serving" / "bin" / "python"
SELDON_APP = """
import json, sys
from seldon_core.metrics import SeldonMetrics
from seldon_core.wrapper import get_rest_microservice
from deployments.model_server import ModelServer

server = ModelServer(sys.argv[1], log_dir=sys.argv[2])
server.load()
client = get_rest_microservice(server, SeldonMetrics()).test_client()
answers = [client.post(path, **kwargs) for path, kwargs in json.loads(sys.argv[3])]
print(json.dumps([[a.status_code, a.get_json()] for a in answers]))
"""


def test_bodies_seldon_cannot_parse_are_answered_400(tmp_path) -> None:
    """Seldon's own Flask app (test client, serving env): bodies that failed in Seldon's
    parsing with a 500 before the model saw them (found by tests/faults/test_serving_fuzz.py)."""
    if not SERVING_PY.exists():
        pytest.skip("no serving environment (.venv-serving)")
    folder = _version(tmp_path / "v3", CONTRACT)
    json_type = {"content_type": "application/json"}
    good = {
        "response": {"meta": {"tags": {"request_id": "r1"}}},
        "truth": {"data": {"ndarray": [1]}},
    }
    cases = [
        (
            "/api/v1.0/predictions",
            {"data": "json=%7B", "content_type": "application/x-www-form-urlencoded"},
        ),
        ("/api/v1.0/predictions", {"data": "[" * 30_000, **json_type}),
        ("/api/v1.0/feedback", {"data": "false", **json_type}),
        ("/api/v1.0/feedback", {"data": json.dumps(good), **json_type}),
        ("/api/v1.0/predictions", {"data": json.dumps(_features(GOOD)), **json_type}),
    ]
    done = subprocess.run(
        [str(SERVING_PY), "-c", SELDON_APP, str(folder), str(tmp_path / "log"), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SERVING_PY.parents[2],
        env={**os.environ, "PYTHONPATH": str(SERVING_PY.parents[2])},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert [status for status, _ in answers] == [400, 400, 400, 200, 200], answers
    reasons = [a["status"]["reason"] for _, a in answers[:3]]
    assert reasons == ["BAD_JSON", "BAD_JSON", "BAD_FEEDBACK"], answers
    assert "nested too deeply" in answers[1][1]["status"]["info"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("os:system", "not a function of the 'features' package"),
        (".credit_risk.on_demand:application_features", "not a function of the 'features'"),
        ("features..on_demand:application_features", "not a function of the 'features'"),
        ("features.credit_risk.on_demand:np", "not a function or class defined in"),
        ("features.credit_risk.vocabulary.os:system", "cannot find module"),
        ("features.__init__:x", "is not a dataset folder"),
    ],
)
def test_on_demand_transforms_come_only_from_a_dataset_folder(path, problem) -> None:
    with pytest.raises(ContractError, match=problem):
        load_transform(path)


def test_a_contract_serves_the_transforms_of_one_dataset() -> None:
    mixed = OnDemand("features.rides.transforms:driver_hourly", {"x": "float64"})
    contract = ServingContract(
        ["x"], {"k": "INT64"}, "svc:x", on_demand=[*CONTRACT.on_demand, mixed]
    )
    with pytest.raises(ContractError, match=r"several datasets \['credit_risk', 'rides'\]"):
        contract.transforms()
