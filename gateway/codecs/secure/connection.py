"""SecureConnection: one end of the secure channel, sans-IO (bytes in, events out, bytes to send).

Theory of operation.

Handshake (1.5 round trips, plaintext records of epoch 0):

    client                                              server
    ClientHello(random, time, R_A, certificate) ------>
                                                        validate the client certificate (CA, CRL,
                                                        dates, role); SM2 key exchange as responder
                                                        -> K, S_B; keys from K and the transcript
                <------ ServerHello(random, time, R_B, certificate, S_B, server finished)
    validate the server certificate; SM2 key exchange
    as initiator -> K; check S_B and server finished
    ClientFinished(S_A, client finished) ------------>  check S_A and client finished
    [established]                                       [established]

The SM2 key exchange (GB/T 32918.3 6.1) authenticates both sides implicitly: K depends on each
side's long-term private key, and S_A / S_B prove the peer derived the same K. The finished MACs
(HMAC-SM3 over SM3(ClientHello || ServerHello up to S_B)) bind the whole transcript: randoms,
times, versions and certificates. A certificate that fails validation, a wrong confirmation or
MAC, or a hello whose time is off by more than `max_skew` fails the handshake with a typed
HandshakeError naming why; the refusing side also sends an alert with that reason, which the
other side raises as PeerRefusedHandshake.

Key schedule (hmac = HMAC-SM3, E(s, label) = hmac(s, "vpp-sc1 " || label)):
master = hmac(K, "vpp-sc1 master" || TH); traffic secrets E(master, "c2s") and E(master, "s2c");
per epoch, key = E(secret, "key")[:16], iv = E(secret, "iv")[:12], next secret = E(secret,
"update"). Re-keying (KEY_UPDATE record, under the old keys) moves one direction to the next
epoch: after `rekey_after_records` records or `rekey_after_seconds`, or on update_keys().

Records after the handshake are SM4-GCM with the 24-byte header as additional data and the nonce
iv XOR (0^16 || epoch || seq), so sequence number, timestamp, epoch and type are all
authenticated. A received record is checked cheapest first and refused (counted in `refused` by
reason, never delivered) when: its type is not one the peer may send now (`bad_type`), its
epoch is not the current receive epoch (`bad_epoch`), its sequence number was already accepted
(`replayed`) or is `window` or more behind the highest accepted (`outside_window`), its
timestamp is more than `max_skew` from our clock (`stale`), or the AEAD tag does not verify
(`bad_mac`). Only an authenticated record moves the replay window. A COMMAND record is then
handed to the CommandVerifier (platform signature over the batch root, inclusion proof,
deadline, command id never seen) and refused with the verifier's reason if it fails. Refusals
do not end the connection unless `max_refused` is set and exceeded (TooManyRefused); framing
errors (unknown version, oversized body) do.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from gateway.codecs.secure.errors import (
    HandshakeError,
    HandshakeFailure,
    LocalProtocolError,
    PeerRefusedHandshake,
    RemoteProtocolError,
    SecureChannelError,
    TooManyRefused,
)
from gateway.codecs.secure.events import (
    NEED_DATA,
    CommandReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    KeyUpdated,
    NeedData,
)
from gateway.codecs.secure.messages import (
    CLOSE_NOTIFY,
    Alert,
    ClientFinished,
    ClientHello,
    ServerHello,
    decode_alert,
    decode_handshake,
)
from gateway.codecs.secure.record import (
    DEFAULT_MAX_BODY,
    VERSION,
    ContentType,
    Record,
    RecordDecoder,
    pack_header,
)
from security import sm4
from security.command_signing import CommandSignatureError, CommandVerifier, SignedCommand
from security.errors import DecryptionError, KeyExchangeError, KeyFormatError
from security.identity import (
    BadCertificate,
    Certificate,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    Clock,
    IdentityError,
    Role,
    TrustStore,
    UnknownIssuer,
    WrongRole,
)
from security.sm2 import N, SM2KeyExchange, SM2PrivateKey, SM2PublicKey
from security.sm3 import hmac_sm3, sm3

__all__ = ["REFUSAL_REASONS", "ChannelConfig", "Credentials", "SecureConnection", "Side", "State"]

_LABEL = b"vpp-sc1 "
_MAX_EPOCH = 0xFFFF
_MAX_SEQ = (1 << 64) - 1
REFUSAL_REASONS = (
    "bad_type",
    "bad_epoch",
    "outside_window",
    "replayed",
    "stale",
    "bad_mac",
    "unexpected_command",
    "malformed_command",
    "bad_proof",
    "bad_signature",
    "untrusted_signer",
    "expired_command",
    "replayed_command",
)
"""Every reason a record may be refused for (keys of SecureConnection.refused)."""
_PROTECTED = frozenset(
    {ContentType.ALERT, ContentType.DATA, ContentType.COMMAND, ContentType.KEY_UPDATE}
)


class Side(Enum):
    """Which end: the CLIENT (edge terminal, DER agent) opens, the SERVER (platform) answers."""

    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    """Where the connection is."""

    IDLE = "idle"
    WAIT_SERVER_HELLO = "wait_server_hello"
    WAIT_CLIENT_HELLO = "wait_client_hello"
    WAIT_CLIENT_FINISHED = "wait_client_finished"
    ESTABLISHED = "established"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Our private key and the certificate the CA issued for it."""

    key: SM2PrivateKey
    certificate: Certificate

    def __post_init__(self) -> None:
        if self.key.public_key != self.certificate.public_key:
            raise LocalProtocolError(
                f"the private key does not match the certificate {self.certificate.describe()}"
            )


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Limits and re-keying policy of one connection."""

    max_skew: float = 30.0
    """Largest accepted difference between a record's timestamp and our clock, in seconds."""
    window: int = 64
    """Replay window: sequence numbers this far behind the highest accepted are refused."""
    rekey_after_records: int = 1 << 20
    rekey_after_seconds: float = 3600.0
    max_refused: int | None = None
    """Fail the connection after this many refused records (None: never)."""
    max_body: int = DEFAULT_MAX_BODY
    peer_roles: tuple[Role, ...] | None = None
    """Roles accepted from the peer; default: platform for a client, edge and DER agent for a server."""
    peer_name: str | None = None
    """If set, the peer certificate's name must be this (a client pinning its platform)."""

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 4096:
            raise LocalProtocolError(f"replay window must be 1..4096, got {self.window}")
        if self.max_skew <= 0 or self.rekey_after_records < 1 or self.rekey_after_seconds <= 0:
            raise LocalProtocolError(
                "max_skew, rekey_after_records and rekey_after_seconds must be positive"
            )


