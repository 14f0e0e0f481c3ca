"""The Kubernetes target against a stand-in API server: no real cluster was run here.

`pytest-httpserver` answers the official `kubernetes` client on loopback as the API server does
for the SeldonDeployment custom resource: 404 Status objects for absent names, 201 on create,
RFC 7386 merge patches, generations, and a scripted `status.state` sequence standing in for the
Seldon operator. The client is the real one, reading a kubeconfig the test writes, with a
bearer token and two contexts; nothing in it is mocked. What this cannot show: a real API
server's admission chain (the Seldon webhook, RBAC), the operator's reconciliation and an
ingress routing traffic.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from werkzeug import Request, Response

from tasks.serving.kubernetes_target import (
    MERGE_PATCH,
    DeploymentFailedError,
    KubernetesTarget,
    KubernetesTargetError,
)
from tasks.serving.manifest import ManifestError, Predictor, render_seldon_deployment

pytestmark = pytest.mark.integration

NAMESPACE = "models"
TOKEN = "test-token"
BASE = f"/apis/machinelearning.seldon.io/v1/namespaces/{NAMESPACE}/seldondeployments"
IMAGE = "registry.example/mlops-model-server:1"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def status_object(code: int, reason: str, message: str) -> Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return Response(
        json.dumps({**body, "reason": reason, "code": code}), code, content_type="application/json"
    )


class FakeApiServer:
    """The API server's answers for one namespace's SeldonDeployments, recording every call.

    `after_write` holds the statuses the operator would write after each create or patch: each
    GET after the write takes the next one; the last one stays.
    """

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.after_write: list[dict[str, Any]] = []
        self.script: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.reject_create: str | None = None

    def handle(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"null")
        self.calls.append(
            {
                "method": request.method,
                "path": request.path,
                "body": body,
                "content_type": request.headers.get("Content-Type", ""),
                "authorization": request.headers.get("Authorization", ""),
            }
        )
        if request.path == BASE and request.method == "POST":
            return self.create(body)
        match = re.fullmatch(f"{BASE}/([a-z0-9-]+)", request.path)
        if not match:
            return status_object(404, "NotFound", f"the server could not find {request.path}")
        name = match.group(1)
        if name not in self.objects:
            return status_object(
                404, "NotFound", f'seldondeployments.machinelearning.seldon.io "{name}" not found'
            )
        if request.method == "GET":
            if self.script:
                self.objects[name]["status"] = (
                    self.script.pop(0) if len(self.script) > 1 else self.script[0]
                )
            return self.ok(self.objects[name])
        if request.method == "PATCH":
            if request.headers.get("Content-Type") != MERGE_PATCH:
                return status_object(415, "UnsupportedMediaType", "expected a merge patch")
            old = self.objects[name]
            new = merge_patch(old, body)
            if new["spec"] != old["spec"]:
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self.objects[name] = new
            self.script = list(self.after_write)
            return self.ok(new)
        if request.method == "DELETE":
            del self.objects[name]
            return self.ok({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return status_object(405, "MethodNotAllowed", request.method)

    def create(self, body: dict[str, Any]) -> Response:
        if self.reject_create:
            return status_object(422, "Invalid", self.reject_create)
        name = body["metadata"]["name"]
        if name in self.objects:
            return status_object(409, "AlreadyExists", f'"{name}" already exists')
        stored = {**body, "metadata": {**body["metadata"], "generation": 1, "uid": "u-1"}}
        self.objects[name] = stored
        self.script = list(self.after_write)
        return self.ok(stored, 201)

    def ok(self, obj: dict[str, Any], code: int = 200) -> Response:
        return Response(json.dumps(obj), code, content_type="application/json")

    def requests(self) -> list[tuple[str, str]]:
        return [(c["method"], c["path"]) for c in self.calls]


@pytest.fixture
def api(httpserver_ipv4) -> FakeApiServer:
    fake = FakeApiServer()
    httpserver_ipv4.expect_request(re.compile(".*")).respond_with_handler(fake.handle)
    return fake


def kubeconfig_text(server: str) -> str:
    """Two contexts: the current one points nowhere, so only the configured one can answer."""
    return f"""
apiVersion: v1
kind: Config
current-context: elsewhere
clusters:
- name: double
  cluster: {{server: "{server}"}}
- name: nowhere
  cluster: {{server: "http://127.0.0.1:9"}}
users:
- name: tester
  user: {{token: {TOKEN}}}
contexts:
- name: double
  context: {{cluster: double, user: tester, namespace: {NAMESPACE}}}
- name: elsewhere
  context: {{cluster: nowhere, user: tester}}
