"""A catch-up projector that kills itself with SIGKILL in the middle of a batch: after writing
half of the documents of its N-th batch (whatever the writer does after the documents, its
tracking and position, does not happen) (the
deterministic kill -9 mid-batch of tests/projections/test_catchup.py).

    python -m tests.projections.crashing_projector --crash-at N --projection ... --mongo-uri ... --database ...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from infrastructure.persistence import open_event_stream
from infrastructure.settings import Settings
from projections.catchup import CatchUpProjector, load_projection
from projections.engine import DocumentWrite
from projections.mongo import MongoReadModel, connect


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
    args = parser.parse_args()
    projection = load_projection(args.projection)
    stream = open_event_stream(Settings.from_env())
    client = connect(args.mongo_uri)
    model = CrashingModel(projection, client[args.database])
    model.crash_at = args.crash_at
    CatchUpProjector(projection, stream, model, batch_size=args.batch_size).run(until=stream.head_position())
    return 0


if __name__ == "__main__":
    sys.exit(main())
