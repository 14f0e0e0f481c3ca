"""The Kubernetes serving target: apply a SeldonDeployment and wait until the operator serves it.

It talks to the API server with the official `kubernetes` client, in one kubeconfig context and
namespace: create the object when absent, else merge-patch it (`application/merge-patch+json`:
maps merge, lists such as `spec.predictors` are replaced whole, so a dropped canary goes), then
poll `status.state` until `Available`. `Failed` stops the wait at once with the operator's
`status.description`.

Seldon Core v1 writes no `status.observedGeneration`, so right after a patch the state read back
may still describe the previous spec. A state equal to the one before the patch is trusted only
once another state was seen or `settle_s` has passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tasks.serving.manifest import API_VERSION, ManifestError, validate_manifest

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "seldondeployments"
MERGE_PATCH = "application/merge-patch+json"
AVAILABLE, FAILED = "Available", "Failed"
_UNSEEN = object()  # the state before a create: nothing there can be stale


class KubernetesTargetError(RuntimeError):
    """The API server refused a call; names the deployment, namespace, context and reason."""


class DeploymentFailedError(KubernetesTargetError):
    """The operator reports the SeldonDeployment as Failed."""


@dataclass(frozen=True)
class SeldonStatus:
    """What the operator reports: `state` is Creating | Available | Failed, or None before any."""

    name: str
    state: str | None
    description: str
    raw: Mapping[str, Any] = field(default_factory=dict)


class KubernetesTarget:
    """SeldonDeployments in one namespace of one kubeconfig context."""

    def __init__(
        self,
        context: str | None,
        namespace: str,
        kubeconfig: str | None = None,
        timeout_s: float = 600.0,
        poll_s: float = 2.0,
        settle_s: float = 10.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.context = context
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.request_timeout_s = request_timeout_s
        self._api: Any = None

    def _objects(self) -> Any:
        if self._api is None:
            # A client of its own: the global configuration of `kubernetes.config` stays untouched.
            api_client = config.new_client_from_config(
                config_file=self.kubeconfig, context=self.context
            )
            self._api = client.CustomObjectsApi(api_client)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.api_client.close()
            self._api = None

    def __enter__(self) -> KubernetesTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------

    def _call(self, verb: str, name: str, method: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return method(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                *args,
                _request_timeout=self.request_timeout_s,
                **kw,
            )
        except ApiException as exc:
            raise KubernetesTargetError(
                f"{verb} SeldonDeployment '{name}' in namespace '{self.namespace}' "
                f"(context {self.context or 'current'}): HTTP {exc.status} {exc.reason}: "
                f"{_message(exc)}"
            ) from exc

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call("get", name, self._objects().get_namespaced_custom_object, name)
        except KubernetesTargetError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                return None
            raise

    def status(self, name: str) -> SeldonStatus | None:
        """The deployment's status, or None when there is no such deployment."""
        found = self._get(name)
        return None if found is None else _status(name, found)

    def apply(self, manifest: Mapping[str, Any]) -> SeldonStatus:
        """Create or merge-patch the manifest, then wait until it is Available.

        Raises ManifestError before any call for an invalid manifest, DeploymentFailedError
        when the operator reports Failed, and TimeoutError after `timeout_s`.
        """
        validate_manifest(manifest)
        metadata = manifest["metadata"]
        name = metadata["name"]
        if metadata.get("namespace", self.namespace) != self.namespace:
            raise ManifestError(
                f"SeldonDeployment '{name}' names namespace '{metadata['namespace']}', "
                f"but this target deploys to '{self.namespace}'"
            )
        body = {**manifest, "metadata": {**metadata, "namespace": self.namespace}}
        api = self._objects()
        existing = self._get(name)
        if existing is None:
            self._call("create", name, api.create_namespaced_custom_object, body)
            return self._wait(name, before=_UNSEEN)
        patched = self._call(
            "patch", name, api.patch_namespaced_custom_object, name, body, _content_type=MERGE_PATCH
        )
        if patched.get("spec") == existing.get("spec"):
            return self._wait(name, before=_UNSEEN)  # nothing changed: the status is current
        return self._wait(name, before=_status(name, existing).state)

    def _wait(self, name: str, before: object) -> SeldonStatus:
        start = time.monotonic()
        changed = before is _UNSEEN
        while True:
            current = self.status(name)
            state = current.state if current else None
            elapsed = time.monotonic() - start
            changed = changed or state != before
            if current is not None and (changed or elapsed >= self.settle_s):
                if state == FAILED:
                    raise DeploymentFailedError(
                        f"SeldonDeployment '{name}' in namespace '{self.namespace}' is Failed: "
                        f"{current.description or 'no description'}"
                    )
                if state == AVAILABLE:
                    return current
            if elapsed >= self.timeout_s:
                described = f" ({current.description})" if current and current.description else ""
                raise TimeoutError(
                    f"SeldonDeployment '{name}' in namespace '{self.namespace}' not Available "
                    f"after {self.timeout_s:g}s; last state: "
                    f"{state if current else 'absent'}{described}"
                )
            time.sleep(max(0.0, min(self.poll_s, self.timeout_s - elapsed)))

    def delete(self, name: str) -> bool:
        """Delete the deployment; False when there was none."""
        try:
            self._call("delete", name, self._objects().delete_namespaced_custom_object, name)
        except KubernetesTargetError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                return False
            raise
        return True


def _status(name: str, found: Mapping[str, Any]) -> SeldonStatus:
    raw = found.get("status") or {}
    return SeldonStatus(name, raw.get("state"), str(raw.get("description") or ""), raw)


def _message(exc: ApiException) -> str:
    """The API server's Status message (e.g. the webhook's reasons), else the raw body."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.body or "").strip()[:500]
