"""OPC UA south driver against a real asyncua server on loopback."""

import asyncio
import time

import pytest
from asyncua import Server, ua

from gateway.commands import CommandPath
from gateway.south.opcua import OpcUaDriver, status_to_quality
from model.command import Command, CommandState
from model.drivers import OpcUaClientDriverConfig
from model.quality import BAD_REFERENCE, FAILURE, OLD_DATA, SUBSTITUTED, Validity
from twin.twin import Twin

P = "VPP1.PV01/MMXU1.TotW.mag.f"
Q = "VPP1.PV01/MMXU1.TotVAr.mag.f"
SET = "VPP1.PV01/DRCC1.WSpt.setMag.f"
STATE = "VPP1.PV01/DRCT1.DERSt.stVal"


class Device:
    """An inverter's OPC UA server: P in W (scaled to kW by the map), Q, a set-point, a state."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Server | None = None
        self.nodes: dict[str, object] = {}

    async def start(self, p_w: float = 42_000.0) -> None:
        s = Server()
        await s.init()
        s.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/inverter")
        s.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await s.register_namespace("urn:vpp-test:inverter")
        inv = await s.nodes.objects.add_object(idx, "Inverter")
        self.nodes["P"] = await inv.add_variable(ua.NodeId("Inverter.P", idx), f"{idx}:P", p_w)
        self.nodes["Q"] = await inv.add_variable(ua.NodeId("Inverter.Q", idx), f"{idx}:Q", -3.5)
        wspt = await inv.add_variable(ua.NodeId("Inverter.WSpt", idx), f"{idx}:WSpt", 120.0)
        await wspt.set_writable()
        self.nodes["WSpt"] = wspt
        self.nodes["State"] = await inv.add_variable(
            ua.NodeId("Inverter.State", idx), f"{idx}:State", ua.Variant(1, ua.VariantType.Int32)
        )
        await s.start()
        self.idx = idx
        self.server = s

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def _config(port: int, idx: int = 2) -> OpcUaClientDriverConfig:
    return OpcUaClientDriverConfig(
        id="inv1", protocol="opcua", endpoint=f"opc.tcp://127.0.0.1:{port}/inverter",
        publishing_interval_ms=50, watchdog_s=0.3, timeout_s=3, reconnect_min_s=0.2, reconnect_max_s=1,
        points=[
            {"node": f"ns={idx};s=Inverter.P", "point": P, "scale": 0.001},
            {"node": f"{idx}:Inverter/{idx}:Q", "point": Q},  # a browse path from Objects
            {"node": f"ns={idx};s=Inverter.WSpt", "point": SET, "writable": True},
            {"node": f"ns={idx};s=Inverter.State", "point": STATE},
        ],
    )  # fmt: skip


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_status_codes_map_to_quality() -> None:
    assert status_to_quality(ua.StatusCode(ua.StatusCodes.Good)) == 0
    bad = status_to_quality(ua.StatusCode(ua.StatusCodes.BadSensorFailure))
    assert bad & 0b11 == Validity.INVALID and bad & FAILURE
    stale = status_to_quality(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue))
    assert stale & 0b11 == Validity.QUESTIONABLE and stale & OLD_DATA
    sub = status_to_quality(ua.StatusCode(ua.StatusCodes.UncertainSubstituteValue))
    assert sub & SUBSTITUTED
    assert (
        status_to_quality(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) & 0b11 == Validity.INVALID
    )


async def test_subscribe_quality_write_and_reconnect(demo_site, port) -> None:
    dev = Device(port)
    await dev.start()
    twin = Twin.from_site(demo_site)
    driver = OpcUaDriver(_config(port, dev.idx), twin)
    path = CommandPath(twin, [driver])
    try:
        await driver.start()
        await _until(lambda: twin.get(STATE) is not None, 20, "first read")
        assert twin.get(P).value == pytest.approx(42.0)  # W scaled to kW
        assert twin.get(Q).value == pytest.approx(-3.5)
        state = twin.get(STATE)
        assert state.value == 1 and isinstance(state.value, int) and state.quality == 0

        await dev.nodes["P"].write_value(55_500.0)
        await _until(lambda: twin.get(P).value == pytest.approx(55.5), 20, "data change")
        bad = ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure),
        )
        await dev.nodes["Q"].write_value(bad)
        await _until(lambda: twin.get(Q).quality & 0b11 == Validity.INVALID, 20, "bad status")
        assert twin.get(Q).value == pytest.approx(-3.5)  # the Bad notification had no value
        assert twin.get(Q).quality & FAILURE

        rec = await path.submit(Command(SET, 80.0, "test", deadline=time.time() + 20))
        await _until(lambda: rec.done, 20, "confirmation")
        assert rec.state == CommandState.CONFIRMED
        assert await dev.nodes["WSpt"].read_value() == 80.0

        await dev.stop()
        await _until(lambda: twin.get(P).quality & OLD_DATA, 20, "not topical")
        assert not driver.connected
        with pytest.raises(Exception, match="not connected"):
            await driver.execute(Command(SET, 70.0, "t"), lambda s, r: None)
        await dev.start(p_w=61_000.0)
        await _until(
            lambda: twin.get(P).quality == 0 and twin.get(P).value == pytest.approx(61.0),
            30,
            "refresh",
        )
        assert driver.stats()["reconnects"] >= 1
    finally:
        await path.close()
        await driver.stop()
        await dev.stop()


async def test_unknown_nodes(demo_site, port) -> None:
    dev = Device(port)
    await dev.start()
    twin = Twin.from_site(demo_site)
    data = _config(port, dev.idx).model_dump()
    # An unknown NodeId is the server's answer for that point; the others keep working.
    data["points"] = [{"node": "ns=2;s=Nope", "point": P}, data["points"][1]]
    driver = OpcUaDriver(OpcUaClientDriverConfig.model_validate(data), twin)
    # An unknown browse path cannot be resolved at all: counted, retried, never connected.
    data["points"] = [{"node": f"{dev.idx}:Inverter/{dev.idx}:Nope", "point": P}]
    lost = OpcUaDriver(OpcUaClientDriverConfig.model_validate({**data, "id": "inv2"}), twin)
    try:
        await driver.start()
        await lost.start()
        await _until(lambda: twin.get(P) is not None and twin.get(Q) is not None, 20, "first read")
        assert (
            twin.get(P).quality & 0b11 == Validity.INVALID and twin.get(P).quality & BAD_REFERENCE
        )
        assert twin.get(Q).quality == 0
        await _until(lambda: lost.stats()["errors"] >= 1, 10, "an error counted")
        assert not lost.connected
    finally:
        await driver.stop()
        await lost.stop()
        await dev.stop()
