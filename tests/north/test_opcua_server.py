"""The OPC UA server against a real asyncua client on loopback; the field side is our Modbus
simulator, our Modbus driver and the command path."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.commands import CommandPath
from gateway.north.opcua_server import (
    OpcUaServer,
    ensure_server_certificate,
    eu_information,
    status_of,
)
from gateway.south.modbus import ModbusDriver
from model.command import CommandState
from model.north_opcua import OpcUaConfig
from model.quality import (
    FAILURE,
    GOOD,
    OLD_DATA,
    SUBSTITUTED,
    Validity,
    not_topical,
    with_validity,
)
from model.sample import Sample
from model.site import SiteConfig
from security.users import Role, UserStore
from tools.sim.modbus import ModbusSimulator
from twin.commands import CommandRecord
from twin.history import HistoryStore
from twin.twin import Twin

NS_URI = "urn:vpp-gateway:twin"
SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
P = "VPP1.BAT02/MMXU1.TotW.mag.f"
SOC = "VPP1.BAT02/ZBAT1.SoC.mag.f"
PASSWORDS = {"olga": "operator-pass", "victor": "viewer-pass", "erin": "engineer-pass"}
WAIT = 10.0
SC = ua.StatusCodes


def _with_port(site: SiteConfig, port: int) -> SiteConfig:
    drivers = []
    for d in site.drivers:
        if d.id == "mb1":
            poll = [g.model_copy(update={"period_s": 0.2}) for g in d.poll_groups]
            d = d.model_copy(update={"port": port, "poll_groups": poll})
        drivers.append(d)
    return site.model_copy(update={"drivers": drivers})


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    # Cheap Argon2 parameters: the tests are about roles, not about hashing cost.
    store = UserStore(hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    store.add("olga", PASSWORDS["olga"], [Role.OPERATOR])
    store.add("victor", PASSWORDS["victor"], [Role.VIEWER])
    store.add("erin", PASSWORDS["erin"], [Role.ENGINEER, Role.VIEWER])
    store.save(tmp_path / "users.yaml")
    return store


@pytest.fixture(scope="session")
def server_pki(tmp_path_factory) -> Path:
    """One server certificate for the session: RSA key generation is the slow part of a start."""
    d = tmp_path_factory.mktemp("pki")
    ensure_server_certificate(
        OpcUaConfig(certificate=str(d / "server_cert.der"), private_key=str(d / "server_key.pem"))
    )
    return d


@pytest.fixture
def config(tmp_path: Path, port: int, server_pki: Path) -> OpcUaConfig:
    pki = tmp_path / "pki"
    shutil.copytree(server_pki, pki)
    return OpcUaConfig(
        endpoint=f"opc.tcp://127.0.0.1:{port}",
        security_policies=["None", "Basic256Sha256_SignAndEncrypt", "Basic256Sha256_Sign"],
        certificate=str(pki / "server_cert.der"),
        private_key=str(pki / "server_key.pem"),
        users_file=str(tmp_path / "users.yaml"),
        write_timeout_s=5.0,
    )


@pytest.fixture
def history(tmp_path: Path):
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}").open()
    yield store
    store.close()


class TwinOnly:
    """A twin with no field side: values are applied by the test."""

    def __init__(self, site: SiteConfig) -> None:
        self.twin = Twin.from_site(site)
        self.path = CommandPath(self.twin, [])


class FieldRig:
    """Modbus simulator + our Modbus driver + command path, as in tests/gateway/test_command_path."""

    def __init__(self, site: SiteConfig) -> None:
        self.sim = ModbusSimulator(site, "mb1", tick_s=0.1)
        self.twin = Twin.from_site(site)
        self.accepted: list[CommandRecord] = []  # every command the command path accepted
        self.twin.commands.add_listener(
            lambda rec, t: self.accepted.append(rec) if t.state == CommandState.ACCEPTED else None
        )
        cfg = next(d for d in site.drivers if d.id == "mb1")
        self.driver = ModbusDriver(cfg, self.twin)  # type: ignore[arg-type]
        self.path = CommandPath(self.twin, [self.driver])
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> FieldRig:
        self._task = asyncio.create_task(self.sim.serve(self._stop))
        await _until(lambda: self.sim.running, 5, "simulator")
        await self.driver.start()
        await _until(lambda: self.twin.get(P) is not None, WAIT, "first poll")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.path.close()
        await self.driver.stop()
        self._stop.set()
        assert self._task is not None
        await self._task


def _client(config: OpcUaConfig, user: str | None = None) -> Client:
    c = Client(config.endpoint, timeout=WAIT)
    if user is not None:
        c.set_user(user)
        c.set_password(PASSWORDS[user])
    return c


async def _node(client: Client, ref: str):
    ns = await client.get_namespace_index(NS_URI)
    return client.get_node(ua.NodeId(ref, ns))


# --- browsing and reading ----------------------------------------------------------------------


async def test_browse_from_objects_down_to_a_point(demo_site, config, users) -> None:
    rig = TwinOnly(demo_site)
    rig.twin.apply([Sample(SET, 12.5, 1_700_000_000.25)])
    async with (
        OpcUaServer(config, demo_site, rig.twin, rig.path, users=users),
        _client(config) as client,
    ):
        ns = await client.get_namespace_index(NS_URI)
        node = client.nodes.objects
        for name in ["DEMO", "VPP1", "BAT02", "DRCC1", "WSpt", "setMag.f"]:
            children = {(await c.read_browse_name()).Name: c for c in await node.get_children()}
            assert name in children, f"{name} not among {sorted(children)}"
            node = children[name]
        assert node.nodeid == ua.NodeId(SET, ns)
        assert await node.read_node_class() == ua.NodeClass.Variable
        assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
        assert "Battery 2" in (await node.read_description()).Text
        dv = await node.read_data_value()
        assert dv.Value.Value == 12.5
        assert dv.StatusCode.is_good()
        assert dv.SourceTimestamp == datetime.fromtimestamp(1_700_000_000.25, UTC).replace(
            tzinfo=None
        ) or dv.SourceTimestamp == datetime.fromtimestamp(1_700_000_000.25, UTC)
        eu = await (await node.get_child("0:EngineeringUnits")).read_value()
        assert eu.DisplayName.Text == "kW"
        assert eu.UnitId == (ord("K") << 16) | (ord("W") << 8) | ord("T")
        rng = await (await node.get_child("0:EURange")).read_value()
        assert (rng.Low, rng.High) == (-30.0, 30.0)
        level = await node.read_attribute(ua.AttributeIds.AccessLevel)
        assert level.Value.Value & ua.AccessLevel.CurrentWrite.mask
        # The resource node carries its CIM mRID; a read-only point is not writable.
        res = client.get_node(ua.NodeId("VPP1.BAT02", ns))
        mrid = await (await res.get_child(f"{ns}:mRID")).read_value()
        assert mrid == "6f1c2a3e-0b1d-4c5e-9a10-000000000202"
        p = client.get_node(ua.NodeId(P, ns))
        level = await p.read_attribute(ua.AttributeIds.AccessLevel)
        assert not level.Value.Value & ua.AccessLevel.CurrentWrite.mask
        # The plant points are there too, and a never-seen point says so.
        plant = client.get_node(ua.NodeId("VPP1.PLANT/DCAP1.OnlCnt.stVal", ns))
        assert await plant.read_data_type() == ua.NodeId(ua.ObjectIds.Int32)
        with pytest.raises(UaStatusCodeError) as ei:
            await client.get_node(ua.NodeId(SOC, ns)).read_value()
        assert ei.value.code == SC.BadWaitingForInitialData


async def test_values_and_status_codes_follow_the_twin(demo_site, config) -> None:
    rig = TwinOnly(demo_site)
    async with OpcUaServer(config, demo_site, rig.twin, rig.path), _client(config) as client:
        node = await _node(client, SOC)
        cases = [
            (GOOD, SC.Good),
            (not_topical(GOOD), SC.UncertainLastUsableValue),
            (with_validity(FAILURE, Validity.INVALID), SC.BadDeviceFailure),
            (with_validity(SUBSTITUTED, Validity.QUESTIONABLE), SC.UncertainSubstituteValue),
        ]
        for i, (quality, code) in enumerate(cases):
            ts = 1_700_000_100.0 + i
            rig.twin.apply([Sample(SOC, 40.0 + i, ts, quality)])
            dv = None
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                raw = await client.uaclient.read(
                    ua.ReadParameters(
                        NodesToRead=[ua.ReadValueId(node.nodeid, ua.AttributeIds.Value)],
                        TimestampsToReturn=ua.TimestampsToReturn.Both,
                    )
                )
                dv = raw[0]
                if dv.StatusCode.value == code:
                    break
                await asyncio.sleep(0.02)
            assert dv is not None and dv.StatusCode.value == code, (quality, dv)
            if not dv.StatusCode.is_bad():
                assert dv.Value.Value == 40.0 + i
            assert abs(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() - ts) < 1e-3


def test_quality_to_status_code_mapping() -> None:
    assert status_of(GOOD) == SC.Good
    assert status_of(SUBSTITUTED) == SC.GoodLocalOverride
    assert status_of(with_validity(0, Validity.INVALID)) == SC.Bad
    assert status_of(with_validity(OLD_DATA, Validity.INVALID)) == SC.Bad
    assert status_of(not_topical(GOOD)) == SC.UncertainLastUsableValue
    assert status_of(with_validity(0, Validity.QUESTIONABLE)) == SC.Uncertain
    assert eu_information("degC").DisplayName.Text == "°C"
    assert eu_information("furlong").UnitId == -1


# --- subscriptions -----------------------------------------------------------------------------


class _Changes:
    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[object, ua.DataValue]] = asyncio.Queue()

    def datachange_notification(self, node, val, data) -> None:
        # No work here (asyncua calls this on its receive path): hand off through a queue.
        self.q.put_nowait((val, data.monitored_item.Value))


async def test_subscription_gets_data_changes(demo_site, config) -> None:
    rig = TwinOnly(demo_site)
    rig.twin.apply([Sample(P, 1.0, time.time())])
    async with OpcUaServer(config, demo_site, rig.twin, rig.path), _client(config) as client:
        handler = _Changes()
        sub = await client.create_subscription(20, handler)
        await sub.subscribe_data_change(await _node(client, P))
        first, _ = await asyncio.wait_for(handler.q.get(), WAIT)
        assert first == 1.0
        for v in (2.0, 3.0, 4.0):
            rig.twin.apply([Sample(P, v, time.time())])
            got, dv = await asyncio.wait_for(handler.q.get(), WAIT)
            assert got == v
            assert dv.StatusCode.is_good()
        rig.twin.mark_not_topical([P])
        got, dv = await asyncio.wait_for(handler.q.get(), WAIT)
        assert dv.StatusCode.value == SC.UncertainLastUsableValue
        await sub.delete()


# --- writes through the command path -----------------------------------------------------------


@pytest.fixture
def field_site(demo_site, new_port) -> SiteConfig:
    return _with_port(demo_site, new_port())


async def test_operator_write_is_executed_and_the_device_follows(field_site, config, users) -> None:
    async with (
        FieldRig(field_site) as rig,
        OpcUaServer(config, field_site, rig.twin, rig.path, users=users) as srv,
    ):
        async with _client(config, "olga") as client:
            node = await _node(client, SET)
            await node.write_value(ua.DataValue(ua.Variant(-15.0, ua.VariantType.Double)))
            # One command, from OPC UA, sent (write_wait: sent) before the write answered.
            [rec] = rig.accepted
            assert rec.command.origin == "opcua"
            assert rec.command.value == -15.0
            assert rec.state in (CommandState.SENT, CommandState.CONFIRMED)
            assert rig.sim.writes == 1
            await _until(lambda: rec.state == CommandState.CONFIRMED, WAIT, "read-back")
            # The simulated battery follows, and OPC UA shows it.
            await _until(
                lambda: abs(rig.sim.binding.read(P) + 15.0) < 0.1, WAIT, "battery to follow"
            )
            p = await _node(client, P)
            deadline = time.monotonic() + WAIT
            while abs(await p.read_value() + 15.0) > 0.1:
                assert time.monotonic() < deadline, "OPC UA read-back of P"
                await asyncio.sleep(0.1)
            assert await node.read_value() == pytest.approx(-15.0)
        # An engineer may write too; an integer Variant is taken as the float it means.
        async with _client(config, "erin") as client:
            node = await _node(client, SET)
            await node.write_value(ua.DataValue(ua.Variant(7, ua.VariantType.Int32)))
            assert rig.sim.writes == 2
        assert srv.stats()["writes_accepted"] == 2


async def test_refused_writes_send_nothing(field_site, config, users) -> None:
    async with (
        FieldRig(field_site) as rig,
        OpcUaServer(config, field_site, rig.twin, rig.path, users=users) as srv,
    ):
        dv = ua.DataValue(ua.Variant(-15.0, ua.VariantType.Double))
        for who in (None, "victor"):
            async with _client(config, who) as client:
                node = await _node(client, SET)
                with pytest.raises(UaStatusCodeError) as ei:
                    await node.write_value(dv)
                assert ei.value.code == SC.BadUserAccessDenied, who
        async with _client(config, "olga") as client:
            # Outside the battery's limits [-30, 30] kW: refused by the command path's policy.
            with pytest.raises(UaStatusCodeError) as ei:
                await (await _node(client, SET)).write_value(
                    ua.DataValue(ua.Variant(31.0, ua.VariantType.Double))
                )
            assert ei.value.code == SC.BadOutOfRange
            # A measurement is not a set-point.
            with pytest.raises(UaStatusCodeError) as ei:
                await (await _node(client, P)).write_value(dv)
            assert ei.value.code == SC.BadNotWritable
            with pytest.raises(UaStatusCodeError) as ei:
                await (await _node(client, SET)).write_value(
                    ua.DataValue(ua.Variant("ten", ua.VariantType.String))
                )
            assert ei.value.code == SC.BadTypeMismatch
            # The address space itself is not writable by clients.
            with pytest.raises(UaStatusCodeError) as ei:
                await (await _node(client, SET)).write_attribute(
                    ua.AttributeIds.DisplayName,
                    ua.DataValue(ua.Variant(ua.LocalizedText("x"))),
                )
            assert ei.value.code in (SC.BadNotWritable, SC.BadUserAccessDenied)
        await asyncio.sleep(0.5)  # give anything wrongly sent time to arrive
        assert rig.sim.writes == 0
        assert len(rig.twin.commands) == 0
        assert srv.stats()["writes_refused"] == 6


async def test_bad_password_and_anonymous_off_are_refused(demo_site, config, users) -> None:
    rig = TwinOnly(demo_site)
    cfg = config.model_copy(update={"anonymous": "off"})
    async with OpcUaServer(cfg, demo_site, rig.twin, rig.path, users=users):
        with pytest.raises(UaStatusCodeError):
            async with Client(cfg.endpoint, timeout=WAIT):
                pass
        c = Client(cfg.endpoint, timeout=WAIT)
        c.set_user("olga")
        c.set_password("not-her-password")
        with pytest.raises(UaStatusCodeError) as ei:
            await c.connect()
        assert ei.value.code == SC.BadUserAccessDenied
        await c.disconnect()
        async with _client(cfg, "victor") as client:  # a named user still gets in
            assert await (await _node(client, SET)).read_browse_name()


# --- history -----------------------------------------------------------------------------------


async def test_history_read_returns_what_the_store_holds(demo_site, config, history) -> None:
    rig = TwinOnly(demo_site)
    t0 = 1_700_000_000.0
    stored = [Sample(P, float(i), t0 + i * 10.0, GOOD) for i in range(25)]
    stored.append(Sample(P, 99.0, t0 + 250.0, not_topical(GOOD)))
    history.write(stored)
    history.write([Sample(SOC, 50.0, t0, GOOD)])
    async with (
        OpcUaServer(config, demo_site, rig.twin, rig.path, history=history),
        _client(config) as client,
    ):
        node = await _node(client, P)
        start = datetime.fromtimestamp(t0, UTC)
        end = datetime.fromtimestamp(t0 + 1000, UTC)
        got = await node.read_raw_history(start, end)
        assert [d.Value.Value for d in got[:-1]] == [s.value for s in stored[:-1]]
        assert [d.SourceTimestamp.replace(tzinfo=UTC).timestamp() for d in got] == [
            s.ts for s in stored
        ]
        assert got[-1].StatusCode.value == SC.UncertainLastUsableValue
        # [start, end): a value at end is not included.
        got = await node.read_raw_history(start, start + timedelta(seconds=50))
        assert [d.Value.Value for d in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
        # numValuesPerNode with continuation points: the client follows them to the end.
        got = await node.read_raw_history(start, end, numvalues=7)
        assert len(got) == 7
        details = ua.ReadRawModifiedDetails(
            IsReadModified=False,
            StartTime=start,
            EndTime=end,
            NumValuesPerNode=7,
            ReturnBounds=False,
        )
        pages, cont = [], None
        while True:
            res = await node.history_read(details, cont)
            pages.append([d.Value.Value for d in res.HistoryData.DataValues])
            cont = res.ContinuationPoint
            if not cont:
                break
        assert [len(p) for p in pages] == [7, 7, 7, 5]
        # Reverse: end and a count only -> the latest values, newest first.
        details = ua.ReadRawModifiedDetails(
            IsReadModified=False,
            StartTime=ua.get_win_epoch(),
            EndTime=start + timedelta(seconds=45),
            NumValuesPerNode=3,
            ReturnBounds=False,
        )
        res = await node.history_read(details)
        assert [d.Value.Value for d in res.HistoryData.DataValues] == [4.0, 3.0, 2.0]
        # A point with no stored values, and a node that has no history at all.
        empty = await (await _node(client, SET)).read_raw_history(start, end)
        assert empty == []
        res = await client.get_node(
            ua.NodeId("VPP1.BAT02", await client.get_namespace_index(NS_URI))
        ).history_read(ua.ReadRawModifiedDetails(StartTime=start, EndTime=end))
        assert res.StatusCode.value == SC.BadHistoryOperationUnsupported


# --- security ----------------------------------------------------------------------------------


def _client_certificate(tmp: Path, uri: str) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "test client",
        {},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=1,
    )
    cert_path, key_path = tmp / "client_cert.der", tmp / "client_key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def test_basic256sha256_sign_and_encrypt(demo_site, config, users, tmp_path) -> None:
    rig = TwinOnly(demo_site)
    rig.twin.apply([Sample(SOC, 61.0, time.time())])
    # Only encrypted endpoints: a client without security cannot even open a channel.
    # No certificate yet: the server makes its own on this first run.
    cfg = config.model_copy(
        update={
            "security_policies": ["Basic256Sha256_SignAndEncrypt", "Basic256Sha256_Sign"],
            "certificate": str(tmp_path / "new" / "server_cert.der"),
            "private_key": str(tmp_path / "new" / "server_key.pem"),
        }
    )
    assert not Path(cfg.certificate).exists()
    async with OpcUaServer(cfg, demo_site, rig.twin, rig.path, users=users):
        server_cert = Path(cfg.certificate)
        assert server_cert.is_file()
        assert Path(cfg.private_key).stat().st_mode & 0o077 == 0
        uri = "urn:vpp-gateway:test-client"
        cert, key = _client_certificate(tmp_path, uri)
        for mode in (ua.MessageSecurityMode.SignAndEncrypt, ua.MessageSecurityMode.Sign):
            client = _client(cfg, "olga")
            client.application_uri = uri
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(cert),
                private_key=str(key),
                server_certificate=str(server_cert),
                mode=mode,
            )
            async with client:
                assert client.security_policy.Mode == mode
                assert await (await _node(client, SOC)).read_value() == 61.0
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            async with Client(cfg.endpoint, timeout=3):
                pass
    # The certificate made on the first run is kept on the next.
    first = server_cert.read_bytes()
    async with OpcUaServer(cfg, demo_site, rig.twin, rig.path, users=users):
        pass
    assert server_cert.read_bytes() == first


async def test_device_refusal_is_reported_to_the_writer(demo_site, new_port, config, users) -> None:
    # The gateway's map puts LOAD01's set-point where the device has nothing: exception 2.
    port = new_port()
    sim_site = _with_port(demo_site, port)
    ref = "VPP1.LOAD01/DRCC1.WSpt.setMag.f"
    drivers = []
    for d in sim_site.drivers:
        if d.id == "mb1":
            regs = [
                r.model_copy(update={"address": 40}) if r.point == ref else r for r in d.registers
            ]
            d = d.model_copy(update={"registers": regs})
        drivers.append(d)
    gw_site = sim_site.model_copy(update={"drivers": drivers})
    async with FieldRig(sim_site) as rig:
        # The rig's driver must use the gateway's (wrong) map.
        await rig.driver.stop()
        cfg = next(d for d in gw_site.drivers if d.id == "mb1")
        rig.driver = ModbusDriver(cfg, rig.twin)  # type: ignore[arg-type]
        rig.path = CommandPath(rig.twin, [rig.driver])
        await rig.driver.start()
        async with (
            OpcUaServer(config, gw_site, rig.twin, rig.path, users=users),
            _client(config, "olga") as client,
        ):
            with pytest.raises(UaStatusCodeError) as ei:
                await (await _node(client, ref)).write_value(
                    ua.DataValue(ua.Variant(-20.0, ua.VariantType.Double))
                )
            assert ei.value.code == SC.BadDeviceFailure
        [rec] = rig.accepted
        assert rec.state == CommandState.FAILED


async def test_large_parents_are_split_into_folders(demo_site, config, monkeypatch) -> None:
    # asyncua's cost of adding a child grows with its siblings: no parent has more than
    # FOLDER_LIMIT children. Shrunk here so the demo's six resources need three folders.
    import gateway.north.opcua_server as mod

    monkeypatch.setattr(mod, "FOLDER_LIMIT", 2)
    rig = TwinOnly(demo_site)
    async with OpcUaServer(config, demo_site, rig.twin, rig.path), _client(config) as client:
        ns = await client.get_namespace_index(NS_URI)
        vpp = client.get_node(ua.NodeId("VPP1", ns))
        kids = await vpp.get_children(nodeclassmask=ua.NodeClass.Object)
        names = sorted([(await k.read_browse_name()).Name for k in kids])
        assert names == ["BAT02..PLANT", "PV01..PV02"]
        # NodeIds do not depend on the folders: a point is still found by its reference.
        node = client.get_node(ua.NodeId(SET, ns))
        assert (await node.read_browse_name()).Name == "setMag.f"
        path = []
        n = node
        while n.nodeid != ua.NodeId(ua.ObjectIds.ObjectsFolder):
            path.append((await n.read_browse_name()).Name)
            n = await n.get_parent()
        path.reverse()
        # Folders (named first..last) sit between the model's levels, which keep their order.
        assert [p for p in path if ".." not in p] == [
            "DEMO", "VPP1", "BAT02", "DRCC1", "WSpt", "setMag.f"
        ]  # fmt: skip
        assert path[2] == "BAT02..PLANT"


async def test_only_trusted_client_certificates_connect(demo_site, config, tmp_path) -> None:
    rig = TwinOnly(demo_site)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    cfg = config.model_copy(
        update={
            "security_policies": ["Basic256Sha256_SignAndEncrypt"],
            "trusted_client_certs_dir": str(trusted),
        }
    )
    uri = "urn:vpp-gateway:test-client"
    cert, key = _client_certificate(tmp_path, uri)

    async def connect() -> None:
        client = Client(cfg.endpoint, timeout=WAIT)
        client.application_uri = uri
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(cert),
            private_key=str(key),
            server_certificate=cfg.certificate,
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        async with client:
            assert await (await _node(client, SET)).read_browse_name()

    async with OpcUaServer(cfg, demo_site, rig.twin, rig.path):
        with pytest.raises(UaStatusCodeError) as ei:
            await connect()
        assert ei.value.code == SC.BadCertificateUntrusted
    (trusted / "client.der").write_bytes(cert.read_bytes())
    async with OpcUaServer(cfg, demo_site, rig.twin, rig.path):
        await connect()
