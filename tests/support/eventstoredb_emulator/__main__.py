"""Command line: ``python -m tests.support.eventstoredb_emulator --port 2113``.

Prints ``listening on <host>:<port>`` (flushed) once the server accepts
connections, so a test fixture can wait for that line; ``--port 0`` picks a
free port and reports it in that line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .errors import EmulatorError
from .server import serve


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the server until terminated."""
    parser = argparse.ArgumentParser(prog="eventstoredb_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=2113)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-file", default=None, help="append-only JSON-lines log file")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.data_file))
    except EmulatorError as error:
        sys.stderr.write(f"eventstoredb emulator: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
