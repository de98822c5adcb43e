/**
 * The HTTP API's request and response bodies (docs/http-api.md,
 * src/siogate/api/schemas.py), field for field.
 */

/** A secret or a body: text (encoded as UTF-8) or bytes (a Node `Buffer` is a `Uint8Array`). */
export type BytesLike = string | ArrayBuffer | ArrayBufferView;

/** Where an emit goes. */
export interface EmitTarget {
  /** Default `/`. */
  namespace?: string | undefined;
  /**
   * Sockets in any of these rooms; absent: every socket of the namespace.
   * `[]` is refused by the gateway (`invalid_field`), on purpose: a list your
   * backend computed empty must not reach everyone, so the SDK sends it as is.
   */
  rooms?: readonly string[] | undefined;
  /** Leave out sockets in any of these rooms. */
  except?: readonly string[] | undefined;
}

/**
 * One body of `POST /v1/emit`, and one entry of `POST /v1/batch`.
 *
 * Give `data` (the client's handler gets one argument) or `args` (one
 * argument per element), not both; with neither, the event has no arguments.
 * Values are sent with `JSON.stringify`: the API carries JSON only, no binary.
 */
export interface EmitBody extends EmitTarget {
  event: string;
  data?: unknown;
  args?: readonly unknown[] | undefined;
}

/** Socket selection of join, leave and disconnect: exactly one of `sockets` and `rooms`, non-empty. */
export type SocketSelector =
  | { /** Socket ids; unknown ids are skipped. */ sockets: readonly string[]; rooms?: never }
  | { /** The sockets in any of these rooms. */ rooms: readonly string[]; sockets?: never };

/** Body of `POST /v1/join` and `POST /v1/leave`. */
export type RoomChange = { room: string; namespace?: string | undefined } & SocketSelector;

/** Body of `POST /v1/disconnect`. */
export type DisconnectBody = { namespace?: string | undefined } & SocketSelector;

/** One entry of `GET /v1/rooms`. */
export interface RoomInfo {
  name: string;
  /** Sockets in the room. */
  sockets: number;
}

/** One entry of `GET /v1/rooms/<room>/sockets`. */
export interface SocketInfo {
  /** The socket id (also a room name). */
  id: string;
  /** The token's `sub`; `null` for an anonymous socket. */
  user: string | null;
  /** The gateway node the socket is connected to (gateways with cluster support). */
  node?: string;
  /** `false` while the socket waits in its recovery window (`--recovery-window`); absent otherwise. */
  connected?: false;
}

/** One event of `GET /v1/rooms/<room>/history`. */
export interface HistoryMessage {
  /** Pass it as `since` to get what came after. */
  offset: string;
  event: string;
  /** The event's arguments, one element per argument. */
  data: unknown[];
  /** When the gateway applied it, milliseconds since the epoch. */
  ts: number;
}

/** Body of `GET /v1/rooms/<room>/history`, oldest first. */
export interface RoomHistory {
  messages: HistoryMessage[];
  complete: boolean;
}

/**
 * How complete a listing is. Gateways with cluster support add these fields:
 * a listing gathers the answers of every live node, and `partial` is true when
 * some did not answer in time (their ids are in `nodes.missing`).
 */
export interface ListingStatus {
  partial?: boolean;
  nodes?: { answered: number; missing: string[] };
}

/** One socket's answer to an emit with ack. */
export interface AckReply {
  /** The socket id. */
  socket: string;
  /** The arguments the client passed to its ack callback (`cb(reply)`: one). */
  args: unknown[];
}

/**
 * Body of `POST /v1/emit` with `ack`: each recipient's answer, and the sockets
 * that did not answer in time or disconnected first. In a cluster, `partial`
 * is true when a node did not answer (its sockets are in neither list).
 */
export interface AckResult extends ListingStatus {
  /** Sockets the emit was sent to (answered + timed out). */
  recipients: number;
  acks: AckReply[];
  timeouts: string[];
}

/**
 * A paged listing: pass `next_cursor` as `cursor` for the next page; `null`
 * (or absent, from a gateway without paging) on the last one.
 */
export interface Paged {
  next_cursor?: string | null;
}

/** Body of `GET /v1/rooms`: rooms sorted by name, each with its socket count. */
export interface RoomsListing extends ListingStatus, Paged {
  rooms: RoomInfo[];
}

/** Body of `GET /v1/rooms/<room>/sockets`: sockets sorted by id. */
export interface SocketsListing extends ListingStatus, Paged {
  sockets: SocketInfo[];
}

/** One user's entry of `GET /v1/presence`. */
export interface UserPresence {
  online: boolean;
  /** Sockets the user has connected in the namespace, all nodes together. */
  sockets: number;
}

/** Body of `GET /v1/presence`: each asked user (a token `sub`), once. */
export interface PresenceListing extends ListingStatus {
  users: Record<string, UserPresence>;
}

/** One entry of `GET /v1/rooms/<room>/presence`. */
export interface UserCount {
  user: string;
  /** The user's sockets in the room. */
  sockets: number;
}

/** Body of `GET /v1/rooms/<room>/presence`: distinct users sorted by id. */
export interface RoomPresenceListing extends ListingStatus, Paged {
  users: UserCount[];
  /** Sockets in the room without a user (the whole room, on every page). */
  anonymous: number;
}

/** The socket a webhook request is about. */
export interface WebhookSocket {
  /** The socket id (also a room name, usable with the HTTP API). */
  id: string;
  /** The token's `sub`; `null` for an anonymous socket. */
  user: string | null;
}

/**
 * The parsed body of a webhook request (docs/webhooks.md). Parse it only after
 * `verifyWebhook` has accepted the raw bytes.
 */
export type WebhookPayload =
  | { type: "connect"; namespace: string; socket: WebhookSocket }
  | {
      type: "event";
      namespace: string;
      socket: WebhookSocket;
      event: string;
      /** The event's arguments; binary values appear as `{"_binary": "<base64>"}`. */
      args: unknown[];
    }
  | { type: "disconnect"; namespace: string; socket: WebhookSocket; reason: string };

/** What a webhook answers to an event: each element of `ack` is one argument of the client's ack. */
export interface WebhookReply {
  ack?: unknown[] | null;
}
