"""A reviewer's approval of a validated candidate: how a validation run waits for it, and how
to give it from outside the UI.

How a run waits depends on how it runs:

- A run of a deployment (a worker started it) is *suspended* (`suspend_flow_run`): its process
  exits, so no worker slot is held while the review takes hours. The answer (the same `Approval`
  form on the run's page, or `approve` below) reschedules the run; the worker starts it again
  from the top, the validation flow finds the evidence this run recorded and does not evaluate
  again, and the second `suspend_flow_run` with the same key returns the answer.
- A run with no deployment (a foreground `mlops run validation`, tests under the harness) or a
  subflow (validation inside retraining) cannot be suspended: the server refuses, since nothing
  would start it again. It is *paused* (`pause_flow_run`): its own process polls for the answer,
  which holds no worker slot (a subflow holds its parent's, as the parent is waiting anyway).

A timeout (`approval_timeout_s` without an answer) ends the two differently:

- paused: `pause_flow_run` raises in the process; the flow records the decision "rejected",
  failed gate `approval:timeout`, and completes.
- suspended: no process of the run is alive to notice. The server's pause-expiration service
  (every `PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS`, 5 s by default) sets the run
  FAILED, message "The flow was paused and never resumed.", and runs no hook. The version keeps
  its evidence record (verdict: waiting for approval) but gets no decision record and no alias:
  it is not the challenger. `approve` on it then fails with ApprovalError (the run is FAILED,
  or, before the service's next pass, the server refuses to resume it: "timed out").

Prefect's CLI cannot resume a run with input (`prefect flow-run` has no `resume`), hence
`approve`, for a command such as `mlops approve RUN_ID --reviewer NAME [--reject] [--comment]`.
"""

from __future__ import annotations

from uuid import UUID

from prefect import pause_flow_run, suspend_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from pydantic import Field

APPROVAL_KEY = "approval"  # the pause key: stable, so that a resumed run gets its answer back


class Approval(RunInput):
    """What a reviewer answers in the Prefect UI."""

    approve: bool = Field(description="Make this candidate the challenger?")
    reviewer: str = Field(default="", description="Who decides.")
    comment: str = ""


class ApprovalError(RuntimeError):
    """An approval that cannot be given; the message names the run and why."""


def current_run() -> FlowRun | None:
    context = FlowRunContext.get()
    return context.flow_run if context else None


def suspendable(run: FlowRun | None) -> bool:
    """A run the server lets suspend: a deployment's, not a subflow."""
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None


def approval_fired(run: FlowRun) -> bool:
    """The run's approval was asked already: a suspended run started again once answered."""
    return APPROVAL_KEY in (run.empirical_policy.pause_keys or set())


def asked_before(run: FlowRun) -> bool:
    """The run starts again (answered after its suspension, or retried): what it recorded
    before is its own."""
    return approval_fired(run) or run.run_count > 1


def ask_approval(timeout_s: int) -> Approval | None:
    """The reviewer's answer; None when a paused run's `timeout_s` passes first.

    A deployment's run is suspended (its process ends here, and the run starts again when
    answered: this call then returns the answer at once); any other run is paused, polling.
    """
    if suspendable(current_run()):
        answer = suspend_flow_run(wait_for_input=Approval, timeout=timeout_s, key=APPROVAL_KEY)
        if answer is None:  # not reached: suspend_flow_run with wait_for_input returns an input
            raise RuntimeError("the run was resumed without an approval")
        return answer
    try:
        return pause_flow_run(
            wait_for_input=Approval,
            timeout=timeout_s,
            poll_interval=min(5, timeout_s),
            key=APPROVAL_KEY,
        )
    except FlowPauseTimeout:
        return None


def approve(flow_run_id: UUID | str, approve: bool, reviewer: str, comment: str = "") -> Approval:
    """Answer a validation run waiting for approval (suspended or paused); returns the answer.

    A suspended run is rescheduled: a worker of its pool starts it again and it records the
    decision. Raises ApprovalError when the run does not exist, is not waiting for an approval,
    or waited past its timeout.
    """
    answer = Approval(approve=approve, reviewer=reviewer, comment=comment)
    try:
        run_id = UUID(str(flow_run_id))
    except ValueError as exc:
        raise ApprovalError(f"'{flow_run_id}' is not a flow run id") from exc
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound as exc:
            raise ApprovalError(f"no flow run {run_id}") from exc
    state = run.state
    if state is None or not state.is_paused() or state.state_details.pause_key != APPROVAL_KEY:
        where = f"{state.type.value} ({state.name})" if state else "no state"
        raise ApprovalError(
            f"flow run {run_id} ('{run.name}') is not waiting for approval: {where}"
        )
    try:
        resume_flow_run(run_id, run_input=answer.model_dump(mode="json"))
    except FlowPauseTimeout as exc:
        raise ApprovalError(
            f"flow run {run_id} ('{run.name}'): the approval timed out; the run can no longer "
            "be resumed (validate the candidate again)"
        ) from exc
    except (NotPausedError, RuntimeError) as exc:
        raise ApprovalError(f"flow run {run_id} ('{run.name}'): {exc}") from exc
    return answer