def _expand(secret: bytes, label: bytes) -> bytes:
    return hmac_sm3(secret, _LABEL + label)


class _Keys:
    """One direction's traffic keys at one epoch."""

    __slots__ = ("epoch", "iv", "key", "records", "secret", "since")

    def __init__(self, secret: bytes, epoch: int, since: float) -> None:
        self.secret = secret
        self.epoch = epoch
        self.key = _expand(secret, b"key")[: sm4.KEY_SIZE]
        self.iv = _expand(secret, b"iv")[: sm4.GCM_NONCE_SIZE]
        self.records = 0
        self.since = since

    def next(self, since: float) -> _Keys:
        return _Keys(_expand(self.secret, b"update"), self.epoch + 1, since)

    def nonce(self, seq: int) -> bytes:
        n = int.from_bytes(self.iv, "big") ^ ((self.epoch << 64) | seq)
        return n.to_bytes(sm4.GCM_NONCE_SIZE, "big")


_IDENTITY_REASONS: tuple[tuple[type[IdentityError], HandshakeFailure], ...] = (
    (CertificateRevoked, HandshakeFailure.CERT_REVOKED),
    (CertificateExpired, HandshakeFailure.CERT_EXPIRED),
    (CertificateNotYetValid, HandshakeFailure.CERT_NOT_YET_VALID),
    (UnknownIssuer, HandshakeFailure.UNKNOWN_CA),
    (WrongRole, HandshakeFailure.WRONG_ROLE),
    (BadCertificate, HandshakeFailure.BAD_CERTIFICATE),
)


