"""`vpp crypto`: SM2/SM3/SM4 tools for integrators checking interoperability with devices.

Exit codes: 0 success; 1 the check failed (signature does not verify, decryption refused:
wrong key or tampered data); 2 bad input (unreadable or malformed file, key or argument).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["register"]

_EPILOG = (
    "exit status: 0 ok, 1 check failed (bad signature, wrong key or tampered data), 2 bad input"
)
_DEFAULT_ID = "1234567812345678"


class _Usage(Exception):
    """Bad input from the user: printed as `error: ...`, exit 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp crypto` and its subcommands."""
    p = sub.add_parser(
        "crypto",
        help="SM2 keys and signatures, SM3 digests, SM4 encryption (interop checks)",
        description="SM2/SM3/SM4 tools. SM2 signatures use SM3 and the signer ID (default "
        f"{_DEFAULT_ID}; OpenSSL needs -pkeyopt distid:{_DEFAULT_ID} to match).",
        epilog=_EPILOG,
    )
    cs = p.add_subparsers(dest="crypto_cmd", metavar="SUBCOMMAND", required=True)

    kg = cs.add_parser(
        "sm2-keygen",
        help="generate an SM2 key pair (PKCS#8 PEM private key + SubjectPublicKeyInfo PEM)",
        description="Generate an SM2 key pair. The private key (PKCS#8 PEM, mode 0600) goes to "
        "-o; the public key to --pub (default: KEY.pub.pem beside it).",
        epilog=_EPILOG,
    )
    kg.add_argument("-o", "--out", required=True, type=Path, metavar="KEY.pem")
    kg.add_argument("--pub", type=Path, metavar="PUB.pem", help="public key file")
    kg.add_argument("--force", action="store_true", help="overwrite existing files")
    kg.set_defaults(func=_keygen)

    sg = cs.add_parser(
        "sm2-sign",
        help="sign a file with SM2/SM3 (DER signature)",
        description="Sign FILE with SM2 over SM3(Z || FILE). Writes a DER signature "
        "(SEQUENCE r, s), or r||s (64 bytes) with --raw, to -o (default FILE.sig).",
        epilog=_EPILOG,
    )
    sg.add_argument(
        "--key", required=True, type=Path, metavar="KEY.pem", help="private key (PEM/DER)"
    )
    _id_args(sg)
    sg.add_argument("file", type=Path, metavar="FILE")
    sg.add_argument(
        "-o", "--out", type=Path, metavar="SIG", help="signature file (default FILE.sig)"
    )
    sg.add_argument("--raw", action="store_true", help="write raw r||s (64 bytes) instead of DER")
    sg.add_argument("--force", action="store_true", help="overwrite an existing signature file")
    sg.set_defaults(func=_sign)

    vf = cs.add_parser(
        "sm2-verify",
        help="verify an SM2/SM3 signature (DER or raw r||s) over a file",
        description="Verify SIG over FILE with the public key. SIG may be DER or raw r||s.",
        epilog=_EPILOG,
    )
    vf.add_argument(
        "--pub",
        required=True,
        type=Path,
        metavar="PUB.pem",
        help="public key (or private key) PEM/DER",
    )
    vf.add_argument("--sig", required=True, type=Path, metavar="SIG")
    _id_args(vf)
    vf.add_argument("file", type=Path, metavar="FILE")
    vf.set_defaults(func=_verify)

    h = cs.add_parser(
        "sm3",
        help="print the SM3 digest of files",
        description="Print the SM3 digest of each FILE ('-' reads standard input), like sha256sum.",
        epilog=_EPILOG,
    )
    h.add_argument("files", nargs="+", metavar="FILE")
    h.set_defaults(func=_sm3)

    for name, verb in (("sm4-encrypt", "encrypt"), ("sm4-decrypt", "decrypt")):
        e = cs.add_parser(
            name,
            help=f"{verb} a file with SM4 (GCM or CBC)",
            description=f"{verb.capitalize()} IN to OUT with SM4. GCM file: nonce(12) || "
            "ciphertext || tag(16). CBC file: iv(16) || PKCS#7-padded ciphertext (no integrity: "
            "prefer GCM).",
            epilog=_EPILOG,
        )
        k = e.add_mutually_exclusive_group(required=True)
        k.add_argument("--key", metavar="HEX", help="16-byte key as 32 hex digits")
        k.add_argument(
            "--key-file",
            type=Path,
            metavar="F",
            help="file with the key: 16 raw bytes or 32 hex digits",
        )
        e.add_argument("--mode", choices=["gcm", "cbc"], default="gcm", help="default gcm")
        e.add_argument("input", type=Path, metavar="IN")
        e.add_argument("-o", "--out", required=True, type=Path, metavar="OUT")
        e.add_argument("--force", action="store_true", help="overwrite an existing OUT")
        e.set_defaults(func=_sm4, sm4_encrypt=verb == "encrypt")


def _id_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--id", help=f"signer ID as text (UTF-8; default {_DEFAULT_ID})")
    g.add_argument("--id-hex", metavar="HEX", help="signer ID as hex bytes")


# -------------------------------------------------------------------------------------------- io


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise _Usage(f"cannot read {what} {path}: {e.strerror or e}") from None


def _write(path: Path, data: bytes, *, force: bool, private: bool = False) -> None:
    """Write atomically (temp file + rename); never replace an existing file unless forced."""
    if path.exists() and not force:
        raise _Usage(f"{path} exists; use --force to overwrite")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _Usage(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600: keep that for secrets, open it up for the rest.
            if not private:
                os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _uid(args: argparse.Namespace) -> bytes:
    if args.id_hex is not None:
        try:
            return bytes.fromhex(args.id_hex)
        except ValueError:
            raise _Usage(f"--id-hex {args.id_hex!r} is not hex") from None
    return (args.id if args.id is not None else _DEFAULT_ID).encode()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence fd 2 for a library call: GmSSL prints diagnostics on every failed verification.

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


# -------------------------------------------------------------------------------------- handlers


def _keygen(args: argparse.Namespace) -> int:
    from security.sm2 import SM2PrivateKey

    def body() -> None:
        out: Path = args.out
        pub: Path = args.pub or out.with_name(
            (out.name[:-4] if out.name.endswith(".pem") else out.name) + ".pub.pem"
        )
        if pub.resolve() == out.resolve():
            raise _Usage("private and public key files must differ")
        for p in (out, pub):
            if p.exists() and not args.force:
                raise _Usage(f"{p} exists; use --force to overwrite")
        key = SM2PrivateKey.generate()
        _write(out, key.to_pem(), force=args.force, private=True)
        _write(pub, key.public_key.to_pem(), force=args.force)
        print(f"wrote {out} (private, PKCS#8) and {pub} (public)")

    return _guard(body)


def _sign(args: argparse.Namespace) -> int:
    from security.errors import KeyFormatError
    from security.sm2 import load_private_key, signature_to_raw

    def body() -> None:
        try:
            key = load_private_key(_read(args.key, "private key"))
        except KeyFormatError as e:
            raise _Usage(f"{args.key}: not a usable SM2 private key: {e}") from None
        data = _read(args.file, "file")
        sig = key.sign(data, _uid(args))
        if args.raw:
            sig = signature_to_raw(sig)
        out: Path = args.out or args.file.with_name(args.file.name + ".sig")
        _write(out, sig, force=args.force)
        print(f"wrote {'raw r||s' if args.raw else 'DER'} signature {out}")

    return _guard(body)


def _verify(args: argparse.Namespace) -> int:
    from security.errors import BadSignature, KeyFormatError
    from security.sm2 import SM2PublicKey, load_private_key, load_public_key, signature_from_raw

    def body() -> int:
        blob = _read(args.pub, "public key")
        pub: SM2PublicKey
        try:
            pub = load_public_key(blob)
        except KeyFormatError as first:
            try:
                pub = load_private_key(blob).public_key
            except KeyFormatError:
                raise _Usage(f"{args.pub}: not a usable SM2 public key: {first}") from None
        sig = _read(args.sig, "signature")
        data = _read(args.file, "file")
        uid = _uid(args)
        try:
            with _quiet_stderr():
                try:
                    pub.verify(sig, data, uid)
                except BadSignature:
                    if len(sig) != 64:
                        raise
                    pub.verify(signature_from_raw(sig), data, uid)
        except BadSignature as e:
            print(f"FAIL: {args.file}: {e}", file=sys.stderr)
            return 1
        print(f"OK: {args.file}: signature valid (signer ID {uid!r})")
        return 0

    return _guard(body)


def _sm3(args: argparse.Namespace) -> int:
    from security.sm3 import sm3_file

    def body() -> None:
        for name in args.files:
            if name == "-":
                digest = sm3_file(sys.stdin.buffer)
            else:
                try:
                    with open(name, "rb") as f:
                        digest = sm3_file(f)
                except OSError as e:
                    raise _Usage(f"cannot read file {name}: {e.strerror or e}") from None
            print(f"{digest.hex()}  {name}")

    return _guard(body)


def _sm4_key(args: argparse.Namespace) -> bytes:
    if args.key is not None:
        text = args.key
        what = "--key"
    else:
        raw = _read(args.key_file, "key file")
        if len(raw) == 16:
            return raw
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Usage(
                f"key file {args.key_file} holds {len(raw)} bytes: expected 16 raw bytes or 32 hex digits"
            ) from None
        what = f"key file {args.key_file}"
    text = "".join(text.split())
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise _Usage(f"{what} is not hex") from None
    if len(key) != 16:
        raise _Usage(f"{what} is {len(key)} bytes; an SM4 key is 16 bytes (32 hex digits)")
    return key


def _sm4(args: argparse.Namespace) -> int:
    from security import sm4
    from security.errors import DecryptionError

    def body() -> int:
        key = _sm4_key(args)
        data = _read(args.input, "input")
        if args.sm4_encrypt:
            out = sm4.seal_gcm(key, data) if args.mode == "gcm" else sm4.seal_cbc(key, data)
        else:
            try:
                out = sm4.open_gcm(key, data) if args.mode == "gcm" else sm4.open_cbc(key, data)
            except DecryptionError as e:
                print(f"FAIL: {args.input}: {e}", file=sys.stderr)
                return 1
        _write(args.out, out, force=args.force)
        print(f"wrote {args.out} ({len(out)} bytes, SM4-{args.mode.upper()})")
        return 0

    return _guard(body)


def _guard(body: Callable[[], int | None]) -> int:
    """Run a handler body; map bad input to exit 2 with one `error:` line."""
    from security.errors import SecurityError

    try:
        rc = body()
    except _Usage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SecurityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if rc is None else int(rc)
