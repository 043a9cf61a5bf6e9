"""
securemsg's tests (run with C{python -m twisted.trial tests}).

Hypothesis's property tests run without its timing checks: a test must
not fail because the machine is busy (CI shares two cores with other
work), and tests never assert timings.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "securemsg",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("securemsg")
