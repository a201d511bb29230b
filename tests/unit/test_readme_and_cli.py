"""The README's sandbox example runs as written, and the CLI's commands work."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.xplatform_run import served

ROOT = Path(__file__).resolve().parents[2]


def test_readme_sandbox_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]  # the entity example (the first)
    assert len(block.strip().splitlines()) <= 12  # "in ten lines" (plus imports)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own README


def _xplatform(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_demo_command_drives_the_sample_domain(tmp_path: Path) -> None:
    done = _xplatform(tmp_path, "demo", "--lot", "smoke")
    assert done.returncode == 0, done.stderr
    assert "rejected: bid must be at least 110" in done.stdout
    assert 'final state of Lot/smoke: {"lot": "smoke", "status": "closed"' in done.stdout
    assert (tmp_path / "data" / "events.sqlite3").exists()
    inspected = _xplatform(tmp_path, "inspect", "Lot", "smoke")
    assert inspected.returncode == 0 and "BidAccepted" in inspected.stdout and "Closed" in inspected.stdout


def test_run_command_serves_the_edge_until_interrupted(tmp_path: Path) -> None:
    """``run`` prints its URL, serves dev tokens, websockets, the demo page and metrics,
    and stops cleanly on Ctrl-C (SIGINT) with the events stored."""
    env = {**os.environ, "XPLATFORM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("XPLATFORM_EDGE_DEV_TOKENS", None)
    with served(tmp_path, env) as url:
        asyncio.run(_drive_served_platform(url))
    inspected = _xplatform(tmp_path, "inspect", "Lot", "served")
    assert inspected.returncode == 0 and "Opened" in inspected.stdout


async def _drive_served_platform(url: str) -> None:
    import aiohttp

    from edge.client import connect

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}dev/token", params={"sub": "ann", "role": "auctioneer"}) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["expires_in"] == 3600 and body["token"].count(".") == 2
        async with session.get(url) as resp:
            assert resp.status == 200
    client = await connect(url, "Lot", "served", body["token"])
    try:
        assert client.welcome["status"] == "new"
        reply = await client.request({"type": "open", "title": "Vase"})
        assert reply.ok and reply.payload["status"] == "open"
    finally:
        await client.close()
    async with aiohttp.ClientSession() as session, session.get(f"{url}metrics") as resp:
        text = await resp.text()
        assert "xplatform_edge_round_trip_seconds_count 1.0" in text and "xplatform_node_messages" in text


def test_bad_configuration_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "XPLATFORM_STORE": "oracle"}
    done = subprocess.run([sys.executable, "-m", "ops.cli", "settings"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ConfigurationError: XPLATFORM_STORE must be one of" in done.stderr


def test_benchmarks_smoke(tmp_path: Path) -> None:
    """Tiny parameters: the scripts run and print their JSON keys (figures come from full runs)."""
    for module, args, keys in [
        ("loadtests.bench_persistence", ["--events", "300", "--single-events", "50", "--entities", "10"],
         {"group_commit_events_per_s", "hot_entity_events_per_s", "single_save_events_per_s"}),
        ("loadtests.bench_runtime", ["--rate", "200", "--seconds", "0.5", "--entities", "500"],
         {"reply_p50_ms", "reply_p99_ms", "activation_ms", "bytes_per_entity", "presence_changes_per_s"}),
        ("loadtests.bench_rtt", ["--connections", "5", "--rate", "100", "--seconds", "0.5"],
         {"p50_ms", "p99_ms", "rate"}),
        ("loadtests.bench_connections", ["--connections", "200"], {"connections"}),
        ("loadtests.bench_hot_entity", ["--viewers", "20", "--fanout", "--fanout-rate", "50", "--fanout-seconds", "0.5"],
         {"fanout_frames_per_s", "raw_broadcast_frames_per_s", "fanout_ratio"}),
        ("loadtests.bench_read_your_writes", ["--bids", "8", "--lots", "2"],
         {"read_your_writes_p50_ms", "read_your_writes_p99_ms", "samples"}),
    ]:
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert keys <= result.keys() and result.get("errors", 0) == 0
        assert all(result[k] > 0 for k in keys)


def test_hot_entity_sweep_smoke() -> None:
    """The sweep harness at tiny size: a fresh server process per rate (the README's run
    command), the load in another process, accepted bids counted from the server's store.
    Structure and counts only (no timing); the peer part (npm) is not run in CI."""
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_hot_entity", "--sweep", "100,200", "--viewers", "12",
                           "--bidders", "3", "--sample", "4", "--warmup", "0.5", "--window", "1.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    *per_rate, summary = lines
    assert [r["rate_offered"] for r in per_rate] == [100.0, 200.0]
    for run in per_rate:
        assert run["viewers"] == 12 and run["latency_sample_viewers"] == 4 and run["server_alive"]
        # counted at the server: every accepted bid is a stored BidAccepted event, never more than were sent
        assert 0 < run["accepted_in_window"] <= run["bids_sent_total"]
        assert run["latency_ms"]["samples"] > 0 and run["frames_per_s"] > 0 and run["client_disconnects"] == 0
        assert run["server_cpu_pct"] > 0 and run["loadgen_cpu_pct"] > 0 and isinstance(run["ok"], bool)
    assert [r["rate"] for r in summary["runs"]] == [100.0, 200.0]
    assert summary["max_rate_ok"] in (None, 100.0, 200.0) and "peer_max_rate_ok" not in summary
    assert summary["server_env"]["XPLATFORM_EDGE_RATE_PER_S"] == "1000000"


def test_bench_proxy_smoke() -> None:
    """The state proxy benchmark at --quick size: the sample warehouse in its own process, the
    README's run command as the server, the load in a third process. Keys and counts only:
    every message sent in a window is answered (no refusals, no timeouts), force pulls reach
    the primary, and every pull asked while the primary was slow got an answer."""
    done = subprocess.run([sys.executable, "-m", "loadtests.bench_proxy", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("cached_read_p99_ms", "entity_read_p99_ms", "cached_vs_entity_ratio", "force_pulls_per_s",
                "baseline_other_p99_ms", "slow_primary_other_p99_ms", "slow_vs_baseline_other_ratio"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    reads = int(result["read_rate"] * result["window"])  # open loop: exactly this many sent in the window
    assert result["cached_reads"] + result["entity_reads"] == reads and result["cached_reads"] == reads // 2
    others = int(result["other_rate"] * result["window"])
    assert result["baseline_others"] == others and result["slow_primary_others"] == others
    pulls = int(result["proxies"] / result["pull_every"] * result["window"])
    assert result["outcomes"]["reads"] == {} and result["outcomes"]["baseline"] == {"pull_ok": pulls}
    assert sum(result["outcomes"]["slow_primary"].values()) == pulls  # each answered: ok or a typed error
    # every ok force pull is one GET at the primary (give or take those crossing the window's edges)
    assert result["force_pulls_ok"] > 0 and abs(result["primary_gets_in_window"] - result["force_pulls_ok"]) <= result["proxies"]
    assert result["slow_primary_gets"] > 0 and result["server_alive"] and result["client_closed"] == 0
    assert result["server_env"]["XPLATFORM_ENTITIES"] == "domain.stock:ENTITIES,loadtests.entities:Tally"
