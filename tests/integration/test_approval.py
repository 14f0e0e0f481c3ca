"""Approval without a held worker, on real parts: a `prefect server start`, a process pool, a
validation deployment, `prefect worker start`. The run requiring approval is suspended (its
process exits), `approve` answers it, the worker starts it again, and it completes without
evaluating again: one evidence record, one `evaluate` task run, the candidate `challenger`.
A run left unanswered past its timeout is failed by the server, with no decision recorded."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment

from blocks import DaskCluster, FeatureRepo, ModelRegistry, ValidationPolicy
from flows.approval import APPROVAL_KEY, ApprovalError, approve
from flows.data_prep import DataPrepParams, data_prep
from flows.generate_data import GenerateDataParams, generate_data
from flows.training import TrainingParams, training
from tasks.validation.gates import GatePolicy
from tests.servers import BIN, ROOT, final_run, flow_run, prefect, wait_for

pytestmark = pytest.mark.integration
NAME = "credit-approval"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _prepare(tmp_path: Path, blocks: str) -> Path:
    """Synthetic credit data through data_prep, then one trained version: the candidate."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_data(
        GenerateDataParams(
            rows=150_000,
            seed=5,
            start=date.today() - timedelta(days=911),
            end=date.today() - timedelta(days=1),
            out_uri=str(raw),
            chunk_rows=50_000,
        )
    )
    data_prep(
        DataPrepParams(
            source_uri=str(raw),
            output_uri=str(out),
            dask_cluster_block=blocks,
            feature_repo_block=blocks,
        )
    )
    trained = training(
        TrainingParams(
            data_uri=str(out), model_name=NAME, feature_repo_block=blocks, registry_block=blocks
        )
    )
    assert trained.version == 1
    return out


@pytest.mark.timeout(600)  # 66 s alone
def test_a_suspended_validation_frees_its_worker_and_resumes_when_approved(
    prefect_env, api, processes, tmp_path: Path
) -> None:
    began = time.monotonic()
    blocks = f"approval-{uuid.uuid4().hex[:8]}"
    DaskCluster(processes=False, n_workers=1, threads_per_worker=2, memory_limit="2GiB").save(
        blocks, overwrite=True
    )
    FeatureRepo(
        repo_path=str(ROOT / "features"),
        registry_path=str(tmp_path / "feast-registry.db"),
        sqlite_path=str(tmp_path / "feast-online.db"),
    ).save(blocks, overwrite=True)
    ModelRegistry(root_uri=str(tmp_path / "registry")).save(blocks, overwrite=True)
    ValidationPolicy(policy=GatePolicy(require_approval=True, approval_timeout_s=900)).save(
        blocks, overwrite=True
    )
    registry = ModelRegistry.load(blocks).registry()
    data = _prepare(tmp_path, blocks)
    prepared = time.monotonic()

    prefect(prefect_env, "work-pool", "create", blocks, "--type", "process")
    source = Flow.from_source(source=str(ROOT), entrypoint="flows/validation.py:validation")
    deployment_id = source.deploy(
        name=blocks, work_pool_name=blocks, print_next_steps=False, ignore_warnings=True
    )
    processes.start(
        "worker",
        [str(BIN / "prefect"), "worker", "start", "-p", blocks],
        env={**prefect_env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
    )
    params = {
        "model_name": NAME,
        "data_uri": str(data),
        "feature_repo_block": blocks,
        "registry_block": blocks,
        "policy_block": blocks,
        "explain": {"rows": 150, "ebm_rows": 1_000, "pdp_features": 1, "local_rows": 1},
    }
    run = run_deployment(deployment_id, parameters={"params": params}, timeout=0)

    def suspended() -> FlowRun | None:
        now = flow_run(run.id)
        assert now.state is not None and not now.state.is_final(), (
            now.state,
            processes.log("worker")[-3000:],
        )
        return now if now.state.type == StateType.PAUSED else None

    waiting = wait_for(suspended, 240, "the validation run to be suspended", interval=1)
    assert waiting.state is not None and waiting.state.name == "Suspended"
    assert waiting.state.state_details.pause_key == APPROVAL_KEY
    assert waiting.infrastructure_pid, "the worker recorded no process for the run"
    pid = int(waiting.infrastructure_pid.rsplit(":", 1)[-1])
    wait_for(lambda: not _alive(pid), 60, f"the run's process {pid} to exit")
    assert f"Execution of flow run '{run.id}' is paused." in processes.log("worker")
    assert registry.records(NAME, 1, "validation"), "no evidence before the approval"
    assert registry.records(NAME, 1, "decision") == [] and registry.aliases(NAME) == {}
    suspended_at = time.monotonic()

    with pytest.raises(ApprovalError, match="not a flow run id"):
        approve("not-an-id", approve=True, reviewer="risk-officer")
    cli = subprocess.run(  # the README's way from a terminal; the UI's form gives the same input
        [
            str(BIN / "mlops"),
            "approve",
            str(run.id),
            "--reviewer",
            "risk-officer",
            "--comment",
            "looks fine",
        ],
        env=prefect_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "approved by risk-officer" in cli.stdout, cli.stdout + cli.stderr

    done = wait_for(lambda: final_run(run.id), 240, "the resumed run to finish", interval=1)
    assert done.state is not None and done.state.is_completed(), (
        done.state,
        processes.log("worker")[-5000:],
    )
    assert registry.aliases(NAME) == {"challenger": 1}
    assert len(registry.records(NAME, 1, "validation")) == 1
    decisions = registry.records(NAME, 1, "decision")
    assert len(decisions) == 1
    decision = registry.read_record(NAME, 1, "decision", decisions[0], "decision.json")
    assert b'"challenger"' in decision and b'"risk-officer"' in decision
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    assert "evidence recorded by this run already" in processes.log("worker")
    evaluated = [t.name for t in tasks if t.name.startswith("evaluate")]
    assert evaluated == ["evaluate-v1"], sorted(t.name for t in tasks)
    with pytest.raises(ApprovalError, match="not waiting for approval"):
        approve(run.id, approve=False, reviewer="late")
    approved_at = time.monotonic()

    # Unanswered: no process of the run is alive to notice the timeout; the server fails the run
    # and the version gets no decision (documented in flows/approval.py).
    fast = f"{blocks}-fast"
    ValidationPolicy(policy=GatePolicy(require_approval=True, approval_timeout_s=2)).save(fast)
    late = run_deployment(
        deployment_id, parameters={"params": {**params, "policy_block": fast}}, timeout=0
    )
    expired = wait_for(lambda: final_run(late.id), 240, "the unanswered run to expire", interval=1)
    assert expired.state is not None and expired.state.is_failed(), expired.state
    assert expired.state.message == "The flow was paused and never resumed."
    assert len(registry.records(NAME, 1, "validation")) == 2
    assert registry.records(NAME, 1, "decision") == decisions
    with pytest.raises(ApprovalError, match="not waiting for approval: FAILED"):
        approve(late.id, approve=True, reviewer="too-late")
    print(
        f"data + training {prepared - began:.0f}s, to suspended {suspended_at - prepared:.0f}s, "
        f"resumed to completed {approved_at - suspended_at:.0f}s, "
        f"expired {time.monotonic() - approved_at:.0f}s"
    )
