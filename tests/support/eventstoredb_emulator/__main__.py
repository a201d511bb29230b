"""Command line: ``python -m tests.support.eventstoredb_emulator --port 2113``.

Options for client error-handling tests: ``--tls-cert/--tls-key`` (serve TLS),
``--user NAME:PASSWORD`` (require basic auth), ``--follower-of HOST:PORT`` (act as a
follower that redirects to that leader); see :mod:`.access`.

Prints ``listening on <host>:<port>`` (flushed) once the server accepts
connections, so a test fixture can wait for that line; ``--port 0`` picks a
free port and reports it in that line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .errors import EmulatorError
from .server import AccessOptions, serve


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the server until terminated."""
    parser = argparse.ArgumentParser(prog="eventstoredb_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=2113)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-file", default=None, help="append-only JSON-lines log file")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS instead of plaintext")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="require basic auth with these credentials (repeatable; send them over TLS)")
    parser.add_argument("--follower-of", default=None, metavar="HOST:PORT",
                        help="act as a follower: refuse leader-only calls, naming HOST:PORT as the leader")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    follower_of = None
    if args.follower_of:
        leader_host, _, leader_port = args.follower_of.rpartition(":")
        follower_of = (leader_host, int(leader_port))
    users = dict(u.partition(":")[::2] for u in args.user)
    access = AccessOptions(tls_cert=args.tls_cert, tls_key=args.tls_key, users=users, follower_of=follower_of)
    try:
        asyncio.run(serve(args.host, args.port, args.data_file, access))
    except EmulatorError as error:
        sys.stderr.write(f"eventstoredb emulator: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
