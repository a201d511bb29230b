"""A journal and snapshots written before idempotency was keyed by sender still load and
keep deduplicating (tests/fixtures/make_pre_sender_journal.py wrote the fixture with the
code of commit a29ed8e: ``_xp_mid``/``_xp_reply`` on events, the flat ``_seen`` dict in
snapshots). Loaded here with today's code, in the sandbox and through the runtime."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import msgpack

from domain import ClientMessage, EntityRef
from domain.auction import Bidder, Lot
from domain.idempotency import LEGACY, ReplyWindow
from infrastructure.persistence import RecorderJournal
from infrastructure.settings import Settings
from infrastructure.testkit import Sandbox
from ops.wiring.dev import build_platform

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_sender_idempotency.sqlite3"
LOT = EntityRef("Lot", "legacy")
BOB_ACCOUNT = EntityRef("Bidder", "bob")


def copy_of_fixture(tmp_path: Path) -> Settings:
    shutil.copy(FIXTURE, tmp_path / "events.sqlite3")
    return Settings(store="sqlite", data_dir=str(tmp_path))


def test_old_snapshot_and_events_load_and_keep_deduplicating(tmp_path: Path) -> None:
    settings = copy_of_fixture(tmp_path)
    kit = Sandbox(Lot, Bidder, journal=RecorderJournal(settings.journal_env()))
    window = kit.state(LOT).platform.seen
    assert isinstance(window, ReplyWindow) and window.legacy and window.count(LEGACY) == window.size
    versions = [e.originator_version for e in kit.events(LOT)]
    # "bid-1" is in the old snapshot's flat window, "bid-2" and "chat-1" on events after it.
    for mid, payload in (("bid-1", {"type": "bid", "amount": 100}), ("bid-2", {"type": "bid", "amount": 110}),
                         ("chat-1", {"type": "chat", "text": "hello"})):
        retry = kit.client(LOT, "c-bob", payload, message_id=mid)
        assert retry.duplicate and retry.ok, mid
    assert kit.client(LOT, "c-ann", {"type": "open", "title": "Legacy vase"}, message_id="open-1").duplicate
    # The entity-derived ID the Lot sent bob's account then (old format) is still known there.
    again = kit.tell(BOB_ACCOUNT, LOT, "hold_credit", message_id="bid-1/1", lot="legacy", minimum=100, limit=150,
                     bid=None, connection_id="c-bob")
    assert again.duplicate
    # The old snapshot's refusal is not carried over (refusals are remembered only while resident).
    assert not kit.client(LOT, "c-bob", {"type": "bid", "amount": 1}, message_id="bid-low").duplicate
    assert [e.originator_version for e in kit.events(LOT)] == versions  # nothing applied twice
    # New messages go to their sender's bucket; a new snapshot carries both and reloads.
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "new"}, message_id="chat-2").ok
    kit.restart()
    window = kit.state(LOT).platform.seen
    assert window.count(LEGACY) + window.count("c3:bob") == window.size and window.count("c3:bob") == 1
    assert kit.client(LOT, "c-bob", {"type": "bid", "amount": 110}, message_id="bid-2").duplicate
    assert kit.client(LOT, "c-bob", {"type": "chat", "text": "new"}, message_id="chat-2").duplicate


def test_old_journal_keeps_deduplicating_through_the_runtime(tmp_path: Path) -> None:
    settings = copy_of_fixture(tmp_path)

    async def main() -> None:
        async with build_platform(settings, entities=(Lot, Bidder)) as p:
            def ask(mid: str, payload: dict[str, Any]) -> Any:
                return p.transport.ask(LOT, ClientMessage(mid, time.time(), "c-bob", msgpack.packb(payload)))

            before = [e.originator_version for e in p.journal.read(LOT.stream_id)]
            old = await ask("bid-2", {"type": "bid", "amount": 110})
            assert old.ok and old.payload == {"status": "accepted", "bid_id": "bid-2", "amount": 110}
            assert (await ask("bid-1", {"type": "bid", "amount": 100})).payload["status"] == "pending"
            assert [e.originator_version for e in p.journal.read(LOT.stream_id)] == before
            assert p.node.resident(LOT).bid_count == 2

    asyncio.run(main())
