"""Device identity: a platform CA issuing SM2 certificates to the platform, edge terminals and DER agents.

Certificates, requests and revocation lists are standard X.509 v3 / PKCS#10 / X.509 v2 CRL
(RFC 5280, RFC 2986), built and parsed with asn1crypto, signed SM2-with-SM3 (OID
1.2.156.10197.1.501, GM/T 0015) over the DER of the to-be-signed part with the default signer ID
1234567812345678. Public keys are SubjectPublicKeyInfo with the SM2 curve (1.2.156.10197.1.301).
`openssl x509 -text`, `openssl verify` and `openssl crl` read them.

A certificate names its holder in the subject: CN = the name (e.g. `edge-07`), OU = the role
(`platform`, `edge`, `der-agent`, or `ca`), O = the CA's organisation. The role decides what a
peer may do: only a `platform` certificate may order commands; the platform accepts `edge` and
`der-agent` peers on the secure channel.

`TrustStore.validate()` is the one check every consumer uses: issued by our CA (the signature
verifies under the CA key), not revoked, inside its validity period by the injected clock, of a
role the caller accepts. It raises a typed `IdentityError` naming which check failed.

The CA directory (default var/pki, mode 0700):

    ca.key.pem       CA private key, PKCS#8, 0600, encrypted if a passphrase was given
    ca.cert.pem      CA certificate (self-signed)
    crl.pem          current signed CRL, re-issued on every revocation
    index.json       every certificate issued: serial, name, role, validity, revocation
    certs/SERIAL.cert.pem   every certificate issued, by serial (hex)
    issued/NAME.cert.pem    the current certificate of NAME (and NAME.key.pem, 0600, when the
                            CA generated the key)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from security.errors import BadSignature, CryptoError, KeyFormatError, SecurityError
from security.keystore import (
    DEFAULT_ITERATIONS,
    KeyStoreError,
    load_private_key_file,
    save_private_key,
    write_atomic,
)
from security.sm2 import DEFAULT_ID, SM2PrivateKey, SM2PublicKey
from security.sm3 import sm3

__all__ = [
    "SM2_WITH_SM3_OID",
    "BadCertificate",
    "BadRequest",
    "BadRevocationList",
    "CAError",
    "Certificate",
    "CertificateAuthority",
    "CertificateExpired",
    "CertificateNotYetValid",
    "CertificateRequest",
    "CertificateRevoked",
    "Clock",
    "IdentityError",
    "IssuedEntry",
    "RevocationList",
    "RevokedEntry",
    "Role",
    "TrustStore",
    "UnknownIssuer",
    "WrongRole",
]

SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
_SIG_ALG = {"algorithm": SM2_WITH_SM3_OID}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REASONS = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
)

Clock = Callable[[], float]
"""Seconds since the Unix epoch (UTC); `time.time` in production, a fake in tests."""


class Role(StrEnum):
    """What a certificate's holder is (its subject OU)."""

    CA = "ca"
    PLATFORM = "platform"
    EDGE = "edge"
    DER_AGENT = "der-agent"


# ------------------------------------------------------------------------------------- errors


class IdentityError(SecurityError):
    """A certificate, request or revocation list was refused; the subclass says why."""


class BadCertificate(IdentityError):
    """Not a well-formed SM2 certificate, or its signature does not verify."""


class UnknownIssuer(IdentityError):
    """The certificate was not issued by the CA we trust."""


class CertificateRevoked(IdentityError):
    """The certificate's serial is on the revocation list."""


class CertificateExpired(IdentityError):
    """The certificate's notAfter has passed."""


class CertificateNotYetValid(IdentityError):
    """The certificate's notBefore is still ahead."""


class WrongRole(IdentityError):
    """The certificate's role is not one the caller accepts here."""


class BadRequest(IdentityError):
    """A certificate signing request is malformed or its self-signature does not verify."""


class BadRevocationList(IdentityError):
    """A CRL is malformed, not signed by our CA, or older than the one we hold."""


class CAError(IdentityError):
    """The CA cannot do what was asked (missing directory, duplicate name, unknown serial...)."""


