"""The promotion policy the validation flow enforces."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from tasks.validation.gates import GatePolicy


class ValidationPolicy(Block):
    """Gates a candidate must pass to become `challenger`, and whether a person must approve."""

    _block_type_name = "MLOps Validation Policy"
    _description = (
        "Absolute metric minimums/maximums, maximum regression against the champion (overall and "
        "per segment), data and behaviour checks, and human approval with a timeout."
    )

    policy: GatePolicy = Field(default_factory=GatePolicy)
