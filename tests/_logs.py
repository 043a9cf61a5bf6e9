"""
Reading what a test makes the code log.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import provider


def log_lines(case: SynchronousTestCase, namespace: str | None = None) -> list[str]:
    """
    The text of every event logged from now until C{case} ends (only those
    of C{namespace}, if given): a list that grows as they are logged.
    """
    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if namespace is None or event.get("log_namespace") == namespace:
            lines.append(str(formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines
