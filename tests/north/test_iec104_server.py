"""The IEC 104 server for dispatch against real peers on loopback.

The dispatch side is a c104 client (and, for TLS, Python's ssl/OpenSSL speaking raw APDUs: the
c104 client of this installation cannot verify a server certificate, see the TLS test). The
field side is our IEC 104 outstation and Modbus simulators with our south drivers, as in
tests/gateway/test_command_path.py.

No ``from __future__ import annotations``: the c104 callbacks defined here are checked by c104
against their exact signature, type hints included.
"""

import asyncio
import csv
import datetime
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import c104
import pytest

from gateway.commands import CommandPath
from gateway.north.iec104_server import IEC104Server
from gateway.south.iec104 import IEC104Driver
from gateway.south.modbus import ModbusDriver
from model.natures import Role
from model.north_iec104 import (
    IEC104ServerConfig,
    IEC104TableEntry,
    PointTableError,
    build_point_table,
)
from model.quality import GOOD
from model.resources import Resource, plant_ref
from model.sample import Sample
from model.site import SiteConfig
from tools.cli import main as vpp
from tools.sim.iec104 import IEC104Simulator
from tools.sim.modbus import ModbusSimulator
from twin.twin import Twin

CA = 1
P_IOA, TARGET_IOA, ONLINE_IOA = 0x4001, 0x4008, 0x400A
AGC_ON_IOA, DR_ACTIVE_IOA = 0x0002, 0x0004
AGC_MODE, DR_CMD = 0x6001, 0x6003
AGC_NA, AGC_NB, AGC_NC, AGC_TC = 0x6201, 0x6202, 0x6203, 0x6206
E_SUP = 0x6401
P_REF = plant_ref("VPP1", "p")


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll pred until it holds; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def _p(r: Resource) -> str:
    ref = r.ref("VPP1", Role.P)
    assert ref is not None
    return ref


def _plain(v: Any) -> Any:
    if isinstance(v, bool | float | int):
        return v
    if isinstance(v, c104.Double):
        return v == c104.Double.ON
    return float(v)  # Int16, NormalizedFloat