"""


@pytest.fixture
def kubeconfig(httpserver_ipv4, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text(httpserver_ipv4.url_for("/").rstrip("/")))
    return str(path)


def target(kubeconfig: str, **kw: Any) -> KubernetesTarget:
    settings = {"timeout_s": 10.0, "poll_s": 0.05, "settle_s": 30.0, **kw}
    return KubernetesTarget("double", NAMESPACE, kubeconfig=kubeconfig, **settings)


def manifest(*predictors: Predictor) -> dict[str, Any]:
    return render_seldon_deployment("credit-risk", NAMESPACE, predictors, IMAGE)


MAIN = Predictor(
    role="main",
    model_name="credit_risk",
    version=3,
    traffic=100,
    model_uri="s3://r/credit_risk/versions/3",
)
MAIN_90 = MAIN.model_copy(update={"traffic": 90})
CANARY = Predictor(
    role="canary",
    model_name="credit_risk",
    version=4,
    traffic=10,
    model_uri="s3://r/credit_risk/versions/4",
)


def test_apply_creates_when_absent_and_waits_through_creating(api, kubeconfig) -> None:
    wanted = manifest(MAIN)
    api.after_write = [{}, {"state": "Creating"}, {"state": "Creating"}, {"state": "Available"}]
    with target(kubeconfig) as k8s:
        status = k8s.apply(wanted)
    assert status.state == "Available" and status.name == "credit-risk"
    assert api.requests() == [
        ("GET", f"{BASE}/credit-risk"),
        ("POST", BASE),
        *[("GET", f"{BASE}/credit-risk")] * 4,
    ]
    assert api.calls[1]["body"] == wanted
    assert all(c["authorization"] == f"Bearer {TOKEN}" for c in api.calls)


def test_apply_merge_patches_when_present_and_outwaits_a_stale_available(api, kubeconfig) -> None:
    """The canary replaces the predictor list; the Available left from the old spec is not taken
    for the new one (Seldon v1 writes no observedGeneration): the wait goes through Creating."""
    with target(kubeconfig) as k8s:
        api.after_write = [{"state": "Available"}]
        k8s.apply(manifest(MAIN))
        api.calls.clear()
        api.after_write = [{"state": "Available"}, {"state": "Creating"}, {"state": "Available"}]
        status = k8s.apply(manifest(MAIN_90, CANARY))
    assert status.state == "Available"
    path = f"{BASE}/credit-risk"
    assert api.requests() == [("GET", path), ("PATCH", path), *[("GET", path)] * 3]
    patch = api.calls[1]
    assert patch["content_type"] == MERGE_PATCH
    assert patch["body"] == manifest(MAIN_90, CANARY)
    stored = api.objects["credit-risk"]
    assert [p["name"] for p in stored["spec"]["predictors"]] == ["main", "canary"]
    assert [p.get("traffic") for p in stored["spec"]["predictors"]] == [90, 10]
    assert stored["metadata"]["generation"] == 2


def test_a_patch_that_changes_nothing_trusts_the_current_state(api, kubeconfig) -> None:
    with target(kubeconfig) as k8s:
        api.after_write = [{"state": "Available"}]
        k8s.apply(manifest(MAIN))
        api.calls.clear()
        started = time.monotonic()
        assert k8s.apply(manifest(MAIN)).state == "Available"
    assert time.monotonic() - started < 5  # not the 30 s settle time
    assert [m for m, _ in api.requests()] == ["GET", "PATCH", "GET"]
    assert api.objects["credit-risk"]["metadata"]["generation"] == 1


def test_a_stale_state_is_trusted_after_the_settle_time(api, kubeconfig) -> None:
    with target(kubeconfig, settle_s=0.3) as k8s:
        api.after_write = [{"state": "Available"}]
        k8s.apply(manifest(MAIN))
        assert k8s.apply(manifest(MAIN_90, CANARY)).state == "Available"


def test_timeout_names_the_deployment_and_its_last_state(api, kubeconfig) -> None:
    api.after_write = [{"state": "Creating", "description": "waiting for 1 replica"}]
    started = time.monotonic()
    with target(kubeconfig, timeout_s=0.5) as k8s, pytest.raises(TimeoutError) as caught:
        k8s.apply(manifest(MAIN))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "'credit-risk'" in message and "'models'" in message
    assert "last state: Creating (waiting for 1 replica)" in message


def test_failed_stops_the_wait_at_once_with_the_description(api, kubeconfig) -> None:
    reason = 'Deployment.apps "credit-risk-main-0-model" is invalid: image pull failed'
    api.after_write = [{"state": "Creating"}, {"state": "Failed", "description": reason}]
    started = time.monotonic()
    with target(kubeconfig) as k8s, pytest.raises(DeploymentFailedError) as caught:
        k8s.apply(manifest(MAIN))
    assert time.monotonic() - started < 5  # the timeout is 10 s
    assert "'credit-risk'" in str(caught.value) and reason in str(caught.value)


def test_a_refused_create_names_the_reason(api, kubeconfig) -> None:
    api.reject_create = 'admission webhook "v1.vseldondeployment.kb.io" denied the request'
    with target(kubeconfig) as k8s, pytest.raises(KubernetesTargetError) as caught:
        k8s.apply(manifest(MAIN))
    message = str(caught.value)
    assert "create SeldonDeployment 'credit-risk'" in message and "HTTP 422" in message
    assert "denied the request" in message and "context double" in message


def test_an_invalid_manifest_is_never_sent(api, kubeconfig) -> None:
    bad = manifest(MAIN)
    bad["spec"]["predictors"][0]["traffic"] = 50
    with target(kubeconfig) as k8s, pytest.raises(ManifestError, match="sums to 100"):
        k8s.apply(bad)
    other = manifest(MAIN)
    other["metadata"]["namespace"] = "elsewhere"
    with target(kubeconfig) as k8s, pytest.raises(ManifestError, match="'elsewhere'"):
        k8s.apply(other)
    assert api.calls == []


def test_status_and_delete(api, kubeconfig) -> None:
    with target(kubeconfig) as k8s:
        assert k8s.status("credit-risk") is None
        api.after_write = [{"state": "Available", "description": "ok"}]
        k8s.apply(manifest(MAIN))
        status = k8s.status("credit-risk")
        assert status is not None and (status.state, status.description) == ("Available", "ok")
        assert k8s.delete("credit-risk") is True
        assert k8s.delete("credit-risk") is False
        assert k8s.status("credit-risk") is None
    assert ("DELETE", f"{BASE}/credit-risk") in api.requests()
