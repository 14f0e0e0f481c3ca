"""On-demand features of the credit-risk dataset: computed from a loan application's request
fields and the applicant's stored profile, at request time.

One function serves every path: Feast's on-demand feature view (python mode) calls it for
training sets, batch scoring calls it on entity rows, the model server calls it in the serving
environment (no Feast). Inputs are columns as sequences (None or NaN where missing), outputs
columns as lists. numpy only, so both environments compute the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from features.credit_risk.vocabulary import PURPOSES

PURPOSE_CODES = {p: i for i, p in enumerate(PURPOSES)}


def application_features(inputs: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """`purpose_code` (-1 unknown), `loan_to_income`, `payment_to_income` (monthly payment over
    monthly income, no interest); NaN where the income is missing or not positive."""
    loan = np.asarray(inputs["loan_amount"], dtype="float64")
    term = np.asarray(inputs["term_months"], dtype="float64")
    income = np.asarray(inputs["annual_income"], dtype="float64")
    income = np.where(income > 0, income, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_income = loan / income
        payment = (loan / term) / (income / 12)
    return {
        "purpose_code": [PURPOSE_CODES.get(p, -1) for p in inputs["purpose"]],
        "loan_to_income": to_income.tolist(),
        "payment_to_income": payment.tolist(),
    }
