"""State proxy entities for tests: the sample stock domain plus a stock level with short
timeouts, so that a lost or late answer shows within a test. Served by cluster processes as
``XPLATFORM_ENTITIES=tests.support.proxies:ENTITIES``."""

from __future__ import annotations

from domain.stock import Order, StockLevel


class QuickStock(StockLevel):
    """A stock level whose calls time out after 0.5 s, their results lost after 1 s."""

    CATEGORY = "QuickStock"
    PULL_TIMEOUT_S = 0.5
    COMMAND_TIMEOUT_S = 0.5
    RESULT_GRACE_S = 0.5


class PatientStock(StockLevel):
    """A stock level that waits two minutes for its primary (a test holds the primary)."""

    CATEGORY = "PatientStock"
    PULL_TIMEOUT_S = 120.0


class FailoverStock(StockLevel):
    """A stock level whose lost results are found 0.5 s after the 5 s timeout: long enough
    for a test to kill its node mid-call, short enough for the next owner to re-send soon."""

    CATEGORY = "FailoverStock"
    COMMAND_TIMEOUT_S = 5.0
    RESULT_GRACE_S = 0.5


ENTITIES = (StockLevel, QuickStock, PatientStock, FailoverStock, Order)
