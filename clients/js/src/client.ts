/**
 * The HTTP API client: one method per route, over the global `fetch`.
 *
 * Each attempt is one request, bounded by a deadline (`timeout`) and the
 * caller's optional `signal`. An emit or a room change that timed out may have
 * been applied already, so every POST carries an `Idempotency-Key` (one per
 * call, the same on each attempt): the gateway answers a repeat with the first
 * answer instead of applying it again, which makes POSTs safe to retry too.
 */

import { SiogateError } from "./errors.js";
import type {
  AckResult,
  DisconnectBody,
  EmitBody,
  EmitTarget,
  PresenceListing,
  RoomChange,
  RoomHistory,
  RoomPresenceListing,
  RoomsListing,
  SocketsListing,
} from "./types.js";

/** The part of `fetch` the client uses; pass your own to add headers, caching options or tracing. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface SiogateOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8000` (a path prefix is kept). */
  url: string;
  /** The gateway's `--api-key`. */
  apiKey: string;
  /**
   * Milliseconds one attempt may take, from sending the request to reading the
   * whole answer; default 10,000. `0` or `Infinity`: no deadline.
   */
  timeout?: number | undefined;
  /**
   * Extra attempts after a network error, a timeout, 502, 503 or 504 (and, for a
   * POST, 409 `idempotency_key_in_progress`); default 2. POSTs are repeated under
   * their idempotency key, so the gateway applies them once.
   */
  retries?: number | undefined;
  /** Used instead of the global `fetch`. */
  fetch?: FetchLike | undefined;
}

/** Per-call options, accepted by every method. */
export interface RequestOptions {
  /** Abort the call (and its retries); it then rejects with code `aborted`. */
  signal?: AbortSignal | undefined;
  /** Overrides the client's `timeout` for this call, in milliseconds. */
  timeout?: number | undefined;
  /**
   * POSTs only: the `Idempotency-Key` sent on every attempt of this call (1-256
   * printable ASCII characters). Default: a random UUID per call. Give your own
   * to make a call safe to repeat across processes (e.g. `order-42:shipped`).
   */
  idempotencyKey?: string | undefined;
}

/** Options of the short form `emit(event, data, options)`. */
export interface EmitOptions extends EmitTarget, RequestOptions {}

/** How long an emit with ack waits for the answers. */
export interface AckOptions extends RequestOptions {
  /**
   * Milliseconds (1 to 60,000) the gateway waits for every recipient's answer.
   * The request's own `timeout` is extended by this much.
   */
  ackTimeout: number;
}

/** Options of the short form `emitWithAck(event, data, options)`. */
export interface EmitWithAckOptions extends EmitTarget, AckOptions {}

/** The longest `ackTimeout` the gateway takes. */
const MAX_ACK_TIMEOUT = 60_000;

/** Options of `presence()`, and the base of the listings' options. */
export interface NamespaceOptions extends RequestOptions {
  /** Default `/`. */
  namespace?: string | undefined;
}

/**
 * Options of `rooms()`, `sockets()` and `roomPresence()`. Without `limit` and
 * `cursor` the whole listing comes back, or the call rejects with code
 * `too_many_results` when it holds more than 1,000 entries.
 */
export interface PageOptions extends NamespaceOptions {
  /** Entries per page, 1 to 1,000 (default 100 when a cursor is given). */
  limit?: number | undefined;
  /** `next_cursor` of the previous page. */
  cursor?: string | undefined;
}

/** Options of `history()`. */
export interface HistoryOptions extends NamespaceOptions {
  /** Messages, 1 to 1,000 (default 100): the newest ones, or the first after `since`. */
  limit?: number | undefined;
  /** An offset (from a message or from `emit()`'s answer): only what came after it. */
  since?: string | undefined;
}

export interface BatchResult {
  /** Emits applied: the length of the list sent. */
  count: number;
}

/** Default deadline of one attempt, in milliseconds. */
export const DEFAULT_TIMEOUT = 10_000;
/** Default number of extra attempts of a call (POSTs are repeated under their idempotency key). */
export const DEFAULT_RETRIES = 2;

