"""The secure channel: handshake, refusals at handshake, record codec, and 10,000 adversarial records.

The codec is exercised sans-IO for the handshake cases and the fuzz invariant, and over a real
loopback TCP connection (gateway/transports/secure.py on the edge side) for the adversarial run:
the platform side there is the codec driven by the test, which is how it can replay, reorder,
flip bits, send stale timestamps and wrongly signed commands.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codecs.secure import (
    HEADER_SIZE,
    NEED_DATA,
    ChannelConfig,
    CommandReceived,
    ConnectionClosed,
    ContentType,
    Credentials,
    DataReceived,
    Event,
    HandshakeComplete,
    HandshakeError,
    HandshakeFailure,
    KeyUpdated,
    LocalProtocolError,
    PeerRefusedHandshake,
    Record,
    RecordDecoder,
    RecordFormatError,
    SecureChannelError,
    SecureConnection,
    Side,
    TooManyRefused,
    encode_record,
)
from gateway.transports.secure import (
    SecureChannel,
    accept_secure,
    open_secure_channel,
    serve_secure,
)
from gateway.transports.stream import ByteStream
from model.command import Command
from security.command_signing import (
    CommandVerifier,
    InclusionProof,
    SignedCommand,
    sign_batch,
)
from security.identity import Certificate, CertificateAuthority, Role, TrustStore
from security.sm2 import SM2PrivateKey


class Clock:
    """Wall clock plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Pki:
    ca: CertificateAuthority
    platform: Credentials
    edge: Credentials
    agent: Credentials
    revoked: Credentials
    short: Credentials  # expires after one day
    rogue_edge: Credentials  # from another CA
    rogue_platform: Credentials  # from another CA, role platform
    trust: TrustStore

    def trust_with(self, clock: Clock) -> TrustStore:
        return TrustStore(self.ca.certificate, self.ca.revocation_list(), clock=clock)


def _creds(ca: CertificateAuthority, name: str, role: Role, days: float = 30) -> Credentials:
    key, cert = ca.issue_new_key(name, role=role, validity_days=days)
    return Credentials(key, cert)


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority.create("channel-ca")
    rogue = CertificateAuthority.create("channel-ca")  # same name, another key
    p = Pki(
        ca=ca,
        platform=_creds(ca, "platform", Role.PLATFORM),
        edge=_creds(ca, "edge-1", Role.EDGE),
        agent=_creds(ca, "agent-1", Role.DER_AGENT),
        revoked=_creds(ca, "edge-revoked", Role.EDGE),
        short=_creds(ca, "edge-short", Role.EDGE, days=1),
        rogue_edge=_creds(rogue, "edge-1", Role.EDGE),
        rogue_platform=_creds(rogue, "platform", Role.PLATFORM),
        trust=ca.trust_store(),
    )
    ca.revoke("edge-revoked", "key_compromise")
    p.trust = ca.trust_store()
    return p


def _drain(conn: SecureConnection) -> list[Event]:
    out: list[Event] = []
    while (ev := conn.next_event()) is not NEED_DATA:
        assert not isinstance(ev, type(NEED_DATA))
        out.append(ev)
    return out


def _pump(a: SecureConnection, b: SecureConnection) -> list[Event]:
    data = a.data_to_send()
    if data:
        b.receive_data(data)
    return _drain(b)


def _pair(
    pki: Pki,
    client: Credentials | None = None,
    server: Credentials | None = None,
    *,
    clock: Clock | None = None,
    client_config: ChannelConfig | None = None,
    server_config: ChannelConfig | None = None,
    verifier: CommandVerifier | None = None,
) -> tuple[SecureConnection, SecureConnection]:
    trust = pki.trust_with(clock) if clock else pki.trust
    c = SecureConnection(
        Side.CLIENT, client or pki.edge, trust, config=client_config, command_verifier=verifier
    )
    s = SecureConnection(Side.SERVER, server or pki.platform, trust, config=server_config)
    return c, s


def _handshake(c: SecureConnection, s: SecureConnection) -> None:
    c.initiate()
    assert _pump(c, s) == []
    (ev,) = _pump(s, c)
    assert isinstance(ev, HandshakeComplete) and ev.peer == s.credentials.certificate
    (ev,) = _pump(c, s)
    assert isinstance(ev, HandshakeComplete) and ev.peer == c.credentials.certificate


# ----------------------------------------------------------------------------------- handshake


def test_handshake_between_certified_parties(pki: Pki) -> None:
    for client in (pki.edge, pki.agent):
        c, s = _pair(pki, client)
        _handshake(c, s)
        assert c.established and s.established
        assert c.peer is not None and c.peer.role is Role.PLATFORM
        assert s.peer is not None and s.peer.name == client.certificate.name
        s.send_data(b"set-point 250 kW")
        c.send_data(b"ack")
        assert _pump(s, c) == [DataReceived(b"set-point 250 kW", 1)]
        assert _pump(c, s) == [DataReceived(b"ack", 2)]
        c.close()
        assert _pump(c, s) == [ConnectionClosed(True, "close")]


def _refused_by_server(pki: Pki, c: SecureConnection, s: SecureConnection) -> HandshakeError:
    c.initiate()
    s.receive_data(c.data_to_send())
    with pytest.raises(HandshakeError) as server_err:
        s.next_event()
    c.receive_data(s.data_to_send())  # the alert
    with pytest.raises(PeerRefusedHandshake) as client_err:
        c.next_event()
    assert client_err.value.reason is server_err.value.reason
    assert not c.established and not s.established
    with pytest.raises(LocalProtocolError):
        c.send_data(b"x")
    return server_err.value


def test_revoked_certificate_refused_at_handshake(pki: Pki) -> None:
    err = _refused_by_server(pki, *_pair(pki, pki.revoked))
    assert err.reason is HandshakeFailure.CERT_REVOKED
    assert "edge-revoked" in str(err) and "key_compromise" in str(err)


def test_expired_certificate_refused_at_handshake(pki: Pki) -> None:
    clock = Clock()
    clock.offset = 2 * 86400  # edge-short expired yesterday
    err = _refused_by_server(pki, *_pair(pki, pki.short, clock=clock))
    assert err.reason is HandshakeFailure.CERT_EXPIRED and "expired" in str(err)


def test_unknown_ca_refused_at_handshake(pki: Pki) -> None:
    err = _refused_by_server(pki, *_pair(pki, pki.rogue_edge))
    assert err.reason is HandshakeFailure.UNKNOWN_CA and "not issued by" in str(err)


def test_wrong_role_refused_at_handshake(pki: Pki) -> None:
    err = _refused_by_server(pki, *_pair(pki, pki.platform))  # a platform is not an edge
    assert err.reason is HandshakeFailure.WRONG_ROLE


def test_client_refuses_bad_server(pki: Pki) -> None:
    for server, reason in (
        (pki.edge, HandshakeFailure.WRONG_ROLE),  # an edge posing as the platform
        (pki.rogue_platform, HandshakeFailure.UNKNOWN_CA),
    ):
        c, s = _pair(pki, pki.agent, server)
        c.initiate()
        assert _pump(c, s) == []
        c.receive_data(s.data_to_send())
        with pytest.raises(HandshakeError) as e:
            c.next_event()
        assert e.value.reason is reason
        s.receive_data(c.data_to_send())
        with pytest.raises(PeerRefusedHandshake) as pe:
            s.next_event()
        assert pe.value.reason is reason
    c, s = _pair(pki, client_config=ChannelConfig(peer_name="platform-2"))
    c.initiate()
    _pump(c, s)
    c.receive_data(s.data_to_send())
    with pytest.raises(HandshakeError) as e:
        c.next_event()
    assert e.value.reason is HandshakeFailure.PEER_NAME_MISMATCH


