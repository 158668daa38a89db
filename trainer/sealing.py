"""Sealed (encrypted) data files: AES-256-GCM in authenticated chunks.

Layout of a sealed file::

    header  = MAGIC (8 bytes) | chunk size (u32, big endian) | file nonce (12 random bytes)
    chunk i = AES-256-GCM(file key, nonce_i, plaintext_i, aad_i)   (ciphertext + 16-byte tag)

* file key = HKDF-SHA256(data key, salt = file nonce): every file gets its own key, so
  nonces can never repeat under one key however many files share the data key.
* nonce_i = file nonce XOR i (as 12 bytes), the TLS 1.3 construction.
* aad_i = header | i (u64) | final flag (1 byte). Binding the index and the final flag into
  each chunk's tag makes reordered, dropped, duplicated or truncated chunks fail to
  authenticate; binding the header protects the chunk size.

Every chunk holds `chunk size` plaintext bytes except the last (which may be shorter or
empty); an empty plaintext is one empty final chunk. Decryption is in memory only.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"STSEAL1\n"
SCHEME = "aes-256-gcm-chunked-v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">8sI12s")
_KDF_INFO = b"sealtune data file key v1"


class SealError(ValueError):
    """A sealed file is malformed, truncated, tampered with or sealed under another key."""


def parse_key(raw: bytes) -> bytes:
    """Accepts 32 raw bytes, 64 hex characters or base64 of 32 bytes (surrounding whitespace
    allowed for the text forms). The three forms differ in length, so none is ambiguous."""
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return binascii.unhexlify(text)
        except binascii.Error:
            pass
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) == KEY_BYTES:
        return key
    raise SealError("the data key must be 32 raw bytes, 64 hex characters or base64 of 32 bytes")


def load_key(path: Path) -> bytes:
    return parse_key(path.read_bytes())


def _file_key(key: bytes, file_nonce: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise SealError("the data key must be 32 bytes")
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=file_nonce,
                   info=_KDF_INFO).derive(key)
    return AESGCM(derived)


def _nonce(file_nonce: bytes, index: int) -> bytes:
    mixed = int.from_bytes(file_nonce, "big") ^ index
    return mixed.to_bytes(NONCE_BYTES, "big")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, int(final))


def seal_stream(src: BinaryIO, dst: BinaryIO, key: bytes,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    """Encrypts `src` into `dst`, one chunk in memory at a time."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise SealError(f"chunk size must be between 1 and {MAX_CHUNK_BYTES} bytes")
    file_nonce = os.urandom(NONCE_BYTES)
    header = _HEADER.pack(MAGIC, chunk_bytes, file_nonce)
    aead = _file_key(key, file_nonce)
    dst.write(header)
    # Read one chunk ahead: a chunk is final exactly when nothing follows it.
    index, chunk = 0, src.read(chunk_bytes)
    while True:
        following = src.read(chunk_bytes)
        final = not following
        dst.write(aead.encrypt(_nonce(file_nonce, index), chunk, _aad(header, index, final)))
        if final:
            return
        index, chunk = index + 1, following


def seal_bytes(plaintext: bytes, key: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(plaintext), out, key, chunk_bytes)
    return out.getvalue()


def open_sealed(sealed: bytes, key: bytes) -> bytes:
    """Decrypts and authenticates a whole sealed file held in memory."""
    view = memoryview(sealed)
    if len(view) < _HEADER.size + TAG_BYTES:
        raise SealError("too short to be a sealed file")
    magic, chunk_bytes, file_nonce = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise SealError("not a sealed file (bad magic)")
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise SealError("invalid chunk size in header")
    header = bytes(view[: _HEADER.size])
    aead = _file_key(key, file_nonce)
    stride = chunk_bytes + TAG_BYTES
    parts: list[bytes] = []
    offset, index = _HEADER.size, 0
    while True:
        piece = view[offset : offset + stride]
        if len(piece) < TAG_BYTES:
            raise SealError("truncated sealed file")
        offset += len(piece)
        final = offset == len(view)
        try:
            parts.append(aead.decrypt(_nonce(file_nonce, index), piece, _aad(header, index, final)))
        except InvalidTag:
            raise SealError(
                f"chunk {index} failed authentication (tampered, truncated or wrong key)"
            ) from None
        if final:
            return b"".join(parts)
        index += 1
