"""deployment: serve the champion, try the challenger on live traffic, promote or roll back.

    champion served as `main` -> challenger started as canary (a traffic share) or shadow
      -> readiness -> smoke test on its held-out rows -> routed -> live window -> analysis
      -> promote: a fresh `main` for it, all traffic, `champion` alias moved, old ones drained
      -> or roll back: traffic back to the champion, the challenger stopped, aliases unchanged

The rollout runs in a Prefect transaction: each start, route and alias move has a rollback
hook, so a refusal, a failure, a cancel or SIGTERM restores the previous routing and aliases.
The decision and its evidence are recorded beside the version and published as an artifact,
with an `mlops.model.promoted` or `mlops.model.rolled-back` event.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction
from pydantic import BaseModel, ConfigDict, Field

from blocks import ModelRegistry, RolloutPolicy, ServingTarget, load_or_default
from deployments.request_log import utc_now
from tasks.monitoring.prometheus import TARGETS_FILE, refresh_serving_targets
from tasks.registry.store import Registry
from tasks.serving.kubernetes_rollout import kubernetes_decision
from tasks.serving.kubernetes_target import KubernetesTarget
from tasks.serving.local_target import LocalTarget, Predictor, Routing, ServingError
from tasks.serving.prefect_tasks import (
    check_predictor,
    move_alias,
    observe_window,
    record_rollout,
    route_traffic,
    start_predictor,
)
from tasks.serving.rollout import RolloutPolicy as Policy
from tasks.serving.rollout import RolloutRejected
from tasks.serving.versions import version_folder
from tasks.specs.datasets import default_model

Action = Literal["rollout", "promote", "rollback"]


class DeploymentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(default=None, description="Default: the demo's model.")
    action: Action = Field(
        default="rollout",
        description="rollout: the challenger through canary/shadow analysis; promote: a "
        "version straight to champion (manual, with a reason); rollback: the champion back to "
        "the one it replaced (manual, with a reason).",
    )
    version: int | None = Field(
        default=None, ge=1, description="rollout/promote: default the `challenger` alias."
    )
    reason: str = Field(default="", description="Why (required for promote and rollback).")
    actor: str = Field(default="deployment flow", description="Who or what asked.")
    target_block: str | None = None
    policy_block: str | None = None
    registry_block: str | None = None


class DeploymentResult(BaseModel):
    model: str
    action: Action
    decision: str  # promoted | rolled-back | refused (a manual move) | serving | unchanged
    version: int | None
    champion: int | None
    reasons: list[str] = Field(default_factory=list)
    record: str | None = None
    url: str | None = None


class Terminated(BaseException):
    """SIGTERM, raised so that the transaction's rollback hooks run."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start(target: LocalTarget, role: str, version: int, folder: str) -> Predictor:
    """A predictor for the version; one that cannot load or answer is refused, not a crash."""
    try:
        return start_predictor(target, role, version, folder)
    except ServingError as exc:
        raise RolloutRejected("start", [str(exc)], {}) from exc


def _served(target: LocalTarget, role: str, version: int | None) -> Predictor | None:
    found = [p for p in target.predictors() if p.role == role and p.version == version]
    return found[-1] if found else None


def serve_champion(
    target: LocalTarget, registry: Registry, name: str, champion: int | None, policy: Policy
) -> Predictor | None:
    """The champion served alone as `main` (started if needed); stray predictors stopped."""
    if champion is None:
        return None
    main = _served(target, "main", champion)
    if main is None:
        folder = version_folder(registry, name, champion, target.folder)
        main = start_predictor(target, "main", champion, folder)
        check_predictor(main, champion, folder, policy)
    routing = target.routing()
    if routing is None or routing != Routing(main=main.pid):
        route_traffic(target, Routing(main=main.pid))
    for other in target.predictors():
        if other.pid != main.pid:
            target.stop(other)
    return main


