"""The records a real node writes to its own log when it starts, before any client does.

A fresh EventStoreDB/KurrentDB log is never empty, and ``$all`` readers have to cope:

* every time a node becomes leader it writes an epoch and, since v21, a
  ``$epoch-information`` event to the ``$epoch-information`` stream
  (``EpochManager.WriteEpochInformationWithRetry``): one more per (re)start;
* once user management is initialised the scavenger writes
  ``$scavengeIndexInitialized`` to ``$scavenges`` with expected version "no stream"
  (so only on the first start) and gives ``$scavenges`` a ``$maxAge`` of 30 days
  (``StorageScavenger``: the scavenge history is kept that long).

Writing them here makes the emulator's ``$all`` start with ``$`` system events as
a real server's does, so adapters that read ``$all`` must filter them out.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from .errors import WrongExpectedVersion
from .store import (
    EXPECTED_ANY,
    EXPECTED_NO_STREAM,
    METADATA_EVENT_TYPE,
    EventLog,
    ProposedEvent,
    metadata_stream_name,
)

EPOCH_INFORMATION_STREAM = "$epoch-information"
SCAVENGES_STREAM = "$scavenges"
SCAVENGE_INDEX_INITIALIZED = "$scavengeIndexInitialized"
# StorageScavenger's scavengeHistoryMaxAge default: 30 days, in seconds.
SCAVENGE_HISTORY_MAX_AGE_S = 30 * 24 * 3600


def _json_event(event_type: str, payload: dict[str, object]) -> ProposedEvent:
    return ProposedEvent(
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        content_type="application/json",
        data=json.dumps(payload).encode("utf8"),
        metadata=b"",
    )


def write_startup_records(log: EventLog, instance_id: str) -> None:
    """Append what a single node writes as it becomes leader (see the module docstring)."""
    epochs = log.stream(EPOCH_INFORMATION_STREAM)
    previous = epochs.records[-1] if epochs is not None and epochs.records else None
    epoch = {
        "epochPosition": log.head,
        "epochNumber": previous.revision + 1 if previous is not None else 0,
        "epochId": str(uuid.uuid4()),
        "prevEpochPosition": previous.position if previous is not None else -1,
        "timeStamp": datetime.now(UTC).isoformat(),
        "leaderInstanceId": instance_id,
    }
    log.append(EPOCH_INFORMATION_STREAM, EXPECTED_ANY, [_json_event(EPOCH_INFORMATION_STREAM, epoch)])
    try:
        initialized = _json_event(SCAVENGE_INDEX_INITIALIZED, {})
        log.append(SCAVENGES_STREAM, EXPECTED_NO_STREAM, [initialized])
    except WrongExpectedVersion:
        return  # not the first start: the scavenger's write fails the same way
    max_age = _json_event(METADATA_EVENT_TYPE, {"$maxAge": SCAVENGE_HISTORY_MAX_AGE_S})
    log.append(metadata_stream_name(SCAVENGES_STREAM), EXPECTED_ANY, [max_age])
