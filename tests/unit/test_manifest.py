"""SeldonDeployment rendering, and validation against the CRD schema and the webhook's rules."""

from __future__ import annotations

import copy
import inspect
import json
from typing import Any

import pydantic
import pytest

from deployments.model_server import SERVER_CLASS
from tasks.serving.manifest import (
    API_VERSION,
    MODEL_MOUNT,
    ManifestError,
    Predictor,
    deployment_name,
    render_seldon_deployment,
    validate_manifest,
)

pytestmark = pytest.mark.unit

IMAGE = "registry.example/mlops-model-server:1"
PARAMETERS = ["model_dir", "model_name", "version", "role", "online_store", "project", "log_dir"]


def predictor(role: str, version: int, traffic: int = 0) -> Predictor:
    uri = f"s3://models/registry/credit_risk/versions/{version}"
    return Predictor(
        role=role, model_name="credit_risk", version=version, traffic=traffic, model_uri=uri
    )  # type: ignore[arg-type]


MAIN = predictor("main", 3, 100)
CANARY = predictor("canary", 4, 10)
SHADOW = predictor("shadow", 4)


def render(*predictors: Predictor, **kw: Any) -> dict[str, Any]:
    return render_seldon_deployment("credit-risk", "models", predictors, IMAGE, **kw)


def params(p: dict[str, Any]) -> dict[str, str]:
    assert all(item["type"] == "STRING" for item in p["graph"]["parameters"])
    return {item["name"]: item["value"] for item in p["graph"]["parameters"]}


def test_main_only() -> None:
    m = render(MAIN, online_store="/data/online.db", log_dir="/logs")
    assert (m["apiVersion"], m["kind"]) == (API_VERSION, "SeldonDeployment")
    assert m["metadata"]["name"] == "credit-risk" and m["metadata"]["namespace"] == "models"
    assert m["metadata"]["labels"]["mlops.io/model"] == "credit_risk"
    [main] = m["spec"]["predictors"]
    assert main["name"] == "main" and main["traffic"] == 100 and "shadow" not in main
    assert main["labels"] == {
        "version": "3",
        "mlops.io/model": "credit_risk",
        "mlops.io/role": "main",
    }
    graph = main["graph"]
    assert graph["type"] == "MODEL" and "implementation" not in graph
    assert graph["modelUri"] == "s3://models/registry/credit_risk/versions/3"
    assert list(params(main)) == PARAMETERS
    assert params(main) == {
        "model_dir": MODEL_MOUNT,
        "model_name": "credit_risk",
        "version": "3",
        "role": "main",
        "online_store": "/data/online.db",
        "project": "mlops",
        "log_dir": "/logs",
    }
    [spec] = main["componentSpecs"]
    [container] = spec["spec"]["containers"]
    # The webhook finds a custom node's container by its name.
    assert container["name"] == graph["name"] and container["image"] == IMAGE
    assert container["volumeMounts"][0]["mountPath"] == "/logs"
    assert spec["metadata"]["labels"]["mlops.io/role"] == "main"


def test_main_and_canary_90_10_main_first() -> None:
    m = render(CANARY, MAIN.model_copy(update={"traffic": 90}))
    main, canary = m["spec"]["predictors"]
    assert (main["name"], main["traffic"]) == ("main", 90)
    assert (canary["name"], canary["traffic"]) == ("canary", 10)
    assert canary["labels"]["version"] == "4" and params(canary)["role"] == "canary"
    assert canary["graph"]["modelUri"].endswith("/versions/4")
    assert json.loads(m["metadata"]["annotations"]["mlops.io/predictors"]) == {
        "main": {"model": "credit_risk", "version": 3},
        "canary": {"model": "credit_risk", "version": 4},
    }


def test_main_and_shadow() -> None:
    main, shadow = render(MAIN, SHADOW)["spec"]["predictors"]
    assert main["traffic"] == 100 and "shadow" not in main
    assert shadow["name"] == "shadow" and shadow["shadow"] is True and "traffic" not in shadow
    assert params(shadow)["role"] == "shadow"


def test_model_dir_none_reads_the_registry_folder_and_images_can_differ() -> None:
    other = CANARY.model_copy(update={"image": "registry.example/server:2"})
    main, canary = render(MAIN.model_copy(update={"traffic": 90}), other, model_dir=None)["spec"][
        "predictors"
    ]
    assert params(main)["model_dir"] == MAIN.model_uri
    assert params(canary)["model_dir"] == CANARY.model_uri
    assert main["componentSpecs"][0]["spec"]["containers"][0]["image"] == IMAGE
    assert (
        canary["componentSpecs"][0]["spec"]["containers"][0]["image"] == "registry.example/server:2"
    )


