"""What the backend SDK raises, placed in the siogate exception tree.

* SiogateError
  + ApiError            the gateway answered with an error: ``status`` and ``code``
  + RequestError        no usable answer arrived: refused, reset, unreadable (SDK)
    - RequestTimeout    the configured timeout ran out (SDK)

:class:`~siogate.errors.ApiError` is the same class the gateway uses to refuse a
request, so the ``code`` caught here is the ``code`` of the JSON error body
(``unauthorized``, ``invalid_field``, ...; see ``docs/http-api.md``). A reply that
is not siogate's error shape (a proxy's HTML 502, say) becomes an ``ApiError``
with the code ``unexpected_response`` and the status that came back.

A ``RequestError`` from a POST leaves the outcome unknown: the gateway may have
applied the command before the answer was lost. Its ``__cause__`` is the httpx
exception.
"""

from __future__ import annotations

from siogate.errors import SiogateError

__all__ = ["RequestError", "RequestTimeout"]


class RequestError(SiogateError):
    """The request got no usable answer: connection refused or broken."""


class RequestTimeout(RequestError):
    """Connecting, sending or reading took longer than the client's ``timeout``."""