def test_stale_hello_and_tampered_handshake(pki: Pki) -> None:
    c, s = _pair(pki)
    c.clock = lambda: time.time() - 120
    c.initiate()
    s.receive_data(c.data_to_send())
    with pytest.raises(HandshakeError) as e:
        s.next_event()
    assert e.value.reason is HandshakeFailure.STALE_HELLO
    # A man in the middle flipping a bit of the server's finished MAC, or of S_B.
    for offset, reason in ((-1, HandshakeFailure.BAD_FINISHED), (-40, HandshakeFailure.KEY_CONFIRMATION_FAILED)):  # fmt: skip
        c, s = _pair(pki)
        c.initiate()
        _pump(c, s)
        sh = bytearray(s.data_to_send())
        sh[offset] ^= 0x80
        c.receive_data(bytes(sh))
        with pytest.raises(HandshakeError) as e:
            c.next_event()
        assert e.value.reason is reason
    # An impostor with the edge's certificate but not its key cannot finish.
    impostor = Credentials.__new__(Credentials)
    object.__setattr__(impostor, "key", SM2PrivateKey.generate())
    object.__setattr__(impostor, "certificate", pki.edge.certificate)
    c, s = _pair(pki, impostor)
    c.initiate()
    _pump(c, s)
    c.receive_data(s.data_to_send())
    with pytest.raises(HandshakeError) as e:
        c.next_event()
    assert e.value.reason is HandshakeFailure.KEY_CONFIRMATION_FAILED


async def test_revoked_certificate_refused_over_tcp(pki: Pki) -> None:
    refused: list[HandshakeError] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ch = await accept_secure(ByteStream(reader, writer, "server"), pki.platform, pki.trust)
        except HandshakeError as e:
            refused.append(e)
        else:
            assert await ch.receive(timeout=5) == ConnectionClosed(True, "close")

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(PeerRefusedHandshake) as e:
            await open_secure_channel(f"tcp://127.0.0.1:{port}", pki.revoked, pki.trust, timeout=5)
        assert e.value.reason is HandshakeFailure.CERT_REVOKED
        assert "revoked" in str(e.value)
        ch = await open_secure_channel(f"tcp://127.0.0.1:{port}", pki.edge, pki.trust, timeout=5)
        assert ch.peer.name == "platform"
        await ch.close()
    finally:
        server.close()
        await server.wait_closed()
    assert [r.reason for r in refused] == [HandshakeFailure.CERT_REVOKED]


async def test_serve_secure_counts_refusals_and_serves_peers(pki: Pki) -> None:
    async def echo(ch: SecureChannel) -> None:
        while isinstance(ev := await ch.receive(timeout=5), DataReceived):
            await ch.send(b"echo " + ev.data)

    server = await serve_secure("127.0.0.1", 0, pki.platform, pki.trust, echo)
    url = f"tcp://127.0.0.1:{server.port}"
    try:
        for bad, reason in ((pki.revoked, "cert_revoked"), (pki.rogue_edge, "unknown_ca")):
            with pytest.raises(PeerRefusedHandshake):
                await open_secure_channel(url, bad, pki.trust, timeout=5)
            assert server.refused_handshakes.get(reason) == 1
        ch = await open_secure_channel(url, pki.agent, pki.trust, timeout=5)
        await ch.send(b"hello")
        assert await ch.receive(timeout=5) == DataReceived(b"echo hello", 1)
        await ch.update_keys()
        await ch.send(b"again")
        ev = await ch.receive(timeout=5)
        assert isinstance(ev, DataReceived) and ev.data == b"echo again"
        await ch.close()
    finally:
        await server.close()


async def test_close_while_another_task_receives_ends_the_receive(pki: Pki) -> None:
    """close() from one task wakes a receive() in another: no spin on the ended stream."""

    async def idle(ch: SecureChannel) -> None:
        await ch.receive(timeout=10)

    server = await serve_secure("127.0.0.1", 0, pki.platform, pki.trust, idle)
    try:
        ch = await open_secure_channel(
            f"tcp://127.0.0.1:{server.port}", pki.agent, pki.trust, timeout=5
        )
        receiver = asyncio.create_task(ch.receive(timeout=10))
        await asyncio.sleep(0.1)
        await ch.close()
        ev = await asyncio.wait_for(receiver, 2.0)
        assert isinstance(ev, ConnectionClosed)
    finally:
        await server.close()


# -------------------------------------------------------------------------------- record codec

