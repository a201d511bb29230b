// A small, dependency-free MessagePack codec for the browser (and node) — ES module.
//
// Spec: https://github.com/msgpack/msgpack/blob/master/spec.md
// Covers what the X Platform client protocol needs, and a little more:
//
//   JavaScript               encodes as                  decodes from
//   null / undefined         nil                         nil -> null
//   boolean                  true / false                true / false
//   integer Number           smallest int/uint format    ints (64-bit: Number when safe, else BigInt)
//   other Number             float64                     float32 / float64 -> Number
//   BigInt                   int64 / uint64              -
//   string                   str (UTF-8)                 str -> string
//   Uint8Array, ArrayBuffer  bin                         bin -> Uint8Array
//   other typed arrays/views bin (their bytes)           -
//   Array                    array                       array -> Array
//   Map                      map (any keys)              -
//   plain object             map (own enumerable keys,   map -> plain object (keys as strings,
//                            undefined values skipped)   bin keys as hex; '__proto__' stays an
//                                                        own key, never the prototype)
//   Date                     timestamp ext (-1)          timestamp ext -> Date
//   ExtData                  ext                         other ext -> ExtData
//
// Decoding is strict: truncated input, trailing bytes, the never-used byte 0xc1 and nesting
// deeper than `maxDepth` raise MsgpackError, so a malformed frame can never half-apply.

export class MsgpackError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MsgpackError';
  }
}

/** An extension value msgpack carries but this codec does not interpret. */
export class ExtData {
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

const UINT32_MAX = 0xffffffff;
const TWO_32 = 0x100000000;

class Writer {
  constructor(size = 64) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v) { this.ensure(1); this.buf[this.pos++] = v; }
  u16(v) { this.ensure(2); this.view.setUint16(this.pos, v); this.pos += 2; }
  u32(v) { this.ensure(4); this.view.setUint32(this.pos, v); this.pos += 4; }
  bytes(b) { this.ensure(b.length); this.buf.set(b, this.pos); this.pos += b.length; }

  result() { return this.buf.slice(0, this.pos); }
}

