from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtune_trainer import sealing

pytestmark = pytest.mark.trainer

KEY = bytes(range(32))
HEADER = 24


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=5000), chunk=st.integers(min_value=1, max_value=700))
def test_round_trip(plaintext: bytes, chunk: int) -> None:
    sealed = sealing.seal_bytes(plaintext, KEY, chunk)
    assert sealing.open_sealed(sealed, KEY) == plaintext
    if len(plaintext) >= 16:
        assert plaintext not in sealed


def test_same_plaintext_seals_differently() -> None:
    assert sealing.seal_bytes(b"x" * 100, KEY) != sealing.seal_bytes(b"x" * 100, KEY)


def _chunks(sealed: bytes, chunk: int) -> list[bytes]:
    body = sealed[HEADER:]
    stride = chunk + 16
    return [body[i : i + stride] for i in range(0, len(body), stride)]


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0, max_value=HEADER + 3 * 26 - 1))
def test_any_flipped_byte_is_detected(position: int) -> None:
    sealed = bytearray(sealing.seal_bytes(b"0123456789" * 3, KEY, chunk_bytes=10))
    sealed[position] ^= 0x01
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(bytes(sealed), KEY)


def test_truncation_at_a_chunk_boundary_is_detected() -> None:
    sealed = sealing.seal_bytes(b"a" * 40, KEY, chunk_bytes=10)
    chunks = _chunks(sealed, 10)
    assert len(chunks) == 4
    truncated = sealed[:HEADER] + b"".join(chunks[:2])
    with pytest.raises(sealing.SealError, match="chunk 1"):
        sealing.open_sealed(truncated, KEY)


def test_reordered_and_duplicated_chunks_are_detected() -> None:
    sealed = sealing.seal_bytes(b"abcdefghij" * 3, KEY, chunk_bytes=10)
    first, second, third = _chunks(sealed, 10)
    for body in (second + first + third, first + first + third):
        with pytest.raises(sealing.SealError):
            sealing.open_sealed(sealed[:HEADER] + body, KEY)


def test_wrong_key_fails() -> None:
    sealed = sealing.seal_bytes(b"secret", KEY)
    with pytest.raises(sealing.SealError, match="wrong key"):
        sealing.open_sealed(sealed, os.urandom(32))


def test_empty_plaintext_is_one_final_chunk() -> None:
    sealed = sealing.seal_bytes(b"", KEY)
    assert len(sealed) == HEADER + 16
    assert sealing.open_sealed(sealed, KEY) == b""


def test_key_forms() -> None:
    assert sealing.parse_key(KEY) == KEY
    assert sealing.parse_key(KEY.hex().encode() + b"\n") == KEY
    assert sealing.parse_key(base64.b64encode(KEY) + b"\n") == KEY
    for bad in (b"short", b"z" * 64, base64.b64encode(b"x" * 16)):
        with pytest.raises(sealing.SealError):
            sealing.parse_key(bad)
