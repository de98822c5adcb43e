/**
 * The one error class of the SDK.
 *
 * Every failed {@link Siogate} call rejects with a `SiogateError`, split by
 * `status`:
 *
 * * `status` > 0: an answer was read. `code` is the gateway's stable code
 *   from `{"error": {"code", "message"}}` (`invalid_field`, `unauthorized`, …,
 *   see docs/http-api.md), or `unexpected_response` for an answer not in the
 *   API's shape: a proxy's HTML 502 page, a redirect, a 2xx that is not the
 *   JSON expected.
 * * `status` === 0: no answer. `code` is one of
 *   - `timeout`: the call's own deadline (`timeout` option) passed;
 *   - `aborted`: the caller's `signal` was aborted (its reason is `cause`);
 *   - `network_error`: fetch failed (refused, reset, DNS; the fetch error is `cause`).
 *
 * Argument mistakes that no request could fix (a non-string event name, a
 * bad `ttl`) throw a plain `TypeError` or `RangeError` instead.
 */

// A registered symbol, so that `instanceof SiogateError` also holds for an error
// made by the other copy of this package: bundlers and Next.js may load both the
// ESM and the CJS build in one process (the dual package hazard).
const BRAND = Symbol.for("siogate.SiogateError");

/** Codes the SDK sets itself, when there is no gateway error to report. */
export type ClientErrorCode = "timeout" | "aborted" | "network_error" | "unexpected_response";

/** Codes the gateway answers with (docs/http-api.md, "Errors"). */
export type ApiErrorCode =
  | "invalid_json"
  | "invalid_field"
  | "reserved_event"
  | "too_many_recipients"
  | "ack_in_batch"
  | "too_many_pending_acks"
  | "unknown_namespace"
  | "invalid_cursor"
  | "too_many_results"
  | "bad_request"
  | "unauthorized"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  | "header_too_large"
  | "internal"
  | "broker_unavailable";

/** `string & {}` keeps editor completion for the known codes while allowing new ones. */
export type SiogateErrorCode = ApiErrorCode | ClientErrorCode | (string & {});

export class SiogateError extends Error {
  /** A stable, machine-readable code: the gateway's, or one of {@link ClientErrorCode}. */
  readonly code: SiogateErrorCode;
  /** The HTTP status of the answer; 0 when there was none. */
  readonly status: number;

  constructor(code: SiogateErrorCode, message: string, status = 0, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SiogateError";
    this.code = code;
    this.status = status;
    Object.defineProperty(this, BRAND, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}
