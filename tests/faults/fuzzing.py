"""Hypothesis settings of the fuzz tests: bounded and reproducible (the same examples on every
run, no example database); each module sets its own number of examples."""

from hypothesis import HealthCheck, settings

BOUNDED = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
