"""The audit log: an append-only, SM3 hash-chained and SM2-signed record of who did what.

What is recorded (AuditKind): every command transition (from the command book), who asked for a
command and what came of it, logins (success and failure), logouts, refusals by the role matrix,
user additions and removals, role and password changes, configuration changes, and the signed
checkpoints themselves.

Chain. Record n holds seq, ts, kind, actor, source, subject, detail (canonical JSON text) and the
hash of record n-1; its own hash is SM3 over a domain tag and the canonical JSON of those fields.
Altering any stored byte breaks that record's hash; removing or inserting a record breaks the
link (or, if every later hash is recomputed, the next signed checkpoint).

Signatures: periodic checkpoints, not every record. SM2 signs ~4,000/s per core here, and one
dispatch to 10,000 DERs alone makes ~30,000 command transitions: signing each would cost seconds of
CPU per dispatch. Because every record is bound into the chain, one signature over the head hash
covers everything before it. A checkpoint is a record of kind "checkpoint" whose detail holds
the seq and hash it covers, the signing certificate's SM3 fingerprint and the platform's SM2
signature over ``"VPP-AUDIT-CHECKPOINT\\x01" || canonical JSON [through, head, ts, cert]``; it is
written after every `checkpoint_every` records, when `checkpoint_interval_s` has passed with
unsigned records, and on close. The cost: records after the last checkpoint are hash-chained but
not yet signed; someone able to rewrite the database could rewrite that tail (at most one
interval's worth) undetected, and `verify()` reports how many records that is.

Sealed details. With a ColumnCipher (site `at_rest.encrypt_business_data`), the detail of every
record but checkpoints and configuration changes (what a command asked for, where a login came
from) is stored SM4-GCM sealed and bound to its seq. The hash covers the stored form, so the
chain and the checkpoints are verified without the master key; rows() opens details for
readers that have it.

Writers. `record()` only queues (cheap, any thread); `flush()` (a worker thread) appends the queue
in one transaction, reading the chain head inside it, so several writers (the gateway, a CLI)
can append to one database: a lost race is an integrity error, retried on the new head, never a
fork. A failed write keeps the queue, in order, for the next attempt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from security.errors import BadSignature, CryptoError, SecurityError
from security.identity import Certificate, IdentityError
from security.identity import Role as CertRole
from security.keystore import KeyStoreError, load_private_key_file
from security.secrets import ColumnCipher, is_sealed
from security.sm2 import SM2PrivateKey
from security.sm3 import sm3

__all__ = [
    "GENESIS",
    "AuditError",
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "AuditSigner",
    "AuditVerification",
    "load_platform_signer",
]

log = logging.getLogger(__name__)

GENESIS = "0" * 64
TABLE = "audit_log"
_RECORD_DOMAIN = b"VPP-AUDIT-RECORD\x01"
_CHECKPOINT_DOMAIN = b"VPP-AUDIT-CHECKPOINT\x01"
_MAX_TEXT = 256
_RETRIES = 5
_PLAIN_KINDS = frozenset({"checkpoint", "config_change"})  # never sealed: verify reads them

Clock = Callable[[], float]


class AuditError(SecurityError):
    """The audit log cannot be opened, written or read; the message says why."""


class AuditKind(StrEnum):
    """What an audit record is about."""

    COMMAND = "command"
    COMMAND_REQUEST = "command_request"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    ACCESS_DENIED = "access_denied"
    USER_ADD = "user_add"
    USER_REMOVE = "user_remove"
    ROLE_CHANGE = "role_change"
    PASSWORD_CHANGE = "password_change"
    CONFIG_CHANGE = "config_change"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored record with its place in the chain."""

    seq: int
    ts: float
    kind: str
    actor: str
    source: str
    subject: str
    detail: str  # as stored (what the hash covers): JSON text, or sealed
    prev_hash: str
    hash: str
    opened: str | None = None  # the JSON text of a sealed detail, when it was opened

    @property
    def sealed(self) -> bool:
        """True when the stored detail is sealed."""
        return is_sealed(self.detail)

    @property
    def details(self) -> Any:
        """The detail as parsed JSON (None if it does not parse or is sealed and not opened)."""
        text = self.opened if self.opened is not None else self.detail
        try:
            return json.loads(text)
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (detail parsed)."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "actor": self.actor,
            "source": self.source,
            "subject": self.subject,
            "detail": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def record_hash(
    seq: int, ts: float, kind: str, actor: str, source: str, subject: str, detail: str, prev: str
) -> str:
    """SM3 (hex) of one record's fields and its predecessor's hash."""
    body = _canonical([seq, repr(float(ts)), kind, actor, source, subject, detail, prev])
    return sm3(_RECORD_DOMAIN + body.encode("utf-8")).hex()


