"""SM4 block cipher (GB/T 32907-2016) in ECB, CBC and GCM modes, through `cryptography` (OpenSSL).

Message formats used by the helpers below (and by `vpp crypto sm4-encrypt`):

- CBC: ciphertext with PKCS#7 padding; `seal_cbc` prepends the 16-byte IV.
- GCM: 12-byte nonce, 16-byte tag appended to the ciphertext (as RFC 8998 / TLS use it);
  `seal_gcm` prepends the nonce.

CBC gives no integrity: use GCM (or CBC + HMAC-SM3) for anything that crosses a network.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from security.errors import CryptoError, DecryptionError, KeyFormatError

__all__ = [
    "BLOCK_SIZE",
    "GCM_NONCE_SIZE",
    "GCM_TAG_SIZE",
    "KEY_SIZE",
    "decrypt_block",
    "decrypt_cbc",
    "decrypt_gcm",
    "encrypt_block",
    "encrypt_cbc",
    "encrypt_gcm",
    "generate_key",
    "open_cbc",
    "open_gcm",
    "seal_cbc",
    "seal_gcm",
]

KEY_SIZE = 16
BLOCK_SIZE = 16
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16


def _key(key: bytes) -> algorithms.SM4:
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"SM4 key must be {KEY_SIZE} bytes, got {len(key)}")
    return algorithms.SM4(bytes(key))


def _iv(iv: bytes) -> bytes:
    if len(iv) != BLOCK_SIZE:
        raise CryptoError(f"SM4-CBC IV must be {BLOCK_SIZE} bytes, got {len(iv)}")
    return bytes(iv)


def _nonce(nonce: bytes) -> bytes:
    if len(nonce) != GCM_NONCE_SIZE:
        raise CryptoError(f"SM4-GCM nonce must be {GCM_NONCE_SIZE} bytes, got {len(nonce)}")
    return bytes(nonce)


def generate_key() -> bytes:
    """A fresh random 16-byte SM4 key from the operating system's CSPRNG."""
    return os.urandom(KEY_SIZE)


def encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt whole 16-byte blocks in ECB mode (for known-answer tests and key wrapping only)."""
    if len(block) % BLOCK_SIZE:
        raise CryptoError(
            f"SM4-ECB input must be a multiple of {BLOCK_SIZE} bytes, got {len(block)}"
        )
    enc = Cipher(_key(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def decrypt_block(key: bytes, block: bytes) -> bytes:
    """Decrypt whole 16-byte blocks in ECB mode."""
    if len(block) % BLOCK_SIZE:
        raise CryptoError(
            f"SM4-ECB input must be a multiple of {BLOCK_SIZE} bytes, got {len(block)}"
        )
    dec = Cipher(_key(key), modes.ECB()).decryptor()
    return dec.update(block) + dec.finalize()


def encrypt_cbc(key: bytes, iv: bytes, plaintext: bytes, *, pad: bool = True) -> bytes:
    """SM4-CBC encrypt; PKCS#7-pad unless `pad` is False (then the input must be block-aligned)."""
    if pad:
        p = padding.PKCS7(BLOCK_SIZE * 8).padder()
        plaintext = p.update(plaintext) + p.finalize()
    elif len(plaintext) % BLOCK_SIZE:
        raise CryptoError(f"unpadded SM4-CBC input must be a multiple of {BLOCK_SIZE} bytes")
    enc = Cipher(_key(key), modes.CBC(_iv(iv))).encryptor()
    return enc.update(plaintext) + enc.finalize()


def decrypt_cbc(key: bytes, iv: bytes, ciphertext: bytes, *, pad: bool = True) -> bytes:
    """SM4-CBC decrypt and strip PKCS#7 padding; DecryptionError if the padding is wrong."""
    if not ciphertext or len(ciphertext) % BLOCK_SIZE:
        raise DecryptionError(
            f"SM4-CBC ciphertext must be a non-empty multiple of {BLOCK_SIZE} bytes, "
            f"got {len(ciphertext)}"
        )
    dec = Cipher(_key(key), modes.CBC(_iv(iv))).decryptor()
    data = dec.update(ciphertext) + dec.finalize()
    if not pad:
        return data
    u = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return u.update(data) + u.finalize()
    except ValueError:
        raise DecryptionError("SM4-CBC padding is invalid (wrong key or corrupted data)") from None


def encrypt_gcm(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """SM4-GCM encrypt: ciphertext || 16-byte tag. Never reuse a nonce under the same key."""
    enc = Cipher(_key(key), modes.GCM(_nonce(nonce))).encryptor()
    if aad:
        enc.authenticate_additional_data(aad)
    ct = enc.update(plaintext) + enc.finalize()
    return ct + enc.tag


def decrypt_gcm(key: bytes, nonce: bytes, data: bytes, aad: bytes = b"") -> bytes:
    """SM4-GCM decrypt ciphertext || tag; DecryptionError if the tag does not match."""
    if len(data) < GCM_TAG_SIZE:
        raise DecryptionError(f"SM4-GCM input shorter than its {GCM_TAG_SIZE}-byte tag")
    ct, tag = data[:-GCM_TAG_SIZE], data[-GCM_TAG_SIZE:]
    dec = Cipher(_key(key), modes.GCM(_nonce(nonce), tag)).decryptor()
    if aad:
        dec.authenticate_additional_data(aad)
    try:
        return dec.update(ct) + dec.finalize()
    except InvalidTag:
        raise DecryptionError(
            "SM4-GCM authentication failed (wrong key, nonce or AAD, or tampered data)"
        ) from None


def seal_gcm(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt with a fresh random nonce: nonce(12) || ciphertext || tag(16)."""
    nonce = os.urandom(GCM_NONCE_SIZE)
    return nonce + encrypt_gcm(key, nonce, plaintext, aad)


def open_gcm(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of `seal_gcm`."""
    if len(blob) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
        raise DecryptionError(
            f"SM4-GCM message is {len(blob)} bytes, shorter than nonce + tag "
            f"({GCM_NONCE_SIZE + GCM_TAG_SIZE})"
        )
    return decrypt_gcm(key, blob[:GCM_NONCE_SIZE], blob[GCM_NONCE_SIZE:], aad)


def seal_cbc(key: bytes, plaintext: bytes) -> bytes:
    """Encrypt with a fresh random IV: iv(16) || PKCS#7-padded ciphertext."""
    iv = os.urandom(BLOCK_SIZE)
    return iv + encrypt_cbc(key, iv, plaintext)


def open_cbc(key: bytes, blob: bytes) -> bytes:
    """Inverse of `seal_cbc`."""
    if len(blob) < 2 * BLOCK_SIZE:
        raise DecryptionError(
            f"SM4-CBC message is {len(blob)} bytes, shorter than IV + one block ({2 * BLOCK_SIZE})"
        )
    return decrypt_cbc(key, blob[:BLOCK_SIZE], blob[BLOCK_SIZE:])
