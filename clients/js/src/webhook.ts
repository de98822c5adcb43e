/**
 * Webhook signatures (docs/webhooks.md).
 *
 * Every webhook request carries `X-Siogate-Timestamp: <unix seconds>` and
 * `X-Siogate-Signature: sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>`
 * (the timestamp header's text, one ".", then the exact body bytes) keyed with
 * `--webhook-secret`. Verify it over the raw body, before parsing: re-serialising
 * parsed JSON gives other bytes. A timestamp too far from the receiver's clock is
 * refused, so that a captured request cannot be replayed later.
 */

import { fromHex, hmacVerify, toBytes, utf8 } from "./crypto.js";
import type { BytesLike } from "./types.js";

/** The header that carries the signature, lower-cased as `Headers.get` accepts it. */
export const SIGNATURE_HEADER = "x-siogate-signature";
/** The header that carries the signing time in unix seconds, lower-cased. */
export const TIMESTAMP_HEADER = "x-siogate-timestamp";
/** Seconds a timestamp may be off the receiver's clock, either way, by default. */
export const DEFAULT_TOLERANCE = 300;

const PREFIX = "sha256=";
const MAC_BYTES = 32;
// Unix seconds, decimal; 15 digits reach far past any real clock.
const TIMESTAMP = /^[0-9]{1,15}$/;

/** Why {@link verifyWebhook} refused a request. */
export type WebhookErrorCode =
  | "missing_signature"
  | "missing_timestamp"
  | "malformed_signature"
  | "malformed_timestamp"
  | "signature_mismatch"
  | "timestamp_too_old"
  | "timestamp_in_future";

// A registered symbol, so that instanceof also holds for an error made by the
// other copy of this package (the ESM and CJS builds loaded in one process).
const BRAND = Symbol.for("siogate.WebhookVerificationError");

/** Thrown by {@link verifyWebhook}; `code` says what failed. Answer 401. */
export class WebhookVerificationError extends Error {
  readonly code: WebhookErrorCode;

  constructor(code: WebhookErrorCode, message: string) {
    super(message);
    this.name = "WebhookVerificationError";
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

export interface VerifyWebhookOptions {
  /** Seconds the timestamp may be off `now`, either way (default 300). */
  tolerance?: number;
  /** The receiver's clock in unix seconds (default `Date.now() / 1000`). */
  now?: number;
}

/**
 * Check that a webhook request was signed by the gateway with `secret`, and
 * recently. Resolves when it was; rejects with a {@link WebhookVerificationError}
 * otherwise.
 *
 * `rawBody` is the request body as received: an `ArrayBuffer`
 * (`await request.arrayBuffer()`), a `Uint8Array` or Node `Buffer`, or the
 * text (`await request.text()`; the gateway always sends valid UTF-8, so the
 * text encodes back to the same bytes). `signatureHeader` and `timestampHeader`
 * are the two headers' values (`null` or `undefined` when absent). As in the
 * gateway's own check, the prefix and hex digits may be in either case and
 * surrounding whitespace is ignored. The signature is checked before the time,
 * so a wrong secret is reported as `signature_mismatch` even on an old request.
 */
export async function verifyWebhook(
  rawBody: BytesLike,
  signatureHeader: string | null | undefined,
  timestampHeader: string | null | undefined,
  secret: BytesLike,
  options: VerifyWebhookOptions = {},
): Promise<void> {
  const tolerance = options.tolerance ?? DEFAULT_TOLERANCE;
  if (typeof tolerance !== "number" || !Number.isFinite(tolerance) || tolerance < 0) {
    throw new RangeError("tolerance must be a non-negative number of seconds");
  }
  const now = options.now ?? Date.now() / 1000;
  if (typeof now !== "number" || !Number.isFinite(now)) {
    throw new RangeError("now must be a number of unix seconds");
  }
  const body = toBytes(rawBody);
  if (typeof signatureHeader !== "string") {
    throw new WebhookVerificationError("missing_signature", "the request has no X-Siogate-Signature header");
  }
  if (typeof timestampHeader !== "string") {
    throw new WebhookVerificationError("missing_timestamp", "the request has no X-Siogate-Timestamp header");
  }
  const value = signatureHeader.trim();
  const mac = value.slice(0, PREFIX.length).toLowerCase() === PREFIX ? fromHex(value.slice(PREFIX.length), MAC_BYTES) : undefined;
  if (mac === undefined) {
    throw new WebhookVerificationError("malformed_signature", "X-Siogate-Signature is not sha256= and 64 hex digits");
  }
  const timestamp = timestampHeader.trim();
  if (!TIMESTAMP.test(timestamp)) {
    throw new WebhookVerificationError("malformed_timestamp", "X-Siogate-Timestamp is not a decimal number of unix seconds");
  }
  const prefix = utf8(`${timestamp}.`);
  const signed = new Uint8Array(prefix.byteLength + body.byteLength);
  signed.set(prefix, 0);
  signed.set(body, prefix.byteLength);
  // The comparison itself is constant time: see hmacVerify.
  if (!(await hmacVerify(secret, mac, signed))) {
    throw new WebhookVerificationError(
      "signature_mismatch",
      "the signature does not match the body and timestamp under this secret",
    );
  }
  const age = now - Number(timestamp);
  if (age > tolerance) {
    throw new WebhookVerificationError(
      "timestamp_too_old",
      `signed ${Math.round(age)} s ago, more than the ${tolerance} s tolerance (a replayed request, or a clock off)`,
    );
  }
  if (-age > tolerance) {
    throw new WebhookVerificationError(
      "timestamp_in_future",
      `signed ${Math.round(-age)} s ahead of this clock, more than the ${tolerance} s tolerance (a clock off)`,
    );
  }
}
