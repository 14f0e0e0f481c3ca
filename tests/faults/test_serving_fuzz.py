"""Hostile requests against one real predictor (seldon-core-microservice from the serving
environment) and the nginx in front of it: every answer to a prediction or feedback request is
a 2xx, or a 4xx whose JSON body names the problem; never a 5xx, a dropped connection or a dead
predictor. Two fuzzers: hypothesis strategies written for the Seldon payloads, and schemathesis
driven by the OpenAPI description the predictor serves itself (`/seldon.json`). Bounded and
reproducible: a few hundred derandomized examples each, no example database."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tasks.serving.local_target import LocalSettings, LocalTarget, Predictor, Routing, free_port
from tests.faults.fuzzing import BOUNDED
from tests.unit.test_model_server import CONTRACT, FEATURES, _store, _version

pytestmark = pytest.mark.faults

MAX_ROWS = 20
MAX_BODY_KB = 64
PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"
FUZZ = settings(BOUNDED, max_examples=400)


@dataclass(frozen=True)
class Served:
    target: LocalTarget
    predictor: Predictor

    @property
    def urls(self) -> list[str]:
        return [self.predictor.url, self.target.url]  # directly, and through nginx


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One predictor of a hand-built version (tests/unit/test_model_server.py) with its SQLite
    online store (customers 1-3), behind nginx; stopped by pid at the end."""
    root = tmp_path_factory.mktemp("serving_fuzz")
    settings_ = LocalSettings(
        state_dir=str(root / "serving"),
        port=free_port(),
        online_store=str(_store(root / "online.db")),
        max_rows=MAX_ROWS,
        max_body_kb=MAX_BODY_KB,
        drain_s=0,
        startup_timeout_s=120,
    )
    target = LocalTarget(settings_, "credit")
    try:
        predictor = target.start("main", 3, str(_version(root / "v3", CONTRACT)))
        target.route(Routing(main=predictor.pid))
        yield Served(target, predictor)
    finally:
        target.stop_all()


def send(
    url: str, body: bytes | None, content_type: str | None = "application/json"
) -> tuple[int, bytes]:
    """POST `body` (GET without one); the status and the body. A connection error fails."""
    request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_answer(served: Served, url: str, status: int, body: bytes) -> dict[str, Any]:
    """A 2xx, or a 4xx with a JSON body naming the problem; the predictor still runs."""
    assert served.target.is_alive(served.predictor), f"the predictor died ({url})"
    assert status < 500, f"{url}: HTTP {status}: {body[:500]!r}"
    answer = json.loads(body)
    assert isinstance(answer, dict), answer
    if status >= 400:
        problem = answer.get("status", {})
        # Seldon's own refusals carry code -1
        assert problem.get("code") in (status, -1) and problem.get("info"), answer
    return answer


# -- payloads -------------------------------------------------------------------------------

TEXT = (
    st.text(max_size=12)
    | st.sampled_from(["", "\x00", "\ud7ff", "' OR 1=1"])
    | st.integers(1_000, 5_000).map(lambda n: "x" * n)
)
NUMBER = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1e308, 5e-324, -0.0])
    | st.just(400).map(lambda e: 10**e)  # beyond a float
)
SCALAR = st.none() | st.booleans() | NUMBER | TEXT
JSONISH = st.recursive(
    SCALAR,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4),
    max_leaves=10,
)
GOOD_ENTITY = {
    "customer_id": 1,
    "loan_amount": 10_000.0,
    "term_months": 36,
    "purpose": "car",
    "missed_payments_12m": 0,
}
GOOD_FEATURES = [52_000.0, 4.0, 10_000.0, 0.19, 2.0]


@st.composite
def near(draw: st.DrawFn, good: dict[str, Any] | list[Any]) -> Any:
    """`good` with one value replaced or removed, and some unknown keys (a row or an object)."""
    out = good.copy()
    keys = list(out) if isinstance(out, dict) else list(range(len(out)))
    key = draw(st.sampled_from(keys))
    if draw(st.booleans()):
        out[key] = draw(JSONISH)
    elif isinstance(out, dict):
        del out[key]
    if isinstance(out, dict):
        out.update(draw(st.dictionaries(TEXT, JSONISH, max_size=2)))
    return out


