"""The browser client's JavaScript, run under node's own test runner (``node --test``).

- ``msgpack.test.mjs``: the hand-written msgpack codec (``edge/static/msgpack.js``) decodes
  what Python's ``msgpack`` packs and packs byte-for-byte what Python packs; Python then
  unpacks what the JS packed. The vectors are made here, so both libraries meet directly.
- ``client.test.mjs``: the client (``edge/static/xplatform.js``) against a scripted fake
  websocket: frames, requests, heartbeat, reconnect with the same ``cid``, close codes.

The modules are copied next to the tests into a temp folder with ``{"type": "module"}`` so
node loads them as ES modules exactly as a browser does (no build step, no npm). ``node``
(Debian ``nodejs``; ``ops/dev.sh`` installs it) missing is a failure, not a skip.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "edge" / "static"
HERE = Path(__file__).resolve().parent


def _tag(value: Any) -> Any:
    """A JSON form of ``value`` that the JS test turns back into the exact JS value."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 - 1 else {"$big": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        if value == 0 and math.copysign(1, value) < 0:
            return {"$float": "-0"}
        return value
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    raise TypeError(value)


def _vectors() -> list[tuple[str, Any, bool]]:
    """(name, value, exact): exact means JS must pack the same bytes as Python. Floats with
    an integral value are not exact: JS has one number type and packs 2.0 as the int 2."""
    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1, 2**63, 2**64 - 1,
            -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**53) + 1, -(2**63)]
    out: list[tuple[str, Any, bool]] = [(f"int {i}", i, abs(i) <= 2**53 - 1 or i in (2**63, 2**64 - 1, -(2**63)))
                                        for i in ints]
    # 64-bit ints beyond 2^53 decode as BigInt; JS packs a positive BigInt as uint64 like Python.
    out += [("nil", None, True), ("true", True, True), ("false", False, True)]
    out += [(f"float {f!r}", f, True) for f in (0.5, -1.25, 1e300, 3.141592653589793, float("inf"), float("-inf"),
                                                 -0.0, float("nan"))]
    out += [("float 2.0", 2.0, False)]
    out += [(f"str {n}", "x" * n, True) for n in (0, 1, 31, 32, 255, 256, 65535, 65536)]
    out += [("str unicode", "é€😀 Ming 花瓶", True)]
    out += [(f"bin {n}", bytes(range(256)) * (n // 256) + bytes(range(n % 256)), True) for n in (0, 1, 255, 256, 70000)]
    out += [(f"array {n}", list(range(n)), True) for n in (0, 15, 16, 65536)]
    out += [(f"map {n}", {f"k{i}": i for i in range(n)}, True) for n in (0, 15, 16, 70000)]
    out += [("nested", {"a": [1, {"b": [None, True, b"\x00\xff"]}], "c": {"d": {"e": -5}}}, True)]
    # the protocol's own frames, as the edge packs them (edge/protocol.py)
    state = {"type": "state", "lot": "demo", "status": "open", "title": "Ming vase", "increment": 10,
             "high_amount": 110, "high_bidder": "bob", "bid_count": 1, "sent_at": 1718000000.125,
             "winner": None, "present": 2}
    out += [("WELCOME", [10, "3b241101-e2bb-4255-8caf-4136c566a962", state], True),
            ("REPLY ok", [11, "m-1", True, {"status": "pending", "bid_id": "m-1"}], True),
            ("REPLY error", [11, "m-2", False, {"code": "rejected", "reason": "lot is new", "retryable": False}], True),
            ("PUSH", [12, state], True), ("PONG", [13, 1718000000123, 1718000000124], True),
            ("TERMINATE", [14, "token expired", True], True), ("ERROR", [15, "bad_frame", "MSG is ..."], True),
            ("MSG", [1, "m-3", msgpack.packb({"type": "bid", "amount": 120, "sent_at": 1718000000.5})], True)]
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.fixture
def js_dir(tmp_path: Path) -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (Debian package nodejs; bash ops/dev.sh test installs it)")
    for src in [*STATIC.glob("*.js"), *HERE.glob("*.test.mjs")]:
        shutil.copy(src, tmp_path / src.name)
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    return tmp_path


def _node_test(js_dir: Path, files: list[str], env: dict[str, str] | None = None) -> None:
    import os

    run = subprocess.run(["node", "--test", *files], cwd=js_dir, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})})
    if run.returncode != 0:
        pytest.fail(f"node --test {' '.join(files)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    assert "# fail 0" in run.stdout, run.stdout


def test_msgpack_js_interoperates_with_python(js_dir: Path) -> None:
    vectors = _vectors()
    (js_dir / "vectors.json").write_text(json.dumps(
        [{"name": name, "packed": msgpack.packb(value, use_bin_type=True).hex(), "value": _tag(value), "exact": exact}
         for name, value, exact in vectors]))
    out = js_dir / "js-packed.json"
    _node_test(js_dir, ["msgpack.test.mjs"], {"MSGPACK_VECTORS": str(js_dir / "vectors.json"), "MSGPACK_JS_OUT": str(out)})
    packed_by_js = {v["name"]: bytes.fromhex(v["packed"]) for v in json.loads(out.read_text())}
    assert packed_by_js.keys() == {name for name, _, _ in vectors}
    for name, value, _ in vectors:
        back = msgpack.unpackb(packed_by_js[name], raw=False, strict_map_key=False)
        assert _same(value, back), f"{name}: Python read {back!r} from the JS encoding"


def test_browser_client_protocol_behaviour(js_dir: Path) -> None:
    _node_test(js_dir, ["client.test.mjs"])