class SecureConnection:
    """One end of the secure channel: receive_data(), next_event(), send_*(), data_to_send()."""

    def __init__(
        self,
        side: Side,
        credentials: Credentials,
        trust: TrustStore,
        *,
        config: ChannelConfig | None = None,
        command_verifier: CommandVerifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.side = side
        self.credentials = credentials
        self.trust = trust
        self.config = config or ChannelConfig()
        self.command_verifier = command_verifier
        self.clock: Clock = clock or trust.clock
        self.state = State.IDLE if side is Side.CLIENT else State.WAIT_CLIENT_HELLO
        self.peer: Certificate | None = None
        self.refused: Counter[str] = Counter()
        """Refused records by reason (never delivered)."""
        self.delivered = 0
        """Data and command records delivered."""
        self._decoder = RecordDecoder(self.config.max_body)
        self._out = bytearray()
        self._pending: list[Event] = []
        self._tx_seq = 0
        self._tx: _Keys | None = None
        self._rx: _Keys | None = None
        self._rx_top = -1
        self._rx_mask = 0
        self._error: SecureChannelError | None = None
        self._eof = False
        self._closed_event_sent = False
        # handshake state
        self._r: int | None = None
        self._hello: ClientHello | None = None
        self._th = b""
        self._master = b""
        self._expected_confirmation = b""
        if self.config.peer_roles is not None:
            self._peer_roles: tuple[Role, ...] = self.config.peer_roles
        elif side is Side.CLIENT:
            self._peer_roles = (Role.PLATFORM,)
        else:
            self._peer_roles = (Role.EDGE, Role.DER_AGENT)

    # ------------------------------------------------------------------------------ public API

    @property
    def established(self) -> bool:
        """True once the handshake completed (and until closed)."""
        return self.state is State.ESTABLISHED

    @property
    def refused_total(self) -> int:
        """All refused records."""
        return sum(self.refused.values())

    @property
    def send_epoch(self) -> int:
        """The epoch of our sending keys (0 before the handshake)."""
        return self._tx.epoch if self._tx else 0

    @property
    def receive_epoch(self) -> int:
        """The epoch of the peer's sending keys (0 before the handshake)."""
        return self._rx.epoch if self._rx else 0

    def initiate(self) -> None:
        """Client: queue the ClientHello."""
        if self.side is not Side.CLIENT or self.state is not State.IDLE:
            raise LocalProtocolError("initiate() is for a client that has not started")
        # R_A must go out before the server's certificate (and key) is known, but SM2KeyExchange
        # takes the peer key at construction: draw r here, compute R_A = [r]G, and hand r to the
        # exchange once the ServerHello names the server.
        self._r = secrets.randbelow(N - 2) + 1
        ephemeral = SM2PrivateKey(self._r).public_key.to_bytes()
        self._hello = ClientHello(
            VERSION,
            os.urandom(32),
            self._now_ms(),
            ephemeral,
            self.credentials.certificate.der,
        )
        self._send_plain(ContentType.HANDSHAKE, self._hello.encode())
        self.state = State.WAIT_SERVER_HELLO

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; b"" means the peer closed the stream."""
        if data:
            self._decoder.receive_data(data)
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """The next event or NEED_DATA; raises RemoteProtocolError / HandshakeError when fatal."""
        if self._error is not None:
            raise self._error
        try:
            while not self._pending:
                if self.state in (State.CLOSED, State.FAILED):
                    return NEED_DATA
                rec = self._decoder.next_record()
                if rec is None:
                    if self._eof and not self._closed_event_sent:
                        self._closed_event_sent = True
                        self.state = State.CLOSED
                        return ConnectionClosed(False, "the stream ended without a close alert")
                    return NEED_DATA
                self._on_record(rec)
        except HandshakeError as e:
            self._fail(e, alert=not isinstance(e, PeerRefusedHandshake))
            raise
        except RemoteProtocolError as e:
            self._fail(e, alert=False)
            raise
        return self._pending.pop(0)

    def send_data(self, data: bytes) -> None:
        """Queue application bytes as one DATA record."""
        self._send_protected(ContentType.DATA, bytes(data))

    def send_command(self, signed: SignedCommand) -> None:
        """Queue a signed command as one COMMAND record."""
        self._send_protected(ContentType.COMMAND, signed.encode())

    def update_keys(self) -> None:
        """Move our sending keys to the next epoch now (KEY_UPDATE under the old keys)."""
        self._require_established()
        self._key_update()

    def close(self) -> None:
        """Queue a close alert; nothing more can be sent."""
        if self.state is State.ESTABLISHED:
            self._send_protected(ContentType.ALERT, Alert(CLOSE_NOTIFY, "close").encode())
        self.state = State.CLOSED

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer (and forget them)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # ------------------------------------------------------------------------------- sending

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _next_seq(self) -> int:
        seq = self._tx_seq
        if seq >= _MAX_SEQ:
            raise LocalProtocolError("sequence numbers exhausted: open a new connection")
        self._tx_seq += 1
        return seq

    def _send_plain(self, ctype: ContentType, body: bytes) -> None:
        seq = self._next_seq()
        self._out += pack_header(ctype, 0, seq, self._now_ms(), len(body)) + body

    def _require_established(self) -> None:
        if self.state is not State.ESTABLISHED or self._tx is None:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")

    def _send_protected(self, ctype: ContentType, payload: bytes) -> None:
        self._require_established()
        assert self._tx is not None
        tx = self._tx
        if ctype is not ContentType.KEY_UPDATE and (
            tx.records >= self.config.rekey_after_records
            or self.clock() - tx.since >= self.config.rekey_after_seconds
        ):
            self._key_update()
            tx = self._tx
        self._seal(tx, ctype, payload)

    def _seal(self, tx: _Keys, ctype: ContentType, payload: bytes) -> None:
        if len(payload) + sm4.GCM_TAG_SIZE > self.config.max_body:
            raise LocalProtocolError(
                f"payload of {len(payload)} bytes exceeds the record limit {self.config.max_body}"
            )
        seq = self._next_seq()
        header = pack_header(ctype, tx.epoch, seq, self._now_ms(), len(payload) + sm4.GCM_TAG_SIZE)
        self._out += header + sm4.encrypt_gcm(tx.key, tx.nonce(seq), payload, header)
        tx.records += 1

    def _key_update(self) -> None:
        assert self._tx is not None
        if self._tx.epoch >= _MAX_EPOCH:
            raise LocalProtocolError("key epochs exhausted: open a new connection")
        nxt = self._tx.next(self.clock())
        self._seal(self._tx, ContentType.KEY_UPDATE, nxt.epoch.to_bytes(2, "big"))
        self._tx = nxt

    # ----------------------------------------------------------------------------- receiving

    def _fail(self, e: SecureChannelError, *, alert: bool) -> None:
        if alert and isinstance(e, HandshakeError) and self.state is not State.ESTABLISHED:
            self._send_plain(ContentType.ALERT, Alert(int(e.reason), e.detail).encode())
        self.state = State.FAILED
        self._error = e

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        limit = self.config.max_refused
        if limit is not None and self.refused_total > limit:
            raise TooManyRefused(
                f"{self.refused_total} records refused (limit {limit}): "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items()))
            )

    def _on_record(self, rec: Record) -> None:
        if self.state is State.ESTABLISHED:
            self._on_protected(rec)
            return
        # During the handshake only plaintext handshake messages and alerts may come.
        if rec.epoch != 0 or rec.type not in (ContentType.HANDSHAKE, ContentType.ALERT):
            raise HandshakeError(
                HandshakeFailure.BAD_MESSAGE,
                f"record type {rec.type} epoch {rec.epoch} during the handshake",
            )
        if rec.type == ContentType.ALERT:
            alert = decode_alert(rec.body)
            try:
                reason = HandshakeFailure(alert.code)
            except ValueError:
                reason = HandshakeFailure.INTERNAL_ERROR
            raise PeerRefusedHandshake(reason, f"the peer refused: {alert.text}")
        msg = decode_handshake(rec.body)
        if self.state is State.WAIT_CLIENT_HELLO and isinstance(msg, ClientHello):
            self._on_client_hello(msg)
        elif self.state is State.WAIT_SERVER_HELLO and isinstance(msg, ServerHello):
            self._on_server_hello(msg)
        elif self.state is State.WAIT_CLIENT_FINISHED and isinstance(msg, ClientFinished):
            self._on_client_finished(msg)
        else:
            raise HandshakeError(
                HandshakeFailure.BAD_MESSAGE,
                f"{type(msg).__name__} is not expected in state {self.state.value}",
            )

    def _check_hello(self, version: int, time_ms: int, cert_der: bytes) -> Certificate:
        if version != VERSION:
            raise HandshakeError(
                HandshakeFailure.UNSUPPORTED_VERSION, f"peer speaks version {version}, we {VERSION}"
            )
        skew = abs(time_ms / 1000 - self.clock())
        if skew > self.config.max_skew:
            raise HandshakeError(
                HandshakeFailure.STALE_HELLO,
                f"hello time is {skew:.0f} s from our clock (limit {self.config.max_skew:g} s)",
            )
        try:
            cert = Certificate.load(cert_der)
            self.trust.validate(cert, self._peer_roles)
        except IdentityError as e:
            for cls, reason in _IDENTITY_REASONS:
                if isinstance(e, cls):
                    raise HandshakeError(reason, str(e)) from e
            raise HandshakeError(HandshakeFailure.BAD_CERTIFICATE, str(e)) from e
        if self.config.peer_name is not None and cert.name != self.config.peer_name:
            raise HandshakeError(
                HandshakeFailure.PEER_NAME_MISMATCH,
                f"peer is {cert.name!r}, expected {self.config.peer_name!r}",
            )
        return cert

    def _schedule(self, k: bytes, th: bytes) -> None:
        self._th = th
        self._master = hmac_sm3(k, _LABEL + b"master" + th)

    def _finished(self, label: bytes) -> bytes:
        return hmac_sm3(_expand(self._master, label), self._th)

    def _start_traffic(self) -> None:
        now = self.clock()
        c2s = _Keys(_expand(self._master, b"c2s"), 1, now)
        s2c = _Keys(_expand(self._master, b"s2c"), 1, now)
        self._tx, self._rx = (c2s, s2c) if self.side is Side.CLIENT else (s2c, c2s)
        self._master = b""
        self.state = State.ESTABLISHED
        assert self.peer is not None
        self._pending.append(HandshakeComplete(self.peer))

    def _on_client_hello(self, msg: ClientHello) -> None:
        cert = self._check_hello(msg.version, msg.time_ms, msg.certificate)
        try:
            kx = SM2KeyExchange(
                self.credentials.key, cert.public_key, initiator=False, key_length=32
            )
            result = kx.derive(msg.ephemeral)
        except (KeyExchangeError, KeyFormatError) as e:
            raise HandshakeError(HandshakeFailure.BAD_MESSAGE, f"client key exchange: {e}") from e
        hello = ServerHello(
            VERSION,
            os.urandom(32),
            self._now_ms(),
            kx.ephemeral_public,
            self.credentials.certificate.der,
            result.confirmation,
            b"",
        )
        self._schedule(result.key, sm3(msg.encode() + hello.core()))
        self._expected_confirmation = result.expected_peer_confirmation
        hello = ServerHello(
            hello.version,
            hello.random,
            hello.time_ms,
            hello.ephemeral,
            hello.certificate,
            hello.confirmation,
            self._finished(b"server finished"),
        )
        self.peer = cert
        self._send_plain(ContentType.HANDSHAKE, hello.encode())
        self.state = State.WAIT_CLIENT_FINISHED

    def _on_server_hello(self, msg: ServerHello) -> None:
        assert self._hello is not None and self._r is not None
        cert = self._check_hello(msg.version, msg.time_ms, msg.certificate)
        try:
            SM2PublicKey.from_bytes(msg.ephemeral)
            kx = SM2KeyExchange(
                self.credentials.key,
                cert.public_key,
                initiator=True,
                key_length=32,
                _ephemeral=self._r,
            )
            result = kx.derive(msg.ephemeral)
        except (KeyExchangeError, KeyFormatError) as e:
            raise HandshakeError(HandshakeFailure.BAD_MESSAGE, f"server key exchange: {e}") from e
        self._r = None
        try:
            result.check_peer_confirmation(msg.confirmation)
        except KeyExchangeError as e:
            raise HandshakeError(HandshakeFailure.KEY_CONFIRMATION_FAILED, str(e)) from e
        self._schedule(result.key, sm3(self._hello.encode() + msg.core()))
        if not hmac.compare_digest(self._finished(b"server finished"), msg.finished):
            raise HandshakeError(
                HandshakeFailure.BAD_FINISHED, "server finished MAC does not match"
            )
        self.peer = cert
        self._send_plain(
            ContentType.HANDSHAKE,
            ClientFinished(result.confirmation, self._finished(b"client finished")).encode(),
        )
        self._start_traffic()

    def _on_client_finished(self, msg: ClientFinished) -> None:
        if not hmac.compare_digest(msg.confirmation, self._expected_confirmation):
            raise HandshakeError(
                HandshakeFailure.KEY_CONFIRMATION_FAILED,
                "client key confirmation S_A does not match (different key or a man in the middle)",
            )
        if not hmac.compare_digest(self._finished(b"client finished"), msg.finished):
            raise HandshakeError(
                HandshakeFailure.BAD_FINISHED, "client finished MAC does not match"
            )
        self._start_traffic()

    # -------------------------------------------------------------------- protected records

    def _on_protected(self, rec: Record) -> None:
        rx = self._rx
        assert rx is not None
        if rec.type not in _PROTECTED:
            self._refuse("bad_type")
            return
        if rec.epoch != rx.epoch:
            self._refuse("bad_epoch")
            return
        seq = rec.seq
        if seq <= self._rx_top:
            diff = self._rx_top - seq
            if diff >= self.config.window:
                self._refuse("outside_window")
                return
            if (self._rx_mask >> diff) & 1:
                self._refuse("replayed")
                return
        if abs(rec.timestamp_ms - self._now_ms()) > self.config.max_skew * 1000:
            self._refuse("stale")
            return
        try:
            payload = sm4.decrypt_gcm(rx.key, rx.nonce(seq), rec.body, rec.header())
        except DecryptionError:
            self._refuse("bad_mac")
            return
        # Authenticated: only now does the record move the replay window (RFC 4303 3.4.3).
        if seq > self._rx_top:
            shift = seq - self._rx_top
            mask = (self._rx_mask << shift) | 1 if shift < self.config.window else 1
            self._rx_mask = mask & ((1 << self.config.window) - 1)
            self._rx_top = seq
        else:
            self._rx_mask |= 1 << (self._rx_top - seq)
        rx.records += 1
        ctype = rec.type
        if ctype == ContentType.DATA:
            self.delivered += 1
            self._pending.append(DataReceived(payload, seq))
        elif ctype == ContentType.COMMAND:
            self._on_command(payload, seq)
        elif ctype == ContentType.KEY_UPDATE:
            if payload != (rx.epoch + 1).to_bytes(2, "big") or rx.epoch >= _MAX_EPOCH:
                raise RemoteProtocolError("authenticated KEY_UPDATE with a wrong epoch")
            self._rx = rx.next(self.clock())
            self._pending.append(KeyUpdated(self._rx.epoch))
        else:
            alert = decode_alert(payload)
            self.state = State.CLOSED
            self._closed_event_sent = True
            self._pending.append(ConnectionClosed(alert.code == CLOSE_NOTIFY, alert.text))

    def _on_command(self, payload: bytes, seq: int) -> None:
        if self.command_verifier is None:
            self._refuse("unexpected_command")
            return
        try:
            signed = SignedCommand.decode(payload)
            command = self.command_verifier.verify(signed)
        except CommandSignatureError as e:
            self._refuse(e.code)
            return
        self.delivered += 1
        self._pending.append(CommandReceived(command, signed, seq))

    def refusal_summary(self) -> str:
        """'reason n, ...' of refused records, for logs."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items())) or "none"
