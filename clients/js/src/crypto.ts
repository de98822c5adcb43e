/**
 * HMAC-SHA256 through Web Crypto, and the byte encodings around it.
 *
 * Only web platform globals are used (`crypto.subtle`, `TextEncoder`, `btoa`),
 * so the same code runs in Node, Deno, Bun, Cloudflare Workers and the Next.js
 * Edge runtime. Node 18 is the one exception: it has Web Crypto but does not put
 * it on `globalThis` unless started with `--experimental-global-webcrypto`, so
 * there (and only there) it is taken from `node:crypto`.
 */

import type { BytesLike } from "./types.js";

const encoder = new TextEncoder();

/** Bytes that Web Crypto takes: a view of a plain (not shared) ArrayBuffer. */
export type Bytes = Uint8Array<ArrayBuffer>;

export function toBytes(value: BytesLike): Bytes {
  if (typeof value === "string") return encoder.encode(value);
  if (ArrayBuffer.isView(value)) {
    const view = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    // Web Crypto refuses views of a SharedArrayBuffer: those are copied.
    return isArrayBuffer(view.buffer) ? (view as Bytes) : new Uint8Array(view);
  }
  if (isArrayBuffer(value)) return new Uint8Array(value);
  throw new TypeError("expected a string, an ArrayBuffer or a typed array");
}

// Also true for an ArrayBuffer from another realm (a vm context, a worker),
// which instanceof would miss.
function isArrayBuffer(value: unknown): value is ArrayBuffer {
  return value instanceof ArrayBuffer || Object.prototype.toString.call(value) === "[object ArrayBuffer]";
}

let subtlePromise: Promise<SubtleCrypto> | undefined;

function subtle(): Promise<SubtleCrypto> {
  const global = globalThis.crypto as Crypto | undefined;
  if (global?.subtle) return Promise.resolve(global.subtle);
  subtlePromise ??= nodeSubtle();
  return subtlePromise;
}

async function nodeSubtle(): Promise<SubtleCrypto> {
  const isNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === "string";
  if (!isNode) throw new Error("siogate: this runtime has no Web Crypto (globalThis.crypto.subtle)");
  // The specifier is a variable and the import is marked ignored so that
  // bundlers for browser-like targets (Edge, Workers) neither try to resolve
  // node:crypto nor warn about it: those runtimes never reach this line.
  const specifier = "node:crypto";
  const mod = (await import(/* webpackIgnore: true */ specifier)) as { webcrypto?: Crypto };
  if (!mod.webcrypto?.subtle) throw new Error("siogate: node:crypto has no webcrypto");
  return mod.webcrypto.subtle;
}

async function hmacKey(secret: BytesLike, usage: "sign" | "verify"): Promise<CryptoKey> {
  const raw = toBytes(secret);
  if (raw.byteLength === 0) throw new RangeError("secret must not be empty");
  return (await subtle()).importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

export async function hmacSign(secret: BytesLike, data: Bytes): Promise<Bytes> {
  const key = await hmacKey(secret, "sign");
  return new Uint8Array(await (await subtle()).sign("HMAC", key, data));
}

/**
 * Whether `mac` is the HMAC-SHA256 of `data` under `secret`.
 *
 * `SubtleCrypto.verify` recomputes the MAC and compares it in the runtime's
 * native crypto code, not in JavaScript: Node compares with OpenSSL's
 * `CRYPTO_memcmp`, and the Web Crypto of Deno, Bun and Cloudflare Workers
 * sits on ring or BoringSSL, whose HMAC checks are constant time as well. The
 * expected MAC never reaches JavaScript, so no early-exit loop can leak it.
 * A MAC of the wrong length is refused before any comparison; that length is
 * public (always 32 bytes), so it leaks nothing.
 */
export async function hmacVerify(secret: BytesLike, mac: Bytes, data: Bytes): Promise<boolean> {
  const key = await hmacKey(secret, "verify");
  return (await subtle()).verify("HMAC", key, mac, data);
}

/** Base64url without padding (RFC 7515 section 2), as JWTs use. */
export function base64url(bytes: Uint8Array): string {
  let binary = "";
  // Chunked: String.fromCharCode(...bytes) overflows the call stack on large inputs.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function utf8(text: string): Bytes {
  return encoder.encode(text);
}

/** The bytes of a hex string of exactly `length` bytes, either case; `undefined` if it is not one. */
export function fromHex(text: string, length: number): Bytes | undefined {
  if (text.length !== length * 2 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}
