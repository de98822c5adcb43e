/**
 * siogate: the backend SDK for the siogate realtime gateway.
 *
 * Everything public is re-exported here; the other modules are private.
 */

export { Siogate, DEFAULT_RETRIES, DEFAULT_TIMEOUT } from "./client.js";
export type {
  AckOptions,
  BatchResult,
  EmitOptions,
  EmitWithAckOptions,
  FetchLike,
  HistoryOptions,
  NamespaceOptions,
  PageOptions,
  RequestOptions,
  SiogateOptions,
} from "./client.js";
export { SiogateError } from "./errors.js";
export type { ApiErrorCode, ClientErrorCode, SiogateErrorCode } from "./errors.js";
export { signToken, DEFAULT_TOKEN_TTL, MAX_CLAIM_LENGTH, MAX_TOKEN_ROOMS } from "./token.js";
export type { TokenOptions } from "./token.js";
export { verifyWebhook, WebhookVerificationError, SIGNATURE_HEADER, TIMESTAMP_HEADER, DEFAULT_TOLERANCE } from "./webhook.js";
export type { VerifyWebhookOptions, WebhookErrorCode } from "./webhook.js";
export type {
  AckReply,
  AckResult,
  BytesLike,
  DisconnectBody,
  EmitBody,
  EmitTarget,
  HistoryMessage,
  ListingStatus,
  Paged,
  PresenceListing,
  RoomChange,
  RoomHistory,
  RoomInfo,
  RoomPresenceListing,
  RoomsListing,
  SocketInfo,
  SocketsListing,
  SocketSelector,
  UserCount,
  UserPresence,
  WebhookPayload,
  WebhookReply,
  WebhookSocket,
} from "./types.js";
