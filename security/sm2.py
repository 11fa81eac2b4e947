"""SM2 public-key cryptography (GB/T 32918 / GM/T 0003): signatures, encryption, key exchange.

Library choice (measured on this machine, one core, 100-byte messages; `openssl speed sm2` gave
~3,900 sign/s and ~4,000 verify/s in the same session):

=================  ==============  ===============================================================
binding            sign / verify   notes
=================  ==============  ===============================================================
gmssl-pyx 2.1.0    ~4,150 / ~1,700 GmSSL 3 statically linked (manylinux wheels, 3.11/3.12 checked,
(chosen)           (digest API)    Apache-2.0, released 2026); signs and verifies a precomputed
                                   e = SM3(Z || M), so any signer ID works; SM2 encryption
                                   (plaintext <= 255 bytes). Its message API re-checks the key
                                   pair on every call: ~415 sign/s, hence the digest API here.
tongsuopy 1.0.1    ~3,950 / ~3,830 fastest, cryptography-style API, but a bundled OpenSSL 1.1.1h
                                   fork (last release 2023); signer ID fixed to the default (no
                                   pre-hashed signing), no SM2 encryption, no key exchange.
gmssl-fast 0.1.0   ~1,200 / ~660   raw r||s only, no signer ID, no key exchange; first release.
gmssl 3.2.2        ~157 / ~92      pure Python.
smcryptopy 0.2.1   ~44 / ~29       Rust core; has key exchange but is far too slow.
=================  ==============  ===============================================================

gmssl-pyx covers signing (the hot path: sign once per edge terminal per dispatch), verification
and encryption with a maintained C library. Of the candidates only smcryptopy has GM/T 0003.3 key
exchange, and it is ~100x too slow, so the exchange, the Z value, the KDF framing and the ASN.1 (PKCS#8 /
SubjectPublicKeyInfo / signature / GM/T 0009 ciphertext) encodings are written here by hand,
over a small pure-Python point arithmetic (Jacobian coordinates, a = -3). That arithmetic is
not constant-time: it is used for key exchange, for deriving a public key from a loaded private
key, for validating points, and by the known-answer test hooks (`_sign_digest_with_k`,
`_encrypt_with_k`); signing and decryption with a long-term key go through GmSSL. In the key
exchange the long-term key enters t = d + x̄·r, and [t] is computed in Python: its timing depends
on t. Each exchange uses a fresh r, but prefer running it where peers cannot time it finely.

Known costs: verification through GmSSL is ~0.4x `openssl speed`; GmSSL writes two diagnostic
lines to the process's stderr (fd 2) on every failed verification or decryption, so callers that
refuse many bad messages should count them rather than rely on that output.

Encodings: private keys PKCS#8 (also reads SEC1 "EC PRIVATE KEY"), public keys
SubjectPublicKeyInfo, both with id-ecPublicKey and the SM2 curve OID 1.2.156.10197.1.301, PEM or
DER; signatures DER SEQUENCE { r INTEGER, s INTEGER } with raw r||s helpers; ciphertexts
C1C3C2 = 04 || x1 || y1 || C3 (SM3, 32 bytes) || C2, with helpers for the GM/T 0009 DER form
(what OpenSSL's `pkeyutl -encrypt` writes) and the old C1C2C3 order.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from dataclasses import dataclass

import gmssl_pyx as _gm

from security.errors import (
    BadSignature,
    CryptoError,
    DecryptionError,
    KeyExchangeError,
    KeyFormatError,
)
from security.sm3 import SM3, kdf, sm3

__all__ = [
    "CURVE_OID",
    "DEFAULT_ID",
    "EC_PUBLIC_KEY_OID",
    "MAX_ENCRYPT_SIZE",
    "KeyExchangeResult",
    "SM2KeyExchange",
    "SM2PrivateKey",
    "SM2PublicKey",
    "ciphertext_c1c2c3_to_c1c3c2",
    "ciphertext_c1c3c2_to_c1c2c3",
    "ciphertext_from_der",
    "ciphertext_to_der",
    "decode_signature",
    "encode_signature",
    "load_private_key",
    "load_public_key",
    "signature_from_raw",
    "signature_to_raw",
    "z_value",
]

# GB/T 32918.5-2017 (GM/T 0003.5-2012) recommended curve, y^2 = x^3 + ax + b over F_p, cofactor 1.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_ID = b"1234567812345678"
"""Signer / user ID used when none is agreed (GM/T 0009-2012, GB/T 35276-2017 default)."""
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
CURVE_OID = "1.2.156.10197.1.301"
MAX_ENCRYPT_SIZE = 255
"""GmSSL's SM2 ciphertext structure holds at most 255 plaintext bytes: wrap keys, not bulk data."""

