"""The siogate exception tree.

* SiogateError
  + ProtocolError      malformed Engine.IO / Socket.IO input (Sans-I/O)
  + PayloadTooLarge    a packet, payload or body exceeds ``max_payload``
  + AuthError          a handshake token or API key was refused
  + ConfigError        invalid settings; ``siogate serve`` exits with status 2
  + WebhookError       the webhook did not answer usefully
  + ApiError           an HTTP API request is refused; carries ``status`` and ``code``

API error codes are stable strings, grouped by HTTP status:

========  =========================================================
status    codes
========  =========================================================
400       ``bad_request``, ``invalid_json``, ``invalid_field``,
          ``reserved_event``, ``unknown_namespace``, ``invalid_cursor``,
          ``too_many_results``, ``invalid_idempotency_key``
401       ``unauthorized``
404       ``not_found``
405       ``method_not_allowed``
409       ``idempotency_key_in_progress``
413       ``payload_too_large``
422       ``idempotency_key_reused``
431       ``header_too_large`` (more than 16 KiB or 100 header lines)
500       ``internal`` (a bug; logged with its traceback)
503       ``broker_unavailable`` (cluster mode: Redis did not confirm the
          command; this node did not apply it)
========  =========================================================
"""

from __future__ import annotations


class SiogateError(Exception):
    """Root of every error siogate raises on purpose."""


class ProtocolError(SiogateError):
    """Input that does not follow Engine.IO v4 / Socket.IO v5 (Sans-I/O)."""


class PayloadTooLarge(ProtocolError):
    """A packet, polling payload or request body is larger than allowed."""


class AuthError(SiogateError):
    """A credential was refused; the message is safe to show to the client."""


class ConfigError(SiogateError):
    """Settings that cannot work together or cannot be parsed."""


class WebhookError(SiogateError):
    """The webhook failed: unreachable, timed out, non-2xx or unreadable reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApiError(SiogateError):
    """An HTTP API request refused with a stable ``code`` and an HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}