/**
 * Encode `value` to a Uint8Array.
 * @param {*} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  const w = new Writer();
  write(w, value, 0);
  return w.result();
}

function write(w, value, depth) {
  if (depth > 512) throw new MsgpackError('value nested too deeply (or cyclic)');
  if (value === null || value === undefined) { w.u8(0xc0); return; }
  switch (typeof value) {
    case 'boolean': w.u8(value ? 0xc3 : 0xc2); return;
    case 'number': writeNumber(w, value); return;
    case 'bigint': writeBigInt(w, value); return;
    case 'string': writeString(w, value); return;
    case 'object': break;
    default: throw new MsgpackError(`cannot encode a ${typeof value}`);
  }
  if (value instanceof Uint8Array) { writeBin(w, value); return; }
  if (value instanceof ArrayBuffer) { writeBin(w, new Uint8Array(value)); return; }
  if (ArrayBuffer.isView(value)) {
    writeBin(w, new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    return;
  }
  if (Array.isArray(value)) {
    writeLength(w, value.length, 0x90, 0xdc, 0xdd, 15);
    for (const item of value) write(w, item, depth + 1);
    return;
  }
  if (value instanceof Date) { writeTimestamp(w, value); return; }
  if (value instanceof ExtData) { writeExt(w, value.type, value.data); return; }
  if (value instanceof Map) {
    writeLength(w, value.size, 0x80, 0xde, 0xdf, 15);
    for (const [k, v] of value) { write(w, k, depth + 1); write(w, v, depth + 1); }
    return;
  }
  const keys = Object.keys(value).filter((k) => value[k] !== undefined);
  writeLength(w, keys.length, 0x80, 0xde, 0xdf, 15);
  for (const k of keys) { writeString(w, k); write(w, value[k], depth + 1); }
}

function writeLength(w, n, fix, code16, code32, fixMax) {
  if (n <= fixMax) w.u8(fix | n);
  else if (n <= 0xffff) { w.u8(code16); w.u16(n); }
  else if (n <= UINT32_MAX) { w.u8(code32); w.u32(n); }
  else throw new MsgpackError('too many elements');
}

function writeNumber(w, n) {
  if (!Number.isInteger(n) || !Number.isSafeInteger(n) || Object.is(n, -0)) {
    // Fractions, NaN, infinities, -0 and integers beyond 2^53 (already approximate): float64.
    w.u8(0xcb); w.ensure(8); w.view.setFloat64(w.pos, n); w.pos += 8;
    return;
  }
  if (n >= 0) {
    if (n < 0x80) w.u8(n);
    else if (n <= 0xff) { w.u8(0xcc); w.u8(n); }
    else if (n <= 0xffff) { w.u8(0xcd); w.u16(n); }
    else if (n <= UINT32_MAX) { w.u8(0xce); w.u32(n); }
    else { w.u8(0xcf); w.u32(Math.floor(n / TWO_32)); w.u32(n % TWO_32); }
  } else {
    if (n >= -32) w.u8(n & 0xff);
    else if (n >= -0x80) { w.u8(0xd0); w.ensure(1); w.view.setInt8(w.pos, n); w.pos += 1; }
    else if (n >= -0x8000) { w.u8(0xd1); w.ensure(2); w.view.setInt16(w.pos, n); w.pos += 2; }
    else if (n >= -0x80000000) { w.u8(0xd2); w.ensure(4); w.view.setInt32(w.pos, n); w.pos += 4; }
    else writeBigInt(w, BigInt(n));
  }
}

function writeBigInt(w, n) {
  if (n >= 0n) {
    if (n > 0xffffffffffffffffn) throw new MsgpackError('integer above 2^64-1');
    w.u8(0xcf); w.ensure(8); w.view.setBigUint64(w.pos, n); w.pos += 8;
  } else {
    if (n < -0x8000000000000000n) throw new MsgpackError('integer below -2^63');
    w.u8(0xd3); w.ensure(8); w.view.setBigInt64(w.pos, n); w.pos += 8;
  }
}

function writeString(w, s) {
  const bytes = textEncoder.encode(s);
  const n = bytes.length;
  if (n < 32) w.u8(0xa0 | n);
  else if (n <= 0xff) { w.u8(0xd9); w.u8(n); }
  else if (n <= 0xffff) { w.u8(0xda); w.u16(n); }
  else if (n <= UINT32_MAX) { w.u8(0xdb); w.u32(n); }
  else throw new MsgpackError('string too long');
  w.bytes(bytes);
}

function writeBin(w, bytes) {
  const n = bytes.length;
  if (n <= 0xff) { w.u8(0xc4); w.u8(n); }
  else if (n <= 0xffff) { w.u8(0xc5); w.u16(n); }
  else if (n <= UINT32_MAX) { w.u8(0xc6); w.u32(n); }
  else throw new MsgpackError('binary too long');
  w.bytes(bytes);
}

function writeExt(w, type, data) {
  if (!Number.isInteger(type) || type < -128 || type > 127) throw new MsgpackError('ext type must be -128..127');
  const n = data.length;
  const fixed = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
  if (fixed !== undefined) w.u8(fixed);
  else if (n <= 0xff) { w.u8(0xc7); w.u8(n); }
  else if (n <= 0xffff) { w.u8(0xc8); w.u16(n); }
  else { w.u8(0xc9); w.u32(n); }
  w.ensure(1); w.view.setInt8(w.pos, type); w.pos += 1;
  w.bytes(data);
}

function writeTimestamp(w, date) {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new MsgpackError('invalid Date');
  const sec = Math.floor(ms / 1000);
  const nsec = (ms - sec * 1000) * 1e6;
  const data = new Uint8Array(12);
  const view = new DataView(data.buffer);
  view.setUint32(0, nsec);
  view.setBigInt64(4, BigInt(sec));
  writeExt(w, -1, data);
}

// ---------------------------------------------------------------------------- decoding

/**
 * Decode one msgpack value from `input` (Uint8Array, ArrayBuffer or a typed-array view).
 * The whole input must be exactly one value.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} input
 * @param {{maxDepth?: number}} [options]
 */