FEATURE_ROW = (
    st.lists(NUMBER | SCALAR, min_size=5, max_size=5)
    | st.lists(JSONISH, max_size=7)
    | near(GOOD_FEATURES)
    | st.just(GOOD_FEATURES)
)
NAMES = st.just(FEATURES) | st.lists(st.sampled_from(FEATURES) | TEXT, max_size=7) | JSONISH
ROWS = (
    st.lists(FEATURE_ROW, max_size=4)
    | JSONISH
    | st.integers(MAX_ROWS + 1, MAX_ROWS + 3).map(lambda n: [[1.0, 2.0, 3.0, 0.5, 1.0]] * n)
)
FIELDS = {
    "customer_id": st.sampled_from([1, 2, 3, 99]) | SCALAR,
    "loan_amount": st.sampled_from([10_000.0]) | SCALAR,
    "term_months": st.sampled_from([36, 0, 36.0]) | SCALAR,
    "purpose": st.sampled_from(["car", "nope"]) | SCALAR,
    "missed_payments_12m": st.sampled_from([0, 2]) | SCALAR,
}
ENTITY_ROW = (
    st.fixed_dictionaries({}, optional=FIELDS).flatmap(
        lambda row: st.dictionaries(TEXT, JSONISH, max_size=2).map(lambda extra: {**extra, **row})
    )
    | near(GOOD_ENTITY)
    | st.just(GOOD_ENTITY)
)
META = st.fixed_dictionaries(
    {}, optional={"puid": JSONISH, "tags": JSONISH, "routing": JSONISH, "requestPath": JSONISH}
)
SELDON = st.fixed_dictionaries(
    {},
    optional={
        "data": st.fixed_dictionaries({}, optional={"names": NAMES, "ndarray": ROWS}) | JSONISH,
        "jsonData": st.fixed_dictionaries(
            {}, optional={"rows": st.lists(ENTITY_ROW, max_size=4) | JSONISH}
        )
        | JSONISH,
        "meta": META | JSONISH,
        "strData": JSONISH,
    },
)


def nested(depth: int) -> bytes:
    return b'{"data": ' * depth + b"1" + b"}" * depth


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    None,
]
BODIES = st.one_of(
    SELDON.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity as Python writes them
    JSONISH.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"{"]),
    st.sampled_from([100, 5_000]).map(nested),
    st.just(30_000).map(lambda n: b"[" * n),
    SELDON.map(lambda v: ("json=" + urllib.parse.quote(json.dumps(v))).encode()),
    st.text(max_size=50).map(lambda t: ("json=" + urllib.parse.quote(t)).encode()),
    st.text(max_size=50).map(
        lambda t: (
            f'--x\r\nContent-Disposition: form-data; name="data"\r\n\r\n{t}\r\n--x--\r\n'.encode()
        )
    ),
)


@FUZZ
@given(
    body=BODIES,
    content_type=st.sampled_from(CONTENT_TYPES),
    via=st.sampled_from([0, 1]),
    query=st.none() | st.text(max_size=30),  # Seldon reads `?json=` when the form has none
)
@example(body=b"json=%7B", content_type="application/x-www-form-urlencoded", via=0, query=None)
@example(body=b"[" * 30_000, content_type="application/json", via=0, query=None)
@example(  # NaN inside an unknown field of an entity row: the request log refused it
    body=json.dumps({"jsonData": {"rows": [{**GOOD_ENTITY, "note": [math.nan]}]}}).encode(),
    content_type="application/json",
    via=1,
    query=None,
)
def test_hostile_predictions_get_a_named_4xx(served, body, content_type, via, query) -> None:
    url = served.urls[via] + PREDICT
    if query is not None:
        url += "?json=" + urllib.parse.quote(query)
    status, answer = send(url, body, content_type)
    check_answer(served, url, status, answer)


FEEDBACK_MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "request": SELDON | JSONISH,
        "response": st.fixed_dictionaries(
            {}, optional={"meta": st.fixed_dictionaries({}, optional={"tags": JSONISH}) | JSONISH}
        )
        | JSONISH,
        "truth": st.fixed_dictionaries(
            {}, optional={"data": st.fixed_dictionaries({}, optional={"ndarray": JSONISH})}
        )
        | JSONISH,
        "reward": JSONISH,
    },
)


