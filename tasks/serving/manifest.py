"""SeldonDeployment manifests: one predictor per role, rendered and validated as a cluster would.

The champion is the `main` predictor. A challenger is a `canary` with a share of the traffic, or a
`shadow` (`shadow: true`), which gets a mirror of every request and whose answers nobody sees.
Each predictor is one pod running the model server image: `deployments.model_server.ModelServer`
under `seldon-core-microservice`, with a one-node graph (`type: MODEL`, no `implementation`, so
the operator runs our container). Its `modelUri` is the registry version folder; the operator's
storage initializer copies it to /mnt/models, which is the server's `model_dir`.

`validate_manifest` checks what the API server and the Seldon operator check before they accept
an object: the CRD's openAPIV3Schema (deployments/seldon/seldondeployment-v1.schema.json, from
seldon-core v1.18.2) and the rules of the operator's validating webhook.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, Literal

import jsonschema
from jsonschema.exceptions import ValidationError
from pydantic import Field, model_validator

from tasks.config import Strict

API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"
SCHEMA_FILE = "deployments/seldon/seldondeployment-v1.schema.json"
MODEL_MOUNT = (
    "/mnt/models"  # where the storage initializer puts modelUri (DefaultModelLocalMountPath)
)
DEFAULT_LOG_DIR = "/var/log/mlops"
DEFAULT_PROJECT = "mlops"
# The graph node's name is also its container's: the webhook pairs a node without an
# implementation with the container of the same name.
UNIT = "model"
LOG_VOLUME = "request-log"
LABEL_PREFIX = "mlops.io"

Role = Literal["main", "canary", "shadow"]
ROLES: tuple[Role, ...] = ("main", "canary", "shadow")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# Enumerations the webhook accepts (ValidateSeldonDeployment; "" means the default).
PROTOCOLS = ("seldon", "tensorflow", "kfserving", "v2")
TRANSPORTS = ("rest", "grpc")
SERVER_TYPES = ("rpc", "kafka")


class ManifestError(ValueError):
    """A manifest the API server or the Seldon operator would refuse; names the path and rule."""


class Predictor(Strict):
    """One registry version in one role."""

    role: Role
    model_name: str = Field(min_length=1)
    version: int = Field(ge=1)
    traffic: int = Field(default=0, ge=0, le=100, description="Percent of requests; shadow: 0.")
    model_uri: str = Field(min_length=1, description="The registry version folder's URI.")
    image: str | None = Field(default=None, description="Overrides the deployment's image.")

    @model_validator(mode="after")
    def _shadow_takes_no_share(self) -> Predictor:
        if self.role == "shadow" and self.traffic:
            raise ValueError(
                f"the shadow predictor takes no traffic share (got {self.traffic}): "
                "it is sent a mirror of every request"
            )
        return self


def deployment_name(model_name: str) -> str:
    """A DNS-1123 label for a model name (registry names may hold '_', Kubernetes names not)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ManifestError(f"model name '{model_name}' gives no valid Kubernetes name")
    return name


def render_seldon_deployment(
    name: str,
    namespace: str,
    predictors: Sequence[Predictor],
    image: str,
    *,
    model_dir: str | None = MODEL_MOUNT,
    online_store: str = "",
    project: str = DEFAULT_PROJECT,
    log_dir: str = DEFAULT_LOG_DIR,
    replicas: int = 1,
    storage_secret: str | None = None,
    log_claim: str | None = None,
) -> dict[str, Any]:
    """A validated SeldonDeployment with one predictor per role, `main` first.

    `model_dir=None` passes each predictor's `model_uri` as its `model_dir` (a target that reads
    the registry folder in place, without a storage initializer). `storage_secret` names the
    Secret with the storage credentials the initializer uses (`envSecretRefName`). The request
    log goes to `log_dir` on an emptyDir, or on the PersistentVolumeClaim `log_claim` (one that
    monitoring can mount too).
    """
    roles = [p.role for p in predictors]
    for role in ROLES:
        if roles.count(role) > 1:
            raise ManifestError(f"predictors: {roles.count(role)} '{role}' predictors; one a role")
    if "main" not in roles:
        raise ManifestError(f"predictors: no 'main' predictor (the champion) among {roles}")
    ordered = sorted(predictors, key=lambda p: ROLES.index(p.role))
    main = ordered[0]
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "mlops-loop",
                f"{LABEL_PREFIX}/model": main.model_name,
            },
            "annotations": {
                f"{LABEL_PREFIX}/predictors": json.dumps(
                    {p.role: {"model": p.model_name, "version": p.version} for p in ordered},
                    sort_keys=True,
                ),
            },
        },
        "spec": {
            "name": name,
            "protocol": "seldon",
            "predictors": [
                _predictor(
                    p,
                    image=p.image or image,
                    parameters={
                        "model_dir": p.model_uri if model_dir is None else model_dir,
                        "model_name": p.model_name,
                        "version": str(p.version),
                        "role": p.role,
                        "online_store": online_store,
                        "project": project,
                        "log_dir": log_dir,
                    },
                    log_dir=log_dir,
                    replicas=replicas,
                    storage_secret=storage_secret,
                    log_claim=log_claim,
                )
                for p in ordered
            ],
        },
    }
    validate_manifest(manifest)
    return manifest