_CURVE_BYTES = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))

# --------------------------------------------------------------------------------------------
# Point arithmetic (hand-written, not constant-time; see the module docstring).
# Affine points are (x, y) tuples; None is the point at infinity. Jacobian (X, Y, Z), Z == 0
# is infinity; x = X / Z^2, y = Y / Z^3.

_Affine = tuple[int, int] | None
_Jac = tuple[int, int, int]
_INF: _Jac = (1, 1, 0)


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _jdouble(pt: _Jac) -> _Jac:
    x, y, z = pt
    if z == 0 or y == 0:
        return _INF
    yy = y * y % P
    s = 4 * x * yy % P
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P  # a = -3
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    z3 = 2 * y * z % P
    return (x3, y3, z3)


def _jadd_affine(pt: _Jac, q: tuple[int, int]) -> _Jac:
    x1, y1, z1 = pt
    x2, y2 = q
    if z1 == 0:
        return (x2, y2, 1)
    z1z1 = z1 * z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - x1) % P
    r = (s2 - y1) % P
    if h == 0:
        return _jdouble(pt) if r == 0 else _INF
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    z3 = z1 * h % P
    return (x3, y3, z3)


def _to_affine(pt: _Jac) -> _Affine:
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def _mul(k: int, q: _Affine) -> _Affine:
    """[k]Q with a fixed 4-bit window over affine precomputations."""
    k %= N
    if q is None or k == 0:
        return None
    table: list[tuple[int, int]] = [q]
    acc: _Jac = (q[0], q[1], 1)
    for _ in range(14):
        acc = _jadd_affine(acc, q)
        a = _to_affine(acc)
        if a is None:  # cannot happen for a point of prime order N > 16
            raise CryptoError("point of small order")
        table.append(a)
    r: _Jac = _INF
    for shift in range((k.bit_length() + 3) // 4 * 4 - 4, -4, -4):
        for _ in range(4):
            r = _jdouble(r)
        w = (k >> shift) & 0xF
        if w:
            r = _jadd_affine(r, table[w - 1])
    return _to_affine(r)


def _add(p1: _Affine, p2: _Affine) -> _Affine:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    return _to_affine(_jadd_affine((p1[0], p1[1], 1), p2))


_G: tuple[int, int] = (GX, GY)

# --------------------------------------------------------------------------------------------
# Minimal strict DER (only what keys, signatures and ciphertexts need).

_SEQ, _INT, _BITSTR, _OCTSTR, _OID = 0x30, 0x02, 0x03, 0x04, 0x06


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_int(v: int) -> bytes:
    if v < 0:
        raise CryptoError("DER INTEGER must be non-negative here")
    return _tlv(_INT, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(_OID, bytes(out))


def _read_tlv(data: bytes, pos: int, what: str) -> tuple[int, bytes, int]:
    """One TLV at `pos`: (tag, content, next position). Definite, minimal lengths only (DER)."""
    if pos + 2 > len(data):
        raise CryptoError(f"{what}: truncated DER")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        nb = first & 0x7F
        if nb == 0 or nb > 4 or pos + nb > len(data):
            raise CryptoError(f"{what}: bad DER length")
        length = int.from_bytes(data[pos : pos + nb], "big")
        if length < 0x80 or data[pos] == 0:
            raise CryptoError(f"{what}: non-minimal DER length")
        pos += nb
    end = pos + length
    if end > len(data):
        raise CryptoError(f"{what}: truncated DER")
    return tag, data[pos:end], end


def _expect(data: bytes, pos: int, tag: int, what: str) -> tuple[bytes, int]:
    t, content, nxt = _read_tlv(data, pos, what)
    if t != tag:
        raise CryptoError(f"{what}: expected DER tag 0x{tag:02x}, found 0x{t:02x}")
    return content, nxt


def _parse_uint(content: bytes, what: str) -> int:
    if not content:
        raise CryptoError(f"{what}: empty INTEGER")
    if content[0] & 0x80:
        raise CryptoError(f"{what}: negative INTEGER")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise CryptoError(f"{what}: non-minimal INTEGER")
    return int.from_bytes(content, "big")


def _sequence(data: bytes, what: str) -> bytes:
    content, end = _expect(data, 0, _SEQ, what)
    if end != len(data):
        raise CryptoError(f"{what}: {len(data) - end} trailing bytes after DER SEQUENCE")
    return content


def _decode_oid(content: bytes) -> str:
    if not content:
        raise CryptoError("empty OBJECT IDENTIFIER")
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    v = 0
    for b in content[1:]:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    return ".".join(map(str, arcs))


# --------------------------------------------------------------------------------------------
# PEM

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def _pem_decode(data: bytes, labels: tuple[str, ...], what: str) -> tuple[str, bytes] | None:
    """(label, DER) of the first PEM block with one of `labels`; None if `data` is not PEM."""
    blocks = list(_PEM_RE.finditer(data))
    if not blocks:
        if data.lstrip().startswith(b"-----BEGIN"):
            raise KeyFormatError(f"{what}: unterminated PEM block")
        return None
    for m in blocks:
        label = m.group(1).decode()
        if label not in labels:
            continue
        body = m.group(2)
        if b"Proc-Type:" in body or b"DEK-Info:" in body:
            raise KeyFormatError(f"{what}: encrypted PEM (Proc-Type) is not supported")
        try:
            return label, base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as e:
            raise KeyFormatError(f"{what}: bad base64 in PEM block {label!r}: {e}") from None
    found = ", ".join(sorted({m.group(1).decode() for m in blocks}))
    if "ENCRYPTED PRIVATE KEY" in found:
        raise KeyFormatError(f"{what}: encrypted PKCS#8 keys are not supported; decrypt it first")
    raise KeyFormatError(f"{what}: expected PEM {' or '.join(labels)}, found {found}")


def _pem_encode(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


_ALG_ID = _tlv(_SEQ, _der_oid(EC_PUBLIC_KEY_OID) + _der_oid(CURVE_OID))

# --------------------------------------------------------------------------------------------
# Signatures


def encode_signature(r: int, s: int) -> bytes:
    """DER SEQUENCE { r INTEGER, s INTEGER } (GM/T 0009 SM2Signature, as ECDSA)."""
    return _tlv(_SEQ, _der_int(r) + _der_int(s))


def decode_signature(der: bytes) -> tuple[int, int]:
    """(r, s) from a strict DER signature; BadSignature if malformed or out of [1, n-1]."""
    try:
        body = _sequence(bytes(der), "SM2 signature")
        rc, pos = _expect(body, 0, _INT, "SM2 signature r")
        sc, pos = _expect(body, pos, _INT, "SM2 signature s")
        if pos != len(body):
            raise CryptoError("SM2 signature: extra fields in SEQUENCE")
        r, s = _parse_uint(rc, "SM2 signature r"), _parse_uint(sc, "SM2 signature s")
    except CryptoError as e:
        raise BadSignature(f"malformed signature: {e}") from None
    # GB/T 32918.2 7.1 B1/B2: "check r' in [1, n-1]" and "check s' in [1, n-1]".
    if not (1 <= r < N and 1 <= s < N):
        raise BadSignature("signature r or s out of range [1, n-1]")
    return r, s


def signature_to_raw(der: bytes) -> bytes:
    """DER signature -> 64-byte r || s (big endian, 32 bytes each)."""
    r, s = decode_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signature_from_raw(raw: bytes) -> bytes:
    """64-byte r || s -> DER signature."""
    if len(raw) != 64:
        raise BadSignature(f"raw SM2 signature must be 64 bytes (r || s), got {len(raw)}")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        raise BadSignature("signature r or s out of range [1, n-1]")
    return encode_signature(r, s)


# --------------------------------------------------------------------------------------------
# Z value


def _check_id(uid: bytes) -> bytes:
    uid = bytes(uid)
    # GB/T 32918.2 5.5: ENTL_A is two bytes holding the bit length of ID_A.
    if len(uid) * 8 > 0xFFFF:
        raise CryptoError(f"SM2 ID is {len(uid)} bytes; ENTL limits it to 8191")
    return uid


def z_value(public_key: SM2PublicKey, uid: bytes = DEFAULT_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2 clause 5.5)."""
    uid = _check_id(uid)
    return sm3(
        (len(uid) * 8).to_bytes(2, "big")
        + uid
        + _CURVE_BYTES
        + public_key.x.to_bytes(32, "big")
        + public_key.y.to_bytes(32, "big")
    )


# --------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, slots=True)
class SM2PublicKey:
    """A point on the SM2 curve; validated on construction."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not _on_curve(self.x, self.y):
            raise KeyFormatError("SM2 public key is not a point on the SM2 curve")

    # -- encodings
    @classmethod
    def from_bytes(cls, data: bytes) -> SM2PublicKey:
        """From 04 || X || Y (65 bytes), X || Y (64 bytes) or compressed 02/03 || X (33 bytes)."""
        data = bytes(data)
        if len(data) == 65 and data[0] == 4:
            data = data[1:]
        if len(data) == 64:
            return cls(int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big"))
        if len(data) == 33 and data[0] in (2, 3):
            x = int.from_bytes(data[1:], "big")
            if x >= P:
                raise KeyFormatError("compressed SM2 point: x >= p")
            y = pow((x * x * x + A * x + B) % P, (P + 1) // 4, P)  # p = 3 (mod 4)
            if (y * y - (x * x * x + A * x + B)) % P:
                raise KeyFormatError("compressed SM2 point: x is not on the curve")
            if y & 1 != data[0] & 1:
                y = P - y
            return cls(x, y)
        raise KeyFormatError(
            f"SM2 public key must be 65 (04||X||Y), 64 (X||Y) or 33 (compressed) bytes, "
            f"got {len(data)}"
        )

    def to_bytes(self, *, compressed: bool = False) -> bytes:
        """04 || X || Y (65 bytes), or 02/03 || X (33 bytes) if `compressed`."""
        if compressed:
            return bytes([2 | (self.y & 1)]) + self.x.to_bytes(32, "big")
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    @classmethod
    def from_der(cls, der: bytes) -> SM2PublicKey:
        """From DER SubjectPublicKeyInfo with the SM2 curve."""
        try:
            body = _sequence(bytes(der), "SubjectPublicKeyInfo")
            alg, pos = _expect(body, 0, _SEQ, "SubjectPublicKeyInfo algorithm")
            _check_algorithm(alg, "SubjectPublicKeyInfo")
            bits, pos = _expect(body, pos, _BITSTR, "SubjectPublicKeyInfo key")
            if pos != len(body):
                raise CryptoError("SubjectPublicKeyInfo: extra fields")
        except KeyFormatError:
            raise
        except CryptoError as e:
            raise KeyFormatError(str(e)) from None
        if not bits or bits[0] != 0:
            raise KeyFormatError("SubjectPublicKeyInfo: BIT STRING with unused bits")
        return cls.from_bytes(bits[1:])

    def to_der(self) -> bytes:
        """DER SubjectPublicKeyInfo (id-ecPublicKey, SM2 curve OID, uncompressed point)."""
        return _tlv(_SEQ, _ALG_ID + _tlv(_BITSTR, b"\x00" + self.to_bytes()))

    def to_pem(self) -> bytes:
        """PEM "PUBLIC KEY" (SubjectPublicKeyInfo)."""
        return _pem_encode("PUBLIC KEY", self.to_der())

    # -- operations
    def z(self, uid: bytes = DEFAULT_ID) -> bytes:
        """This key's Z value for signer ID `uid`."""
        return z_value(self, uid)

    def digest(self, data: bytes, uid: bytes = DEFAULT_ID) -> bytes:
        """e = SM3(Z || M), the value an SM2 signature over `data` signs."""
        h = SM3(z_value(self, uid))
        h.update(data)
        return h.digest()

    def verify(self, signature: bytes, data: bytes, uid: bytes = DEFAULT_ID) -> None:
        """Verify a DER signature over `data` with signer ID `uid`; raise BadSignature if not valid."""
        self.verify_digest(signature, self.digest(data, uid))

    def verify_digest(self, signature: bytes, e: bytes) -> None:
        """Verify a DER signature over a precomputed e = SM3(Z || M); raise BadSignature."""
        if len(e) != 32:
            raise CryptoError(f"SM2 digest must be 32 bytes, got {len(e)}")
        r, s = decode_signature(signature)
        try:
            ok = bool(
                _gm.sm2_verify_sm3_digest(self.to_bytes()[1:], bytes(e), encode_signature(r, s))
            )
        except _gm.GmsslInnerError as ex:
            raise BadSignature(f"signature rejected by GmSSL: {ex}") from None
        if not ok:
            raise BadSignature("SM2 signature does not verify (wrong key, signer ID or data)")

    def encrypt(self, plaintext: bytes) -> bytes:
        """SM2-encrypt up to 255 bytes to this key: 04 || x1 || y1 || C3 || C2 (GB/T 32918.4)."""
        if not 1 <= len(plaintext) <= MAX_ENCRYPT_SIZE:
            raise CryptoError(
                f"SM2 encryption takes 1..{MAX_ENCRYPT_SIZE} bytes (wrap a key, encrypt bulk data "
                f"with SM4), got {len(plaintext)}"
            )
        try:
            der = bytes(_gm.sm2_encrypt(self.to_bytes()[1:], bytes(plaintext)))
        except _gm.GmsslInnerError as ex:
            raise CryptoError(f"GmSSL SM2 encryption failed: {ex}") from None
        return ciphertext_from_der(der)


def _check_algorithm(alg: bytes, what: str) -> None:
    """AlgorithmIdentifier: id-ecPublicKey with namedCurve SM2 (or the SM2 OID alone)."""
    oid_c, pos = _expect(alg, 0, _OID, f"{what} algorithm")
    oid = _decode_oid(oid_c)
    params = None
    if pos < len(alg):
        t, pc, pos = _read_tlv(alg, pos, f"{what} parameters")
        params = _decode_oid(pc) if t == _OID else f"<tag 0x{t:02x}>"
    if oid == CURVE_OID and params in (None, CURVE_OID):
        return
    if oid != EC_PUBLIC_KEY_OID:
        raise KeyFormatError(f"{what}: algorithm {oid} is not an EC/SM2 key")
    if params != CURVE_OID:
        raise KeyFormatError(f"{what}: curve {params} is not SM2 ({CURVE_OID})")


class SM2PrivateKey:
    """An SM2 private key d in [1, n-2] with its public key."""

    __slots__ = ("_d", "_raw", "_z", "public_key")

    def __init__(self, d: int, public_key: SM2PublicKey | None = None) -> None:
        # GB/T 32918.1 6.1: "d_B in [1, n-2]" (1 + d must be invertible mod n for signing).
        if not 1 <= d <= N - 2:
            raise KeyFormatError("SM2 private key out of range [1, n-2]")
        if public_key is None:
            pt = _mul(d, _G)
            assert pt is not None  # d in [1, n-2] is never a multiple of n
            public_key = SM2PublicKey(*pt)
        self._d = d
        self._raw = d.to_bytes(32, "big")
        self.public_key = public_key
        self._z: tuple[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"SM2PrivateKey(public_key={self.public_key.to_bytes().hex()})"

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        """A fresh key pair from GmSSL's random generator."""
        while True:
            pub, priv = _gm.sm2_key_generate()
            d = int.from_bytes(bytes(priv), "big")
            if 1 <= d <= N - 2:
                return cls(d, SM2PublicKey.from_bytes(bytes(pub)))

    @classmethod
    def from_bytes(cls, raw: bytes) -> SM2PrivateKey:
        """From the 32-byte big-endian scalar."""
        if len(raw) != 32:
            raise KeyFormatError(f"raw SM2 private key must be 32 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw, "big"))

    def to_bytes(self) -> bytes:
        """The 32-byte big-endian scalar (keep it secret)."""
        return self._raw

    @classmethod
    def from_der(cls, der: bytes) -> SM2PrivateKey:
        """From DER PKCS#8 PrivateKeyInfo or SEC1 ECPrivateKey with the SM2 curve."""
        der = bytes(der)
        try:
            body = _sequence(der, "private key")
            ver, pos = _expect(body, 0, _INT, "private key version")
            version = _parse_uint(ver, "private key version")
            if version == 0:  # PKCS#8 (RFC 5208): version, AlgorithmIdentifier, OCTET STRING
                alg, pos = _expect(body, pos, _SEQ, "PKCS#8 algorithm")
                _check_algorithm(alg, "PKCS#8")
                inner, pos = _expect(body, pos, _OCTSTR, "PKCS#8 privateKey")
                return cls._from_sec1(inner, curve_known=True)
            if version == 1:
                return cls._from_sec1(der, curve_known=False)
            raise KeyFormatError(f"private key: unknown version {version}")
        except KeyFormatError:
            raise
        except CryptoError as e:
            raise KeyFormatError(str(e)) from None

    @classmethod
    def _from_sec1(cls, der: bytes, *, curve_known: bool) -> SM2PrivateKey:
        # RFC 5915 ECPrivateKey: version 1, privateKey OCTET STRING, [0] parameters, [1] publicKey.
        body = _sequence(der, "ECPrivateKey")
        ver, pos = _expect(body, 0, _INT, "ECPrivateKey version")
        if _parse_uint(ver, "ECPrivateKey version") != 1:
            raise KeyFormatError("ECPrivateKey: version must be 1")
        raw, pos = _expect(body, pos, _OCTSTR, "ECPrivateKey privateKey")
        pub: SM2PublicKey | None = None
        while pos < len(body):
            tag, content, pos = _read_tlv(body, pos, "ECPrivateKey field")
            if tag == 0xA0:
                oid_c, _ = _expect(content, 0, _OID, "ECPrivateKey parameters")
                if _decode_oid(oid_c) != CURVE_OID:
                    raise KeyFormatError(f"ECPrivateKey: curve {_decode_oid(oid_c)} is not SM2")
                curve_known = True
            elif tag == 0xA1:
                bits, _ = _expect(content, 0, _BITSTR, "ECPrivateKey publicKey")
                if not bits or bits[0] != 0:
                    raise KeyFormatError("ECPrivateKey: publicKey BIT STRING with unused bits")
                pub = SM2PublicKey.from_bytes(bits[1:])
        if not curve_known:
            raise KeyFormatError("ECPrivateKey names no curve; cannot tell it is SM2")
        if not 1 <= len(raw) <= 32:
            raise KeyFormatError(f"ECPrivateKey: private key is {len(raw)} bytes, expected 32")
        key = cls(int.from_bytes(raw, "big"))
        if pub is not None and pub != key.public_key:
            raise KeyFormatError("private key file: public key does not match the private key")
        return key

    def to_der(self) -> bytes:
        """DER PKCS#8 PrivateKeyInfo (unencrypted) with the public key embedded."""
        ec = _tlv(
            _SEQ,
            _der_int(1)
            + _tlv(_OCTSTR, self._raw)
            + _tlv(0xA1, _tlv(_BITSTR, b"\x00" + self.public_key.to_bytes())),
        )
        return _tlv(_SEQ, _der_int(0) + _ALG_ID + _tlv(_OCTSTR, ec))

    def to_pem(self) -> bytes:
        """PEM "PRIVATE KEY" (PKCS#8, unencrypted: protect the file)."""
        return _pem_encode("PRIVATE KEY", self.to_der())

    # -- operations
    def _digest(self, data: bytes, uid: bytes) -> bytes:
        # Z depends only on key and ID: cache the last one (signing repeats the same ID).
        z = self._z
        if z is None or z[0] != uid:
            z = (bytes(uid), z_value(self.public_key, uid))
            self._z = z
        h = SM3(z[1])
        h.update(data)
        return h.digest()

    def sign(self, data: bytes, uid: bytes = DEFAULT_ID) -> bytes:
        """DER SM2 signature over SM3(Z || data) with signer ID `uid` (GB/T 32918.2 6.1)."""
        return self.sign_digest(self._digest(data, uid))

    def sign_digest(self, e: bytes) -> bytes:
        """DER SM2 signature over a precomputed e = SM3(Z || M) (32 bytes)."""
        if len(e) != 32:
            raise CryptoError(f"SM2 digest must be 32 bytes, got {len(e)}")
        try:
            return bytes(_gm.sm2_sign_sm3_digest(self._raw, bytes(e)))
        except _gm.GmsslInnerError as ex:
            raise CryptoError(f"GmSSL SM2 signing failed: {ex}") from None

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt 04 || x1 || y1 || C3 || C2; DecryptionError if C1 or C3 is wrong."""
        der = ciphertext_to_der(ciphertext)
        try:
            return bytes(_gm.sm2_decrypt(self._raw, der))
        except _gm.GmsslInnerError:
            raise DecryptionError(
                "SM2 decryption failed (wrong key, or C1/C3 check failed: tampered ciphertext)"
            ) from None


def load_private_key(data: bytes) -> SM2PrivateKey:
    """An SM2 private key from PEM ("PRIVATE KEY" or "EC PRIVATE KEY") or DER bytes."""
    pem = _pem_decode(bytes(data), ("PRIVATE KEY", "EC PRIVATE KEY"), "private key")
    return SM2PrivateKey.from_der(pem[1] if pem else bytes(data))


def load_public_key(data: bytes) -> SM2PublicKey:
    """An SM2 public key from PEM "PUBLIC KEY" or DER SubjectPublicKeyInfo bytes."""
    pem = _pem_decode(bytes(data), ("PUBLIC KEY",), "public key")
    return SM2PublicKey.from_der(pem[1] if pem else bytes(data))


# --------------------------------------------------------------------------------------------
# Ciphertext formats


def _split_c1c3c2(ct: bytes) -> tuple[int, int, bytes, bytes]:
    ct = bytes(ct)
    if len(ct) < 1 + 64 + 32 + 1 or ct[0] != 4:
        raise DecryptionError(
            f"SM2 ciphertext must be 04 || x1 || y1 || C3 || C2 (>= 98 bytes), got {len(ct)} bytes"
        )
    x, y = int.from_bytes(ct[1:33], "big"), int.from_bytes(ct[33:65], "big")
    # GB/T 32918.4 7.2 B1: "verify that C1 satisfies the curve equation".
    if not _on_curve(x, y):
        raise DecryptionError("SM2 ciphertext: C1 is not a point on the curve")
    return x, y, ct[65:97], ct[97:]


def ciphertext_to_der(ct: bytes) -> bytes:
    """C1C3C2 -> GM/T 0009 DER SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING, ct OCTET STRING }."""
    x, y, c3, c2 = _split_c1c3c2(ct)
    return _tlv(_SEQ, _der_int(x) + _der_int(y) + _tlv(_OCTSTR, c3) + _tlv(_OCTSTR, c2))


def ciphertext_from_der(der: bytes) -> bytes:
    """GM/T 0009 DER SM2 ciphertext -> 04 || x1 || y1 || C3 || C2."""
    try:
        body = _sequence(bytes(der), "SM2 ciphertext")
        xc, pos = _expect(body, 0, _INT, "SM2 ciphertext x")
        yc, pos = _expect(body, pos, _INT, "SM2 ciphertext y")
        c3, pos = _expect(body, pos, _OCTSTR, "SM2 ciphertext hash")
        c2, pos = _expect(body, pos, _OCTSTR, "SM2 ciphertext ciphertext")
        if pos != len(body):
            raise CryptoError("SM2 ciphertext: extra fields")
        x, y = _parse_uint(xc, "x"), _parse_uint(yc, "y")
    except CryptoError as e:
        raise DecryptionError(f"malformed DER SM2 ciphertext: {e}") from None
    if len(c3) != 32 or not c2 or x >= P or y >= P:
        raise DecryptionError("malformed DER SM2 ciphertext: bad field sizes")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big") + c3 + c2


def ciphertext_c1c2c3_to_c1c3c2(ct: bytes) -> bytes:
    """Reorder the 2010-draft layout C1 || C2 || C3 into the standard C1 || C3 || C2."""
    if len(ct) < 98:
        raise DecryptionError(f"SM2 ciphertext too short: {len(ct)} bytes")
    return bytes(ct[:65]) + bytes(ct[-32:]) + bytes(ct[65:-32])


def ciphertext_c1c3c2_to_c1c2c3(ct: bytes) -> bytes:
    """Reorder C1 || C3 || C2 into the 2010-draft layout C1 || C2 || C3."""
    if len(ct) < 98:
        raise DecryptionError(f"SM2 ciphertext too short: {len(ct)} bytes")
    return bytes(ct[:65]) + bytes(ct[97:]) + bytes(ct[65:97])


# --------------------------------------------------------------------------------------------
# Key exchange (GB/T 32918.3-2016 / GM/T 0003.3-2012 clause 6.1), hand-written: no binding here
# offers it. Theory of operation: each side makes an ephemeral point R = [r]G and sends it;
# with the peer's R it computes t = (d + x̄·r) mod n and the shared point
# [h·t](P_peer + [x̄_peer]R_peer), where x̄ = 2^w + (x mod 2^w), w = 127. Both sides reach the
# same point (U = V); K = KDF(x || y || Z_A || Z_B, klen), Z_A always the initiator's. The
# optional confirmations: the responder sends S_B = Hash(0x02 || y || Hash(x || Z_A || Z_B ||
# x1 || y1 || x2 || y2)), the initiator checks it and sends S_A (the same with 0x03).

_W = 127  # w = ceil(ceil(log2(n)) / 2) - 1 for the 256-bit n


def _xbar(x: int) -> int:
    return (1 << _W) + (x & ((1 << _W) - 1))


@dataclass(frozen=True, slots=True)
class KeyExchangeResult:
    """The agreed key and the key-confirmation values of one side."""

    key: bytes
    confirmation: bytes
    """What this side sends: S_B from the responder, S_A from the initiator."""
    expected_peer_confirmation: bytes
    """What the peer must send: S_B (checked as S_1) for the initiator, S_A (as S_2) for the responder."""

    def check_peer_confirmation(self, value: bytes) -> None:
        """Raise KeyExchangeError unless `value` is the peer's correct confirmation."""
        if not hmac.compare_digest(bytes(value), self.expected_peer_confirmation):
            raise KeyExchangeError(
                "SM2 key confirmation from the peer does not match (different key, ID or a MITM)"
            )


class SM2KeyExchange:
    """One side of an SM2 key exchange: send `ephemeral_public`, then `derive()` with the peer's."""

    def __init__(
        self,
        private_key: SM2PrivateKey,
        peer_public_key: SM2PublicKey,
        *,
        initiator: bool,
        own_id: bytes = DEFAULT_ID,
        peer_id: bytes = DEFAULT_ID,
        key_length: int = 16,
        _ephemeral: int | None = None,
    ) -> None:
        if key_length < 1:
            raise CryptoError(f"key_length must be >= 1, got {key_length}")
        self._key = private_key
        self._peer = peer_public_key
        self._initiator = initiator
        self._klen = key_length
        z_own = z_value(private_key.public_key, own_id)
        z_peer = z_value(peer_public_key, peer_id)
        self._za, self._zb = (z_own, z_peer) if initiator else (z_peer, z_own)
        r = _ephemeral if _ephemeral is not None else secrets.randbelow(N - 1) + 1
        if not 1 <= r < N:
            raise CryptoError("ephemeral scalar out of range [1, n-1]")
        pt = _mul(r, _G)
        assert pt is not None
        self._r: int | None = r
        self._R = pt
        self.ephemeral_public = b"\x04" + pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")
        """This side's R (65 bytes, 04 || x || y) to send to the peer."""

    def derive(self, peer_ephemeral: bytes) -> KeyExchangeResult:
        """The shared key and confirmations from the peer's R; usable once per exchange."""
        if self._r is None:
            raise KeyExchangeError("this key exchange was already used; start a new one")
        try:
            peer_r = SM2PublicKey.from_bytes(peer_ephemeral)
        except KeyFormatError as e:
            # GB/T 32918.3 6.1 A6/B5: "verify that R satisfies the curve equation".
            raise KeyExchangeError(f"peer ephemeral point invalid: {e}") from None
        r, self._r = self._r, None
        own_R = self._R
        t = (self._key._d + _xbar(own_R[0]) * r) % N
        q = _add((self._peer.x, self._peer.y), _mul(_xbar(peer_r.x), (peer_r.x, peer_r.y)))
        shared = _mul(t, q)  # cofactor h = 1
        if shared is None:
            raise KeyExchangeError("SM2 key exchange produced the point at infinity")
        xs, ys = shared[0].to_bytes(32, "big"), shared[1].to_bytes(32, "big")
        key = kdf(xs + ys + self._za + self._zb, self._klen)
        if self._initiator:
            (x1, y1), (x2, y2) = own_R, (peer_r.x, peer_r.y)
        else:
            (x1, y1), (x2, y2) = (peer_r.x, peer_r.y), own_R
        inner = sm3(
            xs + self._za + self._zb + b"".join(v.to_bytes(32, "big") for v in (x1, y1, x2, y2))
        )
        s_b = sm3(b"\x02" + ys + inner)
        s_a = sm3(b"\x03" + ys + inner)
        if self._initiator:
            return KeyExchangeResult(key, s_a, s_b)
        return KeyExchangeResult(key, s_b, s_a)


# --------------------------------------------------------------------------------------------
# Known-answer hooks: the standards' examples fix k, which no binding lets a caller choose.


def _sign_digest_with_k(key: SM2PrivateKey, e: bytes, k: int) -> tuple[int, int]:
    """GB/T 32918.2 6.1 A4-A6 with a given k (pure Python; for known-answer tests only)."""
    pt = _mul(k, _G)
    assert pt is not None
    r = (int.from_bytes(e, "big") + pt[0]) % N
    if r == 0 or r + k == N:
        raise CryptoError("k rejected by A5 (r = 0 or r + k = n)")
    s = pow(1 + key._d, -1, N) * (k - r * key._d) % N
    if s == 0:
        raise CryptoError("k rejected by A6 (s = 0)")
    return r, s


def _encrypt_with_k(pub: SM2PublicKey, m: bytes, k: int) -> bytes:
    """GB/T 32918.4 6.1 A1-A8 with a given k, C1C3C2 (pure Python; for known-answer tests only)."""
    c1 = _mul(k, _G)
    s = _mul(k, (pub.x, pub.y))
    assert c1 is not None and s is not None
    x2, y2 = s[0].to_bytes(32, "big"), s[1].to_bytes(32, "big")
    t = kdf(x2 + y2, len(m))
    if not any(t):
        raise CryptoError("KDF output all zero (A5): choose another k")
    c2 = bytes(a ^ b for a, b in zip(m, t, strict=True))
    c3 = sm3(x2 + m + y2)
    return b"\x04" + c1[0].to_bytes(32, "big") + c1[1].to_bytes(32, "big") + c3 + c2