@FUZZ
@given(
    body=FEEDBACK_MESSAGES.map(lambda v: json.dumps(v).encode())
    | BODIES.filter(lambda b: len(b) < 2_000),
    content_type=st.sampled_from(CONTENT_TYPES),
    via=st.sampled_from([0, 1]),
)
@example(body=b"false", content_type="application/json", via=0)  # TypeError in Seldon
def test_hostile_feedback_gets_a_named_4xx(served, body, content_type, via) -> None:
    url = served.urls[via] + FEEDBACK
    status, answer = send(url, body, content_type)
    check_answer(served, url, status, answer)


@pytest.mark.parametrize("via", [0, 1], ids=["predictor", "nginx"])
def test_size_limits_answer_413_and_the_server_keeps_serving(served, via) -> None:
    base = served.urls[via]
    row = [52_000.0, 4.0, 10_000.0, 0.19, 2.0]
    big = json.dumps({"data": {"names": FEATURES, "ndarray": [row] * 5_000}}).encode()
    assert len(big) > MAX_BODY_KB * 1024
    status, answer = send(base + PREDICT, big)
    assert status == 413 and "KB" in check_answer(served, base, status, answer)["status"]["info"]
    many = json.dumps({"data": {"names": FEATURES, "ndarray": [row] * (MAX_ROWS + 1)}}).encode()
    status, answer = send(base + PREDICT, many)
    info = check_answer(served, base, status, answer)["status"]["info"]
    assert status == 413 and f"limit is {MAX_ROWS}" in info, info
    good = json.dumps({"data": {"names": FEATURES, "ndarray": [row]}}).encode()
    status, answer = send(base + PREDICT, good)
    assert status == 200 and len(check_answer(served, base, status, answer)["data"]["ndarray"]) == 1


def test_after_the_fuzzing_both_request_forms_still_score(served) -> None:
    started = time.monotonic()
    entity = {"customer_id": 1, "loan_amount": 1e4, "term_months": 36, "purpose": "car"}
    body = json.dumps({"jsonData": {"rows": [{**entity, "missed_payments_12m": 0}]}}).encode()
    for base in served.urls:
        status, answer = send(base + PREDICT, body)
        scores = check_answer(served, base, status, answer)["data"]["ndarray"]
        assert status == 200 and all(0 < s < 1 and math.isfinite(s) for s in scores)
    assert time.monotonic() - started < 10


def served_description(base: str) -> dict[str, Any]:
    """The OpenAPI description the predictor serves (Seldon's internal routes: /predict,
    /send-feedback, /route, ...), plus the public routes nginx forwards, which take JSON bodies
    of the same message types."""
    with urllib.request.urlopen(base + "/seldon.json", timeout=30) as response:
        description = json.load(response)

    def json_post(message: str) -> dict[str, Any]:
        body = {"schema": {"$ref": f"#/components/schemas/{message}"}}
        return {
            "post": {
                "requestBody": {"content": {"application/json": body}, "required": True},
                "responses": {"200": {"description": "A SeldonMessage."}},
            }
        }

    description["paths"][PREDICT] = json_post("SeldonMessage")
    description["paths"][FEEDBACK] = json_post("Feedback")
    return description


def test_every_described_route_survives_schemathesis(served) -> None:
    """Valid and schema-violating cases for every operation of the served description, sent to
    the predictor and through nginx: never a 5xx; the predictor's refusals are JSON naming the
    problem, but for a request line over the HTTP servers' limit (gunicorn's 400, nginx's 414),
    refused before the app."""
    schema = schemathesis.openapi.from_dict(served_description(served.predictor.url))
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(FUZZ, max_examples=20)
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                for base in served.urls:
                    response = case.call(base_url=base, timeout=30)
                    seen.setdefault(case.operation.label, set()).add(response.status_code)
                    if len(response.request.url) > 4_000:
                        assert response.status_code in (400, 414), response.status_code
                    else:
                        check_answer(served, base, response.status_code, response.content)

            call()
    assert {"POST /predict", f"POST {PREDICT}", f"POST {FEEDBACK}", "GET /route"} <= set(seen)