def _predictor(
    p: Predictor,
    *,
    image: str,
    parameters: Mapping[str, str],
    log_dir: str,
    replicas: int,
    storage_secret: str | None,
    log_claim: str | None,
) -> dict[str, Any]:
    labels = {
        "version": str(p.version),
        f"{LABEL_PREFIX}/model": p.model_name,
        f"{LABEL_PREFIX}/role": p.role,
    }
    graph: dict[str, Any] = {
        "name": UNIT,
        "type": "MODEL",
        "modelUri": p.model_uri,
        "parameters": [
            {"name": key, "type": "STRING", "value": value} for key, value in parameters.items()
        ],
        "children": [],
    }
    if storage_secret:
        graph["envSecretRefName"] = storage_secret
    # An emptyDir outlives a container restart, not the pod; a claim outlives both.
    log_source = (
        {"persistentVolumeClaim": {"claimName": log_claim}} if log_claim else {"emptyDir": {}}
    )
    container = {
        "name": UNIT,
        "image": image,
        "securityContext": {"runAsNonRoot": True},
        "volumeMounts": [{"name": LOG_VOLUME, "mountPath": log_dir}],
    }
    predictor: dict[str, Any] = {
        "name": p.role,
        "replicas": replicas,
        "labels": labels,
        "annotations": {f"{LABEL_PREFIX}/model-uri": p.model_uri},
        "componentSpecs": [
            {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": LOG_VOLUME, **log_source}],
                },
            }
        ],
        "graph": graph,
    }
    if p.role == "shadow":
        predictor["shadow"] = True
    else:
        predictor["traffic"] = p.traffic
    return predictor