# ------------------------------------------------------------------------------------ helpers


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(math.floor(ts), dt.UTC)


def _time(ts: float) -> asn1_x509.Time:
    # RFC 5280 4.1.2.5: "CAs conforming to this profile MUST always encode certificate validity
    # dates through the year 2049 as UTCTime; ... in 2050 or later MUST be encoded as
    # GeneralizedTime."
    d = _utc(ts)
    return asn1_x509.Time({"utc_time" if d.year < 2050 else "general_time": d})


def _epoch(t: Any) -> float:
    v = t.native
    if not isinstance(v, dt.datetime):
        raise ValueError(f"not a time: {v!r}")
    return v.timestamp()


def _der_of(data: bytes, labels: tuple[str, ...], what: str) -> bytes:
    data = bytes(data)
    if asn1_pem.detect(data):
        try:
            label, _, der = asn1_pem.unarmor(data)
        except ValueError as e:
            raise ValueError(f"{what}: bad PEM: {e}") from None
        if label not in labels:
            raise ValueError(f"{what}: expected PEM {' or '.join(labels)}, found {label}")
        return bytes(der)
    return data


def _name(cn: str, role: str, org: str | None) -> asn1_x509.Name:
    d: dict[str, str] = {}
    if org:
        d["organization_name"] = org
    d["organizational_unit_name"] = role
    d["common_name"] = cn
    return asn1_x509.Name.build(d)


def _name_fields(name: asn1_x509.Name) -> tuple[str, str | None, str | None]:
    n = name.native
    cn = n.get("common_name")
    ou = n.get("organizational_unit_name")
    org = n.get("organization_name")
    if isinstance(ou, list):
        ou = ou[0]
    return (str(cn) if cn else "", str(ou) if ou else None, str(org) if org else None)


