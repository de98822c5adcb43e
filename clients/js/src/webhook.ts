/**
 * Webhook signatures (docs/webhooks.md).
 *
 * Every webhook request carries `X-Siogate-Signature: sha256=<hex>`, the
 * HMAC-SHA256 of the exact body bytes keyed with `--webhook-secret`. Verify it
 * over the raw body, before parsing: re-serialising parsed JSON gives other bytes.
 */

import { fromHex, hmacVerify, toBytes } from "./crypto.js";
import type { BytesLike } from "./types.js";

/** The header that carries the signature, lower-cased as `Headers.get` accepts it. */
export const SIGNATURE_HEADER = "x-siogate-signature";

const PREFIX = "sha256=";
const MAC_BYTES = 32;

/**
 * Whether `header` is the gateway's signature of `rawBody` under `secret`.
 *
 * `rawBody` is the request body as received: an `ArrayBuffer`
 * (`await request.arrayBuffer()`), a `Uint8Array` or Node `Buffer`, or the
 * text (`await request.text()`; the gateway always sends valid UTF-8, so the
 * text encodes back to the same bytes). A missing or malformed header gives
 * `false`. As in the gateway's own check, the prefix and hex digits may be in
 * either case and surrounding whitespace is ignored.
 */
export async function verifyWebhook(
  rawBody: BytesLike,
  header: string | null | undefined,
  secret: BytesLike,
): Promise<boolean> {
  const body = toBytes(rawBody);
  if (typeof header !== "string") return false;
  const value = header.trim();
  if (value.slice(0, PREFIX.length).toLowerCase() !== PREFIX) return false;
  const mac = fromHex(value.slice(PREFIX.length), MAC_BYTES);
  if (mac === undefined) return false;
  // The comparison itself is constant time: see hmacVerify.
  return hmacVerify(secret, mac, body);
}
