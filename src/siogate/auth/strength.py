"""Refuse credentials that look typed in by hand: short ones and placeholders.

``siogate serve`` runs every secret it is given (API key, JWT secret, webhook secret)
through :func:`secret_problem` before it starts. The rules are cheap heuristics, chosen
so that a value from ``secrets.token_urlsafe(32)`` (or ``openssl rand -hex 16``) never
trips them, while the values people paste from examples do:

* fewer than :data:`MIN_SECRET_LENGTH` characters;
* a marker that only placeholders contain (``changeme``, ``replace-me``, ``example``,
  ``placeholder``, a run of ``xxxxxx``, or a ``your-...`` / ``<...>`` template);
* too few distinct characters once the usual placeholder words (``secret``,
  ``password``, ``test``, ``key``...) and separators are set aside: ``aaaa...``,
  ``secretsecret...``, ``xxxxxxxx-xxxx-...``, ``test-test-1111...``.
"""

from __future__ import annotations

import re

__all__ = ["GENERATE_HINT", "MIN_SECRET_LENGTH", "secret_problem"]

MIN_SECRET_LENGTH = 32
"""Characters; 32 URL-safe random characters carry about 190 bits."""

GENERATE_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
"""A command that prints a suitable secret."""

# Fewer distinct characters than this, after the words below are removed, is a pattern,
# not a random value: 32 random hex digits use 8 or more symbols except about once in
# 25 million draws, 32 URL-safe characters practically always.
_MIN_DISTINCT = 8

_MARKERS = re.compile(
    r"change[-_ .]?me|replace[-_ .]?me|placeholder|example|xxxxxx|^your[-_ .]|^<.*>$|^\{\{.*\}\}$"
)
# Longest first, so that "testing" goes before "test".
_WORDS = re.compile(
    r"password|passwd|testing|webhook|changeme|default|example|secret|sample|"
    r"token|dummy|admin|hello|test|demo|your|api|jwt|key|dev|my"
)
_SEPARATORS = re.compile(r"[-_ .:/+=]")


def secret_problem(value: str) -> str | None:
    """Why ``value`` is not fit to be a secret, or ``None`` when it is."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    lowered = value.lower()
    if _MARKERS.search(lowered):
        return "looks like a placeholder"
    rest = _SEPARATORS.sub("", _WORDS.sub("", lowered))
    if len(set(rest)) < _MIN_DISTINCT:
        return "looks like a placeholder (it repeats a few characters or words)"
    return None
