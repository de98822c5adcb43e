"""Webhook signatures over timestamp and body, checked against vectors computed
independently, and the receiver's check with its replay tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

import siogate.webhooks
from siogate.webhooks import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    sign,
    signed_headers,
    verify_request,
    verify_signature,
)

SECRET = "whsec-0123456789abcdef"
BODY = b'{"type":"event","event":"chat","args":["hi \xf0\x9f\x91\x8b"]}'
NOW = 1_800_000_000
TS = str(NOW)


def reference(body: bytes, secret: str, timestamp: str = TS) -> str:
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def test_public_names_are_exported() -> None:
    assert sorted(siogate.webhooks.__all__) == sorted(
        [
            "DEFAULT_TOLERANCE",
            "LATENCY_BUCKETS",
            "SIGNATURE_HEADER",
            "TIMESTAMP_HEADER",
            "WebhookDispatcher",
            "WebhookSettings",
            "WebhookStats",
            "WebhookVerificationError",
            "sign",
            "signed_headers",
            "verify_request",
            "verify_signature",
        ]
    )
    for name in siogate.webhooks.__all__:
        assert getattr(siogate.webhooks, name) is not None


def test_header_names_and_default_tolerance() -> None:
    assert SIGNATURE_HEADER == "X-Siogate-Signature"
    assert TIMESTAMP_HEADER == "X-Siogate-Timestamp"
    assert DEFAULT_TOLERANCE == 300


def test_matches_independent_hmac_of_timestamp_dot_body() -> None:
    assert sign(BODY, SECRET, NOW) == reference(BODY, SECRET)
    assert sign(b"", SECRET, NOW) == reference(b"", SECRET)
    assert sign(BODY, "clé-🔑", NOW) == reference(BODY, "clé-🔑")


def test_signed_headers_use_whole_seconds() -> None:
    headers = signed_headers(BODY, SECRET, NOW + 0.9)
    assert headers == {TIMESTAMP_HEADER: TS, SIGNATURE_HEADER: reference(BODY, SECRET)}


def test_the_timestamp_is_signed() -> None:
    # The same body at another time has another signature: a captured signature
    # cannot be sent again with a fresh timestamp.
    assert sign(BODY, SECRET, NOW) != sign(BODY, SECRET, NOW + 1)
    assert verify_signature(BODY, SECRET, reference(BODY, SECRET), str(NOW + 1)) is False


def test_verify_accepts_own_and_reference_signature() -> None:
    assert verify_signature(BODY, SECRET, sign(BODY, SECRET, NOW), TS) is True
    assert verify_signature(BODY, SECRET, reference(BODY, SECRET), TS) is True
    verify_request(BODY, SECRET, reference(BODY, SECRET), TS, now=NOW)


def test_verify_is_lenient_on_case_and_surrounding_space() -> None:
    digest = reference(BODY, SECRET).removeprefix("sha256=")
    assert verify_signature(BODY, SECRET, "SHA256=" + digest.upper(), TS) is True
    assert verify_signature(BODY, SECRET, f"  sha256={digest}\t", f" {TS} ") is True


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256",
        "sha1=" + hashlib.sha1(BODY).hexdigest(),
        reference(BODY, SECRET).removeprefix("sha256="),  # no prefix
        reference(BODY, SECRET)[:-1],  # truncated
        reference(BODY, SECRET) + "0",  # extended
        reference(BODY, "wrong-secret"),
        reference(BODY + b" ", SECRET),
        "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(),  # no ts
        "sha256=" + "zz" * 32,
        "sha256=ø" + "0" * 63,
        "sha256=\udcff",
    ],
)
def test_verify_refuses(header: str | None) -> None:
    assert verify_signature(BODY, SECRET, header, TS) is False


@pytest.mark.parametrize("timestamp", [None, "", "-1", "1.5", "1e9", "0x10", "١٢٣", "9" * 16])
def test_verify_refuses_timestamps_that_are_not_unix_seconds(timestamp: str | None) -> None:
    assert verify_signature(BODY, SECRET, reference(BODY, SECRET), timestamp) is False


def code(
    signature: str | None, timestamp: str | None, *, now: float = NOW, tolerance: float = 300
) -> str:
    with pytest.raises(WebhookVerificationError) as info:
        verify_request(BODY, SECRET, signature, timestamp, now=now, tolerance=tolerance)
    assert str(info.value) == info.value.message
    return info.value.code


def test_verify_request_says_what_failed() -> None:
    good = reference(BODY, SECRET)
    assert code(None, TS) == "missing_signature"
    assert code(good, None) == "missing_timestamp"
    assert code("sha256=abc", TS) == "malformed_signature"
    assert code(good, "yesterday") == "malformed_timestamp"
    assert code(reference(BODY, "other"), TS) == "signature_mismatch"
    assert code(good, str(NOW - 1)) == "signature_mismatch"  # the timestamp was changed


def test_verify_request_refuses_old_and_future_timestamps() -> None:
    good = reference(BODY, SECRET)
    # Within the tolerance either way: accepted.
    for now in (NOW - 300, NOW, NOW + 300):
        verify_request(BODY, SECRET, good, TS, now=now)
    # A replay 301 s later, or a sender clock 301 s ahead.
    assert code(good, TS, now=NOW + 301) == "timestamp_too_old"
    assert code(good, TS, now=NOW - 301) == "timestamp_in_future"
    # The tolerance is a parameter.
    verify_request(BODY, SECRET, good, TS, now=NOW + 3000, tolerance=3600)
    assert code(good, TS, now=NOW + 11, tolerance=10) == "timestamp_too_old"
    # A wrong signature is reported as such even when it is also stale.
    assert code(reference(BODY, "other"), TS, now=NOW + 10_000) == "signature_mismatch"


def test_verify_request_messages_are_clear() -> None:
    with pytest.raises(WebhookVerificationError, match=r"signed 301 s ago.*300 s tolerance"):
        verify_request(BODY, SECRET, reference(BODY, SECRET), TS, now=NOW + 301)


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_a_bad_tolerance_is_a_caller_error(tolerance: float) -> None:
    with pytest.raises(ValueError):
        verify_request(BODY, SECRET, reference(BODY, SECRET), TS, now=NOW, tolerance=tolerance)


@given(
    body=st.binary(max_size=2048),
    secret=st.text(min_size=1, max_size=64),
    timestamp=st.integers(min_value=0, max_value=10**12),
)
def test_round_trip_and_tamper(body: bytes, secret: str, timestamp: int) -> None:
    signature = sign(body, secret, timestamp)
    ts = str(timestamp)
    assert signature == reference(body, secret, ts)
    assert verify_signature(body, secret, signature, ts) is True
    assert verify_signature(body + b"\x00", secret, signature, ts) is False
    assert verify_signature(body, secret + "x", signature, ts) is False
    assert verify_signature(body, secret, signature, str(timestamp + 1)) is False