// setTimeout fires at once for delays past 2**31 - 1 ms; longer ones mean "none".
const MAX_TIMER = 2 ** 31 - 1;
// What a proxy answers while the gateway restarts, and the gateway's own 503
// when its cluster broker is unreachable. A 500 is a gateway bug: not retried.
const RETRY_STATUSES = new Set([502, 503, 504]);
const RETRY_BASE_DELAY = 100;
const RETRY_MAX_DELAY = 2_000;
// The gateway is still applying an earlier attempt with the same key.
const IN_PROGRESS = "idempotency_key_in_progress";
const PRINTABLE_ASCII = /^[\x20-\x7e]{1,256}$/;

type Method = "GET" | "POST";

export class Siogate {
  readonly url: string;
  readonly #apiKey: string;
  readonly #timeout: number;
  readonly #retries: number;
  readonly #fetch: FetchLike | undefined;

  constructor(options: SiogateOptions) {
    const { url, apiKey, timeout = DEFAULT_TIMEOUT, retries = DEFAULT_RETRIES } = options ?? {};
    if (typeof url !== "string" || !isHttpUrl(url)) {
      throw new TypeError("url must be an absolute http(s) URL, e.g. http://127.0.0.1:8000");
    }
    if (typeof apiKey !== "string" || apiKey.length === 0) throw new TypeError("apiKey must be a non-empty string");
    checkTimeout(timeout);
    if (!Number.isInteger(retries) || retries < 0) throw new RangeError("retries must be a non-negative integer");
    this.url = url.replace(/\/+$/, "");
    this.#apiKey = apiKey;
    this.#timeout = timeout;
    this.#retries = retries;
    this.#fetch = options.fetch;
  }

  /**
   * `POST /v1/emit`: send one event.
   *
   * Short form: `emit("news", data, {rooms: ["news"]})` sends `data` as the
   * event's one argument (leave it `undefined` for none). Full form:
   * `emit({event: "multi", args: [1, 2], rooms: ["news"]})`, any body the API
   * takes. Resolves once the gateway has applied the emit.
   */
  emit(event: string, data?: unknown, options?: EmitOptions): Promise<void>;
  emit(body: EmitBody, options?: RequestOptions): Promise<void>;
  async emit(
    eventOrBody: string | EmitBody,
    dataOrOptions?: unknown,
    options?: EmitOptions,
  ): Promise<void> {
    let body: Record<string, unknown>;
    let request: RequestOptions | undefined;
    if (typeof eventOrBody === "string") {
      const { namespace, rooms, except, ...rest } = options ?? {};
      body = { event: eventOrBody };
      if (dataOrOptions !== undefined) body["data"] = dataOrOptions;
      Object.assign(body, defined({ namespace, rooms, except }));
      request = rest;
    } else if (typeof eventOrBody === "object" && eventOrBody !== null) {
      body = { ...eventOrBody };
      request = dataOrOptions as RequestOptions | undefined;
    } else {
      throw new TypeError("emit takes an event name or an emit body");
    }
    await this.#request("POST", "/v1/emit", body, request, expectOk);
  }