records = st.builds(
    Record,
    type=st.integers(0, 255),
    epoch=st.integers(0, 0xFFFF),
    seq=st.integers(0, (1 << 64) - 1),
    timestamp_ms=st.integers(0, (1 << 64) - 1),
    body=st.binary(max_size=300),
)


@given(st.lists(records, max_size=8))
def test_record_round_trip_whole_and_byte_by_byte(recs: list[Record]) -> None:
    wire = b"".join(encode_record(r) for r in recs)
    d = RecordDecoder()
    d.receive_data(wire)
    whole = []
    while (r := d.next_record()) is not None:
        whole.append(r)
    assert whole == recs
    d = RecordDecoder()
    bytewise = []
    for i in range(len(wire)):
        d.receive_data(wire[i : i + 1])
        while (r := d.next_record()) is not None:
            bytewise.append(r)
    assert bytewise == recs and d.buffered == 0


def test_framing_errors_are_fatal() -> None:
    d = RecordDecoder(max_body=100)
    d.receive_data(bytes([2]) + bytes(HEADER_SIZE - 1))
    with pytest.raises(RecordFormatError, match="version 2"):
        d.next_record()
    d = RecordDecoder(max_body=100)
    d.receive_data(encode_record(Record(3, 1, 0, 0, bytes(101))))
    with pytest.raises(RecordFormatError, match="exceeds"):
        d.next_record()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), established=st.booleans(), bytewise=st.booleans())
def test_fuzz_random_bytes_give_events_or_typed_errors(
    pki: Pki, data: bytes, established: bool, bytewise: bool
) -> None:
    c, s = _pair(pki)
    if established:
        _handshake(c, s)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        for chunk in chunks:
            s.receive_data(chunk)
            _drain(s)
        # A valid-looking header with a random body in the established state is refused, not fatal.
        if established and len(data) >= 4:
            before = s.refused_total
            s.receive_data(encode_record(Record(ContentType.DATA, 1, 10**6, 0, data)))
            assert _drain(s) == [] and s.refused_total == before + 1
    except SecureChannelError:
        pass
    assert s.delivered == 0


def test_fuzz_hello_fields(pki: Pki) -> None:
    """Corrupted ClientHello fields: refused with a typed error, or the handshake cannot finish."""
    rng = random.Random(7)
    outcomes: set[str] = set()
    for _ in range(120):
        c, s = _pair(pki)
        c.initiate()
        m = bytearray(c.data_to_send())
        # Distinct positions, each XORed with a non-zero byte: an assignment could write the
        # byte already there, and the untouched hello (its keys are random per run) then rightly
        # succeeds.
        for at in rng.sample(range(HEADER_SIZE + 2, len(m)), rng.randint(1, 3)):
            m[at] ^= rng.randrange(1, 256)
        s.receive_data(bytes(m))
        try:
            assert _drain(s) == []
        except HandshakeError as e:
            outcomes.add(e.reason.name)
            continue
        # The server answered a hello the client never sent: the client's transcript differs.
        c.receive_data(s.data_to_send())
        with pytest.raises(HandshakeError) as err:
            _drain(c)
        outcomes.add("client:" + err.value.reason.name)
    assert outcomes & {"BAD_CERTIFICATE", "UNKNOWN_CA", "BAD_MESSAGE"}
    assert "client:BAD_FINISHED" in outcomes or "client:KEY_CONFIRMATION_FAILED" in outcomes


# ------------------------------------------------------------------------------------ re-keying


def test_rekeying_mid_stream(pki: Pki) -> None:
    c, s = _pair(pki, server_config=ChannelConfig(rekey_after_records=7))
    _handshake(c, s)
    got: list[Event] = []
    for i in range(100):
        s.send_data(b"m%d" % i)
        if i == 50:
            s.update_keys()  # explicit, besides the periodic ones
        got += _pump(s, c)
    data = [e.data for e in got if isinstance(e, DataReceived)]
    updates = [e.epoch for e in got if isinstance(e, KeyUpdated)]
    assert data == [b"m%d" % i for i in range(100)]
    assert updates == list(range(2, 2 + len(updates))) and len(updates) >= 14
    assert c.receive_epoch == s.send_epoch == updates[-1]
    # The other direction was not re-keyed, and still works.
    c.send_data(b"still here")
    assert _pump(c, s) == [DataReceived(b"still here", 2)]
    assert c.refused_total == 0


