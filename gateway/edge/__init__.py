"""The edge role: an edge terminal's uplink to the central platform, and the platform's hub.

- gateway.edge.uplink.EdgeUplink: on the edge (`vpp run --role edge`), buffers the local twin's
  samples on disk and forwards them exactly once; takes signed commands down, checks them
  against the edge's own model and executes them through the edge's own command path.
- gateway.edge.hub.EdgeHub / EdgeLinkDriver: on the platform, accepts edge terminals over the
  secure channel; each edge is one south driver of the central twin.
- gateway.edge.buffer.SampleBuffer: the bounded SQLite buffer (and command evidence).
- gateway.edge.messages: the application messages inside the channel's DATA records (pure).

This module holds the certificate-file helpers both sides use (the layout of `vpp keys`: a
directory with ca.cert.pem, crl.pem and issued/NAME.cert.pem + NAME.key.pem; a copy of a
holder's files directly in the directory also works, as on an edge terminal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.codecs.secure import Credentials
from security.identity import Certificate, TrustStore
from security.keystore import load_private_key_file

__all__ = [
    "crl_status",
    "find_pki_file",
    "load_certificate",
    "load_credentials",
    "load_trust_store",
]


def find_pki_file(pki_dir: str | Path, name: str, suffix: str) -> Path:
    """pki_dir/issued/NAME.SUFFIX or pki_dir/NAME.SUFFIX; FileNotFoundError naming both."""
    d = Path(pki_dir)
    for p in (d / "issued" / f"{name}.{suffix}", d / f"{name}.{suffix}"):
        if p.exists():
            return p
    raise FileNotFoundError(f"no {name}.{suffix} in {d} or {d / 'issued'}")


def load_certificate(pki_dir: str | Path, name: str) -> Certificate:
    """The certificate of holder `name`."""
    return Certificate.load_file(find_pki_file(pki_dir, name, "cert.pem"))


def load_credentials(
    pki_dir: str | Path, name: str, passphrase_file: str | Path | None = None
) -> Credentials:
    """Holder `name`'s private key (0600; decrypted with the passphrase file's first line)."""
    passphrase = None
    if passphrase_file is not None:
        lines = Path(passphrase_file).read_bytes().splitlines()
        passphrase = lines[0] if lines else b""
    key = load_private_key_file(find_pki_file(pki_dir, name, "key.pem"), passphrase)
    return Credentials(key, load_certificate(pki_dir, name))


def load_trust_store(pki_dir: str | Path) -> TrustStore:
    """The CA certificate and, if present, its CRL."""
    d = Path(pki_dir)
    crl = d / "crl.pem"
    return TrustStore.from_files(d / "ca.cert.pem", crl if crl.exists() else None)


def crl_status(trust: TrustStore) -> dict[str, Any]:
    """The held CRL for stats: its number, next update and whether that time has passed.

    A CRL past its next update is still used (the newest known list beats none) but shown as
    stale, for an operator to notice: the CA signs a new one on every issue and revocation.
    """
    crl = trust.crl
    if crl is None:
        return {"crl_number": None, "crl_next_update": None, "crl_stale": False}
    nu = crl.next_update
    return {
        "crl_number": crl.number,
        "crl_next_update": nu,
        "crl_stale": nu is not None and trust.clock() > nu,
    }
