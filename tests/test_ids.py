"""Public ids: their shape, and that every character is equally likely
(an id is a bearer of nothing, but a biased alphabet would shrink the space
an id is guessed from)."""

from __future__ import annotations

import collections
import string

import pytest

from core import ids

ALPHABET = set(string.ascii_letters + string.digits)


def test_ids_have_the_prefix_and_24_characters_of_the_alphabet() -> None:
    for make, prefix in [
        (ids.new_run_id, "run_"),
        (ids.new_message_id, "msg_"),
        (ids.new_file_id, "file-"),
        (ids.new_vector_store_id, "vs_"),
    ]:
        made = make()
        assert made.startswith(prefix)
        token = made.removeprefix(prefix)
        assert len(token) == 24
        assert set(token) <= ALPHABET


def test_tokens_are_uniform_over_the_alphabet() -> None:
    # 62 characters, 240,000 draws: ~3,871 each. A modulo bias (keeping the
    # bytes 248-255) would give the first 8 characters ~4,690 and the rest
    # ~3,750, a chi-square of ~1,580; over 61 degrees of freedom a uniform
    # source stays under 110 with p > 0.9999.
    counts = collections.Counter("".join(ids.random_token() for _ in range(10_000)))
    assert set(counts) == ALPHABET
    expected = sum(counts.values()) / len(ALPHABET)
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    assert chi2 < 110, chi2


def test_rejected_bytes_are_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first read is all bytes the mapping rejects (>= 248), the second
    # maps to known characters: the token comes only from the second.
    reads = iter([bytes([255]) * 56, bytes(range(56))])
    monkeypatch.setattr(ids.secrets, "token_bytes", lambda n: next(reads))
    alphabet = string.ascii_letters + string.digits
    assert ids.random_token(48) == "".join(alphabet[b % 62] for b in range(48))


def test_long_tokens_keep_their_length() -> None:
    assert len(ids.random_token(48)) == 48
    assert len(ids.random_token(200)) == 200