def test_rekey_by_time(pki: Pki) -> None:
    clock = Clock()
    c, s = _pair(pki, clock=clock, server_config=ChannelConfig(rekey_after_seconds=60))
    _handshake(c, s)
    s.send_data(b"a")
    assert _pump(s, c) == [DataReceived(b"a", 1)]
    clock.offset += 61  # both ends share the clock: no skew
    s.send_data(b"b")
    assert _pump(s, c) == [KeyUpdated(2), DataReceived(b"b", 3)]


def test_window_accepts_late_within_and_refuses_beyond(pki: Pki) -> None:
    c, s = _pair(pki, client_config=ChannelConfig(window=8, max_refused=3))
    _handshake(c, s)
    recs = []
    for i in range(12):
        s.send_data(b"%d" % i)
        recs.append(s.data_to_send())
    c.receive_data(recs[1] + recs[0])  # late by one: inside the window, delivered
    assert [e.data for e in _drain(c) if isinstance(e, DataReceived)] == [b"1", b"0"]
    c.receive_data(b"".join(recs[2:]) + recs[0])  # now 11 behind: outside
    _drain(c)
    assert c.refused == {"outside_window": 1}
    c.receive_data(recs[11] * 3)
    with pytest.raises(TooManyRefused):
        _drain(c)


# ------------------------------------------------------------------------ adversarial, over TCP


N_ADVERSARIAL = 10_000