class Dispatch:
    """A c104 client as the dispatch centre: records what arrives, sends commands."""

    def __init__(self, port: int, table: list[IEC104TableEntry]) -> None:
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=1000)
        con = self.client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.ALL)
        assert con is not None
        self.con = con
        st = con.add_station(common_address=CA)
        assert st is not None
        self.got: dict[int, list[tuple[Any, str, int, bool]]] = {}
        self.cmd: dict[int, c104.Point] = {}
        self.states: list[str] = []
        for e in table:
            p = st.add_point(io_address=e.ioa, type=getattr(c104.Type, e.type))
            assert p is not None
            if e.is_command:
                self.cmd[e.ioa] = p
            else:
                p.on_receive(callable=self._on_point)
        con.on_state_change(callable=self._on_state)
        con.on_receive_raw(callable=self._on_raw)
        # (type id, IOA, negative, select) of every activation confirmation received.
        self.confirmations: list[tuple[int, int, bool, bool]] = []
        self.failures: list[list[tuple[int, int, bool, bool]]] = []

    def _on_point(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        q = point.quality
        good = q is None or q.is_good()
        self.got.setdefault(point.io_address, []).append(
            (_plain(point.value), message.type.name, int(message.cot.value), good)
        )
        return c104.ResponseState.NONE

    def _on_state(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        self.states.append(state.name)

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        # I-format APDU: 68 len c1 c2 c3 c4 | type VSQ COT OA CA CA | IOA IOA IOA | element.
        if len(data) < 16 or data[2] & 1 or data[8] & 0x3F != 7 or not 45 <= data[6] <= 64:
            return
        tid = data[6]
        # The qualifier (QOS / SCO / DCO) follows the value; its bit 7 is S/E (1: select).
        value_len = {48: 2, 49: 2, 50: 4, 61: 2, 62: 2, 63: 4}.get(tid, 0)
        qualifier = data[15 + value_len] if len(data) > 15 + value_len else 0
        ioa = data[12] | data[13] << 8 | data[14] << 16
        self.confirmations.append((tid, ioa, bool(data[8] & 0x40), bool(qualifier & 0x80)))

    def start(self) -> None:
        self.client.start()

    async def connect(self, timeout: float = 10.0) -> None:
        """Start, wait for OPEN (unmuting a link c104 left muted) and interrogate once."""
        self.start()
        deadline = time.monotonic() + timeout
        muted_since = None
        while not self.open:
            if time.monotonic() > deadline:
                raise AssertionError(f"dispatch link not open: {self.states}")
            if self.con.state == c104.ConnectionState.OPEN_MUTED:
                muted_since = muted_since or time.monotonic()
                if time.monotonic() - muted_since > 0.3:
                    # c104 2.2.1 can leave a started link muted (see gateway/south/iec104.py).
                    await asyncio.to_thread(self.con.unmute)
                    muted_since = None
            await asyncio.sleep(0.02)
        if not self.got:
            assert await asyncio.to_thread(self.con.interrogation, CA)

    def stop(self) -> None:
        self.client.stop()

    @property
    def open(self) -> bool:
        return self.con.state == c104.ConnectionState.OPEN

    def last(self, ioa: int, cot: int | None = None) -> Any:
        got = [g for g in self.got.get(ioa, []) if cot is None or g[2] == cot]
        return got[-1][0] if got else None

    def send(self, ioa: int, value: Any, *, sbo: bool = False, tag: Any = None) -> bool:
        """Transmit a command; True on a positive execute confirmation (blocking: use a thread).

        The outcome is read from the confirmation frames: c104's own wait can miss one that
        arrives before it starts waiting (see gateway/south/iec104.py).
        """
        for _ in range(4):
            start = len(self.confirmations)
            self._transmit(ioa, value, sbo=sbo, tag=tag)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                seen = [c for c in self.confirmations[start:] if c[1] == ioa]
                if any(neg for _, _, neg, _ in seen):
                    return False
                if any(not sel for _, _, _, sel in seen):
                    return True
                time.sleep(0.01)
            self.failures.append(seen)
            if not (sbo and seen):
                return False
            # Select confirmed but c104 never sent the execute: select again.
        return False

    def _transmit(self, ioa: int, value: Any, *, sbo: bool, tag: Any) -> None:
        p = self.cmd[ioa]
        p.command_mode = c104.CommandMode.SELECT_AND_EXECUTE if sbo else c104.CommandMode.DIRECT
        name = p.type.name
        if tag is not None or name[5] == "T":
            tag = tag or datetime.datetime.now()
            if name.startswith("C_SE_T"):
                if name == "C_SE_TC_1":
                    p.info = c104.ShortCmd(target=float(value), recorded_at=tag)
                elif name == "C_SE_TB_1":
                    p.info = c104.ScaledCmd(target=c104.Int16(value), recorded_at=tag)
                else:
                    p.info = c104.NormalizedCmd(target=c104.NormalizedFloat(value), recorded_at=tag)
        elif name == "C_SE_NA_1":
            p.value = c104.NormalizedFloat(value)
        elif name == "C_SE_NB_1":
            p.value = c104.Int16(value)
        elif name == "C_DC_NA_1":
            p.value = c104.Double.ON if value else c104.Double.OFF
        else:
            p.value = value
        p.transmit(cause=c104.Cot.ACTIVATION)


def _with_ports(site: SiteConfig, iec_port: int, mb_port: int) -> SiteConfig:
    drivers = []
    for d in site.drivers:
        if d.protocol == "iec104":
            d = d.model_copy(update={"port": iec_port, "reconnect_min_s": 0.1})
        elif d.protocol == "modbus":
            poll = [g.model_copy(update={"period_s": 0.2}) for g in d.poll_groups]
            d = d.model_copy(update={"port": mb_port, "poll_groups": poll})
        drivers.append(d)
    return site.model_copy(update={"drivers": drivers})


class Rig:
    """Simulators + south drivers + twin + command path + our server + a dispatch client."""

    def __init__(
        self, site: SiteConfig, ports: Callable[[], int], cfg: dict[str, Any], tick_s: float
    ) -> None:
        self.site = _with_ports(site, ports(), ports())
        self.port = ports()
        self.config = IEC104ServerConfig(port=self.port, **cfg)
        d104 = next(d for d in self.site.drivers if d.protocol == "iec104")
        dmb = next(d for d in self.site.drivers if d.protocol == "modbus")
        self.sim104 = IEC104Simulator(self.site, d104.id, tick_s=tick_s)
        self.simmb = ModbusSimulator(self.site, dmb.id, tick_s=tick_s)
        self.twin = Twin.from_site(self.site)
        self.drivers = [
            IEC104Driver(d104, self.twin),  # type: ignore[arg-type]
            ModbusDriver(dmb, self.twin),  # type: ignore[arg-type]
        ]
        self.path = CommandPath(self.twin, self.drivers)
        self.server = IEC104Server(self.config, self.site, self.twin, self.path)
        self.dispatch = Dispatch(self.port, self.server.point_table())
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "Rig":
        self._tasks = [
            asyncio.create_task(self.sim104.serve(self._stop)),
            asyncio.create_task(self.simmb.serve(self._stop)),
        ]
        await until(lambda: self.simmb.running, "modbus simulator")
        for d in self.drivers:
            await d.start()
        await self.server.start()
        await until(
            lambda: (s := self.twin.get(plant_ref("VPP1", "online"))) is not None and s.value == 6,
            "all six resources online",
        )
        await self.dispatch.connect()
        await until(lambda: self.dispatch.last(P_IOA) is not None, "interrogation at connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.dispatch.stop)
        await self.server.stop()
        await self.path.close()
        for d in self.drivers:
            await d.stop()
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def device_writes(self) -> int:
        return self.sim104.commands_received + self.simmb.writes


@pytest.fixture
def make_rig(demo_site: SiteConfig, new_port: Callable[[], int]):
    def make(tick_s: float = 0.1, **cfg: Any) -> Rig:
        return Rig(demo_site, new_port, cfg, tick_s)

    return make


# --- the point table and its export ---------------------------------------------------------


def test_point_table_is_deterministic_with_overrides(demo_site: SiteConfig) -> None:
    table = build_point_table(IEC104ServerConfig(), demo_site)
    assert table == build_point_table(IEC104ServerConfig(), demo_site)
    by = {(e.ioa, e.type): e for e in table}
    assert by[(P_IOA, "M_ME_NC_1")].point == P_REF
    assert by[(AGC_NC, "C_SE_NC_1")].min == -220.0 and by[(AGC_NC, "C_SE_NC_1")].max == 255.0
    assert by[(AGC_NA, "C_SE_NA_1")].scale == 255.0  # normalised: 1.0 is the range's end
    assert by[(AGC_NB, "C_SE_NB_1")].scale == 0.01  # finest power of ten that fits int16
    assert by[(E_SUP, "M_IT_NA_1")].unit == "kWh"
    cfg = IEC104ServerConfig.model_validate(
        {
            "vpps": [{"vpp": "VPP1", "common_address": 7}],
            "setpoint_types": ["C_SE_NC_1"],
            "overrides": [
                {"point": P_REF, "ioa": 100, "type": "M_ME_TF_1", "deadband": 2.5},
                {"point": "VPP1.PLANT/DRCC1.DRAct.stVal", "command": True, "enabled": False},
            ],
            "extra_points": [
                {"point": "VPP1.BAT01/DRCC1.WSpt.setMag.f", "ioa": 0x6301, "type": "C_SE_NC_1"}
            ],
        }
    )
    t2 = {(e.point, e.is_command): e for e in build_point_table(cfg, demo_site)}
    p = t2[(P_REF, False)]
    assert (p.common_address, p.ioa, p.type, p.deadband) == (7, 100, "M_ME_TF_1", 2.5)
    assert ("VPP1.PLANT/DRCC1.DRAct.stVal", True) not in t2
    assert t2[("VPP1.BAT01/DRCC1.WSpt.setMag.f", True)].max == 60.0
    bad = IEC104ServerConfig.model_validate(
        {
            "overrides": [{"point": P_REF, "ioa": 2}],  # collides with AGC on
            "extra_points": [
                {"point": "VPP1.BAT01/MMXU1.TotW.mag.f", "ioa": 9, "type": "C_SE_NC_1"}
            ],
        }
    )
    with pytest.raises(PointTableError) as ei:
        build_point_table(bad, demo_site)
    text = str(ei.value)
    assert "IOA 2" in text and "read-only" in text


def test_export_writes_the_demo_table_as_csv(tmp_path: Path, demo_site: SiteConfig) -> None:
    out = tmp_path / "points.csv"
    assert vpp(["export", "iec104-points", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert list(rows[0]) == [
        "common_address", "ioa", "type", "point", "description", "unit", "scale", "deadband",
    ]  # fmt: skip
    table = build_point_table(IEC104ServerConfig(), demo_site)
    assert [(int(r["common_address"]), int(r["ioa"]), r["type"], r["point"]) for r in rows] == [
        (e.common_address, e.ioa, e.type, e.point) for e in table
    ]
    p = next(r for r in rows if int(r["ioa"]) == P_IOA)
    assert (p["unit"], float(p["scale"]), float(p["deadband"])) == ("kW", 1.0, 0.1)
    assert "total active power" in p["description"]
    # --config names a site file; the demo site file gives the same table.
    out2 = tmp_path / "again.csv"
    site_file = Path(__file__).resolve().parents[2] / "tools" / "demo_site.yaml"
    assert vpp(["export", "iec104-points", "--config", str(site_file), "-o", str(out2)]) == 0
    assert out2.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


# --- monitor direction -----------------------------------------------------------------------


async def test_interrogation_returns_every_point_with_type_and_value(make_rig) -> None:
    # A long tick: the simulated devices do not move while we compare.
    async with make_rig(tick_s=3600, resource_telemetry=True) as rig:
        d = rig.dispatch
        table = rig.server.point_table()
        monitors = [e for e in table if not e.is_command]
        await asyncio.sleep(0.5)  # let the last polls settle into the twin
        d.got.clear()
        assert await asyncio.to_thread(d.con.interrogation, CA)
        await until(lambda: all(e.ioa in d.got for e in monitors if e.type != "M_IT_NA_1"), "GI")
        assert await asyncio.to_thread(d.con.counter_interrogation, CA)
        await until(lambda: all(e.ioa in d.got for e in monitors), "counter interrogation")
        state = rig.server.state("VPP1")
        for e in monitors:
            value, type_name, cot, good = d.got[e.ioa][-1]
            assert type_name == e.type, e.point
            assert cot == (37 if e.type == "M_IT_NA_1" else 20), e.point
            if e.point in rig.twin:
                s = rig.twin.get(e.point)
                assert s is not None, e.point
                assert good == (s.quality == GOOD), e.point
                assert value == pytest.approx(float(s.value) / e.scale, abs=1e-3), e.point
        assert d.got[AGC_ON_IOA][-1][0] is True and d.got[DR_ACTIVE_IOA][-1][0] is False
        assert d.got[TARGET_IOA][-1][3] is False  # no AGC target yet: invalid
        assert abs(d.got[E_SUP][-1][0] - int(state["energy_delivered_kwh"])) <= 1
        assert d.got[ONLINE_IOA][-1][0] == 6.0
        assert d.got[1][-1][0] is True  # available
        # Ramp: BAT01's 600 kW/min, the others (no ramp limit) their whole range per minute.
        assert d.got[0x4007][-1][0] == 600 + 120 + 75 + 60 + 60 + 40


async def test_spontaneous_updates_follow_the_twin_past_their_deadband(
    demo_site: SiteConfig, port: int
) -> None:
    # The twin alone (changes applied as acquisition would apply them): exact values.
    bat_p = "VPP1.BAT01/MMXU1.TotW.mag.f"
    cfg = IEC104ServerConfig(
        port=port,
        resource_telemetry=True,
        background_s=0,
        overrides=[{"point": bat_p, "deadband": 1.0}],
    )
    twin = Twin.from_site(demo_site)
    now = time.time()
    twin.apply([Sample(_p(r), 0.0, now) for _, r in demo_site.resources()])
    server = IEC104Server(cfg, demo_site, twin, CommandPath(twin, []))
    table = server.point_table()
    ioa = next(e.ioa for e in table if e.point == bat_p)
    await server.start()
    d = Dispatch(port, table)
    try:
        await d.connect()
        await until(lambda: d.last(ioa) is not None, "connect and GI")
        assert d.last(ioa) == 0.0 and d.last(P_IOA) == 0.0

        twin.apply([Sample(bat_p, 0.5, time.time())])  # below BAT01's 1 kW deadband
        await until(lambda: d.last(P_IOA, cot=3) == 0.5, "plant P (deadband 0.1) spontaneous")
        await asyncio.sleep(0.3)
        assert d.last(ioa, cot=3) is None  # BAT01 P held back by its deadband
        # ... but an interrogation answers with the present value.
        assert await asyncio.to_thread(d.con.interrogation, CA)
        await until(lambda: d.last(ioa, cot=20) == 0.5, "GI with the present value")

        twin.apply([Sample(bat_p, 1.2, time.time())])  # 1.2 from the last sent 0.0: goes out
        await until(lambda: d.last(ioa, cot=3) == pytest.approx(1.2), "past the deadband")
        twin.mark_not_topical([bat_p])  # a quality change always goes out
        await until(lambda: d.got[ioa][-1][3] is False, "not-topical flag")
        assert d.got[ioa][-1][2] == 3
        st = server.stats()
        assert st["messages"] >= 3 and st["queued_estimate"] <= cfg.max_queued_messages
    finally:
        await asyncio.to_thread(d.stop)
        await server.stop()


async def test_periodic_and_background_scans(demo_site: SiteConfig, port: int) -> None:
    cfg = IEC104ServerConfig(port=port, periodic_s=0.3, background_s=0.5)
    twin = Twin.from_site(demo_site)
    twin.apply([Sample(_p(r), 1.0, time.time()) for _, r in demo_site.resources()])
    server = IEC104Server(cfg, demo_site, twin, CommandPath(twin, []))
    table = server.point_table()
    await server.start()
    d = Dispatch(port, table)
    try:
        await d.connect()
        await until(lambda: d.last(P_IOA, cot=1) == 6.0, "periodic P (COT 1)")
        await until(lambda: d.last(AGC_ON_IOA, cot=2) is True, "background scan (COT 2)")
        periodic = {ioa for ioa, got in d.got.items() if any(g[2] == 1 for g in got)}
        # Periodic transmission is for measurands only (M_ME_*), never indications or counters.
        assert periodic and all(0x4001 <= ioa <= 0x4FFF for ioa in periodic)
    finally:
        await asyncio.to_thread(d.stop)
        await server.stop()


async def test_burst_is_paced_and_coalesced_latest_values_arrive(
    demo_site: SiteConfig, port: int
) -> None:
    """Many changes at once: nothing is lost to c104's queue, the last value of each point arrives."""
    refs = [_p(r) for _, r in demo_site.resources()]
    extra = [{"point": ref, "ioa": 0x7001 + i, "type": "M_ME_NC_1"} for i, ref in enumerate(refs)]
    cfg = IEC104ServerConfig(
        port=port, extra_points=extra, background_s=0, deadbands={}, batch_size=1,
        max_queued_messages=5,
    )  # fmt: skip
    twin = Twin.from_site(demo_site)
    server = IEC104Server(cfg, demo_site, twin, CommandPath(twin, []))
    table = server.point_table()
    await server.start()
    d = Dispatch(port, table)
    try:
        await d.connect()
        await until(lambda: P_IOA in d.got, "connect and GI")
        for k in range(1, 201):  # 200 rounds x 6 points, far faster than one value per message
            twin.apply([Sample(ref, float(k), time.time()) for ref in refs])
            if k % 20 == 0:
                await asyncio.sleep(0)
        await until(
            lambda: all(d.last(0x7001 + i, cot=3) == 200.0 for i in range(len(refs))),
            "the latest value of every point",
        )
        st = server.stats()
        assert st["coalesced"] > 0 and st["paced_waits"] > 0
        # Every value that arrived is one that was sent, in order: nothing overwritten.
        for i in range(len(refs)):
            seen = [v for v, _, cot, _ in d.got[0x7001 + i] if cot == 3]
            assert seen == sorted(seen)
    finally:
        await asyncio.to_thread(d.stop)
        await server.stop()


# --- control direction -----------------------------------------------------------------------


async def test_setpoint_with_select_before_operate_moves_the_ders(make_rig) -> None:
    async with make_rig(tick_s=0.1, select_before_operate_setpoints=True) as rig:
        d = rig.dispatch
        p0 = float(rig.twin.get(P_REF).value)  # type: ignore[union-attr]
        up = float(rig.twin.get(plant_ref("VPP1", "up_w")).value)  # type: ignore[union-attr]
        assert up > 20
        target = round(p0 + min(40.0, 0.6 * up), 1)
        assert await asyncio.to_thread(d.send, AGC_NC, target, sbo=True), (
            d.failures,
            rig.server.stats(),
        )
        assert rig.server.state("VPP1")["p_target"] == target
        recs = [r for r in rig.twin.commands.records() if r.command.origin == "iec104"]
        assert recs and all(r.command.id.startswith("iec104-") for r in recs)
        await until(
            lambda: abs(float(rig.twin.get(P_REF).value) - target) < 2.0,  # type: ignore[union-attr]
            f"the VPP's P to reach {target} kW",
            timeout=20,
        )
        assert rig.device_writes() == len(recs)
        await until(lambda: abs(d.last(P_IOA, cot=3) - target) < 2.0, "P reported to dispatch")
        await until(lambda: d.last(TARGET_IOA, cot=3) == target, "target indication")


async def test_refused_commands_get_a_negative_confirmation_and_reach_no_device(
    make_rig,
) -> None:
    async with make_rig(tick_s=3600, select_before_operate_setpoints=True) as rig:
        d = rig.dispatch
        p0 = float(rig.twin.get(P_REF).value)  # type: ignore[union-attr]
        # Execute without select on a select-before-operate point: c104 refuses.
        assert not await asyncio.to_thread(d.send, AGC_NC, p0 + 5, sbo=False)
        # A time tag older than the window.
        old = datetime.datetime.now() - datetime.timedelta(seconds=60)
        assert not await asyncio.to_thread(d.send, AGC_TC, p0 + 5, sbo=True, tag=old)
        # Out of the VPP's range (sum of p_max is 255 kW).
        assert not await asyncio.to_thread(d.send, AGC_NC, 256.0, sbo=True)
        # AGC switched off: set-points refused until it is on again.
        assert await asyncio.to_thread(d.send, AGC_MODE, False, sbo=True)
        await until(lambda: d.last(AGC_ON_IOA, cot=3) is False, "AGC off indication")
        assert not await asyncio.to_thread(d.send, AGC_NC, p0 + 5, sbo=True)
        assert await asyncio.to_thread(d.send, AGC_MODE, True, sbo=True)
        await asyncio.sleep(0.5)
        assert rig.device_writes() == 0
        assert not [r for r in rig.twin.commands.records() if r.command.origin == "iec104"]
        assert rig.server.state("VPP1")["p_target"] is None
        assert rig.server.stats()["refusals"] == {"stale": 1, "out_of_range": 1, "agc_off": 1}


async def test_a_viewer_master_commands_nothing(make_rig) -> None:
    # The role matrix (security.rbac): a monitoring-only master may not command. c104 does not
    # say which connection sent a command, so one viewer among the masters refuses them all.
    clients = [{"name": "scada", "host": "127.0.0.1", "role": "viewer"}]
    async with make_rig(tick_s=3600, clients=clients) as rig:
        d = rig.dispatch
        p0 = float(rig.twin.get(P_REF).value)  # type: ignore[union-attr]
        # Defaults: set-points direct, mode commands select-before-operate.
        assert not await asyncio.to_thread(d.send, AGC_NC, p0 + 5, sbo=False)
        assert not await asyncio.to_thread(d.send, AGC_MODE, False, sbo=True)
        await asyncio.sleep(0.3)
        assert rig.device_writes() == 0
        assert rig.server.stats()["refusals"] == {"forbidden": 2}
        assert rig.server.state("VPP1")["p_target"] is None


async def test_repeats_execute_once_and_all_setpoint_types_decode(make_rig) -> None:
    async with make_rig(tick_s=3600) as rig:
        d = rig.dispatch
        p0 = float(rig.twin.get(P_REF).value)  # type: ignore[union-attr]

        def iec104_records() -> int:
            return len([r for r in rig.twin.commands.records() if r.command.origin == "iec104"])

        # The same time-tagged set-point twice: one execution, two positive confirmations.
        tag = datetime.datetime.now()
        assert await asyncio.to_thread(d.send, AGC_TC, p0 + 10, tag=tag)
        n = iec104_records()
        assert n > 0
        await until(lambda: rig.device_writes() == n, "the devices to get the set-points")
        assert await asyncio.to_thread(d.send, AGC_TC, p0 + 10, tag=tag)
        await asyncio.sleep(0.5)
        assert iec104_records() == n and rig.device_writes() == n
        assert rig.server.stats()["commands_repeated"] == 1

        # Normalised and scaled set-points carry the same target in their own units.
        assert await asyncio.to_thread(d.send, AGC_NA, 0.1)
        assert rig.server.state("VPP1")["p_target"] == pytest.approx(25.5, abs=0.01)
        assert await asyncio.to_thread(d.send, AGC_NB, 1234)
        assert rig.server.state("VPP1")["p_target"] == pytest.approx(12.34)

        # DR start twice executes once; stop restores the set-points in force before.
        before = iec104_records()
        assert await asyncio.to_thread(d.send, DR_CMD, True, sbo=True)
        started = iec104_records()
        assert started > before
        assert await asyncio.to_thread(d.send, DR_CMD, True, sbo=True)
        assert iec104_records() == started
        await until(lambda: d.last(DR_ACTIVE_IOA, cot=3) is True, "DR active indication")
        assert await asyncio.to_thread(d.send, DR_CMD, False, sbo=True)
        assert iec104_records() > started
        assert rig.server.state("VPP1")["dr_active"] is False


# --- link: parameters, clients, clock, TLS ---------------------------------------------------


async def test_link_parameters_clients_and_clock_sync(demo_site: SiteConfig, new_port) -> None:
    port = new_port()
    cfg = IEC104ServerConfig(
        port=port,
        clients=[{"name": "main", "host": "127.0.0.1"}, {"name": "backup", "host": "127.0.0.1"}],
        protocol={"k": 20, "w": 10, "t1_s": 5, "t2_s": 2, "t3_s": 1},
    )
    twin = Twin.from_site(demo_site)
    server = IEC104Server(cfg, demo_site, twin, CommandPath(twin, []))
    await server.start()
    table = server.point_table()
    main, backup = Dispatch(port, table), Dispatch(port, table)
    frames: list[bytes] = []

    def on_raw(connection: c104.Connection, data: bytes) -> None:
        frames.append(data)

    main.con.on_receive_raw(callable=on_raw)
    try:
        await main.connect()
        await backup.connect()
        pp = server._server.protocol_parameters  # type: ignore[union-attr]
        assert (pp.send_window_size, pp.receive_window_size, pp.keep_alive_interval) == (20, 10, 1)
        # t3 = 1 s: an idle link gets TESTFR act (U-format 0x43) from the server.
        await until(lambda: any(f[2] == 0x43 for f in frames), "a test frame after t3", 5)
        # Both masters get spontaneous data.
        twin.apply([Sample(_p(r), 3.0, time.time()) for _, r in demo_site.resources()])
        await until(lambda: main.last(P_IOA, cot=3) == 18.0, "main: spontaneous P")
        await until(lambda: backup.last(P_IOA, cot=3) == 18.0, "backup: spontaneous P")
        assert await asyncio.to_thread(main.con.clock_sync, CA)
        offset = server.stats()["clock_offset_s"]
        assert offset is not None and abs(offset) < 2.0
    finally:
        await asyncio.to_thread(main.stop)
        await asyncio.to_thread(backup.stop)
        await server.stop()
    # A master from an address not in the list is refused.
    port2 = new_port()
    cfg2 = IEC104ServerConfig(port=port2, clients=[{"name": "main", "host": "127.0.0.9"}])
    server2 = IEC104Server(cfg2, demo_site, twin, CommandPath(twin, []))
    await server2.start()
    other = Dispatch(port2, table)
    try:
        other.start()
        await until(lambda: server2.stats()["connections_refused"] >= 1, "refusal")
        await asyncio.sleep(0.3)
        assert not other.open
    finally:
        await asyncio.to_thread(other.stop)
        await server2.stop()


# --- TLS (IEC 62351-3) -----------------------------------------------------------------------


def _pki(d: Path) -> dict[str, Path]:
    """A test CA, a server certificate, and good / revoked / expired / unknown-CA clients."""
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography makes the test CA")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(
        cn: str, key: Any, issuer: Any, issuer_key: Any, start: Any, end: Any, ca: bool
    ) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )

    def save(stem: str, c: Any, key: Any) -> None:
        (d / f"{stem}.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("VPP test CA", ca_key, name("VPP test CA"), ca_key, now - day, now + 30 * day, True)
    save("ca", ca, ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = cert("other CA", other_key, name("other CA"), other_key, now - day, now + day, True)
    made = {}
    for stem, issuer, ikey, start, end in (
        ("server", ca, ca_key, now - day, now + 30 * day),
        ("good", ca, ca_key, now - day, now + 30 * day),
        ("revoked", ca, ca_key, now - day, now + 30 * day),
        ("expired", ca, ca_key, now - 30 * day, now - day),
        ("unknown", other, other_key, now - day, now + 30 * day),
    ):
        k = ec.generate_private_key(ec.SECP256R1())
        c = cert(stem, k, issuer.subject, ikey, start, end, False)
        save(stem, c, k)
        made[stem] = c
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - day)
        .next_update(now + day)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(made["revoked"].serial_number)
            .revocation_date(now - day)
            .build()
        )
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return {stem: d / f"{stem}.crt" for stem in (*made, "ca")} | {"crl": d / "ca.crl"}


STARTDT_ACT = bytes([0x68, 4, 0x07, 0, 0, 0])
STARTDT_CON = bytes([0x68, 4, 0x0B, 0, 0, 0])


def _tls_startdt(port: int, ca: Path, client: Path | None) -> bytes | str:
    """STARTDT over TLS with Python's ssl (OpenSSL): the server's answer, or why it failed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(ca))
    ctx.check_hostname = False
    if client is not None:
        ctx.load_cert_chain(str(client), str(client.with_suffix(".key")))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
            ctx.wrap_socket(raw) as s,
        ):
            s.sendall(STARTDT_ACT)
            got = s.recv(6)
            return got if got else "closed"
    except (OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"


async def test_tls_accepts_the_pinned_client_and_refuses_expired_unknown_and_revoked(
    demo_site: SiteConfig, port: int, tmp_path: Path
) -> None:
    # The c104 client in this installation cannot be the TLS peer: its mbedTLS refuses to
    # verify a server certificate without a host name (-0x5d80) and c104 sets none. OpenSSL
    # through Python's ssl speaks the same TLS; the APDUs are the standard's STARTDT frames.
    pki = _pki(tmp_path)
    tls = {
        "cert": str(pki["server"]),
        "key": str(pki["server"].with_suffix(".key")),
        "ca": str(pki["ca"]),
        "crl": str(pki["crl"]),
        # Pinned: good and revoked (revoked is left out at start because the CRL lists it);
        # expired is pinned too, and refused in the handshake by its validity.
        "client_certs": [str(pki["good"]), str(pki["revoked"]), str(pki["expired"])],
    }
    cfg = IEC104ServerConfig(port=port, tls=tls)
    twin = Twin.from_site(demo_site)
    server = IEC104Server(cfg, demo_site, twin, CommandPath(twin, []))
    await server.start()
    try:
        assert await asyncio.to_thread(_tls_startdt, port, pki["ca"], pki["good"]) == STARTDT_CON
        for who in ("revoked", "expired", "unknown"):
            got = await asyncio.to_thread(_tls_startdt, port, pki["ca"], pki[who])
            assert got != STARTDT_CON, who
        assert await asyncio.to_thread(_tls_startdt, port, pki["ca"], None) != STARTDT_CON
    finally:
        await server.stop()


async def test_tls_without_pinning_still_checks_the_chain_and_validity(
    demo_site: SiteConfig, port: int, tmp_path: Path
) -> None:
    pki = _pki(tmp_path)
    tls = {"cert": str(pki["server"]), "key": str(pki["server"].with_suffix(".key")), "ca": str(pki["ca"])}  # fmt: skip
    twin = Twin.from_site(demo_site)
    server = IEC104Server(IEC104ServerConfig(port=port, tls=tls), demo_site, twin, CommandPath(twin, []))  # fmt: skip
    await server.start()
    try:
        for who, ok in (("good", True), ("revoked", True), ("expired", False), ("unknown", False)):
            got = await asyncio.to_thread(_tls_startdt, port, pki["ca"], pki[who])
            assert (got == STARTDT_CON) is ok, (who, got)
    finally:
        await server.stop()
    with pytest.raises(ValueError, match="crl needs client_certs"):
        IEC104ServerConfig(port=port, tls=tls | {"crl": str(pki["crl"])})
