"""A projector that kills itself with SIGKILL in the middle of a batch: after writing
half of the documents of its N-th batch (whatever the writer does after the documents, its
tracking and position - and, with ``--persistent``, its acks - does not happen) (the
deterministic kill -9 mid-batch of tests/projections/test_catchup.py and test_projector.py).

    python -m tests.projections.crashing_projector --crash-at N --projection ... --mongo-uri ... --database ...

``--persistent``: a persistent-subscription projector on the EventStoreDB store the
``XPLATFORM_*`` variables configure (its group as ``xplatform projector`` names it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from infrastructure.persistence import open_event_stream, open_subscriptions
from infrastructure.settings import Settings
from projections.catchup import CatchUpProjector, load_projection
from projections.engine import DocumentWrite
from projections.mongo import MongoReadModel, connect
from projections.persistent import PersistentProjector, ensure_group, group_settings


class CrashingModel(MongoReadModel):
    crash_at = 0
    writes = 0

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        if writes:
            self.writes += 1
            if self.writes == self.crash_at:
                super().write_documents(writes[: max(1, len(writes) // 2)])
                print("killing myself in the middle of a batch's document writes", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        super().write_documents(writes)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-at", type=int, required=True)
    parser.add_argument("--projection", required=True)
    parser.add_argument("--mongo-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args()
    projection = load_projection(args.projection)
    settings = Settings.from_env()
    client = connect(args.mongo_uri)
    model = CrashingModel(projection, client[args.database])
    model.crash_at = args.crash_at
    if args.persistent:
        subscriptions = open_subscriptions(settings)
        namespace = settings.eventstoredb_stream_prefix
        ensure_group(subscriptions, projection, group_settings(), namespace)
        PersistentProjector(projection, subscriptions, model, batch_size=args.batch_size,
                            max_in_flight=4 * args.batch_size, namespace=namespace).run()
        return 0
    stream = open_event_stream(settings)
    CatchUpProjector(projection, stream, model, batch_size=args.batch_size).run(until=stream.head_position())
    return 0


if __name__ == "__main__":
    sys.exit(main())
