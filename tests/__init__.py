"""
The tests of securemsg (run from the repository root: C{python -m
twisted.trial tests}).

Hypothesis runs without its timing checks (the per-example deadline and
the "input generation is slow" health check): with several trial workers
on few cores (C{trial -j8} on 2) a process can be starved of CPU for a
second, and the properties tested do not depend on time.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "securemsg", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("securemsg")
