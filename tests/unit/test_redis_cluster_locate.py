"""Locating a deployment on a Redis Cluster (siogate.broker.redis_cluster): hash tags
and addresses. Against a real cluster: tests/integration/test_redis_cluster.py."""

from __future__ import annotations

from redis.crc import key_slot

from siogate.broker.redis_cluster import (
    _owner,
    _with_address,
    has_hash_tag,
    slot_of,
    split_urls,
    tagged,
)


def test_a_prefix_becomes_a_hash_tag_unless_it_holds_one() -> None:
    assert tagged("siogate") == "{siogate}"
    assert tagged("{app}") == "{app}"
    assert tagged("eu-{app}-1") == "eu-{app}-1"
    # Redis hashes only a non-empty tag: "{}" and an unclosed "{" tag nothing.
    assert not has_hash_tag("a{}b") and tagged("a{}b") == "{a{}b}"
    assert not has_hash_tag("a{b") and tagged("a{b") == "{a{b}"


def test_every_name_under_a_tagged_prefix_is_in_one_slot() -> None:
    prefix = tagged("siogate")
    slot = slot_of(prefix)
    names = [":nodes", ":node:abcd1234", ":r:65535", ":presence:x", ":idempotency:y"]
    assert {key_slot(f"{prefix}{name}".encode()) for name in names} == {slot}
    assert slot != slot_of(tagged("other"))


def test_the_owner_keeps_the_seeds_scheme_credentials_and_options() -> None:
    seed = "rediss://user:secret@seed.example:7000/0?ssl_cert_reqs=none"
    assert _with_address(seed, "10.0.0.2", 7001) == (
        "rediss://user:secret@10.0.0.2:7001/0?ssl_cert_reqs=none"
    )
    assert _with_address("redis://h:1", "::1", 7002) == "redis://[::1]:7002"


def test_the_owner_is_read_from_cluster_slots() -> None:
    slots = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1"]],
        [5461, 10922, [b"", 7001, b"id2"]],  # endpoint not announced: the seed's host
        [10923, 16383, [b"10.0.0.3", 7002, b"id3"], [b"10.0.0.4", 7003, b"id4"]],
    ]
    seed = "redis://seed.example:7000"
    assert _owner(slots, 0, seed) == ("10.0.0.1", 7000)
    assert _owner(slots, 6000, seed) == ("seed.example", 7001)
    assert _owner(slots, 16383, seed) == ("10.0.0.3", 7002)
    assert _owner(slots[:1], 9000, seed) is None


def test_a_list_of_urls_is_split_on_commas() -> None:
    assert split_urls("redis://a:1, redis://b:2,,") == ["redis://a:1", "redis://b:2"]