def test_storage_secret_goes_to_the_initializer() -> None:
    [main] = render(MAIN, storage_secret="registry-s3")["spec"]["predictors"]
    assert main["graph"]["envSecretRefName"] == "registry-s3"


def test_the_request_log_volume() -> None:
    [main] = render(MAIN)["spec"]["predictors"]
    assert main["componentSpecs"][0]["spec"]["volumes"] == [{"name": "request-log", "emptyDir": {}}]
    [main] = render(MAIN, log_claim="request-logs")["spec"]["predictors"]
    [volume] = main["componentSpecs"][0]["spec"]["volumes"]
    assert volume == {"name": "request-log", "persistentVolumeClaim": {"claimName": "request-logs"}}


@pytest.mark.parametrize(
    ("predictors", "message"),
    [
        ((MAIN, MAIN), "2 'main' predictors"),
        ((CANARY,), "no 'main' predictor"),
        ((SHADOW,), "no 'main' predictor"),
        ((MAIN, CANARY), "non-shadow traffic sums to 100"),  # 100 + 10
        ((MAIN.model_copy(update={"traffic": 50}),), "non-shadow traffic sums to 100"),
    ],
)
def test_render_refuses_what_the_cluster_would(predictors, message) -> None:
    with pytest.raises(ManifestError, match=message):
        render(*predictors)


def test_a_shadow_takes_no_traffic_share() -> None:
    with pytest.raises(pydantic.ValidationError, match="shadow predictor takes no traffic"):
        predictor("shadow", 4, 10)


def test_deployment_name_is_a_dns_label() -> None:
    assert deployment_name("credit_risk") == "credit-risk"
    assert deployment_name("Rides.ETA__v2_") == "rides-eta-v2"
    assert len(deployment_name("m" * 80)) == 63
    with pytest.raises(ManifestError):
        deployment_name("___")


# -- each webhook rule violated ------------------------------------------------------------------


def canary_manifest() -> dict[str, Any]:
    return render(MAIN.model_copy(update={"traffic": 90}), CANARY)


def shadow_manifest() -> dict[str, Any]:
    return render(MAIN, SHADOW)


def _traffic_110(m):
    m["spec"]["predictors"][1]["traffic"] = 20


def _partial_single(m):
    m["spec"]["predictors"] = m["spec"]["predictors"][:1]
    m["spec"]["predictors"][0]["traffic"] = 60


def _two_shadows(m):
    second = copy.deepcopy(m["spec"]["predictors"][1])
    second["name"] = "shadow-2"
    m["spec"]["predictors"].append(second)


def _only_shadow(m):
    m["spec"]["predictors"] = m["spec"]["predictors"][1:]


def _duplicate_name(m):
    m["spec"]["predictors"][1]["name"] = "main"


def _no_predictors(m):
    m["spec"]["predictors"] = []


