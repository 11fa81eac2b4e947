"""Errors of the security room: one typed hierarchy, each naming what was wrong."""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "CryptoError",
    "DecryptionError",
    "KeyExchangeError",
    "KeyFormatError",
    "SecurityError",
]


class SecurityError(Exception):
    """Base of every error raised by the security room."""


class CryptoError(SecurityError):
    """A cryptographic operation was refused or failed (bad input, library failure)."""


class KeyFormatError(CryptoError):
    """A key, public point or key file is malformed, of the wrong size, curve or type."""


class BadSignature(CryptoError):
    """A signature did not verify, or is not a well-formed signature at all."""


class DecryptionError(CryptoError):
    """Ciphertext refused: authentication tag, padding or SM2 check value (C3) did not match."""


class KeyExchangeError(CryptoError):
    """SM2 key exchange failed: invalid peer point or a key-confirmation value did not match."""