def check_name(name: str) -> str:
    """`name` if it is a valid holder name (letters, digits, _ . -; up to 64), else CAError."""
    if not _NAME_RE.match(name):
        raise CAError(
            f"bad name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


def _key_id(pub: SM2PublicKey) -> bytes:
    # RFC 5280 4.2.1.2 allows any method that yields unique values; SM3 instead of SHA-1.
    return sm3(pub.to_bytes())[:20]


def _verify_sm2(pub: SM2PublicKey, sig: bytes, data: bytes, uids: Iterable[bytes]) -> bool:
    for uid in uids:
        try:
            pub.verify(sig, data, uid)
            return True
        except (BadSignature, CryptoError):
            continue
    return False


# ------------------------------------------------------------------------------- certificate


class Certificate:
    """A parsed X.509 v3 certificate with an SM2 key, signed SM2-with-SM3."""

    __slots__ = (
        "_sig",
        "_tbs",
        "der",
        "fingerprint",
        "is_ca",
        "issuer",
        "issuer_org",
        "name",
        "not_after",
        "not_before",
        "organization",
        "public_key",
        "role",
        "role_text",
        "serial",
    )

    def __init__(self, der: bytes) -> None:
        der = bytes(der)
        try:
            c = asn1_x509.Certificate.load(der, strict=True)
            tbs = c["tbs_certificate"]
            outer = c["signature_algorithm"]["algorithm"].dotted
            inner = tbs["signature"]["algorithm"].dotted
            if outer != SM2_WITH_SM3_OID or inner != SM2_WITH_SM3_OID:
                raise BadCertificate(
                    f"certificate is signed with {outer}, not SM2-with-SM3 ({SM2_WITH_SM3_OID})"
                )
            self.public_key = SM2PublicKey.from_der(tbs["subject_public_key_info"].dump())
            self.serial = int(tbs["serial_number"].native)
            self.name, self.role_text, self.organization = _name_fields(tbs["subject"])
            self.issuer, _, self.issuer_org = _name_fields(tbs["issuer"])
            validity = tbs["validity"]
            self.not_before = _epoch(validity["not_before"])
            self.not_after = _epoch(validity["not_after"])
            bc = c.basic_constraints_value
            self.is_ca = bool(bc is not None and bc["ca"].native)
            self._tbs = tbs.dump()
            self._sig = bytes(c["signature_value"].native)
        except IdentityError:
            raise
        except KeyFormatError as e:
            raise BadCertificate(f"certificate public key: {e}") from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            raise BadCertificate(f"malformed certificate: {e}") from None
        self.der = der
        self.fingerprint = sm3(der)
        try:
            self.role: Role | None = Role(self.role_text) if self.role_text else None
        except ValueError:
            self.role = None

    @classmethod
    def load(cls, data: bytes) -> Certificate:
        """From PEM "CERTIFICATE" or DER bytes; BadCertificate if it is not one."""
        try:
            return cls(_der_of(data, ("CERTIFICATE",), "certificate"))
        except ValueError as e:
            raise BadCertificate(str(e)) from None

    @classmethod
    def load_file(cls, path: Path) -> Certificate:
        """From a PEM or DER file; BadCertificate naming the file."""
        try:
            return cls.load(Path(path).read_bytes())
        except OSError as e:
            raise BadCertificate(f"cannot read certificate {path}: {e.strerror or e}") from None
        except BadCertificate as e:
            raise BadCertificate(f"{path}: {e}") from None

    @property
    def pem(self) -> bytes:
        """PEM "CERTIFICATE"."""
        return bytes(asn1_pem.armor("CERTIFICATE", self.der))

    def signed_by(self, issuer_key: SM2PublicKey) -> bool:
        """True if this certificate's signature verifies under `issuer_key`."""
        return _verify_sm2(issuer_key, self._sig, self._tbs, (DEFAULT_ID,))

    def describe(self) -> str:
        """One line for logs and errors: name, role and serial."""
        return f"{self.name!r} ({self.role_text or 'no role'}, serial {self.serial:x})"

    def __repr__(self) -> str:
        return f"Certificate({self.describe()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.fingerprint)


def _build_certificate(
    *,
    ca_key: SM2PrivateKey,
    issuer: asn1_x509.Name,
    subject: asn1_x509.Name,
    public_key: SM2PublicKey,
    serial: int,
    not_before: float,
    not_after: float,
    is_ca: bool,
) -> Certificate:
    usage = (
        {"key_cert_sign", "crl_sign", "digital_signature"}
        if is_ca
        else {
            "digital_signature",
            "key_agreement",
            "key_encipherment",
        }
    )
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": serial,
            "signature": _SIG_ALG,
            "issuer": issuer,
            "validity": {"not_before": _time(not_before), "not_after": _time(not_after)},
            "subject": subject,
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(public_key.to_der()),
            "extensions": [
                {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": is_ca}},
                {"extn_id": "key_usage", "critical": True, "extn_value": usage},
                {"extn_id": "key_identifier", "critical": False, "extn_value": _key_id(public_key)},
                {
                    "extn_id": "authority_key_identifier",
                    "critical": False,
                    "extn_value": {"key_identifier": _key_id(ca_key.public_key)},
                },
            ],
        }
    )
    cert = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": _SIG_ALG,
            "signature_value": ca_key.sign(tbs.dump()),
        }
    )
    return Certificate(cert.dump())


# ------------------------------------------------------------------------------------ request