@flow(name="deployment", log_prints=True)
def deployment(params: DeploymentParams = DeploymentParams()) -> DeploymentResult:  # noqa: B008
    """Roll a challenger out on the serving target, or promote / roll back by hand."""
    try:
        return _deployment(params)
    finally:
        target_block = load_or_default(ServingTarget, params.target_block, ServingTarget())
        if target_block.kind == "local":  # Prometheus follows the predictors (file_sd)
            _refresh_scrape_targets(Path(target_block.state_dir))


def _refresh_scrape_targets(state_dir: Path) -> None:
    """Rewrite the Prometheus targets file (plain file work, also while a SIGTERM unwinds)."""
    path = state_dir / TARGETS_FILE
    try:
        count = refresh_serving_targets(state_dir, path)
    except OSError as exc:  # serving goes on; the targets are stale until the next change
        get_run_logger().warning("Prometheus targets %s not rewritten: %s", path, exc)
        return
    get_run_logger().info("Prometheus targets: %s predictor(s) in %s", count, path)


def _deployment(params: DeploymentParams) -> DeploymentResult:
    logger = get_run_logger()
    registry = load_or_default(ModelRegistry, params.registry_block, ModelRegistry()).registry()
    target_block = load_or_default(ServingTarget, params.target_block, ServingTarget())
    policy = load_or_default(RolloutPolicy, params.policy_block, RolloutPolicy()).policy
    name = params.model_name or default_model()
    aliases = registry.aliases(name)
    champion = aliases.get("champion")
    if params.action != "rollout" and not params.reason.strip():
        raise ValueError(f"action '{params.action}' needs a reason (--reason)")
    version: int | None = (
        previous_champion(registry, name, champion)
        if params.action == "rollback"
        else params.version or aliases.get("challenger")
    )
    if target_block.kind == "kubernetes":
        return on_kubernetes(registry, name, champion, version, params, target_block, policy)

    target = LocalTarget(target_block.local_settings(), name)
    actor = _actor(params)
    outcome: dict[str, Any] = {
        "model": name,
        "version": version,
        "action": params.action,
        "mode": policy.mode if params.action == "rollout" and champion else "direct",
        "actor": params.actor,
        "reason": params.reason,
        "champion_before": champion,
        "started_at": utc_now(),
    }
    with sigterm_raises():
        main = serve_champion(target, registry, name, champion, policy)
        if version is None or version == champion:
            logger.info("%s: v%s serves alone; nothing to roll out", name, champion)
            return DeploymentResult(
                model=name,
                action=params.action,
                decision="serving",
                version=version,
                champion=champion,
                url=target.url if main else None,
            )
        outcome["stage"] = "start"
        retire: list[Predictor] = []
        try:
            with transaction():
                folder = version_folder(registry, name, version, target.folder)
                if main is None or params.action != "rollout":  # straight to champion
                    new = _start(target, "main", version, folder)
                    outcome["stage"] = "smoke"
                    outcome["checks"] = check_predictor(new, version, folder, policy)
                    outcome["stage"] = "promote"
                    route_traffic(target, Routing(main=new.pid))
                    retire = [main] if main else []
                else:
                    role = policy.mode  # canary | shadow
                    challenger = _start(target, role, version, folder)
                    outcome["stage"] = "smoke"
                    outcome["checks"] = check_predictor(challenger, version, folder, policy)
                    since, since_epoch = utc_now(), time.time()
                    canary = policy.canary_percent if role == "canary" else 0
                    route_traffic(
                        target,
                        Routing(
                            main=main.pid,
                            canary=challenger.pid if role == "canary" else None,
                            canary_percent=canary,
                            shadow=challenger.pid if role == "shadow" else None,
                        ),
                    )
                    outcome["stage"] = "window"
                    reasons, window = observe_window(
                        target, policy, challenger, main, since, since_epoch
                    )
                    outcome["window"] = window
                    if reasons:
                        raise RolloutRejected("window", reasons, window)
                    outcome["stage"] = "promote"
                    new = _start(target, "main", version, folder)
                    check_predictor(new, version, folder, policy)
                    route_traffic(target, Routing(main=new.pid))
                    retire = [main, challenger]
                move_alias(registry, name, "champion", version, champion, actor, _why(params))
            decision = "rolled-back" if params.action == "rollback" else "promoted"
            outcome.update(decision=decision, champion_after=version, reasons=[])
        except RolloutRejected as exc:
            # a refused rollout is rolled back; a refused manual move simply did not happen
            decision = "rolled-back" if params.action == "rollout" else "refused"
            logger.warning("%s v%s %s at %s: %s", name, version, decision, exc.stage, exc.reasons)
            outcome.update(
                decision=decision,
                stage=exc.stage,
                reasons=exc.reasons,
                champion_after=champion,
            )
            outcome.setdefault("checks", {}).update(exc.evidence if exc.stage == "smoke" else {})
        except BaseException as exc:
            outcome.update(
                decision="aborted",
                champion_after=registry.aliases(name).get("champion"),
                reasons=[f"{type(exc).__name__}: {exc}"],
            )
            outcome["decided_at"] = utc_now()
            with contextlib.suppress(Exception):  # the rollback hooks ran; keep what happened
                record_rollout(registry, name, version, outcome)
            raise
        for old in retire:
            target.stop(old)  # drained first: traffic left it at the last route
    outcome["decided_at"] = utc_now()
    stamp = record_rollout(registry, name, version, outcome)
    logger.info("%s v%s %s", name, version, outcome["decision"])
    return DeploymentResult(
        model=name,
        action=params.action,
        decision=outcome["decision"],
        version=version,
        champion=registry.aliases(name).get("champion"),
        reasons=outcome["reasons"],
        record=stamp,
        url=target.url,
    )


