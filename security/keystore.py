"""Private keys on disk: PKCS#8 PEM, mode 0600, optionally encrypted under a passphrase.

An encrypted key is a standard PKCS#8 `EncryptedPrivateKeyInfo` (RFC 5958) with PBES2 (RFC 8018):
PBKDF2 with HMAC-SM3 (OID 1.2.156.10197.1.401.2) derives a 16-byte SM4 key that encrypts the
plain PKCS#8 in SM4-CBC (OID 1.2.156.10197.1.104.2) — the OIDs GmSSL 3 writes. OpenSSL 3.0 has
no HMAC-SM3 PRF for PBES2, so its CLI cannot open these files; decrypt with `vpp` (or GmSSL).

Files are written atomically (temporary file beside the target, then rename), so a crash leaves
the old file or the new one. A private key file readable by group or others is refused on load,
as ssh refuses such keys: fix it with `chmod 600`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from asn1crypto import core, keys, pem
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from security import sm4
from security.errors import DecryptionError, KeyFormatError, SecurityError
from security.sm2 import SM2PrivateKey, load_private_key

__all__ = [
    "DEFAULT_ITERATIONS",
    "KeyFileUnprotected",
    "KeyStoreError",
    "WrongPassphrase",
    "decrypt_private_key",
    "encrypt_private_key",
    "is_encrypted",
    "load_private_key_file",
    "save_private_key",
    "write_atomic",
]

DEFAULT_ITERATIONS = 300_000
"""PBKDF2-HMAC-SM3 iterations for new files (~0.15 s here); the count is stored in the file."""
HMAC_SM3_OID = "1.2.156.10197.1.401.2"
SM4_CBC_OID = "1.2.156.10197.1.104.2"
_LABEL = "ENCRYPTED PRIVATE KEY"


class KeyStoreError(SecurityError):
    """A key file could not be read or written, or is not protected as it must be."""


class WrongPassphrase(KeyStoreError):
    """The passphrase does not open this encrypted key (or none was given for an encrypted key)."""


class KeyFileUnprotected(KeyStoreError):
    """A private key file is readable or writable by group or others."""


def _derive(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(hashes.SM3(), sm4.KEY_SIZE, salt, iterations).derive(passphrase)


def encrypt_private_key(
    key: SM2PrivateKey, passphrase: bytes, *, iterations: int = DEFAULT_ITERATIONS
) -> bytes:
    """PEM "ENCRYPTED PRIVATE KEY": PBES2 / PBKDF2-HMAC-SM3 / SM4-CBC over the PKCS#8 key."""
    if not passphrase:
        raise KeyStoreError("an empty passphrase does not protect a key")
    if iterations < 1000:
        raise KeyStoreError(f"PBKDF2 iterations must be >= 1000, got {iterations}")
    salt, iv = os.urandom(16), os.urandom(sm4.BLOCK_SIZE)
    ct = sm4.encrypt_cbc(_derive(passphrase, salt, iterations), iv, key.to_der())
    info = keys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": {
                "algorithm": "pbes2",
                "parameters": {
                    "key_derivation_func": {
                        "algorithm": "pbkdf2",
                        "parameters": {
                            "salt": {"specified": salt},
                            "iteration_count": iterations,
                            "prf": {"algorithm": HMAC_SM3_OID, "parameters": core.Null()},
                        },
                    },
                    "encryption_scheme": {
                        "algorithm": SM4_CBC_OID,
                        "parameters": core.OctetString(iv),
                    },
                },
            },
            "encrypted_data": ct,
        }
    )
    return bytes(pem.armor(_LABEL, info.dump()))


def is_encrypted(data: bytes) -> bool:
    """True if `data` is a PEM encrypted PKCS#8 key."""
    return f"-----BEGIN {_LABEL}-----".encode() in data


def decrypt_private_key(data: bytes, passphrase: bytes) -> SM2PrivateKey:
    """The key inside PEM or DER EncryptedPrivateKeyInfo; WrongPassphrase if it does not open."""
    der = bytes(data)
    if pem.detect(der):
        try:
            label, _, der = pem.unarmor(der)
        except ValueError as e:
            raise KeyFormatError(f"encrypted key: bad PEM: {e}") from None
        if label != _LABEL:
            raise KeyFormatError(f"expected PEM {_LABEL}, found {label}")
    try:
        info = keys.EncryptedPrivateKeyInfo.load(der)
        alg = info["encryption_algorithm"]
        if alg["algorithm"].dotted != "1.2.840.113549.1.5.13":
            raise KeyFormatError(f"encrypted key: scheme {alg['algorithm'].dotted} is not PBES2")
        params = alg["parameters"]
        kdf = params["key_derivation_func"]
        if kdf["algorithm"].dotted != "1.2.840.113549.1.5.12":
            raise KeyFormatError(f"encrypted key: KDF {kdf['algorithm'].dotted} is not PBKDF2")
        kp = kdf["parameters"]
        prf = kp["prf"]["algorithm"].dotted
        if prf != HMAC_SM3_OID:
            raise KeyFormatError(f"encrypted key: PBKDF2 PRF {prf} is not HMAC-SM3")
        scheme = params["encryption_scheme"]
        if scheme["algorithm"].dotted != SM4_CBC_OID:
            raise KeyFormatError(
                f"encrypted key: cipher {scheme['algorithm'].dotted} is not SM4-CBC"
            )
        salt = bytes(kp["salt"].chosen.native)
        iterations = int(kp["iteration_count"].native)
        iv = scheme["parameters"]
        iv_bytes = bytes(iv.native if isinstance(iv, core.OctetString) else iv.parsed.native)
        ct = bytes(info["encrypted_data"].native)
    except KeyFormatError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise KeyFormatError(f"malformed encrypted private key: {e}") from None
    if not 1 <= iterations <= 10_000_000:
        raise KeyFormatError(f"encrypted key: PBKDF2 iteration count {iterations} out of range")
    try:
        plain = sm4.decrypt_cbc(_derive(passphrase, salt, iterations), iv_bytes, ct)
        return SM2PrivateKey.from_der(plain)
    except (DecryptionError, KeyFormatError, SecurityError):
        raise WrongPassphrase("wrong passphrase for the encrypted private key") from None


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename, with permissions `mode`."""
    path = Path(path)
    if not overwrite and path.exists():
        raise KeyStoreError(f"{path} exists; refusing to overwrite it")
    parent = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise KeyStoreError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyStoreError(f"cannot write {path}: {e.strerror or e}") from None


def save_private_key(
    path: Path,
    key: SM2PrivateKey,
    passphrase: bytes | None = None,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    overwrite: bool = False,
) -> None:
    """Write a private key file (mode 0600), encrypted if a passphrase is given."""
    data = (
        key.to_pem()
        if not passphrase
        else encrypt_private_key(key, passphrase, iterations=iterations)
    )
    write_atomic(Path(path), data, mode=0o600, overwrite=overwrite)


def load_private_key_file(
    path: Path, passphrase: bytes | None = None, *, check_mode: bool = True
) -> SM2PrivateKey:
    """Read a private key file; refuse one others can read; decrypt it if it is encrypted."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as e:
        raise KeyStoreError(f"cannot read private key {path}: {e.strerror or e}") from None
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileUnprotected(
            f"private key {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can "
            f"access it; run chmod 600 {path}"
        )
    if is_encrypted(data):
        if not passphrase:
            raise WrongPassphrase(f"private key {path} is encrypted: a passphrase is needed")
        return decrypt_private_key(data, passphrase)
    try:
        return load_private_key(data)
    except KeyFormatError as e:
        raise KeyFormatError(f"private key {path}: {e}") from None