# -- validation ----------------------------------------------------------------------------------


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise ManifestError naming the path and rule of the first kind of failure found."""
    if not isinstance(manifest, Mapping):
        raise ManifestError(f"a manifest is a mapping, got {type(manifest).__name__}")
    metadata = manifest.get("metadata")
    name = metadata.get("name", "?") if isinstance(metadata, Mapping) else "?"
    errors = sorted(_schema_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(f"{e.json_path}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ManifestError(
            f"SeldonDeployment '{name}' fails the CRD schema ({SCHEMA_FILE}): {shown}{more}"
        )
    problems = [*_object_rules(manifest), *_webhook_rules(manifest.get("spec") or {})]
    if problems:
        raise ManifestError(f"SeldonDeployment '{name}': " + "; ".join(problems))


@functools.cache
def _schema_validator() -> jsonschema.protocols.Validator:
    text = resources.files("deployments").joinpath("seldon", SCHEMA_FILE.rsplit("/", 1)[1])
    schema = json.loads(text.read_text())
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    base.check_schema(schema)
    # A structural CRD schema prunes fields it does not name (or rejects them, with strict field
    # validation): either way a misspelt key would silently do nothing, so it is an error here.
    properties = base.VALIDATORS["properties"]

    def closed(validator: Any, props: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        yield from properties(validator, props, instance, schema)
        if validator.is_type(instance, "object") and "additionalProperties" not in schema:
            for key in instance:
                if key not in props:
                    yield ValidationError(f"unknown field '{key}'", path=[key])

    strict = jsonschema.validators.extend(base, {"properties": closed})
    return strict(schema)


def _object_rules(manifest: Mapping[str, Any]) -> Iterator[str]:
    """What the API server checks beyond the schema: the kind, names and label values."""
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        yield (
            f"$.apiVersion/$.kind: must be {API_VERSION} {KIND}, "
            f"got {manifest.get('apiVersion')} {manifest.get('kind')}"
        )
    metadata = manifest.get("metadata") or {}
    for key in ("name", "namespace"):
        value = metadata.get(key)
        if value is not None and not DNS_LABEL.match(str(value)):
            yield f"$.metadata.{key}: '{value}' is not a DNS-1123 label (a-z, 0-9, '-', <= 63)"
    if not metadata.get("name"):
        yield "$.metadata.name: required"
    spec = manifest.get("spec") or {}
    if not spec:
        yield "$.spec: required"
    labelled = [("$.metadata.labels", metadata.get("labels"))]
    for i, p in enumerate(spec.get("predictors") or []):
        labelled.append((f"$.spec.predictors[{i}].labels", p.get("labels")))
        for j, c in enumerate(p.get("componentSpecs") or []):
            meta = c.get("metadata") or {}
            path = f"$.spec.predictors[{i}].componentSpecs[{j}].metadata.labels"
            labelled.append((path, meta.get("labels")))
    for path, labels in labelled:
        for key, value in (labels or {}).items():
            if not LABEL_VALUE.match(str(value)):
                yield f"{path}['{key}']: '{value}' is not a label value (<= 63 of A-Za-z0-9-_.)"


def _webhook_rules(spec: Mapping[str, Any]) -> Iterator[str]:
    """The Seldon operator's admission rules, as in seldon-core v1.18.2
    operator/apis/machinelearning.seldon.io/v1/seldondeployment_webhook.go
    (ValidateSeldonDeployment, validateShadow, checkTraffic, checkPredictiveUnits).

    Not mirrored, as nothing here renders them: Kafka server settings, the no-engine and custom
    service-name annotations, endpoint transports, and prepackaged servers' modelUri checks.
    """
    for key, allowed in (
        ("protocol", PROTOCOLS),
        ("transport", TRANSPORTS),
        ("serverType", SERVER_TYPES),
    ):
        if spec.get(key) not in (None, "", *allowed):
            yield f"webhook rule 'valid {key}': $.spec.{key} '{spec[key]}' not in {allowed}"
    predictors = list(spec.get("predictors") or [])
    if not predictors:
        yield "webhook rule 'at least one predictor': $.spec.predictors is empty"
        return
    shadows = [i for i, p in enumerate(predictors) if p.get("shadow")]
    if len(predictors) == 1 and shadows:
        yield (
            "webhook rule 'a shadow is never the only predictor': "
            f"$.spec.predictors[0] ('{predictors[0].get('name')}') is a shadow"
        )
    if len(shadows) > 1:
        named = [predictors[i].get("name") for i in shadows]
        yield f"webhook rule 'at most one shadow': {len(shadows)} shadows {named}"
    seen: set[str] = set()
    for i, p in enumerate(predictors):
        if p.get("name") in seen:
            yield (
                f"webhook rule 'unique predictor names': "
                f"$.spec.predictors[{i}].name '{p['name']}' repeats"
            )
        seen.add(p.get("name"))
        yield from _graph_rules(p.get("graph") or {}, p, f"$.spec.predictors[{i}].graph")
    for i in shadows:
        if not 0 <= predictors[i].get("traffic", 0) <= 100:
            yield f"webhook rule 'shadow traffic in [0, 100]': $.spec.predictors[{i}].traffic"
    serving = [p for p in predictors if not p.get("shadow")]
    total = sum(p.get("traffic", 0) for p in serving)
    # The webhook asks for 100 with several serving predictors, and for 0 (unset) or 100 with
    # one predictor in all. With one serving predictor beside a shadow it checks nothing; we ask
    # for 0 or 100 there too, as anything between would leave requests unrouted.
    if (len(serving) > 1 and total != 100) or (len(serving) == 1 and total not in (0, 100)):
        shares = {p.get("name"): p.get("traffic", 0) for p in serving}
        yield f"webhook rule 'non-shadow traffic sums to 100': {shares} sums to {total}"


def _graph_rules(unit: Mapping[str, Any], predictor: Mapping[str, Any], path: str) -> Iterator[str]:
    implementation = unit.get("implementation")
    if implementation in (None, "", "UNKNOWN_IMPLEMENTATION"):
        containers = {
            c.get("name")
            for spec in predictor.get("componentSpecs") or []
            for c in (spec.get("spec") or {}).get("containers") or []
        }
        if unit.get("name") not in containers:
            yield (
                f"webhook rule 'a graph node without implementation has a container of its "
                f"name': {path}.name '{unit.get('name')}' not among containers {sorted(containers)}"
            )
        if unit.get("type") == "UNKNOWN_TYPE" and not unit.get("methods"):
            yield f"webhook rule 'a node of UNKNOWN_TYPE lists its methods': {path}.methods"
    for i, child in enumerate(unit.get("children") or []):
        yield from _graph_rules(child, predictor, f"{path}.children[{i}]")