def _actor(params: DeploymentParams) -> str:
    return f"{params.actor} (flow run {flow_run.name})"


def _why(params: DeploymentParams) -> str:
    if params.action == "rollout":
        return "rollout: smoke checks and the observation window passed"
    return f"{params.action}: {params.reason}"


def on_kubernetes(
    registry: Registry,
    name: str,
    champion: int | None,
    version: int | None,
    params: DeploymentParams,
    block: ServingTarget,
    policy: Policy,
) -> DeploymentResult:
    """The same rollout as a SeldonDeployment in the block's context and namespace."""
    if version is None or version == champion:
        return DeploymentResult(
            model=name,
            action=params.action,
            decision="unchanged",
            version=version,
            champion=champion,
        )
    target = KubernetesTarget(
        block.context,
        block.namespace,
        block.kubeconfig,
        timeout_s=block.rollout_timeout_s,
        poll_s=block.rollout_poll_s,
    )
    started = utc_now()
    direct = params.action != "rollout"
    with sigterm_raises(), target:
        outcome = kubernetes_decision(
            target,
            registry,
            name,
            None if direct else champion,
            version,
            policy,
            block.image,
            block.request_log_dir,
            block.cluster_online_store,
            block.log_claim,
        )
    if outcome["decision"] == "promoted":
        move_alias(registry, name, "champion", version, champion, _actor(params), _why(params))
        if params.action == "rollback":
            outcome["decision"] = "rolled-back"
    outcome.update(
        model=name,
        version=version,
        action=params.action,
        actor=params.actor,
        reason=params.reason,
        champion_before=champion,
        started_at=started,
        champion_after=registry.aliases(name).get("champion"),
        decided_at=utc_now(),
        mode=policy.mode if not direct else "direct",
        target="kubernetes",
    )
    stamp = record_rollout(registry, name, version, outcome)
    return DeploymentResult(
        model=name,
        action=params.action,
        decision=outcome["decision"],
        version=version,
        champion=outcome["champion_after"],
        reasons=outcome["reasons"],
        record=stamp,
    )


def previous_champion(registry: Registry, name: str, champion: int | None) -> int:
    """The version the current champion replaced, from its promotion record."""
    if champion is None:
        raise ValueError(f"model '{name}' has no champion to roll back")
    for stamp in reversed(registry.records(name, champion, "rollout")):
        outcome = json.loads(registry.read_record(name, champion, "rollout", stamp, "rollout.json"))
        if outcome.get("decision") == "promoted" and outcome.get("champion_before"):
            return int(outcome["champion_before"])
    raise ValueError(f"model '{name}': champion v{champion} replaced no earlier champion")
