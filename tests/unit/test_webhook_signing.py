"""Webhook body signatures, checked against vectors computed independently."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

import siogate.webhooks
from siogate.webhooks import SIGNATURE_HEADER, sign, verify_signature

SECRET = "whsec-0123456789abcdef"
BODY = b'{"type":"event","event":"chat","args":["hi \xf0\x9f\x91\x8b"]}'


def reference(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_public_names_are_exported() -> None:
    assert sorted(siogate.webhooks.__all__) == sorted(
        [
            "LATENCY_BUCKETS",
            "SIGNATURE_HEADER",
            "WebhookDispatcher",
            "WebhookSettings",
            "WebhookStats",
            "sign",
            "verify_signature",
        ]
    )
    for name in siogate.webhooks.__all__:
        assert getattr(siogate.webhooks, name) is not None


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "X-Siogate-Signature"


def test_rfc_4231_test_case_2() -> None:
    # RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?".
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(b"what do ya want for nothing?", "Jefe") == "sha256=" + expected


def test_matches_independent_hmac() -> None:
    assert sign(BODY, SECRET) == reference(BODY, SECRET)
    assert sign(b"", SECRET) == reference(b"", SECRET)


def test_secret_is_utf8() -> None:
    assert sign(BODY, "clé-🔑") == reference(BODY, "clé-🔑")


def test_verify_accepts_own_and_reference_signature() -> None:
    assert verify_signature(BODY, SECRET, sign(BODY, SECRET)) is True
    assert verify_signature(BODY, SECRET, reference(BODY, SECRET)) is True


def test_verify_is_lenient_on_case_and_surrounding_space() -> None:
    digest = reference(BODY, SECRET).removeprefix("sha256=")
    assert verify_signature(BODY, SECRET, "SHA256=" + digest.upper()) is True
    assert verify_signature(BODY, SECRET, f"  sha256={digest}\t") is True


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
        "sha256=" + "zz" * 32,
        "sha256=ø" + "0" * 63,
        "sha256=\udcff",
    ],
)
def test_verify_refuses(header: str | None) -> None:
    assert verify_signature(BODY, SECRET, header) is False


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64))
def test_round_trip_and_tamper(body: bytes, secret: str) -> None:
    signature = sign(body, secret)
    assert signature == reference(body, secret)
    assert verify_signature(body, secret, signature) is True
    assert verify_signature(body + b"\x00", secret, signature) is False
    assert verify_signature(body, secret + "x", signature) is False
