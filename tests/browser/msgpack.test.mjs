// node --test: the browser msgpack codec (edge/static/msgpack.js) against vectors made by
// Python's msgpack (tests/browser/test_js_client.py writes them; see there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { decode, encode, ExtData, MsgpackError } from './msgpack.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

// Tagged JSON -> JS value: {"$bin": hex}, {"$big": "123"}, {"$float": "nan"|"inf"|"-inf"|"-0"}.
function untag(v) {
  if (Array.isArray(v)) return v.map(untag);
  if (v && typeof v === 'object') {
    if ('$bin' in v) return unhex(v.$bin);
    if ('$big' in v) return BigInt(v.$big);
    if ('$float' in v) return { nan: NaN, inf: Infinity, '-inf': -Infinity, '-0': -0 }[v.$float];
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, untag(x)]));
  }
  return v;
}

const vectorFile = process.env.MSGPACK_VECTORS;
const outFile = process.env.MSGPACK_JS_OUT;

test('decodes and re-encodes every Python vector', { skip: !vectorFile }, () => {
  const vectors = JSON.parse(readFileSync(vectorFile, 'utf8'));
  const out = [];
  for (const v of vectors) {
    const expected = untag(v.value);
    const decoded = decode(unhex(v.packed));
    assert.deepStrictEqual(decoded, expected, `decode ${v.name}`);
    const encoded = encode(expected);
    if (v.exact) assert.equal(hex(encoded), v.packed, `encode ${v.name} byte for byte`);
    out.push({ name: v.name, packed: hex(encoded) });
  }
  if (outFile) writeFileSync(outFile, JSON.stringify(out));
});

test('round-trips JS values', () => {
  const values = [
    null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER,
    0.5, -1.25, 1e300, Infinity, -Infinity, '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'é€😀', 'y'.repeat(70000),
    new Uint8Array([]), new Uint8Array([0, 1, 255]), new Uint8Array(300), [], [1, [2, [3]]], new Array(20).fill(7),
    {}, { a: 1, b: [true, null] }, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    2n ** 64n - 1n, -(2n ** 63n), new Date(1700000000123), new ExtData(5, new Uint8Array([1, 2, 3])),
  ];
  for (const value of values) assert.deepStrictEqual(decode(encode(value)), value, String(value).slice(0, 40));
  assert.ok(Number.isNaN(decode(encode(NaN))));
  assert.ok(Object.is(decode(encode(-0)), -0));
  // 64-bit integers come back as Number when exact, BigInt otherwise
  assert.equal(decode(encode(2n ** 40n)), 2 ** 40);
  assert.equal(decode(encode(-(2n ** 40n))), -(2 ** 40));
  assert.equal(typeof decode(encode(2n ** 60n)), 'bigint');
});

test('encodes sizes with the smallest format', () => {
  assert.equal(hex(encode(5)), '05');
  assert.equal(hex(encode(-5)), 'fb');
  assert.equal(hex(encode(200)), 'ccc8');
  assert.equal(hex(encode(-200)), 'd1ff38');
  assert.equal(hex(encode('hi')), 'a26869');
  assert.equal(hex(encode(new Uint8Array([7]))), 'c40107');
  assert.equal(hex(encode([1, 'a'])), '9201a161');
  assert.equal(hex(encode({ a: undefined, b: 1 })), '81a16201');
  assert.equal(hex(encode(undefined)), 'c0');
  assert.equal(hex(encode(1.5)), 'cb3ff8000000000000');
});

test('refuses malformed input', () => {
  const bad = ['c1', '92', 'a3616263ff', 'cd01', 'c40501', 'dc0001', 'a2c328', '0000', 'df7fffffff'];
  for (const b of bad) assert.throws(() => decode(unhex(b)), MsgpackError, b);
  let deep = new Uint8Array(200).fill(0x91);
  assert.throws(() => decode(deep), MsgpackError);
  assert.throws(() => encode(() => 1), MsgpackError);
  assert.throws(() => encode(Symbol('s')), MsgpackError);
  const cyclic = []; cyclic.push(cyclic);
  assert.throws(() => encode(cyclic), MsgpackError);
});

test('a map key "__proto__" stays data', () => {
  const obj = decode(unhex('81a95f5f70726f746f5f5f81a178a179')); // {"__proto__": {"x": "y"}}
  assert.equal(Object.getPrototypeOf(obj), Object.prototype);
  assert.deepEqual(Object.keys(obj), ['__proto__']);
  assert.equal({}.x, undefined);
});