class CertificateRequest:
    """A PKCS#10 certificate signing request with an SM2 key (proof of possession)."""

    __slots__ = ("der", "name", "public_key", "role_text")

    def __init__(self, der: bytes) -> None:
        der = bytes(der)
        try:
            r = asn1_csr.CertificationRequest.load(der, strict=True)
            cri = r["certification_request_info"]
            alg = r["signature_algorithm"]["algorithm"].dotted
            if alg != SM2_WITH_SM3_OID:
                raise BadRequest(f"request is signed with {alg}, not SM2-with-SM3")
            self.public_key = SM2PublicKey.from_der(cri["subject_pk_info"].dump())
            self.name, self.role_text, _ = _name_fields(cri["subject"])
            sig = bytes(r["signature"].native)
            body = cri.dump()
        except IdentityError:
            raise
        except KeyFormatError as e:
            raise BadRequest(f"request public key: {e}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BadRequest(f"malformed certificate request: {e}") from None
        # The default ID first; OpenSSL 3's `req -new` signs with an empty ID unless given
        # `-sigopt distid:1234567812345678`, so accept that too (this only proves possession).
        if not _verify_sm2(self.public_key, sig, body, (DEFAULT_ID, b"")):
            raise BadRequest("certificate request self-signature does not verify")
        self.der = der

    @classmethod
    def create(cls, key: SM2PrivateKey, name: str, role: Role | None = None) -> CertificateRequest:
        """A request for `name` (and optionally a role) signed by `key`."""
        subject = {"common_name": name}
        if role is not None:
            subject = {"organizational_unit_name": role.value, "common_name": name}
        cri = asn1_csr.CertificationRequestInfo(
            {
                "version": "v1",
                "subject": asn1_x509.Name.build(subject),
                "subject_pk_info": asn1_keys.PublicKeyInfo.load(key.public_key.to_der()),
                "attributes": [],
            }
        )
        req = asn1_csr.CertificationRequest(
            {
                "certification_request_info": cri,
                "signature_algorithm": _SIG_ALG,
                "signature": key.sign(cri.dump()),
            }
        )
        return cls(req.dump())

    @classmethod
    def load(cls, data: bytes) -> CertificateRequest:
        """From PEM "CERTIFICATE REQUEST" or DER; BadRequest if malformed or not self-signed."""
        try:
            return cls(_der_of(data, ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"), "CSR"))
        except ValueError as e:
            raise BadRequest(str(e)) from None

    @property
    def pem(self) -> bytes:
        """PEM "CERTIFICATE REQUEST"."""
        return bytes(asn1_pem.armor("CERTIFICATE REQUEST", self.der))


# -------------------------------------------------------------------------------- revocation


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked serial, when and why."""

    serial: int
    revoked_at: float
    reason: str = "unspecified"


class RevocationList:
    """A CRL signed by our CA: the revoked serials, this and next update, a CRL number."""

    __slots__ = ("der", "entries", "next_update", "number", "this_update")

    def __init__(
        self,
        der: bytes,
        entries: Mapping[int, RevokedEntry],
        number: int,
        this_update: float,
        next_update: float | None,
    ) -> None:
        self.der = der
        self.entries = dict(entries)
        self.number = number
        self.this_update = this_update
        self.next_update = next_update

    @classmethod
    def build(
        cls,
        ca_key: SM2PrivateKey,
        ca_cert: Certificate,
        entries: Iterable[RevokedEntry],
        *,
        number: int,
        now: float,
        validity: float = 30 * 86400,
    ) -> RevocationList:
        """Sign a CRL listing `entries`."""
        es = sorted(entries, key=lambda e: e.serial)
        revoked = []
        for e in es:
            item: dict[str, Any] = {
                "user_certificate": e.serial,
                "revocation_date": _time(e.revoked_at),
            }
            if e.reason != "unspecified":
                item["crl_entry_extensions"] = [{"extn_id": "crl_reason", "extn_value": e.reason}]
            revoked.append(item)
        issuer = asn1_x509.Certificate.load(ca_cert.der)["tbs_certificate"]["subject"]
        tbs_fields: dict[str, Any] = {
            "version": "v2",
            "signature": _SIG_ALG,
            "issuer": issuer,
            "this_update": _time(now),
            "next_update": _time(now + validity),
            "crl_extensions": [
                {"extn_id": "crl_number", "extn_value": number},
                {
                    "extn_id": "authority_key_identifier",
                    "extn_value": {"key_identifier": _key_id(ca_key.public_key)},
                },
            ],
        }
        if revoked:
            tbs_fields["revoked_certificates"] = revoked
        tbs = asn1_crl.TbsCertList(tbs_fields)
        cl = asn1_crl.CertificateList(
            {
                "tbs_cert_list": tbs,
                "signature_algorithm": _SIG_ALG,
                "signature": ca_key.sign(tbs.dump()),
            }
        )
        return cls.load(cl.dump(), ca_cert)

    @classmethod
    def load(cls, data: bytes, ca_cert: Certificate) -> RevocationList:
        """Parse a PEM/DER CRL and check it is signed by `ca_cert`; BadRevocationList if not."""
        try:
            der = _der_of(data, ("X509 CRL",), "CRL")
            cl = asn1_crl.CertificateList.load(der, strict=True)
            tbs = cl["tbs_cert_list"]
            if cl["signature_algorithm"]["algorithm"].dotted != SM2_WITH_SM3_OID:
                raise BadRevocationList("CRL is not signed SM2-with-SM3")
            issuer, _, _ = _name_fields(tbs["issuer"])
            sig = bytes(cl["signature"].native)
            body = tbs.dump()
            entries: dict[int, RevokedEntry] = {}
            for item in tbs["revoked_certificates"]:
                reason_v = item.crl_reason_value
                reason = str(reason_v.native) if reason_v is not None else "unspecified"
                serial = int(item["user_certificate"].native)
                entries[serial] = RevokedEntry(serial, _epoch(item["revocation_date"]), reason)
            num = cl.crl_number_value
            number = int(num.native) if num is not None else 0
            this_update = _epoch(tbs["this_update"])
            nu = tbs["next_update"]
            next_update = _epoch(nu) if nu.native is not None else None
        except BadRevocationList:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BadRevocationList(f"malformed CRL: {e}") from None
        # Signed with the default ID (GM/T 0015); OpenSSL 3.0 signs and verifies CRLs with an
        # empty ID, so accept that from a CA run with OpenSSL.
        if issuer != ca_cert.name or not _verify_sm2(
            ca_cert.public_key, sig, body, (DEFAULT_ID, b"")
        ):
            raise BadRevocationList(f"CRL is not signed by the CA {ca_cert.name!r}")
        return cls(der, entries, number, this_update, next_update)

    @property
    def pem(self) -> bytes:
        """PEM "X509 CRL"."""
        return bytes(asn1_pem.armor("X509 CRL", self.der))

    def is_revoked(self, serial: int) -> RevokedEntry | None:
        """The entry revoking `serial`, or None."""
        return self.entries.get(serial)


# ------------------------------------------------------------------------------- trust store


class TrustStore:
    """Validates certificates against one CA certificate and its revocation list."""

    def __init__(
        self,
        ca_certificate: Certificate,
        crl: RevocationList | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        if not ca_certificate.is_ca or not ca_certificate.signed_by(ca_certificate.public_key):
            raise BadCertificate(f"{ca_certificate.describe()} is not a self-signed CA certificate")
        self.ca = ca_certificate
        self.crl = crl
        self.clock = clock
        # Signature checks are the costly part (an SM2 verify): remember good certificates by
        # fingerprint; revocation and dates are checked on every validate().
        self._verified: set[bytes] = set()

    def update_crl(self, crl: RevocationList) -> None:
        """Replace the revocation list with a newer one signed by our CA."""
        if self.crl is not None and crl.number < self.crl.number:
            raise BadRevocationList(
                f"CRL number {crl.number} is older than the one held ({self.crl.number})"
            )
        self.crl = crl

    def validate(self, cert: Certificate, roles: Iterable[Role] | None = None) -> Certificate:
        """Return `cert` if issued by our CA, not revoked, valid now and of one of `roles`."""
        now = self.clock()
        if cert.fingerprint not in self._verified:
            if cert.issuer != self.ca.name or not cert.signed_by(self.ca.public_key):
                raise UnknownIssuer(
                    f"certificate {cert.describe()} was not issued by the CA {self.ca.name!r} "
                    f"(its issuer is {cert.issuer!r})"
                )
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified.add(cert.fingerprint)
        # RFC 5280 6.1.3 (a)(2): "The certificate validity period includes the current time."
        if now < self.ca.not_before:
            raise CertificateNotYetValid(
                f"the CA certificate {self.ca.name!r} is not valid before "
                f"{_utc(self.ca.not_before).isoformat()}"
            )
        if now > self.ca.not_after:
            raise CertificateExpired(
                f"the CA certificate {self.ca.name!r} expired at "
                f"{_utc(self.ca.not_after).isoformat()}"
            )
        if self.crl is not None and (entry := self.crl.is_revoked(cert.serial)) is not None:
            # RFC 5280 6.1.3 (a)(3): "At the current time, the certificate is not revoked."
            raise CertificateRevoked(
                f"certificate {cert.describe()} was revoked at "
                f"{_utc(entry.revoked_at).isoformat()} ({entry.reason})"
            )
        if now < cert.not_before:
            raise CertificateNotYetValid(
                f"certificate {cert.describe()} is not valid before "
                f"{_utc(cert.not_before).isoformat()}"
            )
        if now > cert.not_after:
            raise CertificateExpired(
                f"certificate {cert.describe()} expired at {_utc(cert.not_after).isoformat()}"
            )
        if roles is not None:
            allowed = tuple(roles)
            if cert.role not in allowed or cert.is_ca:
                raise WrongRole(
                    f"certificate {cert.describe()} has role {cert.role_text!r}; expected "
                    f"{' or '.join(r.value for r in allowed)}"
                )
        return cert

    @classmethod
    def from_files(
        cls, ca_cert: Path, crl: Path | None = None, *, clock: Clock = time.time
    ) -> TrustStore:
        """From a CA certificate file and an optional CRL file."""
        ca = Certificate.load_file(ca_cert)
        rl = None
        if crl is not None:
            try:
                rl = RevocationList.load(Path(crl).read_bytes(), ca)
            except OSError as e:
                raise BadRevocationList(f"cannot read CRL {crl}: {e.strerror or e}") from None
        return cls(ca, rl, clock=clock)


# ------------------------------------------------------------------------------------------ CA


@dataclass(frozen=True, slots=True)
class IssuedEntry:
    """One certificate the CA issued, as kept in its index."""

    serial: int
    name: str
    role: str
    not_before: float
    not_after: float
    fingerprint: str
    revoked_at: float | None = None
    reason: str | None = None

    def status(self, now: float) -> str:
        """'revoked', 'expired', 'not yet valid' or 'valid' at `now`."""
        if self.revoked_at is not None:
            return "revoked"
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "not yet valid"
        return "valid"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (serial as hex)."""
        d: dict[str, Any] = {
            "serial": f"{self.serial:x}",
            "name": self.name,
            "role": self.role,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "fingerprint": self.fingerprint,
        }
        if self.revoked_at is not None:
            d["revoked_at"] = self.revoked_at
            d["reason"] = self.reason
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IssuedEntry:
        """Inverse of to_json."""
        return cls(
            serial=int(d["serial"], 16),
            name=str(d["name"]),
            role=str(d["role"]),
            not_before=float(d["not_before"]),
            not_after=float(d["not_after"]),
            fingerprint=str(d["fingerprint"]),
            revoked_at=None if d.get("revoked_at") is None else float(d["revoked_at"]),
            reason=None if d.get("reason") is None else str(d["reason"]),
        )


def _new_serial(taken: Mapping[int, Any]) -> int:
    # RFC 5280 4.1.2.2: positive, at most 20 octets; 63 random bits make collisions negligible.
    while True:
        s = int.from_bytes(os.urandom(8), "big") >> 1
        if s and s not in taken:
            return s


@dataclass
class CertificateAuthority:
    """The platform CA: issues, revokes and lists certificates; persists to a directory if given."""

    key: SM2PrivateKey
    certificate: Certificate
    directory: Path | None = None
    clock: Clock = time.time
    entries: dict[int, IssuedEntry] = field(default_factory=dict)
    crl_number: int = 0
    crl_validity: float = 30 * 86400
    _crl: RevocationList | None = None

    # -- creation and loading

    @classmethod
    def create(
        cls,
        name: str = "vpp-platform-ca",
        *,
        directory: Path | None = None,
        organization: str = "vpp-gateway",
        validity_days: float = 3650,
        passphrase: bytes | None = None,
        iterations: int = DEFAULT_ITERATIONS,
        clock: Clock = time.time,
        key: SM2PrivateKey | None = None,
    ) -> CertificateAuthority:
        """A new CA with a fresh key and self-signed certificate (written to `directory` if given)."""
        check_name(name)
        if directory is not None:
            directory = Path(directory)
            if (directory / "ca.cert.pem").exists() or (directory / "ca.key.pem").exists():
                raise CAError(f"{directory} already holds a CA; refusing to replace it")
        key = key or SM2PrivateKey.generate()
        now = clock()
        subject = _name(name, Role.CA.value, organization)
        cert = _build_certificate(
            ca_key=key,
            issuer=subject,
            subject=subject,
            public_key=key.public_key,
            serial=_new_serial({}),
            not_before=now,
            not_after=now + validity_days * 86400,
            is_ca=True,
        )
        ca = cls(key, cert, directory, clock)
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(directory, 0o700)
                (directory / "certs").mkdir(exist_ok=True)
                (directory / "issued").mkdir(exist_ok=True, mode=0o700)
            except OSError as e:
                raise CAError(
                    f"cannot create the CA directory {directory}: {e.strerror or e}"
                ) from None
            with ca._locked():
                save_private_key(directory / "ca.key.pem", key, passphrase, iterations=iterations)
                write_atomic(directory / "ca.cert.pem", cert.pem)
                ca._save()
        return ca

    @classmethod
    def open(
        cls, directory: Path, passphrase: bytes | None = None, *, clock: Clock = time.time
    ) -> CertificateAuthority:
        """The CA kept in `directory` (its key decrypted with `passphrase` if encrypted)."""
        directory = Path(directory)
        if not (directory / "ca.cert.pem").exists():
            raise CAError(f"no CA in {directory}: run `vpp keys init` first")
        cert = Certificate.load_file(directory / "ca.cert.pem")
        try:
            key = load_private_key_file(directory / "ca.key.pem", passphrase)
        except KeyStoreError as e:
            raise CAError(str(e)) from e
        if key.public_key != cert.public_key:
            raise CAError(f"{directory}/ca.key.pem does not match ca.cert.pem")
        ca = cls(key, cert, directory, clock)
        entries, number = cls.read_index(directory)
        ca.entries = {e.serial: e for e in entries}
        ca.crl_number = number
        return ca

    @staticmethod
    def read_index(directory: Path) -> tuple[list[IssuedEntry], int]:
        """The issued entries and CRL number in `directory`/index.json (no key needed)."""
        path = Path(directory) / "index.json"
        try:
            doc = json.loads(path.read_text())
            return [IssuedEntry.from_json(d) for d in doc["issued"]], int(doc["crl_number"])
        except FileNotFoundError:
            raise CAError(f"no CA in {directory}: run `vpp keys init` first") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CAError(f"{path} is unreadable or damaged: {e}") from None

    # -- persistence

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        with open(self.directory / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _reload_locked(self) -> None:
        # Another `vpp keys` may have changed the index since we opened it.
        if self.directory is not None and (self.directory / "index.json").exists():
            entries, number = self.read_index(self.directory)
            self.entries = {e.serial: e for e in entries}
            self.crl_number = max(self.crl_number, number)

    def _save(self) -> None:
        self._crl = None
        crl = self.revocation_list()
        if self.directory is None:
            return
        doc = {
            "crl_number": self.crl_number,
            "issued": [
                e.to_json() for e in sorted(self.entries.values(), key=lambda e: e.not_before)
            ],
        }
        write_atomic(self.directory / "index.json", json.dumps(doc, indent=1).encode())
        write_atomic(self.directory / "crl.pem", crl.pem)

    # -- operations

    def issue(
        self,
        request: CertificateRequest,
        *,
        role: Role,
        name: str | None = None,
        validity_days: float = 365,
        renew: bool = False,
    ) -> Certificate:
        """Issue a certificate for the key in `request` (its CN, or `name`) with `role`."""
        name = check_name(name or request.name)
        if request.name and request.name != name:
            raise CAError(f"the request names {request.name!r}, not {name!r}")
        if role is Role.CA:
            raise CAError("this CA does not issue CA certificates")
        if validity_days <= 0:
            raise CAError(f"validity must be positive, got {validity_days} days")
        with self._locked():
            self._reload_locked()
            now = self.clock()
            active = [
                e for e in self.entries.values() if e.name == name and e.status(now) == "valid"
            ]
            if active and not renew:
                raise CAError(
                    f"{name!r} already has a valid certificate (serial {active[0].serial:x}); "
                    "revoke it first or renew"
                )
            not_after = min(now + validity_days * 86400, self.certificate.not_after)
            cert = _build_certificate(
                ca_key=self.key,
                issuer=asn1_x509.Certificate.load(self.certificate.der)["tbs_certificate"][
                    "subject"
                ],
                subject=_name(name, role.value, self.certificate.organization),
                public_key=request.public_key,
                serial=_new_serial(self.entries),
                not_before=now,
                not_after=not_after,
                is_ca=False,
            )
            self.entries[cert.serial] = IssuedEntry(
                cert.serial,
                name,
                role.value,
                cert.not_before,
                cert.not_after,
                cert.fingerprint.hex(),
            )
            if self.directory is not None:
                write_atomic(self.directory / "certs" / f"{cert.serial:x}.cert.pem", cert.pem)
                write_atomic(self.directory / "issued" / f"{name}.cert.pem", cert.pem)
            self._save()
        return cert

    def issue_new_key(
        self,
        name: str,
        *,
        role: Role,
        validity_days: float = 365,
        passphrase: bytes | None = None,
        iterations: int = DEFAULT_ITERATIONS,
        renew: bool = False,
    ) -> tuple[SM2PrivateKey, Certificate]:
        """Generate a key for `name`, issue its certificate; the key goes to issued/NAME.key.pem."""
        key = SM2PrivateKey.generate()
        cert = self.issue(
            CertificateRequest.create(key, check_name(name)),
            role=role,
            validity_days=validity_days,
            renew=renew,
        )
        if self.directory is not None:
            save_private_key(
                self.directory / "issued" / f"{name}.key.pem",
                key,
                passphrase,
                iterations=iterations,
                overwrite=True,
            )
        return key, cert

    def revoke(self, which: str | int, reason: str = "unspecified") -> list[IssuedEntry]:
        """Revoke a certificate by serial (int, or hex text) or every valid one of a name."""
        if reason not in REASONS:
            raise CAError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
        with self._locked():
            self._reload_locked()
            targets = self._find(which)
            now = self.clock()
            todo = [e for e in targets if e.revoked_at is None]
            if not todo:
                raise CAError(f"{which!r}: already revoked")
            done = []
            for e in todo:
                new = replace(e, revoked_at=now, reason=reason)
                self.entries[e.serial] = new
                done.append(new)
            self.crl_number += 1
            self._save()
        return done

    def _find(self, which: str | int) -> list[IssuedEntry]:
        if isinstance(which, int):
            e = self.entries.get(which)
            if e is None:
                raise CAError(f"no certificate with serial {which:x}")
            return [e]
        by_name = [e for e in self.entries.values() if e.name == which]
        if by_name:
            return by_name
        try:
            serial = int(which, 16)
        except ValueError:
            raise CAError(f"no certificate named {which!r} (and it is not a hex serial)") from None
        if serial in self.entries:
            return [self.entries[serial]]
        raise CAError(f"no certificate named or with serial {which!r}")

    def revocation_list(self) -> RevocationList:
        """The current signed CRL."""
        if self._crl is None:
            revoked = [
                RevokedEntry(e.serial, e.revoked_at, e.reason or "unspecified")
                for e in self.entries.values()
                if e.revoked_at is not None
            ]
            self._crl = RevocationList.build(
                self.key,
                self.certificate,
                revoked,
                number=self.crl_number,
                now=self.clock(),
                validity=self.crl_validity,
            )
        return self._crl

    def trust_store(self) -> TrustStore:
        """A TrustStore for this CA with its current CRL and clock."""
        return TrustStore(self.certificate, self.revocation_list(), clock=self.clock)
