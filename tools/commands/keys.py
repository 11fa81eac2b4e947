"""`vpp keys`: the platform CA — init, issue certificates to edge terminals and DER agents, revoke, list.

Exit status: 0 success; 2 refused or bad input (no CA, name taken, unknown name, unreadable or
malformed CSR, wrong passphrase), with the reason on stderr. Passphrases are never taken on the
command line: `--passphrase-file F` or the environment variable VPP_CA_PASSPHRASE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["register"]

_EPILOG = (
    "exit status: 0 ok, 2 refused or bad input. The CA key's passphrase comes from "
    "--passphrase-file or VPP_CA_PASSPHRASE, never from the command line."
)
_DEFAULT_DIR = Path("var/pki")
_ENV = "VPP_CA_PASSPHRASE"


class _Usage(Exception):
    """Bad input or a refusal: printed as `error: ...`, exit 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp keys` and its subcommands."""
    p = sub.add_parser(
        "keys",
        help="platform CA: issue, revoke and list SM2 certificates of edge terminals and DER agents",
        description="The platform certificate authority (SM2 certificates, X.509, SM2-with-SM3). "
        f"Its files live in a directory (default {_DEFAULT_DIR}).",
        epilog=_EPILOG,
    )
    ks = p.add_subparsers(dest="keys_cmd", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--dir", type=Path, default=_DEFAULT_DIR, help=f"CA directory (default {_DEFAULT_DIR})"
        )

    def passphrase(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--passphrase-file",
            type=Path,
            metavar="F",
            help=f"file whose first line is the CA key passphrase (else ${_ENV})",
        )

    i = ks.add_parser(
        "init",
        help="create the CA (key + self-signed certificate + empty CRL)",
        description="Create a CA in --dir: ca.key.pem (0600; encrypted with SM4 under a "
        "passphrase-derived key when a passphrase is given), ca.cert.pem, crl.pem, index.json.",
        epilog=_EPILOG,
    )
    common(i)
    passphrase(i)
    i.add_argument("--name", default="vpp-platform-ca", help="CA name (certificate CN)")
    i.add_argument("--org", default="vpp-gateway", help="organisation (O) of every certificate")
    i.add_argument("--days", type=float, default=3650, help="CA validity in days (default 3650)")
    i.set_defaults(func=_init)

    s = ks.add_parser(
        "issue",
        help="issue a certificate (from a CSR, or with a newly generated key)",
        description="Issue a certificate to NAME. With --csr the key stays with the device (the "
        "CSR proves possession); without, a key is generated and written to "
        "DIR/issued/NAME.key.pem (0600). The certificate goes to DIR/issued/NAME.cert.pem.",
        epilog=_EPILOG,
    )
    common(s)
    passphrase(s)
    s.add_argument("--name", required=True, help="holder name (letters, digits, _ . -)")
    s.add_argument(
        "--role",
        choices=["edge", "der-agent", "platform"],
        default="edge",
        help="what the holder is (default edge; 'platform' for the platform's own certificate)",
    )
    s.add_argument("--csr", type=Path, metavar="CSR", help="PKCS#10 request (PEM or DER)")
    s.add_argument("--days", type=float, default=365, help="validity in days (default 365)")
    s.add_argument("--renew", action="store_true", help="issue even if NAME has a valid one")
    s.add_argument(
        "--key-passphrase-file",
        type=Path,
        metavar="F",
        help="encrypt the generated key with the passphrase in F",
    )
    s.set_defaults(func=_issue)

    r = ks.add_parser(
        "revoke",
        help="revoke a certificate by name (all its valid ones) or serial (hex)",
        description="Revoke and re-issue the CRL (DIR/crl.pem). Peers refuse a revoked "
        "certificate at the next handshake once they hold the new CRL.",
        epilog=_EPILOG,
    )
    common(r)
    passphrase(r)
    r.add_argument("which", metavar="NAME|SERIAL")
    r.add_argument(
        "--reason",
        default="unspecified",
        choices=[
            "unspecified",
            "key_compromise",
            "affiliation_changed",
            "superseded",
            "cessation_of_operation",
            "privilege_withdrawn",
        ],
    )
    r.set_defaults(func=_revoke)

    ls = ks.add_parser(
        "list",
        help="list issued certificates and their status",
        description="List every certificate the CA issued (no passphrase needed).",
        epilog=_EPILOG,
    )
    common(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence fd 2 around a library call: GmSSL prints diagnostics on each failed verification
    (a CSR made by OpenSSL with the empty signer ID fails the default ID first).

    Safe here because the CLI is single-threaded; library code must not do this.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _guard(body: Callable[[], None]) -> int:
    from security.errors import SecurityError

    try:
        with _quiet_stderr():
            body()
    except (_Usage, SecurityError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _read_secret(path: Path | None, what: str) -> bytes | None:
    if path is not None:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:
            raise _Usage(f"cannot read {what} file {path}: {e.strerror or e}") from None
        if not lines or not lines[0]:
            raise _Usage(f"{what} file {path} is empty")
        return lines[0]
    return None


def _ca_passphrase(args: argparse.Namespace) -> bytes | None:
    p = _read_secret(args.passphrase_file, "passphrase")
    if p is None and os.environ.get(_ENV):
        p = os.environ[_ENV].encode()
    return p


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _init(args: argparse.Namespace) -> int:
    from security.identity import CertificateAuthority

    def body() -> None:
        if args.days <= 0:
            raise _Usage("--days must be positive")
        pw = _ca_passphrase(args)
        ca = CertificateAuthority.create(
            args.name,
            directory=args.dir,
            organization=args.org,
            validity_days=args.days,
            passphrase=pw,
        )
        print(
            f"created CA {ca.certificate.name!r} in {args.dir} (key "
            f"{'encrypted' if pw else 'NOT encrypted: give a passphrase to protect it'}), "
            f"valid until {_date(ca.certificate.not_after)}"
        )

    return _guard(body)


def _open(args: argparse.Namespace) -> object:
    from security.identity import CertificateAuthority

    return CertificateAuthority.open(args.dir, _ca_passphrase(args))


def _issue(args: argparse.Namespace) -> int:
    from security.identity import CertificateAuthority, CertificateRequest, Role

    def body() -> None:
        if args.days <= 0:
            raise _Usage("--days must be positive")
        role = Role(args.role)
        ca = _open(args)
        assert isinstance(ca, CertificateAuthority)
        if args.csr is not None:
            if args.key_passphrase_file is not None:
                raise _Usage("--key-passphrase-file is for generated keys, not with --csr")
            try:
                data = args.csr.read_bytes()
            except OSError as e:
                raise _Usage(f"cannot read CSR {args.csr}: {e.strerror or e}") from None
            req = CertificateRequest.load(data)
            cert = ca.issue(
                req, role=role, name=args.name, validity_days=args.days, renew=args.renew
            )
            where = f"{args.dir}/issued/{args.name}.cert.pem"
        else:
            kp = _read_secret(args.key_passphrase_file, "key passphrase")
            _, cert = ca.issue_new_key(
                args.name, role=role, validity_days=args.days, passphrase=kp, renew=args.renew
            )
            where = (
                f"{args.dir}/issued/{args.name}.cert.pem and {args.dir}/issued/{args.name}.key.pem"
            )
        print(
            f"issued {role.value} certificate for {cert.name!r}, serial {cert.serial:x}, valid "
            f"until {_date(cert.not_after)}: {where}"
        )

    return _guard(body)


def _revoke(args: argparse.Namespace) -> int:
    from security.identity import CertificateAuthority

    def body() -> None:
        ca = _open(args)
        assert isinstance(ca, CertificateAuthority)
        done = ca.revoke(args.which, args.reason)
        for e in done:
            print(f"revoked {e.name!r} serial {e.serial:x} ({e.reason})")
        print(f"CRL number {ca.crl_number} written to {args.dir}/crl.pem")

    return _guard(body)


def _list(args: argparse.Namespace) -> int:
    from security.identity import Certificate, CertificateAuthority

    def body() -> None:
        entries, number = CertificateAuthority.read_index(args.dir)
        ca = Certificate.load_file(args.dir / "ca.cert.pem")
        now = time.time()
        if args.json:
            doc = {
                "ca": {"name": ca.name, "not_after": ca.not_after, "serial": f"{ca.serial:x}"},
                "crl_number": number,
                "issued": [e.to_json() | {"status": e.status(now)} for e in entries],
            }
            print(json.dumps(doc, indent=2))
            return
        print(f"CA {ca.name!r}, valid until {_date(ca.not_after)}, CRL number {number}")
        if not entries:
            print("no certificates issued")
            return
        print(f"{'NAME':20} {'ROLE':10} {'SERIAL':17} {'NOT AFTER':21} STATUS")
        for e in entries:
            print(
                f"{e.name:20} {e.role:10} {e.serial:<17x} {_date(e.not_after):21} {e.status(now)}"
            )

    return _guard(body)
