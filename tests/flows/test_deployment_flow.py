"""The deployment flow on the local target: real seldon-core-microservice processes from
.venv-serving behind Debian's nginx, on loopback, with traffic from client threads."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from blocks import FeatureRepo, ModelRegistry, RolloutPolicy, ServingTarget
from deployments.contract import HOLDOUT
from deployments.request_log import LABELS, REQUESTS, read_log, utc_now
from flows.cli import main
from flows.deployment import DeploymentParams, DeploymentResult, Terminated, deployment
from flows.training import TrainingParams, training
from tasks.data.publish import LABELS as LABELLED_ROWS
from tasks.data.publish import current_snapshot, features_uri
from tasks.serving.local_target import LocalTarget, free_port, http_json
from tasks.serving.rollout import RolloutPolicy as Policy
from tasks.serving.rollout import ingress_lines, window_records

pytestmark = pytest.mark.flows
NAME = "credit-serve"
FIELDS = ["customer_id", "loan_amount", "term_months", "purpose", "missed_payments_12m"]


@pytest.fixture(scope="module")
def served(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    """Two trained versions of NAME, the first deployed as champion; everything it started is
    stopped at the end."""
    for seed in (0, 1):
        training(
            TrainingParams(
                data_uri=str(prepared),
                model_name=NAME,
                seed=seed,
                feature_repo_block="prepared-feast",
                registry_block="tmp-registry",
            )
        )
    block = ServingTarget(
        state_dir=str(tmp_path_factory.mktemp("serving")),
        port=free_port(),
        online_store=FeatureRepo.load("prepared-feast").sqlite_path,
        max_body_kb=256,
        drain_s=0.5,
    )
    block.save("tmp-serving", overwrite=True)
    _policy(window_requests=40, min_requests=20, canary_percent=30)
    target = LocalTarget(block.local_settings(), NAME)
    try:
        _registry().set_alias(NAME, "challenger", 1)
        first = _deploy()
        assert (first.decision, first.champion) == ("promoted", 1)
        yield target
    finally:
        target.stop_all()


def _registry():
    return ModelRegistry.load("tmp-registry").registry()


def _policy(**fields) -> None:
    policy = Policy(**{"window_timeout_s": 90, **fields})
    RolloutPolicy(policy=policy).save("tmp-rollout", overwrite=True)


def _deploy(**params) -> DeploymentResult:
    return deployment(
        DeploymentParams(
            model_name=NAME,
            target_block="tmp-serving",
            policy_block="tmp-rollout",
            registry_block="tmp-registry",
            **params,
        )
    )


def _rows(prepared: Path, n: int = 300) -> list[dict]:
    snapshot = current_snapshot(str(prepared))
    labels = pd.read_parquet(f"{features_uri(str(prepared), snapshot)}/{LABELLED_ROWS}")
    sample = labels.sample(n, random_state=0)[FIELDS]
    return json.loads(sample.to_json(orient="records"))


class Traffic:
    """Clients sending one entity row per request until stopped; counts statuses."""

    def __init__(self, url: str, rows: list[dict], clients: int = 2) -> None:
        self.url, self.rows = f"{url}/api/v1.0/predictions", rows
        self.statuses: Counter[object] = Counter()
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            body = {"jsonData": {"rows": [self.rows[i % len(self.rows)]]}}
            try:
                status, answer = http_json(self.url, body, timeout=10)
                if status == 200:
                    self.answered.append(answer["meta"]["tags"]["request_id"])
            except OSError as exc:
                status = type(exc).__name__
            self.statuses[status] += 1
            i += 2
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _serving(target: LocalTarget) -> set[tuple[str, int]]:
    return {(p.role, p.version) for p in target.predictors()}


def _rollout(version: int, stamp: str) -> dict:
    return json.loads(_registry().read_record(NAME, version, "rollout", stamp, "rollout.json"))


def test_canary_promotes_a_good_challenger_and_a_failed_smoke_test_rolls_back(
    served: LocalTarget, prepared: Path
) -> None:
    registry = _registry()
    assert _serving(served) == {("main", 1)}
    registry.set_alias(NAME, "challenger", 2)
    with Traffic(served.url, _rows(prepared)) as traffic:
        result = _deploy()
    assert (result.decision, result.champion) == ("promoted", 2), result
    assert set(traffic.statuses) == {200}, traffic.statuses  # through two reloads and swaps
    assert registry.aliases(NAME) == {"champion": 2, "challenger": 2}
    assert _serving(served) == {("main", 2)}
    routing = served.routing()
    assert routing is not None and (routing.canary, routing.shadow) == (None, None)
    record = _rollout(2, result.record or "")
    assert record["decision"] == "promoted" and record["champion_before"] == 1
    window = record["window"]["challenger"]
    assert window["role"] == "canary" and window["predictions"] >= 20 and window["errors"] == 0
    share = window["requests"] / (window["requests"] + record["window"]["champion"]["requests"])
    assert 0.15 < share < 0.45  # the policy's 30%, split by nginx's weights
    assert record["checks"]["smoke"]["max_abs_diff"] <= 1e-9

    # a version whose served scores differ from its offline ones never gets user traffic
    files = {f: registry.read(NAME, 1, f) for f in registry.get(NAME, 1).files}
    holdout = pd.read_parquet(io.BytesIO(files[HOLDOUT]))
    holdout["score"] += 0.01
    buffer = io.BytesIO()
    holdout.to_parquet(buffer, index=False)
    metadata = registry.get(NAME, 1).metadata
    bad = registry.register(NAME, {**files, HOLDOUT: buffer.getvalue()}, metadata)
    registry.set_alias(NAME, "challenger", bad.version)
    main_pid = routing.main
    result = _deploy()
    assert (result.decision, result.champion) == ("rolled-back", 2)
    assert "differ from the offline scores" in result.reasons[0]
    assert registry.aliases(NAME)["champion"] == 2
    assert _serving(served) == {("main", 2)} and served.routing().main == main_pid
    assert _rollout(bad.version, result.record or "")["stage"] == "smoke"

    # a version that cannot load never gets traffic either
    broken = registry.register(NAME, {**files, "model.txt": b"not a model"}, metadata)
    registry.set_alias(NAME, "challenger", broken.version)
    result = _deploy()
    assert (result.decision, result.champion) == ("rolled-back", 2)
    assert "cannot load model.txt" in result.reasons[0]
    assert _serving(served) == {("main", 2)} and served.routing().main == main_pid


def test_bad_requests_get_4xx_and_the_server_keeps_serving(served: LocalTarget, prepared):
    url = f"{served.url}/api/v1.0/predictions"
    good = {"jsonData": {"rows": _rows(prepared, 2)}}

    def post(body: bytes, content_type: str = "application/json") -> tuple[int, str]:
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    row = _rows(prepared, 1)[0]
    features = json.loads(_registry().read(NAME, "champion", "serving.json"))["features"]
    JSON = ("application/json",)

    def features_body(change, reverse: bool = False) -> bytes:
        values = [0.5] * len(features)
        if change:
            change(values)
        names = features[::-1] if reverse else features
        return json.dumps({"data": {"names": names, "ndarray": [values]}}).encode()

    cases = {
        "malformed JSON": (b'{"jsonData": {', "application/json", 400, "JSON"),
        "wrong content type": (json.dumps(good).encode(), "text/plain", 400, "JSON"),
        "empty batch": (b'{"jsonData": {"rows": []}}', "application/json", 400, "empty"),
        "unknown entity": (
            json.dumps({"jsonData": {"rows": [{**row, "customer_id": 10**9}]}}).encode(),
            "application/json",
            404,
            "unknown entity",
        ),
        "too many rows": (
            json.dumps({"jsonData": {"rows": [row] * 1001}}).encode(),
            "application/json",
            413,
            "limit is 1000",
        ),
        "oversized body": (
            b'{"x": "' + b"a" * 300_000 + b'"}',
            "application/json",
            413,
            "over 256 KB",
        ),
        "string feature": (
            features_body(lambda r: r.__setitem__(2, "9")),
            *JSON,
            400,
            "not a number",
        ),
        "infinite feature": (
            features_body(lambda r: r.__setitem__(2, 1e400)),
            *JSON,
            400,
            "infinite",
        ),
        "wrong order": (features_body(None, reverse=True), *JSON, 400, "wrong order"),
        "wrong count": (features_body(lambda r: r.pop()), *JSON, 400, "values; the version takes"),
        "wrong feature names": (
            json.dumps({"data": {"names": ["a"], "ndarray": [[float("nan")]]}}).encode(),
            "application/json",
            400,
            "data.names",
        ),
    }
    for case, (body, content_type, status, text) in cases.items():
        got, answer = post(body, content_type)
        assert got == status and text in answer, (case, got, answer)
        assert post(json.dumps(good).encode())[0] == 200, case


def test_feedback_is_logged_and_metrics_are_exported(served: LocalTarget, prepared) -> None:
    rows = _rows(prepared, 2)
    status, answer = http_json(f"{served.url}/api/v1.0/predictions", {"jsonData": {"rows": rows}})
    assert status == 200
    request_id = answer["meta"]["tags"]["request_id"]
    status, _ = http_json(
        f"{served.url}/api/v1.0/feedback",
        {"response": answer, "truth": {"data": {"ndarray": [[1], [0]]}}, "reward": 1},
    )
    assert status == 200
    labels = read_log(served.log_dir / LABELS, LABELS).records
    assert [(r["row"], r["label"]) for r in labels if r["request_id"] == request_id] == [
        (0, 1.0),
        (1, 0.0),
    ]
    time.sleep(1.1)  # metrics reach Seldon once a second (ModelServer.metrics_interval_s)...
    assert http_json(f"{served.url}/api/v1.0/predictions", {"jsonData": {"rows": rows}})[0] == 200
    _, after = http_json(f"{served.url}/api/v1.0/predictions", {"jsonData": {"rows": rows}})
    assert set(after["meta"]["tags"]) == set(answer["meta"]["tags"])  # Seldon's tags stay out
    (main,) = served.predictors()  # ... with the next request
    with urllib.request.urlopen(f"http://127.0.0.1:{main.metrics_port}/metrics") as response:
        text = response.read().decode()
    for metric in (
        "mlops_predictions_total",
        "mlops_score_bucket_total",
        "mlops_request_bucket",
        "mlops_online_lookup_bucket",
        "mlops_bad_requests_total",
    ):
        assert metric in text, metric
    assert f'version="{main.version}"' in text and 'role="main"' in text


def test_a_shadow_sees_every_request_and_is_rolled_back_on_its_latency(
    served: LocalTarget, prepared: Path
) -> None:
    registry = _registry()
    registry.set_alias(NAME, "challenger", 1)
    _policy(mode="shadow", window_requests=300, min_requests=10, max_p99_ms=0.001)
    started = utc_now()
    try:
        with Traffic(served.url, _rows(prepared)) as traffic:
            result = _deploy()
    finally:
        _policy(window_requests=40, min_requests=20, canary_percent=30)
    assert result.decision == "rolled-back" and "latency p99" in result.reasons[0]
    assert set(traffic.statuses) == {200}
    assert registry.aliases(NAME)["champion"] == 2 and _serving(served) == {("main", 2)}
    records = window_records(served.log_dir, started)  # without the rollout's own probes
    shadow = {r["request_id"] for r in records if r["role"] == "shadow"}
    main = [r for r in records if r["role"] == "main" and r["version"] == 2]
    assert len(shadow) >= 10 and shadow <= {r["request_id"] for r in main}  # the same ids
    # at the ingress: while the shadow was routed, every request had its mirror (answered, or
    # cut off when the rollback stopped the shadow)
    port = max(served.folder.glob("predictor-shadow-v1-*.log"), key=lambda p: p.stat().st_mtime)
    shadow_address = f"127.0.0.1:{port.stem.rsplit('-', 1)[1]}"
    lines = ingress_lines(served.access_log, 0.0)
    mirrors = {e["id"]: e["msec"] for e in lines if e["upstream"].startswith(shadow_address)}
    # requests answered while the shadow ran, but its first second (old nginx workers finish
    # their keep-alive connections unmirrored) and its last (mirrors still in flight)
    first, last = min(mirrors.values()) + 1.0, max(mirrors.values()) - 1.0
    main_ids = {
        e["id"]
        for e in lines
        if first <= e["msec"] <= last and not e["upstream"].startswith(shadow_address)
    }
    assert len(main_ids) >= 10 and main_ids <= set(mirrors), main_ids - set(mirrors)


def test_a_cancelled_rollout_restores_routing_and_aliases(served: LocalTarget, prepared) -> None:
    registry = _registry()
    registry.set_alias(NAME, "challenger", 1)
    before = served.routing()

    def terminate_once_canary_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            routing = served.routing()
            if routing is not None and routing.canary is not None:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=terminate_once_canary_runs)
    killer.start()
    # the signal lands anywhere, Prefect's engine included, which may re-raise it as its own
    # error: what counts is the state afterwards
    with pytest.raises((Terminated, RuntimeError)):
        _deploy()  # no traffic: the window waits until SIGTERM arrives
    killer.join()
    assert served.routing() == before and _serving(served) == {("main", 2)}
    assert registry.aliases(NAME)["champion"] == 2
    stamp = registry.records(NAME, 1, "rollout")[-1]
    assert _rollout(1, stamp)["decision"] == "aborted"


def _models_cli(*words: str) -> None:
    """The README's `mlops models promote|rollback ...`, through the CLI's own parser."""
    blocks = ["--registry-block", "tmp-registry", "--target-block", "tmp-serving"]
    main(["models", *words, *blocks, "--policy-block", "tmp-rollout", "--no-server"])


def test_manual_rollback_and_promote_are_recorded(served: LocalTarget) -> None:
    registry = _registry()
    _models_cli("rollback", NAME, "--reason", "incident 42: v2 over-declines")
    assert registry.aliases(NAME)["champion"] == 1
    assert _serving(served) == {("main", 1)}
    back = registry.records(NAME, 1, "rollout")[-1]
    assert _rollout(1, back)["decision"] == "rolled-back"
    assert _rollout(1, back)["reason"] == "incident 42: v2 over-declines"
    _models_cli("promote", NAME, "2", "--reason", "fixed upstream")
    assert registry.aliases(NAME)["champion"] == 2
    record = _rollout(2, registry.records(NAME, 2, "rollout")[-1])
    assert record["decision"] == "promoted"
    assert (record["action"], record["reason"], record["champion_before"]) == (
        "promote",
        "fixed upstream",
        1,
    )
    assert _serving(served) == {("main", 2)} and registry.aliases(NAME)["champion"] == 2
    with pytest.raises(ValueError, match="needs a reason"):
        _deploy(action="promote", version=1)


def test_answered_requests_survive_a_killed_server(served: LocalTarget, prepared, tmp_path):
    """The request log's durability bound: SIGKILL loses no request that was answered, with
    two gunicorn workers appending to their own segments."""
    block = ServingTarget(
        state_dir=str(tmp_path),
        port=free_port(),
        online_store=served.settings.online_store,
        workers=2,
    )
    target = LocalTarget(block.local_settings(), NAME)
    registry = _registry()
    predictor = target.start("main", 2, registry.version_path(NAME, 2))
    try:
        with Traffic(predictor.url, _rows(prepared), clients=2) as traffic:
            deadline = time.monotonic() + 30
            while len(traffic.answered) < 30 and time.monotonic() < deadline:
                time.sleep(0.1)
            os.killpg(predictor.pid, signal.SIGKILL)
            time.sleep(0.5)
        logged = {r["request_id"] for r in read_log(target.log_dir / REQUESTS, REQUESTS).records}
        assert len(traffic.answered) >= 30
        assert set(traffic.answered) <= logged
        assert any(s != 200 for s in traffic.statuses)  # the kill did cut requests off
        log = next(target.folder.glob("predictor-main-*.log")).read_text()
        assert log.count("Booting worker") == 3  # 2 for requests, 1 for metrics
    finally:
        target.stop_all()


def test_the_server_scores_as_batch_scoring_does(served: LocalTarget, prepared: Path) -> None:
    """Model as code and model as data agree exactly on the same rows as of now."""
    from tasks.registry.loading import load_model
    from tasks.serving.batch import score_frame
    from tasks.specs.datasets import get_dataset

    rows = _rows(prepared, 60)
    status, answer = http_json(f"{served.url}/api/v1.0/predictions", {"jsonData": {"rows": rows}})
    assert status == 200 and answer["meta"]["tags"]["expired_features"] == 0
    spec = get_dataset("credit_risk")
    entities = pd.DataFrame(rows).assign(**{spec.timestamp_field: pd.Timestamp.now(tz="UTC")})
    model = load_model(_registry(), NAME, "champion")
    batch = score_frame(model, entities, spec, FeatureRepo.load("prepared-feast").settings())
    assert batch["score"].tolist() == answer["data"]["ndarray"]


def test_the_kubernetes_target_applies_canary_then_the_outcome(
    served: LocalTarget, httpserver_ipv4, tmp_path: Path
) -> None:
    """The same flow on a SeldonDeployment, against a local double of the API server (no
    cluster runs here): the canary manifest, then with no window to judge, the champion alone;
    a manual promote applies the challenger alone and moves the alias."""
    from tasks.serving.manifest import validate_manifest
    from tests.integration.test_kubernetes_target import FakeApiServer, kubeconfig_text

    api = FakeApiServer()
    api.after_write = [{"state": "Creating"}, {"state": "Available"}]
    httpserver_ipv4.expect_request(re.compile(".*")).respond_with_handler(api.handle)
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_text(httpserver_ipv4.url_for("/").rstrip("/")))
    ServingTarget(
        kind="kubernetes",
        context="double",
        namespace="models",
        kubeconfig=str(config),
        image="registry.example/mlops-model-server:1",
        rollout_timeout_s=20,
        rollout_poll_s=0.05,
        request_log_dir=str(tmp_path / "no-traffic"),
    ).save("tmp-k8s", overwrite=True)
    registry = _registry()
    served_champion = registry.aliases(NAME)["champion"]  # what the local target serves
    registry.set_alias(NAME, "champion", 2)
    registry.set_alias(NAME, "challenger", 1)
    _policy(window_requests=10, min_requests=5, canary_percent=20, window_timeout_s=1)
    try:
        result = deployment(
            DeploymentParams(
                model_name=NAME,
                target_block="tmp-k8s",
                policy_block="tmp-rollout",
                registry_block="tmp-registry",
            )
        )
    finally:
        _policy(window_requests=40, min_requests=20, canary_percent=30)
    assert result.decision == "rolled-back" and "insufficient traffic" in result.reasons[0]
    writes = [c for c in api.calls if c["method"] in ("POST", "PATCH")]
    bodies = [w["body"] for w in writes]
    for body in bodies:
        validate_manifest({**body, "apiVersion": "machinelearning.seldon.io/v1"})
    canary = {p["name"]: p.get("traffic") for p in bodies[0]["spec"]["predictors"]}
    assert canary == {"main": 80, "canary": 20}
    final = api.objects["credit-serve"]["spec"]["predictors"]
    assert [(p["name"], p["traffic"]) for p in final] == [("main", 100)]
    assert "/versions/2" in final[0]["graph"]["modelUri"]
    assert registry.aliases(NAME)["champion"] == 2

    promoted = deployment(
        DeploymentParams(
            model_name=NAME,
            action="promote",
            version=1,
            reason="k8s test",
            target_block="tmp-k8s",
            registry_block="tmp-registry",
        )
    )
    assert (promoted.decision, promoted.champion) == ("promoted", 1)
    final = api.objects["credit-serve"]["spec"]["predictors"]
    assert len(final) == 1 and "/versions/1" in final[0]["graph"]["modelUri"]
    registry.set_alias(NAME, "champion", served_champion)
