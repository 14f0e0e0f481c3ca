"""The deployment flow's Kubernetes path: the same decision, made on a SeldonDeployment.

The champion and the challenger (canary with a share, or shadow) are applied as one manifest,
which must become Available; the window is read from the request log the predictors write to
their log volume (`request_log_dir`: where the flow can read it, e.g. the same claim mounted in
the worker's pod); then the promoted manifest (the challenger alone as `main`) or the rolled-back
one (the champion alone) is applied. The traffic split itself is Istio's, in the cluster.

Not run against a real cluster here: tests drive it against a local HTTP double of the API
server (tests/integration/test_kubernetes_target.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployments.request_log import utc_now
from tasks.registry.store import Registry
from tasks.serving.kubernetes_target import KubernetesTarget
from tasks.serving.manifest import Predictor, deployment_name, render_seldon_deployment
from tasks.serving.rollout import (
    RolloutPolicy,
    RolloutRejected,
    analyse,
    labels_by_request,
    side_stats,
    wait_for_window,
    window_records,
)


def manifest_for(
    registry: Registry,
    name: str,
    namespace: str,
    image: str,
    roles: dict[str, int],
    canary_percent: int = 0,
    online_store: str = "",
    log_claim: str | None = None,
) -> dict[str, Any]:
    """A validated SeldonDeployment: `roles` maps main/canary/shadow to versions."""
    predictors = [
        Predictor(
            role=role,  # type: ignore[arg-type]
            model_name=name,
            version=version,
            traffic={"main": 100 - canary_percent, "canary": canary_percent}.get(role, 0),
            model_uri=registry.version_uri(name, version),
        )
        for role, version in roles.items()
    ]
    return render_seldon_deployment(
        deployment_name(name),
        namespace,
        predictors,
        image,
        online_store=online_store,
        log_claim=log_claim,
    )


def kubernetes_decision(
    target: KubernetesTarget,
    registry: Registry,
    name: str,
    champion: int | None,
    version: int,
    policy: RolloutPolicy,
    image: str,
    request_log_dir: str,
    online_store: str = "",
    log_claim: str | None = None,
) -> dict[str, Any]:
    """Apply the challenger beside the champion, judge the window, apply the outcome; returns
    the outcome (decision, reasons, window, manifests applied). Aliases are the caller's."""
    applied: list[dict[str, Any]] = []

    def apply(roles: dict[str, int], share: int = 0) -> None:
        manifest = manifest_for(
            registry, name, target.namespace, image, roles, share, online_store, log_claim
        )
        target.apply(manifest)
        applied.append({"roles": roles, "canary_percent": share})

    outcome: dict[str, Any] = {"applied": applied, "stage": "apply"}
    if champion is None:
        apply({"main": version})
        return {**outcome, "decision": "promoted", "reasons": []}
    role = policy.mode
    since = utc_now()
    try:
        try:
            apply(
                {"main": champion, role: version}, policy.canary_percent if role == "canary" else 0
            )
        except (TimeoutError, RuntimeError) as exc:
            raise RolloutRejected("apply", [str(exc)], {}) from exc
        outcome["stage"] = "window"
        if not request_log_dir:
            raise RolloutRejected(
                "window", ["no request log to judge the window by (request_log_dir is empty)"], {}
            )
        wait_for_window(request_log_dir, role, since, policy, lambda: True)
        records = window_records(request_log_dir, since)
        labels = labels_by_request(Path(request_log_dir), since)
        new = side_stats(records, labels, [], version, role, None)
        old = side_stats(records, labels, [], champion, "main", None)
        reasons, window = analyse(policy, new, old, challenger_alive=True)
        window["error_rate"] = None  # the cluster's ingress (Istio) is not read: no error rate
        outcome["window"] = window
        if reasons:
            raise RolloutRejected("window", reasons, window)
        outcome["stage"] = "promote"
        apply({"main": version})
    except RolloutRejected as exc:
        apply({"main": champion})
        return {**outcome, "decision": "rolled-back", "stage": exc.stage, "reasons": exc.reasons}
    except BaseException:
        apply({"main": champion})  # a failure or cancel leaves the champion alone serving
        raise
    return {**outcome, "decision": "promoted", "reasons": []}
