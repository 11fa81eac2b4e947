"""Secrets at rest: site-file values sealed with SM4-GCM under a master key.

A sealed value is the text `enc:sm4:` + base64(nonce || ciphertext || tag), with the fixed label
`vpp-secret-v1` as associated data. The master key (16 bytes) comes from `VPP_MASTER_KEY` (hex)
or from the file named by `VPP_MASTER_KEY_FILE` (default var/master.key, mode 0600). The model
keeps sealed values as plain strings; they are revealed only where they are used.

Business data at rest (ColumnCipher, site `at_rest.encrypt_business_data`): the same form under
the same master key, with the field's context ("commands.value:ID", "audit_log.detail:SEQ") in
the associated data, so a sealed field moved to another row or column does not open. It
implements twin.sealing.FieldSealer for the command store and the audit log.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from security import sm4
from security.errors import CryptoError, DecryptionError, SecurityError

__all__ = [
    "PREFIX",
    "ColumnCipher",
    "MasterKeyError",
    "is_sealed",
    "load_master_key",
    "new_master_key_file",
    "reveal",
    "seal",
]

PREFIX = "enc:sm4:"
_AAD = b"vpp-secret-v1"
_COLUMN_AAD = b"vpp-column-v1\x00"
DEFAULT_KEY_FILE = Path("var/master.key")


class MasterKeyError(SecurityError):
    """No usable master key."""


def is_sealed(value: object) -> bool:
    """True for a string sealed by seal()."""
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(plaintext: str, key: bytes) -> str:
    """Seal a secret for the site file."""
    blob = sm4.seal_gcm(key, plaintext.encode(), _AAD)
    return PREFIX + base64.b64encode(blob).decode("ascii")


def reveal(value: str, key: bytes | None = None) -> str:
    """The plaintext of a sealed value; an unsealed value is returned as it is."""
    if not is_sealed(value):
        return value
    key = load_master_key() if key is None else key
    try:
        blob = base64.b64decode(value[len(PREFIX) :], validate=True)
    except ValueError as e:
        raise DecryptionError(f"sealed value is not valid base64: {e}") from e
    try:
        return sm4.open_gcm(key, blob, _AAD).decode()
    except (CryptoError, UnicodeDecodeError) as e:
        raise DecryptionError(
            "sealed value does not open with this master key (wrong key or altered value)"
        ) from e


def load_master_key() -> bytes:
    """The master key from VPP_MASTER_KEY (hex) or the key file; MasterKeyError naming the problem."""
    env = os.environ.get("VPP_MASTER_KEY")
    if env:
        try:
            key = bytes.fromhex(env.strip())
        except ValueError as e:
            raise MasterKeyError("VPP_MASTER_KEY is not hex") from e
        if len(key) != 16:
            raise MasterKeyError(f"VPP_MASTER_KEY must be 16 bytes (32 hex digits), not {len(key)}")
        return key
    path = Path(os.environ.get("VPP_MASTER_KEY_FILE", str(DEFAULT_KEY_FILE)))
    try:
        st = path.stat()
        data = path.read_text().strip()
    except OSError as e:
        raise MasterKeyError(
            f"no master key: set VPP_MASTER_KEY or create {path} (`vpp secrets init`): {e.strerror}"
        ) from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(f"{path} is readable by others: chmod 600 {path}")
    try:
        key = bytes.fromhex(data)
    except ValueError as e:
        raise MasterKeyError(f"{path} does not hold a hex key") from e
    if len(key) != 16:
        raise MasterKeyError(f"{path} must hold 16 bytes (32 hex digits)")
    return key


def new_master_key_file(path: Path) -> bytes:
    """Create a key file (0600) with a fresh key; refuses to overwrite."""
    key = sm4.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


class ColumnCipher:
    """SM4-GCM for business-data columns, each value bound to its context (twin FieldSealer)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise MasterKeyError(f"an SM4 key is 16 bytes, not {len(key)}")
        self._key = key
        self.sealed = 0
        self.opened = 0

    @classmethod
    def from_master_key(cls) -> ColumnCipher:
        """With the master key (VPP_MASTER_KEY or the key file); MasterKeyError if there is none."""
        return cls(load_master_key())

    def seal(self, text: str, context: str) -> str:
        """The stored form of text in context."""
        blob = sm4.seal_gcm(self._key, text.encode(), _COLUMN_AAD + context.encode())
        self.sealed += 1
        return PREFIX + base64.b64encode(blob).decode("ascii")

    def open(self, stored: str, context: str) -> str:
        """The text of a stored field (unsealed fields unchanged); DecryptionError naming it."""
        if not is_sealed(stored):
            return stored
        try:
            blob = base64.b64decode(stored[len(PREFIX) :], validate=True)
            text = sm4.open_gcm(self._key, blob, _COLUMN_AAD + context.encode()).decode()
        except (ValueError, CryptoError, UnicodeDecodeError) as e:
            raise DecryptionError(
                f"{context}: sealed value does not open with this master key (wrong key, or the "
                "value was altered or moved from another row)"
            ) from e
        self.opened += 1
        return text