  /**
   * `POST /v1/emit` with `ack`: send one event, each recipient with an ack id,
   * and resolve once every recipient answered (`socket.on(event, (data, cb) =>
   * cb(reply))`) or disconnected, or `ackTimeout` ms passed. Same two forms as
   * `emit`. The gateway refuses more than `--max-ack-recipients` recipients
   * (`too_many_recipients`) before sending anything.
   */
  emitWithAck(event: string, data: unknown, options: EmitWithAckOptions): Promise<AckResult>;
  emitWithAck(body: EmitBody, options: AckOptions): Promise<AckResult>;
  async emitWithAck(
    eventOrBody: string | EmitBody,
    dataOrOptions: unknown,
    options?: EmitWithAckOptions,
  ): Promise<AckResult> {
    let body: Record<string, unknown>;
    let ack: AckOptions;
    if (typeof eventOrBody === "string") {
      const { namespace, rooms, except, ...rest } = options ?? ({} as EmitWithAckOptions);
      body = { event: eventOrBody };
      if (dataOrOptions !== undefined) body["data"] = dataOrOptions;
      Object.assign(body, defined({ namespace, rooms, except }));
      ack = rest;
    } else if (typeof eventOrBody === "object" && eventOrBody !== null) {
      body = { ...eventOrBody };
      ack = (dataOrOptions ?? {}) as AckOptions;
    } else {
      throw new TypeError("emitWithAck takes an event name or an emit body");
    }
    const { ackTimeout, ...request } = ack;
    if (!Number.isInteger(ackTimeout) || ackTimeout < 1 || ackTimeout > MAX_ACK_TIMEOUT) {
      throw new RangeError(`ackTimeout must be an integer from 1 to ${MAX_ACK_TIMEOUT} (milliseconds)`);
    }
    body["ack"] = { timeout_ms: ackTimeout };
    const base = request.timeout ?? this.#timeout;
    checkTimeout(base);
    // 0 means no deadline; otherwise the answer may take ackTimeout longer than usual.
    const timeout = base === 0 ? 0 : base + ackTimeout;
    return this.#request("POST", "/v1/emit", body, { ...request, timeout }, (value) => {
      const result = value as Partial<AckResult>;
      return typeof result.recipients === "number" && Array.isArray(result.acks) && Array.isArray(result.timeouts)
        ? (result as AckResult)
        : undefined;
    });
  }

  /**
   * `POST /v1/batch`: several emits, validated together and applied in order.
   * One bad entry refuses them all (the message names it: `emits[1]: ...`).
   */
  async batch(emits: readonly EmitBody[], options?: RequestOptions): Promise<BatchResult> {
    return this.#request("POST", "/v1/batch", { emits }, options, (value) => {
      const count = (value as { count?: unknown }).count;
      return typeof count === "number" ? { count } : undefined;
    });
  }

  /** `POST /v1/join`: add the selected sockets to `room`. */
  async join(body: RoomChange, options?: RequestOptions): Promise<void> {
    await this.#request("POST", "/v1/join", body, options, expectOk);
  }

  /** `POST /v1/leave`: remove the selected sockets from `room`. */
  async leave(body: RoomChange, options?: RequestOptions): Promise<void> {
    await this.#request("POST", "/v1/leave", body, options, expectOk);
  }

  /** `POST /v1/disconnect`: disconnect the selected sockets from the namespace. */
  async disconnect(body: DisconnectBody, options?: RequestOptions): Promise<void> {
    await this.#request("POST", "/v1/disconnect", body, options, expectOk);
  }

  /**
   * `GET /v1/rooms`: the namespace's rooms with their socket counts, sorted by
   * name, as the body the gateway sent: `(await siogate.rooms()).rooms`. With
   * `limit` or `cursor`: one page, and `next_cursor` for the next.
   */
  async rooms(options?: PageOptions): Promise<RoomsListing> {
    const { namespace, limit, cursor, ...request } = options ?? {};
    return this.#request("GET", `/v1/rooms${query({ namespace, limit, cursor })}`, undefined, request, (value) =>
      Array.isArray((value as { rooms?: unknown }).rooms) ? (value as RoomsListing) : undefined,
    );
  }

  /**
   * `GET /v1/rooms/<room>/sockets`: the sockets in `room` (a socket id works
   * too), sorted by id, as the body the gateway sent:
   * `(await siogate.sockets("news")).sockets`. Paged as `rooms()`.
   */
  async sockets(room: string, options?: PageOptions): Promise<SocketsListing> {
    if (typeof room !== "string") throw new TypeError("room must be a string");
    const { namespace, limit, cursor, ...request } = options ?? {};
    const path = `/v1/rooms/${encodeURIComponent(room)}/sockets${query({ namespace, limit, cursor })}`;
    return this.#request("GET", path, undefined, request, (value) =>
      Array.isArray((value as { sockets?: unknown }).sockets) ? (value as SocketsListing) : undefined,
    );
  }

  /**
   * `GET /v1/presence`: whether each of `users` (token `sub`s, at most 100) is
   * connected, and with how many sockets: `(await siogate.presence(["alice"])).users.alice.online`.
   */
  async presence(users: readonly string[], options?: NamespaceOptions): Promise<PresenceListing> {
    if (!Array.isArray(users) || !users.every((u) => typeof u === "string")) {
      throw new TypeError("users must be an array of strings");
    }
    const { namespace, ...request } = options ?? {};
    const asked = users.map((u) => `user=${encodeURIComponent(u)}`).join("&");
    const path = `/v1/presence?${asked}${namespace === undefined ? "" : `&namespace=${encodeURIComponent(namespace)}`}`;
    return this.#request("GET", path, undefined, request, (value) => {
      const listed = (value as { users?: unknown }).users;
      return typeof listed === "object" && listed !== null && !Array.isArray(listed)
        ? (value as PresenceListing)
        : undefined;
    });
  }

  /**
   * `GET /v1/rooms/<room>/presence`: the distinct users in `room` with their
   * socket counts, sorted by user id, and the room's anonymous sockets. Paged as `rooms()`.
   */
  async roomPresence(room: string, options?: PageOptions): Promise<RoomPresenceListing> {
    if (typeof room !== "string") throw new TypeError("room must be a string");
    const { namespace, limit, cursor, ...request } = options ?? {};
    const path = `/v1/rooms/${encodeURIComponent(room)}/presence${query({ namespace, limit, cursor })}`;
    return this.#request("GET", path, undefined, request, (value) =>
      Array.isArray((value as { users?: unknown }).users) ? (value as RoomPresenceListing) : undefined,
    );
  }

  /**
   * `GET /v1/rooms/<room>/history`: the room's recent events, oldest first, with
   * their offsets; `complete` is false when some after `since` (or, without it,
   * older ones) are no longer kept. Needs `--history-size` on the gateway.
   */
  async history(room: string, options?: HistoryOptions): Promise<RoomHistory> {
    if (typeof room !== "string") throw new TypeError("room must be a string");
    const { namespace, limit, since, ...request } = options ?? {};
    const path = `/v1/rooms/${encodeURIComponent(room)}/history${query({ namespace, limit, since })}`;
    return this.#request("GET", path, undefined, request, (value) =>
      Array.isArray((value as { messages?: unknown }).messages) ? (value as RoomHistory) : undefined,
    );
  }

  async #request<T>(
    method: Method,
    path: string,
    body: unknown,
    options: RequestOptions | undefined,
    read: (value: object) => T | undefined,
  ): Promise<T> {
    const { signal, timeout = this.#timeout, idempotencyKey } = options ?? {};
    checkTimeout(timeout);
    // One key for the whole call, sent on its first attempt too: an answer lost
    // on the way back is then caught when the retry arrives.
    const key = method === "POST" ? (idempotencyKey ?? randomKey()) : undefined;
    if (key !== undefined && (typeof key !== "string" || !PRINTABLE_ASCII.test(key))) {
      throw new TypeError("idempotencyKey must be 1-256 printable ASCII characters");
    }
    const init: RequestInit = {
      method,
      // A redirect is not the gateway's answer: following it would turn a POST
      // into a GET and send the key to wherever it points. It is reported as
      // unexpected_response instead.
      redirect: "manual",
      headers: {
        accept: "application/json",
        authorization: `Bearer ${this.#apiKey}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(key === undefined ? {} : { "idempotency-key": key }),
      },
    };
    // Serialised once, before any request: a value JSON cannot hold (a BigInt,
    // a cycle) throws its TypeError here rather than as a network failure.
    if (body !== undefined) init.body = JSON.stringify(body);

    const attempts = method === "GET" || key !== undefined ? this.#retries + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(method, path, init, signal, timeout, read);
      } catch (error) {
        if (attempt >= attempts || !isRetryable(error, key !== undefined)) throw error;
      }
      await sleep(backoff(attempt), signal, method, path);
    }
  }

  async #attempt<T>(
    method: Method,
    path: string,
    init: RequestInit,
    signal: AbortSignal | undefined,
    timeout: number,
    read: (value: object) => T | undefined,
  ): Promise<T> {
    if (signal?.aborted) throw aborted(signal, method, path);
    // One controller per attempt, aborted by the deadline or by the caller's
    // signal. (AbortSignal.any would do this, but Node 18 lacks it.)
    const controller = new AbortController();
    let timedOut = false;
    const timer =
      timeout > 0 && timeout <= MAX_TIMER
        ? setTimeout(() => {
            timedOut = true;
            controller.abort();
          }, timeout)
        : undefined;
    const onAbort = (): void => controller.abort();
    signal?.addEventListener("abort", onAbort, { once: true });

    const fail = (cause: unknown): SiogateError => {
      if (signal?.aborted) return aborted(signal, method, path);
      if (timedOut) {
        return new SiogateError("timeout", `${method} ${path}: no complete answer within ${timeout} ms`, 0, { cause });
      }
      return new SiogateError("network_error", `${method} ${path}: ${describe(cause)}`, 0, { cause });
    };

    try {
      let response: Response;
      let text: string;
      try {
        const url = this.url + path;
        const request = { ...init, signal: controller.signal };
        // The global is looked up on every call, not captured: Next.js and
        // test tools replace it after this module has loaded.
        response = await (this.#fetch ? this.#fetch(url, request) : fetch(url, request));
        // Read inside the deadline: a gateway that sends headers and then
        // stalls must time out too.
        text = await response.text();
      } catch (error) {
        throw fail(error);
      }
      return interpret(response.status, text, method, path, read);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

function interpret<T>(
  status: number,
  text: string,
  method: Method,
  path: string,
  read: (value: object) => T | undefined,
): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (status >= 200 && status < 300) {
    const result = typeof value === "object" && value !== null ? read(value) : undefined;
    if (result === undefined) {
      throw new SiogateError("unexpected_response", `${method} ${path}: HTTP ${status} with an unexpected body`, status);
    }
    return result;
  }
  const error = (value as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (typeof error?.code === "string" && typeof error.message === "string") {
    return raise(new SiogateError(error.code, error.message, status));
  }
  return raise(new SiogateError("unexpected_response", `${method} ${path}: HTTP ${status}`, status));
}

function raise(error: SiogateError): never {
  throw error;
}

function expectOk(value: object): true | undefined {
  return (value as { ok?: unknown }).ok === true ? true : undefined;
}

function isRetryable(error: unknown, keyed: boolean): boolean {
  if (!(error instanceof SiogateError)) return false;
  if (error.status === 0) return error.code === "timeout" || error.code === "network_error";
  return RETRY_STATUSES.has(error.status) || (keyed && error.code === IN_PROGRESS);
}

/**
 * A random UUID (v4) for one call. Node 18 has no global Web Crypto: there the
 * key comes from Math.random, which is enough for a key that must be unique,
 * not secret.
 */
function randomKey(): string {
  const cryptoApi = globalThis.crypto as Crypto | undefined;
  if (typeof cryptoApi?.randomUUID === "function") return cryptoApi.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof cryptoApi?.getRandomValues === "function") cryptoApi.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Exponential backoff with jitter: about 100, 200, 400 ms ..., at most 2 s. */
function backoff(attempt: number): number {
  const ceiling = Math.min(RETRY_BASE_DELAY * 2 ** (attempt - 1), RETRY_MAX_DELAY);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function sleep(ms: number, signal: AbortSignal | undefined, method: Method, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(aborted(signal, method, path));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(aborted(signal!, method, path));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function aborted(signal: AbortSignal, method: Method, path: string): SiogateError {
  return new SiogateError("aborted", `${method} ${path}: aborted by the caller`, 0, { cause: signal.reason });
}

function describe(error: unknown): string {
  // undici reports "fetch failed" and keeps the useful part (ECONNREFUSED ...) in cause.
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  const detail = typeof cause?.code === "string" ? cause.code : typeof cause?.message === "string" ? cause.message : "";
  const message = error instanceof Error ? error.message : String(error);
  return detail ? `${message} (${detail})` : message;
}

function query(params: {
  namespace?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
  since?: string | undefined;
}): string {
  const { limit } = params;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new RangeError("limit must be a positive integer");
  }
  const parts = Object.entries(params)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${encodeURIComponent(String(value))}`);
  return parts.length === 0 ? "" : `?${parts.join("&")}`;
}

function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}

function checkTimeout(timeout: unknown): asserts timeout is number {
  if (typeof timeout !== "number" || Number.isNaN(timeout) || timeout < 0) {
    throw new RangeError("timeout must be a non-negative number of milliseconds (0 or Infinity: none)");
  }
}

function isHttpUrl(url: string): boolean {
  try {
    return /^https?:$/.test(new URL(url).protocol);
  } catch {
    return false;
  }
}
