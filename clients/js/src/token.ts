/**
 * Handshake tokens: the HS256 JWTs that browsers send as `auth: {token}`.
 *
 * The gateway (src/siogate/auth/jwt.py) requires `exp`, reads `sub` (the
 * socket's user, also the room `user:<sub>`) and `rooms` (joined on connect),
 * and refuses anything it could not honour. {@link signToken} refuses the same
 * values up front, so a bad token fails in the backend that made it rather
 * than in a browser's `connect_error`.
 */

import { base64url, hmacSign, utf8 } from "./crypto.js";
import type { BytesLike } from "./types.js";

/** Longest `sub` and longest room name the gateway accepts in a token, in characters. */
export const MAX_CLAIM_LENGTH = 256;
/** Most rooms the gateway accepts in a token's `rooms` claim. */
export const MAX_TOKEN_ROOMS = 100;
/** Lifetime of a token when `ttl` is not given, in seconds. */
export const DEFAULT_TOKEN_TTL = 3600;

export interface TokenOptions {
  /** The user: becomes `socket.user` and the room `user:<sub>`. Omit for a token with no user. */
  sub?: string | undefined;
  /** Rooms the socket joins on connect. Left out of the token when empty. */
  rooms?: readonly string[] | undefined;
  /** Seconds until `exp`; default 3600. */
  ttl?: number | undefined;
  /** The issue time in seconds since the epoch; default now. For tests. */
  now?: number | undefined;
}

// The gateway counts characters the way Python does (code points), so a name of
// 256 emoji is valid although its JavaScript length is 512.
function isValidName(value: unknown): value is string {
  if (typeof value !== "string" || value.length === 0) return false;
  if (value.length <= MAX_CLAIM_LENGTH) return true;
  let count = 0;
  for (const _ of value) if (++count > MAX_CLAIM_LENGTH) return false;
  return true;
}

const HEADER = base64url(utf8(JSON.stringify({ alg: "HS256", typ: "JWT" })));

/**
 * Sign a token that a gateway started with `--jwt-secret secret` accepts.
 *
 * `iat` and `exp` are whole seconds; `exp` is `now + ttl` rounded down. Throws
 * `TypeError`/`RangeError` for values the gateway would refuse.
 */
export async function signToken(options: TokenOptions, secret: BytesLike): Promise<string> {
  const { sub, rooms = [], ttl = DEFAULT_TOKEN_TTL, now = Date.now() / 1000 } = options;
  if (sub !== undefined && !isValidName(sub)) {
    throw new TypeError(`sub must be a non-empty string of at most ${MAX_CLAIM_LENGTH} characters`);
  }
  if (!Array.isArray(rooms) || rooms.length > MAX_TOKEN_ROOMS || !rooms.every(isValidName)) {
    throw new TypeError(
      `rooms must be at most ${MAX_TOKEN_ROOMS} non-empty strings of at most ${MAX_CLAIM_LENGTH} characters`,
    );
  }
  if (!Number.isFinite(ttl) || ttl <= 0) throw new RangeError("ttl must be a positive number of seconds");
  if (!Number.isFinite(now)) throw new RangeError("now must be a finite number of seconds");

  const claims: Record<string, unknown> = { iat: Math.floor(now), exp: Math.floor(now + ttl) };
  if (sub !== undefined) claims["sub"] = sub;
  if (rooms.length > 0) claims["rooms"] = [...rooms];

  const signingInput = `${HEADER}.${base64url(utf8(JSON.stringify(claims)))}`;
  const signature = await hmacSign(secret, utf8(signingInput));
  return `${signingInput}.${base64url(signature)}`;
}