def _no_container_for_node(m):
    m["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["name"] = "server"


def _unknown_type_without_methods(m):
    m["spec"]["predictors"][0]["graph"]["type"] = "UNKNOWN_TYPE"


def _bad_protocol(m):
    m["spec"]["protocol"] = "http"


def _bad_shadow_traffic(m):
    m["spec"]["predictors"][1]["traffic"] = 150


@pytest.mark.parametrize(
    ("base", "break_it", "rule", "where"),
    [
        (canary_manifest, _traffic_110, "non-shadow traffic sums to 100", "sums to 110"),
        (canary_manifest, _partial_single, "non-shadow traffic sums to 100", "sums to 60"),
        (shadow_manifest, _two_shadows, "at most one shadow", "['shadow', 'shadow-2']"),
        (
            shadow_manifest,
            _only_shadow,
            "a shadow is never the only predictor",
            "$.spec.predictors[0]",
        ),
        (canary_manifest, _duplicate_name, "unique predictor names", "$.spec.predictors[1].name"),
        (canary_manifest, _no_predictors, "at least one predictor", "$.spec.predictors"),
        (
            canary_manifest,
            _no_container_for_node,
            "has a container of its name",
            "$.spec.predictors[0].graph.name",
        ),
        (
            canary_manifest,
            _unknown_type_without_methods,
            "UNKNOWN_TYPE lists its methods",
            "$.spec.predictors[0].graph.methods",
        ),
        (canary_manifest, _bad_protocol, "valid protocol", "$.spec.protocol"),
        (
            shadow_manifest,
            _bad_shadow_traffic,
            "shadow traffic in [0, 100]",
            "$.spec.predictors[1].traffic",
        ),
    ],
)
def test_each_webhook_rule(base, break_it, rule, where) -> None:
    manifest = base()
    break_it(manifest)
    with pytest.raises(ManifestError) as caught:
        validate_manifest(manifest)
    message = str(caught.value)
    assert "webhook rule '" in message and rule in message and where in message
    assert "'credit-risk'" in message


def test_a_shadow_beside_a_partial_main_is_refused() -> None:
    """Stricter than the webhook, which lets it pass: half the requests would go nowhere."""
    m = shadow_manifest()
    m["spec"]["predictors"][0]["traffic"] = 50
    with pytest.raises(ManifestError, match="sums to 50"):
        validate_manifest(m)


# -- the CRD schema and the API server's own checks ----------------------------------------------


@pytest.mark.parametrize(
    ("break_it", "path", "says"),
    [
        (
            lambda m: m["spec"]["predictors"][1].update(traffic="ten"),
            "$.spec.predictors[1].traffic",
            "not of type 'integer'",
        ),
        (
            lambda m: m["spec"]["predictors"][0].pop("graph"),
            "$.spec.predictors[0]",
            "'graph' is a required property",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["graph"]["parameters"][0].pop("type"),
            "$.spec.predictors[0].graph.parameters[0]",
            "'type' is a required property",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["graph"].update(modelURI="s3://x"),
            "$.spec.predictors[0].graph.modelURI",
            "unknown field 'modelURI'",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][
                0
            ].update(image=7),
            "$.spec.predictors[0].componentSpecs[0].spec.containers[0].image",
            "not of type 'string'",
        ),
        (
            lambda m: m["spec"]["predictors"][0].update(shadow="yes"),
            "$.spec.predictors[0].shadow",
            "not of type 'boolean'",
        ),
    ],
)
def test_a_schema_violation_names_its_json_path(break_it, path, says) -> None:
    manifest = canary_manifest()
    break_it(manifest)
    with pytest.raises(ManifestError) as caught:
        validate_manifest(manifest)
    message = str(caught.value)
    assert "CRD schema" in message and f"{path}: " in message and says in message


@pytest.mark.parametrize(
    ("break_it", "says"),
    [
        (lambda m: m.pop("spec"), "$.spec: required"),
        (
            lambda m: m.update(kind="Deployment"),
            "must be machinelearning.seldon.io/v1 SeldonDeployment",
        ),
        (
            lambda m: m["metadata"].update(name="credit_risk"),
            "$.metadata.name: 'credit_risk' is not a DNS-1123 label",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["labels"].update(version="3 (new)"),
            "$.spec.predictors[0].labels['version']",
        ),
    ],
)
def test_the_api_servers_own_checks(break_it, says) -> None:
    manifest = canary_manifest()
    break_it(manifest)
    with pytest.raises(ManifestError) as caught:
        validate_manifest(manifest)
    assert says in str(caught.value)


def test_a_non_mapping_is_refused() -> None:
    with pytest.raises(ManifestError, match="mapping"):
        validate_manifest([])  # type: ignore[arg-type]


COMBINATIONS = {
    "main": (MAIN,),
    "main+canary 90/10": (MAIN.model_copy(update={"traffic": 90}), CANARY),
    "main+canary 50/50": (
        MAIN.model_copy(update={"traffic": 50}),
        CANARY.model_copy(update={"traffic": 50}),
    ),
    "main+shadow": (MAIN, SHADOW),
    "main+canary+shadow": (MAIN.model_copy(update={"traffic": 90}), CANARY, predictor("shadow", 5)),
}


@pytest.mark.parametrize("predictors", COMBINATIONS.values(), ids=COMBINATIONS.keys())
@pytest.mark.parametrize("model_dir", [MODEL_MOUNT, None])
def test_every_rendered_manifest_passes(predictors, model_dir) -> None:
    manifest = render(*predictors, model_dir=model_dir, storage_secret="s3-creds", log_claim="logs")
    validate_manifest(json.loads(json.dumps(manifest)))  # as it travels: plain JSON
    names = [p["name"] for p in manifest["spec"]["predictors"]]
    assert names == [
        p.role for p in sorted(predictors, key=lambda p: ["main", "canary", "shadow"].index(p.role))
    ]


def test_rendered_parameters_are_the_model_servers_constructor_keywords() -> None:
    """Seldon calls the class with the graph parameters as keywords: an unknown one is a crash
    at start-up, a missing one a silent default."""
    module, _, cls = SERVER_CLASS.rpartition(".")
    server = getattr(__import__(module, fromlist=[cls]), cls)
    accepted = inspect.signature(server.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [name for name in PARAMETERS if name not in accepted]
    assert takes_any or not unknown, f"{SERVER_CLASS} takes no {unknown}"