def _checkpoint_bytes(through: int, head: str, ts: float, cert_fp: str) -> bytes:
    return _CHECKPOINT_DOMAIN + _canonical([through, head, repr(float(ts)), cert_fp]).encode()


@dataclass(frozen=True, slots=True)
class AuditSigner:
    """The platform's key and certificate (role platform) that sign checkpoints."""

    key: SM2PrivateKey = field(repr=False)
    certificate: Certificate

    def __post_init__(self) -> None:
        if self.key.public_key != self.certificate.public_key:
            raise AuditError("the audit signing key does not match its certificate")
        if self.certificate.role is not CertRole.PLATFORM or self.certificate.is_ca:
            raise AuditError(
                f"audit checkpoints are signed with a platform certificate, not "
                f"{self.certificate.describe()}"
            )


def load_platform_signer(
    pki_dir: str | Path, name: str = "vpp-platform", passphrase: bytes | None = None
) -> AuditSigner:
    """The platform signer from a CA directory: issued/NAME.cert.pem + NAME.key.pem (or NAME.*
    directly in pki_dir)."""
    d = Path(pki_dir)
    for base in (d / "issued", d):
        cert_path, key_path = base / f"{name}.cert.pem", base / f"{name}.key.pem"
        if cert_path.exists() and key_path.exists():
            try:
                cert = Certificate.load_file(cert_path)
                key = load_private_key_file(key_path, passphrase)
            except (IdentityError, KeyStoreError, CryptoError) as e:
                raise AuditError(f"audit signer {name!r}: {e}") from e
            return AuditSigner(key, cert)
    raise AuditError(
        f"no platform certificate and key {name!r} in {d} (issued/{name}.cert.pem + .key.pem): "
        f"run `vpp keys issue --name {name} --role platform`"
    )


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What verify() found: intact or the first broken record and why, and what is signed."""

    records: int
    checkpoints: int
    signed_through: int
    signatures_checked: bool
    first_broken: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when every record is intact (and every checkpoint verified, if checked)."""
        return self.first_broken is None

    @property
    def unsigned_tail(self) -> int:
        """Records after the last verified checkpoint."""
        return max(0, self.records - self.signed_through)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "signed_through": self.signed_through,
            "unsigned_tail": self.unsigned_tail,
            "signatures_checked": self.signatures_checked,
            "first_broken": self.first_broken,
            "reason": self.reason,
        }


@dataclass(slots=True)
class _Pending:
    ts: float
    kind: str
    actor: str
    source: str
    subject: str
    detail: str