async def test_ten_thousand_adversarial_records_over_tcp(pki: Pki) -> None:
    """Every adversarial record refused and counted, none delivered; fresh ones all, in order."""
    rng = random.Random(20260601)
    sender_clock = Clock()
    platform_trust = pki.trust_with(sender_clock)
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()
    config = ChannelConfig(rekey_after_records=10**9, rekey_after_seconds=10**9)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ch = await accept_secure(
            ByteStream(reader, writer, "platform"), pki.platform, platform_trust, config=config
        )
        accepted.set_result(ch)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    verifier = CommandVerifier(pki.platform.certificate, trust=pki.trust)
    edge = await open_secure_channel(
        f"tcp://127.0.0.1:{port}", pki.edge, pki.trust, command_verifier=verifier, timeout=10
    )
    platform = await asyncio.wait_for(accepted, 10)
    tx = platform.connection

    # --- what the platform will send
    deadline = time.time() + 600
    good = sign_batch(
        [Command(f"VPP1.DER{i:04d}/DRCT1.WSet", 10.0 + i, "dispatch", deadline=deadline) for i in range(500)],
        pki.platform.key, pki.platform.certificate,
    )  # fmt: skip
    expired = sign_batch(
        [Command(f"VPP1.DER{i:04d}/DRCT1.WSet", 1.0, "dispatch", deadline=time.time() - 1) for i in range(200)],
        pki.platform.key, pki.platform.certificate,
    )  # fmt: skip
    rogue = sign_batch(
        [Command(f"VPP1.DER{i:04d}/DRCT1.WSet", 99.0, "attacker", deadline=deadline) for i in range(200)],
        pki.rogue_platform.key, pki.rogue_platform.certificate,
    )  # fmt: skip
    # Attacks are built from a genuine batch that is never delivered, so their command ids are
    # never "seen" and each is refused for the reason it was built for.
    spare = sign_batch(
        [Command(f"VPP1.DER{i:04d}/DRCT1.WSet", 20.0, "dispatch", deadline=deadline) for i in range(500)],
        pki.platform.key, pki.platform.certificate,
    )  # fmt: skip
    bad_sigs = [
        SM2PrivateKey.generate().sign(spare.root_signature.root.signed_bytes()) for _ in range(25)
    ]

    def wrong_signature(i: int) -> SignedCommand:
        sc = spare.commands[i % 500]
        return replace(sc, root_signature=replace(sc.root_signature, signature=bad_sigs[i % 25]))

    def missing_proof(i: int) -> SignedCommand:
        sc = spare.commands[i % 500]
        return replace(sc, proof=InclusionProof(sc.proof.index, ()))

    def wrong_proof(i: int) -> SignedCommand:
        sc = spare.commands[i % 500]
        return replace(sc, proof=spare.commands[(i + 1) % 500].proof)

    def tampered_value(i: int) -> SignedCommand:
        sc = spare.commands[i % 500]
        return replace(sc, command=replace(sc.command, value=sc.command.value + 1000.0))

    command_attacks = {
        "wrong_signature": (500, wrong_signature),
        "missing_proof": (300, missing_proof),
        "wrong_proof": (300, wrong_proof),
        "tampered_value": (300, tampered_value),
        "untrusted_signer": (200, lambda i: rogue.commands[i]),
        "expired_command": (200, lambda i: expired.commands[i]),
        "replayed_command": (200, None),  # a genuine, already delivered command, new record
    }
    remaining = {
        "replay": 3000,
        "bitflip": 3000,
        "stale": 1000,
        "reorder": 1000,
    } | {k: n for k, (n, _) in command_attacks.items()}
    assert sum(remaining.values()) == N_ADVERSARIAL
    fresh = [("data", b"reading %d" % i) for i in range(2000)] + [("cmd", i) for i in range(500)]
    rng.shuffle(fresh)
    # Commands go out in batch order so that "replayed_command" always has a delivered one.
    cmd_order = iter(range(500))
    fresh = [(k, next(cmd_order) if k == "cmd" else v) for k, v in fresh]

    wire: list[bytes] = []
    expected: list[tuple[str, object]] = []
    history: list[bytes] = []  # records the edge accepted, for replays
    delivered_cmds: list[SignedCommand] = []
    held: list[tuple[int, bytes]] = []  # withheld genuine records and when to release them
    counters = {k: 0 for k in remaining}

    generated = [0]  # records the platform sealed so far (each takes the next sequence number)
    accepted_upto = [0]  # `generated` count at the last record the edge will accept

    def record_of(kind: str, value: object) -> bytes:
        generated[0] += 1
        if kind == "data":
            assert isinstance(value, bytes)
            tx.send_data(value)
        else:
            assert isinstance(value, SignedCommand)
            tx.send_command(value)
        out = tx.data_to_send()
        assert out[1] in (ContentType.DATA, ContentType.COMMAND)
        return out

    def flip(rec: bytes) -> bytes:
        # Any bit of type, epoch, seq, timestamp, ciphertext or tag; not version or length,
        # which frame the stream (their corruption is fatal: test_framing_errors_are_fatal).
        positions = [1, *range(2, 20), *range(HEADER_SIZE, len(rec))]
        i = rng.choice(positions)
        m = bytearray(rec)
        m[i] ^= 1 << rng.randrange(8)
        return bytes(m)

    fi = 0

    def send_fresh(*, emit: bool = True) -> bytes:
        nonlocal fi
        kind, value = fresh[fi]
        fi += 1
        if kind == "cmd":
            assert isinstance(value, int)
            sc = good.commands[value]
            rec = record_of("cmd", sc)
            expected.append(("cmd", sc.command.id))
            delivered_cmds.append(sc)
        else:
            rec = record_of("data", value)
            expected.append(("data", value))
        history.append(rec)
        if emit:
            wire.append(rec)
        accepted_upto[0] = generated[0]
        return rec

    step = 0
    while fi < len(fresh) or any(remaining.values()):
        step += 1
        if step % 400 == 0:
            tx.update_keys()
            wire.append(tx.data_to_send())
        for t, rec in [h for h in held if h[0] <= accepted_upto[0]]:
            held.remove((t, rec))
            wire.append(rec)
        n_attacks = sum(remaining.values())
        n_fresh = len(fresh) - fi
        if n_fresh and rng.random() < n_fresh / (n_fresh + n_attacks):
            send_fresh()
            continue
        attack = rng.choice([k for k, n in remaining.items() if n])
        if attack == "replay":
            if not history:
                continue
            # The last few (inside the window: "replayed"), the last 40, any (older epochs).
            r = rng.random()
            span = 3 if r < 0.33 else 40 if r < 0.66 else len(history)
            wire.append(history[-rng.randint(1, min(span, len(history)))])
        elif attack == "bitflip":
            # A flipped copy of the next genuine record goes first, the genuine one after, so
            # the copy's sequence number is unseen and only the AEAD tag can refuse it.
            if fi == len(fresh):
                fresh.append(("data", b"extra %d" % len(fresh)))
            rec = send_fresh(emit=False)
            wire += [flip(rec), rec]
        elif attack == "stale":
            sender_clock.offset = rng.choice([-1, 1]) * rng.uniform(31, 3600)
            wire.append(record_of("data", b"stale %d" % counters["stale"]))
            sender_clock.offset = 0
        elif attack == "reorder":
            rec = record_of("data", b"late %d" % counters["reorder"])
            # Released once a record 80 newer was accepted: beyond the 64-record window.
            held.append((generated[0] + 80, rec))
        else:
            _, make = command_attacks[attack]
            if make is None:
                if not delivered_cmds:
                    continue
                sc = rng.choice(delivered_cmds)
            else:
                sc = make(counters[attack])
            wire.append(record_of("cmd", sc))
        remaining[attack] -= 1
        counters[attack] += 1
    tail = 0
    while held:  # fresh filler until every withheld record is beyond the window
        rec = record_of("data", b"tail %d" % tail)
        expected.append(("data", b"tail %d" % tail))
        wire.append(rec)
        tail += 1
        accepted_upto[0] = generated[0]
        for t, late in [h for h in held if h[0] <= accepted_upto[0]]:
            held.remove((t, late))
            wire.append(late)
    tx.send_data(b"END")
    wire.append(tx.data_to_send())

    # --- the edge reads while the platform writes everything over loopback TCP
    async def read_all() -> list[tuple[str, object]]:
        got: list[tuple[str, object]] = []
        while True:
            ev = await edge.receive(timeout=30)
            if isinstance(ev, DataReceived):
                if ev.data == b"END":
                    return got
                got.append(("data", ev.data))
            elif isinstance(ev, CommandReceived):
                got.append(("cmd", ev.command.id))
            else:
                raise AssertionError(f"unexpected {ev}")

    reader = asyncio.create_task(read_all())
    blob = b"".join(wire)
    for i in range(0, len(blob), 1 << 16):
        await platform.stream.write(blob[i : i + (1 << 16)])
    got = await asyncio.wait_for(reader, 60)

    refused = edge.connection.refused
    print("refused by reason:", dict(sorted(refused.items())))
    assert got == expected, "fresh records must all be delivered, in order, and nothing else"
    assert edge.connection.refused_total == N_ADVERSARIAL, dict(refused)
    assert edge.connection.delivered == len(expected) + 1  # + END
    # Command-level refusals are exact: each of these records passed the channel's checks.
    assert refused["bad_signature"] == 500
    assert refused["bad_proof"] == 900  # missing, wrong, and tampered values
    assert refused["untrusted_signer"] == 200
    assert refused["expired_command"] == 200
    assert refused["replayed_command"] == 200
    assert refused["stale"] >= 1000
    # Withheld records come back beyond the window, or after a re-key in an old epoch.
    assert refused["outside_window"] + refused["bad_epoch"] >= 1000
    # Bit flips that keep the framing are refused by the tag (or by a cheaper check first).
    assert refused["bad_mac"] >= 1500 and refused["replayed"] >= 500 and refused["bad_epoch"] > 0
    assert verifier.signature_checks <= 1 + 25, "wrong signatures cost one SM2 verify each, once"
    assert edge.connection.receive_epoch > 5, "re-keyed mid-stream"
    await platform.close()
    ev = await edge.receive(timeout=5)
    assert ev == ConnectionClosed(True, "close")
    await edge.close()
    server.close()
    await server.wait_closed()


def test_events_are_frozen(pki: Pki) -> None:
    ev = DataReceived(b"x", 1)
    with pytest.raises(AttributeError):
        ev.data = b"y"  # type: ignore[misc]
    assert isinstance(pki.platform.certificate, Certificate)