export function decode(input, options = {}) {
  let bytes;
  if (input instanceof Uint8Array) bytes = input;
  else if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
  else if (ArrayBuffer.isView(input)) bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  else throw new MsgpackError('decode needs bytes');
  const r = new Reader(bytes, options.maxDepth ?? 100);
  const value = r.value(0);
  if (r.pos !== bytes.length) throw new MsgpackError(`${bytes.length - r.pos} trailing bytes after the value`);
  return value;
}

class Reader {
  constructor(bytes, maxDepth) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.maxDepth = maxDepth;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw new MsgpackError('truncated msgpack data');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8() { return this.view.getUint8(this.need(1)); }
  u16() { return this.view.getUint16(this.need(2)); }
  u32() { return this.view.getUint32(this.need(4)); }

  u64() {
    const at = this.need(8);
    const hi = this.view.getUint32(at);
    const lo = this.view.getUint32(at + 4);
    if (hi < 0x200000) return hi * TWO_32 + lo; // < 2^53: exact as a Number
    return this.view.getBigUint64(at);
  }

  i64() {
    const at = this.need(8);
    const hi = this.view.getInt32(at);
    const lo = this.view.getUint32(at + 4);
    if (hi >= -0x200000 && hi < 0x200000) return hi * TWO_32 + lo; // |n| < 2^53
    return this.view.getBigInt64(at);
  }

  raw(n) {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }

  str(n) {
    try {
      return textDecoder.decode(this.raw(n));
    } catch {
      throw new MsgpackError('str is not valid UTF-8');
    }
  }

  bin(n) { return this.raw(n).slice(); } // a copy: callers may keep it after the frame is gone

  array(n, depth) {
    if (depth >= this.maxDepth) throw new MsgpackError('msgpack nested too deeply');
    if (n > this.bytes.length - this.pos) throw new MsgpackError('truncated msgpack data');
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  map(n, depth) {
    if (depth >= this.maxDepth) throw new MsgpackError('msgpack nested too deeply');
    if (n * 2 > this.bytes.length - this.pos) throw new MsgpackError('truncated msgpack data');
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      const value = this.value(depth + 1);
      const name = key instanceof Uint8Array ? Array.from(key, (x) => x.toString(16).padStart(2, '0')).join('') : String(key);
      Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  ext(n) {
    const type = this.view.getInt8(this.need(1));
    const data = this.bin(n);
    if (type === -1) return timestamp(data);
    return new ExtData(type, data);
  }

  value(depth) {
    const b = this.u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b <= 0xbf) return this.str(b & 0x1f);
    if (b >= 0x90 && b <= 0x9f) return this.array(b & 0x0f, depth);
    if (b >= 0x80 && b <= 0x8f) return this.map(b & 0x0f, depth);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.u8());
      case 0xc5: return this.bin(this.u16());
      case 0xc6: return this.bin(this.u32());
      case 0xc7: return this.ext(this.u8());
      case 0xc8: return this.ext(this.u16());
      case 0xc9: return this.ext(this.u32());
      case 0xca: return this.view.getFloat32(this.need(4));
      case 0xcb: return this.view.getFloat64(this.need(8));
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.u64();
      case 0xd0: return this.view.getInt8(this.need(1));
      case 0xd1: return this.view.getInt16(this.need(2));
      case 0xd2: return this.view.getInt32(this.need(4));
      case 0xd3: return this.i64();
      case 0xd4: return this.ext(1);
      case 0xd5: return this.ext(2);
      case 0xd6: return this.ext(4);
      case 0xd7: return this.ext(8);
      case 0xd8: return this.ext(16);
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default: throw new MsgpackError(`invalid msgpack byte 0x${b.toString(16)}`);
    }
  }
}

function timestamp(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let sec;
  let nsec = 0;
  if (data.length === 4) sec = view.getUint32(0);
  else if (data.length === 8) {
    const hi = view.getUint32(0);
    nsec = hi >>> 2;
    sec = (hi & 0x3) * TWO_32 + view.getUint32(4);
  } else if (data.length === 12) {
    nsec = view.getUint32(0);
    sec = Number(view.getBigInt64(4));
  } else throw new MsgpackError('timestamp ext of a bad length');
  return new Date(sec * 1000 + Math.floor(nsec / 1e6));
}
