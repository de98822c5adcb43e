"""Handshake JWTs and the HTTP API key.

Hostile tokens are built by hand here (base64url + hmac from the standard
library), not with the code under test, so a bug in minting cannot hide a
bug in verification.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
import warnings
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import siogate.auth
from siogate.auth import ANONYMOUS, Identity, JwtVerifier, check_bearer, mint_token
from siogate.auth.strength import GENERATE_HINT, MIN_SECRET_LENGTH, secret_problem
from siogate.errors import AuthError, ConfigError
from siogate.types import Room, UserId, is_socket_id, new_socket_id

SECRET = "unit-test-jwt-secret-0123456789abcdef"  # 37 bytes: no short-key warning
OTHER_SECRET = "another-jwt-secret-0123456789abcdef00"
PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
    "kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n"
    "0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\n"
    "cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\n"
    "mwIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def craft(
    header: dict[str, Any],
    claims: dict[str, Any] | bytes,
    *,
    key: str | bytes | None = SECRET,
) -> str:
    """Build a compact JWS by hand; ``key=None`` leaves the signature empty."""
    head = b64url(json.dumps(header).encode())
    raw = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    body = b64url(raw)
    signing_input = f"{head}.{body}".encode()
    if key is None:
        return f"{head}.{body}."
    key_bytes = key.encode() if isinstance(key, str) else key
    signature = hmac.new(key_bytes, signing_input, hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def valid_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 600, **extra}


HS256 = {"alg": "HS256", "typ": "JWT"}


@pytest.fixture
def verifier() -> JwtVerifier:
    return JwtVerifier(SECRET)


def refused(verifier: JwtVerifier, token: object) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    return str(info.value)


# Public surface


def test_public_names_are_exported() -> None:
    assert sorted(siogate.auth.__all__) == sorted(
        ["ANONYMOUS", "BasicAuth", "Identity", "JwtVerifier", "check_bearer", "mint_token"]
    )
    for name in siogate.auth.__all__:
        assert getattr(siogate.auth, name) is not None


def test_identity_is_frozen_and_anonymous_is_empty() -> None:
    assert ANONYMOUS == Identity(user=None)
    assert ANONYMOUS.user is None
    assert ANONYMOUS.rooms == ()
    assert dict(ANONYMOUS.claims) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        ANONYMOUS.user = "mallory"  # type: ignore[misc, assignment]


# Accepted tokens


def test_hand_built_token_gives_identity(verifier: JwtVerifier) -> None:
    claims = valid_claims(rooms=["news", "room:42"], role="admin")
    identity = verifier.verify(craft(HS256, claims))
    assert identity.user == "alice"
    assert identity.rooms == ("news", "room:42")
    assert identity.claims["role"] == "admin"
    assert identity.claims["exp"] == claims["exp"]


def test_pyjwt_token_is_accepted(verifier: JwtVerifier) -> None:
    claims = valid_claims(rooms=["a"])
    token = pyjwt.encode(claims, SECRET, algorithm="HS256")
    assert verifier.verify(token) == Identity(
        user=UserId("alice"),
        rooms=(Room("a"),),
        claims=pyjwt.decode(token, SECRET, algorithms=["HS256"]),
        namespaces=None,
        expires=float(claims["exp"]),
    )


def test_token_without_sub_or_rooms_is_anonymous_user(verifier: JwtVerifier) -> None:
    identity = verifier.verify(craft(HS256, {"exp": int(time.time()) + 60}))
    assert identity.user is None
    assert identity.rooms == ()


def test_limits_are_inclusive(verifier: JwtVerifier) -> None:
    rooms = [f"r{i}" for i in range(99)] + ["x" * 256]
    identity = verifier.verify(craft(HS256, valid_claims(sub="u" * 256, rooms=rooms)))
    assert identity.user == "u" * 256
    assert len(identity.rooms) == 100


# Signature and algorithm


def test_alg_none_is_refused(verifier: JwtVerifier) -> None:
    for alg in ("none", "None", "NONE", ""):
        token = craft({"alg": alg, "typ": "JWT"}, valid_claims(), key=None)
        assert refused(verifier, token) == "invalid token"
    # Same, with a signature made by the right secret: the header still decides.
    token = craft({"alg": "none"}, valid_claims())
    assert refused(verifier, token) == "invalid token"


def test_missing_alg_is_refused(verifier: JwtVerifier) -> None:
    assert refused(verifier, craft({"typ": "JWT"}, valid_claims())) == "invalid token"


def test_other_secret_is_refused(verifier: JwtVerifier) -> None:
    token = craft(HS256, valid_claims(), key=OTHER_SECRET)
    assert refused(verifier, token) == "invalid token"


def test_tampered_claims_are_refused(verifier: JwtVerifier) -> None:
    head, _, signature = craft(HS256, valid_claims()).split(".")
    forged_body = b64url(json.dumps(valid_claims(sub="root")).encode())
    assert refused(verifier, f"{head}.{forged_body}.{signature}") == "invalid token"


def test_rs256_header_is_refused_even_with_a_valid_hmac(verifier: JwtVerifier) -> None:
    # RS/HS confusion: an RS256 header over an HMAC signature. Both made with
    # the real secret, so only the algorithm pin can refuse it.
    for alg in ("RS256", "ES256", "PS256", "HS512", "HS384"):
        token = craft({"alg": alg, "typ": "JWT"}, valid_claims())
        assert refused(verifier, token) == "invalid token"


def test_hmac_over_a_public_key_is_refused(verifier: JwtVerifier) -> None:
    # The classic attack: sign with the server's *public* key as HMAC secret.
    for alg in ("RS256", "HS256"):
        token = craft({"alg": alg}, valid_claims(), key=PUBLIC_KEY_PEM)
        assert refused(verifier, token) == "invalid token"


def test_public_key_cannot_be_configured_as_hmac_secret() -> None:
    with pytest.raises(ConfigError):
        JwtVerifier(PUBLIC_KEY_PEM)
    with pytest.raises(ConfigError):
        JwtVerifier("")


def test_unsupported_crit_header_is_refused(verifier: JwtVerifier) -> None:
    token = craft({"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1}, valid_claims())
    assert refused(verifier, token) == "invalid token"


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c",
        "..",
        "a.b.c.d",
        "!!!.???.***",
        b64url(b"not json") + "." + b64url(b"{}") + ".",
        b64url(b"[1]") + "." + b64url(b"{}") + ".",
    ],
)
def test_malformed_tokens_are_refused(verifier: JwtVerifier, token: str) -> None:
    assert refused(verifier, token) == "invalid token"


@pytest.mark.parametrize("claims", [b"[1, 2]", b'"text"', b"not json", b"null"])
def test_claims_must_be_an_object(verifier: JwtVerifier, claims: bytes) -> None:
    assert refused(verifier, craft(HS256, claims)) == "invalid token"


@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_auth_error(text: str) -> None:
    verifier = JwtVerifier(SECRET)
    with pytest.raises(AuthError):
        verifier.verify(text)


# Input shape


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(verifier: JwtVerifier, token: object) -> None:
    assert refused(verifier, token) == "missing token"


@pytest.mark.parametrize("token", [123, b"a.b.c", ["a.b.c"], {"token": "x"}, 1.5, True])
def test_non_string_token(verifier: JwtVerifier, token: object) -> None:
    assert refused(verifier, token) == "invalid token"


def test_huge_token_is_refused_before_decoding(verifier: JwtVerifier) -> None:
    assert refused(verifier, "a" * 8193) == "token too long"
    # A correctly signed token is refused too: the limit is on length alone.
    big = craft(HS256, valid_claims(padding="x" * 9000))
    assert refused(verifier, big) == "token too long"


def test_token_at_length_limit_is_decoded(verifier: JwtVerifier) -> None:
    claims = valid_claims()

    def padded(n: int) -> str:
        return craft(HS256, {**claims, "padding": "x" * n})

    # base64 turns 3 bytes into 4 chars: estimate, then walk to the limit.
    n = (8192 - len(padded(0))) * 3 // 4
    while len(padded(n)) > 8192:
        n -= 1
    while len(padded(n + 1)) <= 8192:
        n += 1
    token = padded(n)
    assert 8189 <= len(token) <= 8192
    assert verifier.verify(token).user == "alice"
    assert refused(verifier, token + "A" * (8193 - len(token))) == "token too long"


# Time claims


def test_expired_token(verifier: JwtVerifier) -> None:
    token = craft(HS256, valid_claims(exp=int(time.time()) - 5))
    assert refused(verifier, token) == "token expired"


def test_expiry_is_exclusive(verifier: JwtVerifier) -> None:
    # exp is the first instant the token is no longer valid.
    token = craft(HS256, valid_claims(exp=time.time() - 0.001))
    assert refused(verifier, token) == "token expired"


def test_leeway_accepts_slightly_expired_token() -> None:
    token = craft(HS256, valid_claims(exp=int(time.time()) - 5))
    assert JwtVerifier(SECRET, leeway=30).verify(token).user == "alice"
    assert refused(JwtVerifier(SECRET, leeway=1), token) == "token expired"


def test_missing_exp(verifier: JwtVerifier) -> None:
    assert refused(verifier, craft(HS256, {"sub": "alice"})) == "token has no exp"
    assert refused(verifier, craft(HS256, {"sub": "alice", "exp": None})) == "token has no exp"


@pytest.mark.parametrize(
    "raw_exp", ['"9999999999"', "true", "[1]", "NaN", "Infinity", "1e400", "{}"]
)
def test_exp_must_be_a_finite_number(verifier: JwtVerifier, raw_exp: str) -> None:
    claims = f'{{"sub":"alice","exp":{raw_exp}}}'.encode()
    assert refused(verifier, craft(HS256, claims)) == "invalid exp claim"


def test_huge_integer_exp_does_not_crash(verifier: JwtVerifier) -> None:
    claims = b'{"sub":"alice","exp":' + b"9" * 400 + b"}"
    assert verifier.verify(craft(HS256, claims)).user == "alice"


def test_float_exp_is_accepted(verifier: JwtVerifier) -> None:
    assert verifier.verify(craft(HS256, valid_claims(exp=time.time() + 60.5))).user == "alice"


def test_nbf_in_the_future(verifier: JwtVerifier) -> None:
    token = craft(HS256, valid_claims(nbf=int(time.time()) + 60))
    assert refused(verifier, token) == "token not yet valid"
    assert JwtVerifier(SECRET, leeway=120).verify(token).user == "alice"
    past = craft(HS256, valid_claims(nbf=int(time.time()) - 60))
    assert verifier.verify(past).user == "alice"
    assert refused(verifier, craft(HS256, valid_claims(nbf="soon"))) == "invalid nbf claim"


def test_iat_is_type_checked_but_may_be_slightly_ahead(verifier: JwtVerifier) -> None:
    ahead = craft(HS256, valid_claims(iat=int(time.time()) + 2))
    assert verifier.verify(ahead).user == "alice"
    assert refused(verifier, craft(HS256, valid_claims(iat="now"))) == "invalid iat claim"


def test_audience_is_refused(verifier: JwtVerifier) -> None:
    token = craft(HS256, valid_claims(aud="billing-service"))
    assert refused(verifier, token) == "token audience not accepted"
    listed = craft(HS256, valid_claims(aud=["billing-service", "siogate"]))
    assert refused(verifier, listed) == "token audience not accepted"


def test_expires_is_the_exp_claim(verifier: JwtVerifier) -> None:
    exp = time.time() + 60.25
    assert verifier.verify(craft(HS256, valid_claims(exp=exp))).expires == exp
    assert verifier.verify(craft(HS256, valid_claims(exp=int(exp)))).expires == float(int(exp))
    assert ANONYMOUS.expires is None and ANONYMOUS.namespaces is None


def test_huge_exp_gives_a_finite_expiry(verifier: JwtVerifier) -> None:
    claims = b'{"sub":"alice","exp":' + b"9" * 400 + b"}"
    expires = verifier.verify(craft(HS256, claims)).expires
    assert expires is not None and time.time() + 7000 * 365 * 86400 < expires < float("inf")


def test_verifier_exposes_its_leeway_and_refuses_a_bad_one() -> None:
    assert JwtVerifier(SECRET).leeway == 0.0
    assert JwtVerifier(SECRET, leeway=2.5).leeway == 2.5
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError):
            JwtVerifier(SECRET, leeway=bad)


# Issuer and audience


def test_issuer_must_match_when_configured() -> None:
    strict = JwtVerifier(SECRET, issuer="https://auth.example.org")
    good = craft(HS256, valid_claims(iss="https://auth.example.org"))
    assert strict.verify(good).user == "alice"
    for claims in (
        valid_claims(),
        valid_claims(iss="https://evil.example.org"),
        valid_claims(iss=["https://auth.example.org"]),
        valid_claims(iss=None),
    ):
        assert refused(strict, craft(HS256, claims)) == "token issuer not accepted", claims
    # Without an issuer configured, iss is not looked at.
    assert JwtVerifier(SECRET).verify(good).user == "alice"


@pytest.mark.parametrize(
    "aud", ["siogate", ["siogate"], ["billing", "siogate"], ["siogate", "siogate"]]
)
def test_audience_accepted_when_it_names_the_gateway(aud: object) -> None:
    strict = JwtVerifier(SECRET, audience="siogate")
    assert strict.verify(craft(HS256, valid_claims(aud=aud))).user == "alice"


@pytest.mark.parametrize("aud", [None, "billing", ["billing"], [], "", "siogate2", ["Siogate"]])
def test_audience_refused_when_it_does_not_name_the_gateway(aud: object) -> None:
    strict = JwtVerifier(SECRET, audience="siogate")
    claims = valid_claims() if aud is None else valid_claims(aud=aud)
    assert refused(strict, craft(HS256, claims)) == "token audience not accepted"


@pytest.mark.parametrize("aud", [1, {"siogate": True}, ["siogate", 1], True])
def test_malformed_audience_is_refused(aud: object) -> None:
    strict = JwtVerifier(SECRET, audience="siogate")
    assert refused(strict, craft(HS256, valid_claims(aud=aud))) == "invalid aud claim"


def test_issuer_and_audience_together() -> None:
    strict = JwtVerifier(SECRET, issuer="me", audience="siogate")
    assert strict.verify(craft(HS256, valid_claims(iss="me", aud="siogate"))).user == "alice"
    wrong_iss = craft(HS256, valid_claims(iss="you", aud="siogate"))
    assert refused(strict, wrong_iss) == "token issuer not accepted"
    wrong_aud = craft(HS256, valid_claims(iss="me", aud="other"))
    assert refused(strict, wrong_aud) == "token audience not accepted"


# Namespace scope


def test_namespaces_claim_limits_the_token() -> None:
    identity = JwtVerifier(SECRET).verify(
        craft(HS256, valid_claims(namespaces=["/chat", "/admin", "/chat"]))
    )
    assert identity.namespaces == frozenset({"/chat", "/admin"})
    assert JwtVerifier(SECRET).verify(craft(HS256, valid_claims())).namespaces is None
    empty = JwtVerifier(SECRET).verify(craft(HS256, valid_claims(namespaces=[])))
    assert empty.namespaces == frozenset()  # a token for no namespace at all
    null = JwtVerifier(SECRET).verify(craft(HS256, valid_claims(namespaces=None)))
    assert null.namespaces is None


@pytest.mark.parametrize(
    "namespaces",
    [
        "/chat",
        ["chat"],
        [""],
        ["/" + "x" * 256],
        [1],
        [["/chat"]],
        {"/chat": True},
        [f"/n{i}" for i in range(101)],
    ],
)
def test_bad_namespaces_claim(verifier: JwtVerifier, namespaces: object) -> None:
    token = craft(HS256, valid_claims(namespaces=namespaces))
    assert refused(verifier, token) == "invalid namespaces claim"


def test_namespaces_claim_limits_are_inclusive(verifier: JwtVerifier) -> None:
    names = [f"/n{i}" for i in range(99)] + ["/" + "x" * 255]
    identity = verifier.verify(craft(HS256, valid_claims(namespaces=names)))
    assert identity.namespaces == frozenset(names)


# siogate claims


@pytest.mark.parametrize("sub", [123, "", "x" * 257, ["alice"], {"id": 1}, True])
def test_bad_sub(verifier: JwtVerifier, sub: object) -> None:
    assert refused(verifier, craft(HS256, valid_claims(sub=sub))) == "invalid sub claim"


@pytest.mark.parametrize(
    "rooms",
    [
        "news",
        {"news": True},
        [1],
        [""],
        ["x" * 257],
        ["ok", None],
        [["nested"]],
        [f"r{i}" for i in range(101)],
    ],
)
def test_bad_rooms(verifier: JwtVerifier, rooms: object) -> None:
    assert refused(verifier, craft(HS256, valid_claims(rooms=rooms))) == "invalid rooms claim"


def test_a_room_shaped_like_a_socket_id_is_refused(verifier: JwtVerifier) -> None:
    # It would address that socket, not a room (see siogate.hub).
    token = craft(HS256, valid_claims(rooms=["news", new_socket_id()]))
    assert refused(verifier, token).startswith("invalid rooms claim: a room name may not be")
    with pytest.raises(ValueError, match="shaped like a socket id"):
        mint_token(SECRET, sub="a", rooms=[new_socket_id()])


def test_null_rooms_means_none(verifier: JwtVerifier) -> None:
    assert verifier.verify(craft(HS256, valid_claims(rooms=None))).rooms == ()
    assert verifier.verify(craft(HS256, valid_claims(rooms=[]))).rooms == ()


# Secrets and warnings


def test_short_secret_logs_once_and_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    short = "short-secret"
    with caplog.at_level(logging.WARNING, logger="siogate.auth"):
        verifier = JwtVerifier(short)
    assert [r.getMessage() for r in caplog.records] == [
        "jwt secret shorter than 32 bytes (12): tokens are easier to forge"
    ]
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        token = mint_token(short, sub="bob")
        for _ in range(3):
            assert verifier.verify(token).user == "bob"
        refused(verifier, craft(HS256, valid_claims(), key=short + "x"))
    assert caught == []
    assert caplog.records == []


def test_long_secret_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="siogate.auth"):
        JwtVerifier("k" * 32)
    assert caplog.records == []


def test_verifiers_do_not_share_keys() -> None:
    first, second = JwtVerifier(SECRET), JwtVerifier(OTHER_SECRET)
    token = mint_token(SECRET, sub="alice")
    assert first.verify(token).user == "alice"
    assert refused(second, token) == "invalid token"
    assert first.verify(token).user == "alice"


# mint_token


def test_mint_token_claims_are_exact() -> None:
    token = mint_token(SECRET, sub="alice", rooms=["a", "b"], ttl=120, now=1_700_000_000.7)
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = pyjwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims == {
        "sub": "alice",
        "rooms": ["a", "b"],
        "iat": 1_700_000_000,
        "exp": 1_700_000_120,
    }


def test_mint_token_round_trips_through_verifier(verifier: JwtVerifier) -> None:
    identity = verifier.verify(mint_token(SECRET, sub="carol", rooms=("r1",)))
    assert (identity.user, identity.rooms) == ("carol", ("r1",))
    anonymous_user = verifier.verify(mint_token(SECRET, sub=None))
    assert anonymous_user.user is None
    assert "rooms" not in anonymous_user.claims
    assert "sub" not in anonymous_user.claims


def test_minted_token_expires(verifier: JwtVerifier) -> None:
    assert refused(verifier, mint_token(SECRET, sub="a", ttl=-1)) == "token expired"
    old = mint_token(SECRET, sub="a", ttl=60, now=time.time() - 120)
    assert refused(verifier, old) == "token expired"


def test_mint_token_optional_claims() -> None:
    token = mint_token(
        SECRET, sub="a", namespaces=["/chat"], issuer="me", audience="siogate", now=1_700_000_000
    )
    claims = pyjwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience="siogate",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "sub": "a",
        "namespaces": ["/chat"],
        "iss": "me",
        "aud": "siogate",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    identity = JwtVerifier(SECRET, issuer="me", audience="siogate").verify(
        mint_token(SECRET, sub="a", namespaces=["/chat"], issuer="me", audience="siogate")
    )
    assert identity.namespaces == frozenset({"/chat"})
    with pytest.raises(ValueError):
        mint_token(SECRET, sub="a", namespaces=["chat"])


def test_mint_token_refuses_what_verify_would_refuse() -> None:
    with pytest.raises(ValueError):
        mint_token(SECRET, sub="")
    with pytest.raises(ValueError):
        mint_token(SECRET, sub="x" * 257)
    with pytest.raises(ValueError):
        mint_token(SECRET, sub="a", rooms=[""])
    with pytest.raises(ValueError):
        mint_token(SECRET, sub="a", rooms=[f"r{i}" for i in range(101)])


@given(
    sub=st.one_of(st.none(), st.text(min_size=1, max_size=256)),
    rooms=st.lists(
        st.text(min_size=1, max_size=256).filter(lambda r: not is_socket_id(r)), max_size=5
    ),
)
def test_mint_verify_round_trip(sub: str | None, rooms: list[str]) -> None:
    identity = JwtVerifier(SECRET).verify(mint_token(SECRET, sub=sub, rooms=rooms))
    assert identity.user == sub
    assert identity.rooms == tuple(rooms)


# API key


API_KEY = "api-key-0123456789abcdef"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {API_KEY}",
        f"bearer {API_KEY}",
        f"BEARER {API_KEY}",
        f"BeArEr {API_KEY}",
        f"  Bearer {API_KEY}  ",
        f"Bearer   {API_KEY}",
    ],
)
def test_bearer_accepted(header: str) -> None:
    assert check_bearer(header, API_KEY) is True


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        API_KEY,
        f"Basic {API_KEY}",
        f"Token {API_KEY}",
        f"Bearer{API_KEY}",
        f"Bearer\t{API_KEY}",
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY.upper()}",
        f"Bearer {API_KEY} {API_KEY}",
        "Bearer \udcff",
        "Bearer ключ",
    ],
)
def test_bearer_refused(header: str | None) -> None:
    assert check_bearer(header, API_KEY) is False


def test_empty_api_key_never_matches() -> None:
    assert check_bearer("Bearer ", "") is False
    assert check_bearer("Bearer", "") is False
    assert check_bearer("", "") is False


def test_non_ascii_api_key() -> None:
    assert check_bearer("Bearer ключ-🔑", "ключ-🔑") is True
    assert check_bearer("Bearer ключ-🔐", "ключ-🔑") is False


@given(
    key=st.text(min_size=1).filter(lambda k: k == k.strip() and " " not in k),
    other=st.text(),
)
def test_bearer_matches_only_its_key(key: str, other: str) -> None:
    assert check_bearer(f"Bearer {key}", key) is True
    assert check_bearer(f"Bearer {other}", key) is (other.strip() == key)


# Secret strength (what `siogate serve` accepts as a key or secret)


@pytest.mark.parametrize(
    "value",
    [
        "secret",
        "changeme",
        "x" * 31,
        "0123456789abcdef0123456789abcde",  # 31 characters
    ],
)
def test_short_secrets_are_refused(value: str) -> None:
    assert secret_problem(value) == f"is shorter than {MIN_SECRET_LENGTH} characters"


@pytest.mark.parametrize(
    "value",
    [
        "j" * 32,
        "x" * 64,
        "change-me-api-key-0123456789abcdef",
        "CHANGEME-0123456789abcdefghijklmnopq",
        "replace-me-with-a-random-api-key-0001",
        "your-api-key-goes-here-0123456789abc",
        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
        "sk_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "an-example-secret-0123456789abcdefghij",
        "<put a long random secret in here, please>",
        "secretsecretsecretsecretsecretsecret",
        "password-password-password-password",
        "test-test-test-test-1111-2222-3333",
        "my-webhook-secret-for-testing-123",
        "abababababababababababababababababab",
        "Password123Password123Password123",
    ],
)
def test_placeholder_secrets_are_refused(value: str) -> None:
    problem = secret_problem(value)
    assert problem is not None and "placeholder" in problem, (value, problem)


@pytest.mark.parametrize(
    "value",
    [
        "test-api-key-0123456789abcdef0123456789",  # the suite's own (tests/conftest.py)
        "whsec-e2e-0123456789abcdef0123456789",
        "6sYb0S9Qp6m1m0xJ3pQ0wPZb2sQ5u2iR8QmVjH7xZ4E",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    ],
)
def test_real_looking_secrets_pass(value: str) -> None:
    assert secret_problem(value) is None


def test_generated_secrets_always_pass() -> None:
    # The rules must never refuse what the documented command (or openssl) prints.
    for _ in range(20_000):
        assert secret_problem(secrets.token_urlsafe(32)) is None
        assert secret_problem(secrets.token_hex(16)) is None
    assert "secrets.token_urlsafe(32)" in GENERATE_HINT


def test_mint_token_is_the_jws_pyjwt_makes() -> None:
    # siogate.auth.minting signs with the stdlib (siogate-client ships without PyJWT); its
    # tokens are byte for byte the compact JWS that PyJWS makes of the same claims.
    from siogate.auth.minting import mint_token as stdlib_mint

    token = stdlib_mint(SECRET, sub="zoë", rooms=["r"], ttl=60, now=1_700_000_000, issuer="i")
    claims = token.split(".")[1]
    payload = base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4))
    assert token == pyjwt.PyJWS().encode(payload, SECRET, algorithm="HS256")
    with pytest.raises(ConfigError):
        stdlib_mint("", sub="a")