def _text(value: object, limit: int = _MAX_TEXT) -> str:
    s = "" if value is None else str(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


class AuditLog:
    """Append-only, hash-chained audit records in a SQLAlchemy database, checkpoints SM2-signed."""

    def __init__(
        self,
        engine: Engine,
        *,
        signer: AuditSigner | None = None,
        trusted: Iterable[Certificate] = (),
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        clock: Clock = time.time,
        table_name: str = TABLE,
        cipher: ColumnCipher | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise AuditError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
        if not checkpoint_interval_s > 0:
            raise AuditError(f"checkpoint_interval_s must be positive, not {checkpoint_interval_s}")
        self.engine = engine
        self.signer = signer
        self.trusted: dict[str, Certificate] = {c.fingerprint.hex(): c for c in trusted}
        if signer is not None:
            self.trusted[signer.certificate.fingerprint.hex()] = signer.certificate
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.clock = clock
        self.cipher = cipher
        md = MetaData()
        self.table = Table(
            table_name,
            md,
            Column("seq", Integer, primary_key=True, autoincrement=False),
            Column("ts", Float, nullable=False),
            Column("kind", String(32), nullable=False),
            Column("actor", String(_MAX_TEXT), nullable=False),
            Column("source", String(_MAX_TEXT), nullable=False),
            Column("subject", Text, nullable=False),
            Column("detail", Text, nullable=False),
            Column("prev_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
            Index(f"ix_{table_name}_kind_seq", "kind", "seq"),
        )
        self.metadata = md
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._unsigned = 0  # records this writer appended since its last checkpoint
        self._force_checkpoint = False
        self._first_unsigned_ts: float | None = None  # oldest record not covered by a checkpoint
        self.written = 0
        self.checkpoints_written = 0

    # --- opening -----------------------------------------------------------------------------

    def open(self) -> AuditLog:
        """Create the table if missing; note how much of the stored chain is not yet signed."""
        t = self.table
        try:
            self.metadata.create_all(self.engine)
            with self.engine.connect() as conn:
                seq = conn.execute(select(func.max(t.c.seq))).scalar()
                ck = conn.execute(
                    select(t.c.seq, t.c.ts)
                    .where(t.c.kind == AuditKind.CHECKPOINT.value)
                    .order_by(t.c.seq.desc())
                    .limit(1)
                ).first()
                ck_seq = int(ck[0]) if ck is not None else 0
                unsigned = int(seq or 0) - ck_seq
                first = self._ts_of(conn, ck_seq + 1) if unsigned else None
        except SQLAlchemyError as e:
            raise AuditError(f"cannot open the audit log: {e}") from e
        self._unsigned, self._first_unsigned_ts = unsigned, first
        return self

    def _ts_of(self, conn: Connection, seq: int) -> float | None:
        t = self.table
        ts = conn.execute(select(t.c.ts).where(t.c.seq == seq)).scalar()
        return float(ts) if ts is not None else None

    # --- recording (any thread) --------------------------------------------------------------

    def record(
        self,
        kind: AuditKind | str,
        *,
        actor: str,
        source: str = "",
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> None:
        """Queue one record (written by the next flush)."""
        k = AuditKind(kind)
        if k is AuditKind.CHECKPOINT:
            raise AuditError("checkpoints are written by the log itself")
        try:
            text = _canonical(dict(detail or {}))
        except (TypeError, ValueError) as e:
            raise AuditError(f"audit detail of a {k.value} record is not JSON: {e}") from None
        when = self.clock() if ts is None else float(ts)
        if not math.isfinite(when):
            when = self.clock()
        p = _Pending(when, k.value, _text(actor), _text(source), _text(subject, 4096), text)
        with self._lock:
            self._pending.append(p)

    def attach(self, book: Any) -> None:
        """Record every transition of a command book (twin.commands.CommandBook) from now on."""

        def on_transition(rec: Any, t: Any) -> None:
            cmd = rec.command
            detail: dict[str, Any] = {"state": t.state.value, "reason": t.reason}
            if len(rec.history) == 1:  # accepted: say what the command is
                detail.update(
                    point=cmd.target,
                    value=_json_value(cmd.value),
                    origin=cmd.origin,
                    deadline=cmd.deadline,
                )
            self.record(AuditKind.COMMAND, actor=cmd.origin, subject=cmd.id, detail=detail, ts=t.ts)

        book.add_listener(on_transition)

    def request_checkpoint(self) -> None:
        """Sign the chain head at the next flush even if no threshold is reached."""
        self._force_checkpoint = True

    @property
    def pending(self) -> int:
        """Records queued but not yet written."""
        with self._lock:
            return len(self._pending)

    @property
    def checkpoint_due(self) -> bool:
        """True when a flush would write a checkpoint even with nothing queued."""
        return self.signer is not None and self._unsigned > 0 and self._force_checkpoint

    # --- writing (worker thread) -------------------------------------------------------------

    def flush(self, *, checkpoint: bool = False) -> int:
        """Append queued records in one transaction (and checkpoints as due); records written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            force = checkpoint or self._force_checkpoint
            if not batch and not (self.signer is not None and force) and not self._time_due():
                return 0
            last: Exception | None = None
            for _ in range(_RETRIES):
                try:
                    with self.engine.begin() as conn:
                        n, signed = self._append(conn, batch, force)
                except (IntegrityError, OperationalError) as e:  # another writer won the race
                    last = e
                    time.sleep(0.01)
                    continue
                except SQLAlchemyError as e:
                    last = e
                    break
                self.written += n
                self._force_checkpoint = False
                if signed:
                    self.checkpoints_written += signed
                return n
            with self._lock:  # keep them, in order, for the next attempt
                self._pending[:0] = batch
            raise AuditError(f"cannot write audit records: {last}") from last

    def _time_due(self) -> bool:
        """Records have waited unsigned for checkpoint_interval_s (as far as this writer knows)."""
        first = self._first_unsigned_ts
        return (
            self.signer is not None
            and self._unsigned > 0
            and first is not None
            and self.clock() - first >= self.checkpoint_interval_s
        )

    def _append(self, conn: Connection, batch: list[_Pending], force: bool) -> tuple[int, int]:
        t = self.table
        row = conn.execute(select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)).first()
        seq, prev = (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
        ck = conn.execute(
            select(t.c.seq, t.c.ts)
            .where(t.c.kind == AuditKind.CHECKPOINT.value)
            .order_by(t.c.seq.desc())
            .limit(1)
        ).first()
        ck_seq = int(ck[0]) if ck is not None else 0
        unsigned = seq - ck_seq
        first_unsigned = self._ts_of(conn, ck_seq + 1) if unsigned else None
        rows: list[dict[str, Any]] = []
        signed = 0

        def add(p: _Pending) -> None:
            nonlocal seq, prev
            seq += 1
            detail = p.detail
            if self.cipher is not None and p.kind not in _PLAIN_KINDS:
                detail = self.cipher.seal(detail, f"{t.name}.detail:{seq}")
            h = record_hash(seq, p.ts, p.kind, p.actor, p.source, p.subject, detail, prev)
            rows.append(
                {
                    "seq": seq,
                    "ts": p.ts,
                    "kind": p.kind,
                    "actor": p.actor,
                    "source": p.source,
                    "subject": p.subject,
                    "detail": detail,
                    "prev_hash": prev,
                    "hash": h,
                }
            )
            prev = h

        for p in batch:
            add(p)
            if unsigned == 0:
                first_unsigned = p.ts
            unsigned += 1
            if self.signer is not None and unsigned >= self.checkpoint_every:
                add(self._checkpoint(seq, prev))
                signed += 1
                unsigned, first_unsigned = 0, None
        waited = self.clock() - first_unsigned if first_unsigned is not None else 0.0
        if (
            self.signer is not None
            and unsigned > 0
            and (force or waited >= self.checkpoint_interval_s)
        ):
            add(self._checkpoint(seq, prev))
            signed += 1
            unsigned, first_unsigned = 0, None
        if rows:
            conn.execute(t.insert(), rows)
        self._unsigned, self._first_unsigned_ts = unsigned, first_unsigned
        return len(rows), signed

    def _checkpoint(self, through: int, head: str) -> _Pending:
        signer = self.signer
        assert signer is not None
        ts = self.clock()
        fp = signer.certificate.fingerprint.hex()
        sig = signer.key.sign(_checkpoint_bytes(through, head, ts, fp))
        detail = {
            "through": through,
            "head": head,
            "cert": fp,
            "signature": base64.b64encode(sig).decode("ascii"),
        }
        return _Pending(
            ts, AuditKind.CHECKPOINT.value, "system", "", str(through), _canonical(detail)
        )

    async def run(self, period_s: float = 0.5) -> None:
        """Flush every period_s (and sign as due) until cancelled; failures are logged, kept."""
        while True:
            await asyncio.sleep(period_s)
            if self.pending or self._time_due() or self.checkpoint_due:
                try:
                    await asyncio.to_thread(self.flush)
                except AuditError:
                    log.exception("writing audit records failed; will retry")

    def stats(self) -> dict[str, Any]:
        """Counters for Gateway.status(): queued, written, checkpoints, whether it signs."""
        return {
            "pending": self.pending,
            "written": self.written,
            "checkpoints": self.checkpoints_written,
            "unsigned": self._unsigned,
            "signing": self.signer is not None,
        }

    def close(self) -> int:
        """Write what is queued and sign the head (call from a worker thread at shutdown)."""
        return self.flush(checkpoint=True)

    # --- configuration -----------------------------------------------------------------------

    def note_config(
        self, name: str, data: bytes, *, actor: str = "system", source: str = ""
    ) -> bool:
        """Record a config_change when `name`'s SM3 differs from the last one recorded; True if so."""
        fp = sm3(data).hex()
        with self._lock:
            queued = [
                p
                for p in self._pending
                if p.kind == AuditKind.CONFIG_CHANGE.value and p.subject == name
            ]
        previous: str | None = None
        if queued:
            previous = json.loads(queued[-1].detail).get("sm3")
        else:
            t = self.table
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(
                        select(t.c.detail)
                        .where(t.c.kind == AuditKind.CONFIG_CHANGE.value, t.c.subject == name)
                        .order_by(t.c.seq.desc())
                        .limit(1)
                    ).first()
            except SQLAlchemyError as e:
                raise AuditError(f"cannot read the audit log: {e}") from e
            if row is not None:
                with contextlib.suppress(ValueError, AttributeError):
                    previous = json.loads(row[0]).get("sm3")
        if previous == fp:
            return False
        self.record(
            AuditKind.CONFIG_CHANGE,
            actor=actor,
            source=source,
            subject=name,
            detail={"sm3": fp, "previous": previous, "bytes": len(data)},
        )
        return True

    # --- reading -----------------------------------------------------------------------------

    def rows(
        self,
        after: int = 0,
        limit: int = 1000,
        kind: str | None = None,
        *,
        open_sealed: bool = True,
    ) -> list[AuditRecord]:
        """Records with seq > after (of one kind if given), oldest first; sealed details opened
        when this log has the cipher (AuditError naming the record if one does not open)."""
        t = self.table
        q = select(t).where(t.c.seq > after)
        if kind is not None:
            q = q.where(t.c.kind == kind)
        try:
            with self.engine.connect() as conn:
                res = conn.execute(q.order_by(t.c.seq).limit(limit)).all()
        except SQLAlchemyError as e:
            raise AuditError(f"cannot read the audit log: {e}") from e
        out = []
        for r in res:
            opened = None
            if open_sealed and self.cipher is not None and is_sealed(r.detail):
                try:
                    opened = self.cipher.open(r.detail, f"{t.name}.detail:{r.seq}")
                except CryptoError as e:
                    raise AuditError(f"audit record {r.seq}: {e}") from e
            rec = AuditRecord(
                int(r.seq), float(r.ts), r.kind, r.actor, r.source, r.subject, r.detail,
                r.prev_hash, r.hash, opened,
            )  # fmt: skip
            out.append(rec)
        return out

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last stored record; (0, GENESIS) when empty."""
        t = self.table
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)
                ).first()
        except SQLAlchemyError as e:
            raise AuditError(f"cannot read the audit log: {e}") from e
        return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)

    def _all(self, batch: int = 5000) -> Iterator[AuditRecord]:
        after = 0
        while True:
            rows = self.rows(after, batch, open_sealed=False)
            if not rows:
                return
            yield from rows
            after = rows[-1].seq

    def verify(self, certificates: Iterable[Certificate] | None = None) -> AuditVerification:
        """Check every record and checkpoint; name the first broken record and why.

        Signatures are checked against `certificates` (by default the signer's and the trusted
        ones given at construction); with none at all they are not checked.
        """
        trusted = dict(self.trusted)
        for c in certificates or ():
            trusted[c.fingerprint.hex()] = c
        return verify_records(self._all(), trusted)


def verify_records(
    records: Iterable[AuditRecord], trusted: Mapping[str, Certificate]
) -> AuditVerification:
    """Verify a chain given oldest first; `trusted` maps certificate fingerprints (hex) to certs."""
    check_sigs = bool(trusted)
    prev, expect = GENESIS, 1
    n = checkpoints = signed_through = 0

    def broken(seq: int, reason: str) -> AuditVerification:
        return AuditVerification(n, checkpoints, signed_through, check_sigs, seq, reason)

    for r in records:
        if r.seq != expect:
            return broken(
                expect, f"record {expect} is missing (the next stored record is {r.seq}): removed"
            )
        n += 1
        if r.prev_hash != prev:
            return broken(
                r.seq,
                f"record {r.seq} does not link to record {r.seq - 1} "
                "(prev_hash differs): inserted, removed or reordered",
            )
        h = record_hash(r.seq, r.ts, r.kind, r.actor, r.source, r.subject, r.detail, prev)
        if h != r.hash:
            return broken(r.seq, f"record {r.seq} does not match its hash: altered")
        if r.kind == AuditKind.CHECKPOINT.value:
            why = _check_checkpoint(r, prev, trusted, check_sigs)
            if why is not None:
                start = signed_through + 1
                return broken(
                    r.seq,
                    f"checkpoint {r.seq}: {why} (records {start}..{r.seq - 1} are not proven)",
                )
            checkpoints += 1
            signed_through = r.seq
        prev, expect = r.hash, expect + 1
    if not check_sigs:
        signed_through = 0
    return AuditVerification(n, checkpoints, signed_through, check_sigs)


def _check_checkpoint(
    r: AuditRecord, prev: str, trusted: Mapping[str, Certificate], check_sigs: bool
) -> str | None:
    d = r.details
    try:
        through, head, fp = int(d["through"]), str(d["head"]), str(d["cert"])
        sig = base64.b64decode(str(d["signature"]), validate=True)
    except (TypeError, KeyError, ValueError, binascii.Error):
        return "malformed checkpoint detail"
    if through != r.seq - 1 or head != prev:
        return f"covers record {through} ({head[:12]}…), not the record before it"
    if not check_sigs:
        return None
    cert = trusted.get(fp)
    if cert is None:
        return f"signed by an unknown certificate (SM3 fingerprint {fp[:16]}…)"
    try:
        cert.public_key.verify(sig, _checkpoint_bytes(through, head, r.ts, fp))
    except (BadSignature, CryptoError):
        return f"SM2 signature does not verify under {cert.describe()}: forged or altered"
    return None


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v
