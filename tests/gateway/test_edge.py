"""The edge role end to end on loopback: an edge terminal (its own twin, a Modbus simulator and our
Modbus driver, its command path, the on-disk buffer, EdgeUplink) and the central platform (its
twin, EdgeHub + EdgeLinkDriver, its command path, history in SQLite) over the real secure
channel. The uplink is cut through a TCP relay the test controls (real sockets: connections
reset, or silently stalled) and by stopping the hub; the edge restarts (everything in memory
built anew, the buffer file kept) to show what survives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine

from gateway.codecs.secure import ChannelConfig, Credentials
from gateway.commands import CommandPath
from gateway.edge import crl_status, load_certificate, load_credentials
from gateway.edge.buffer import SampleBuffer
from gateway.edge.hub import EdgeHub, EdgeLinkDriver, WatermarkStore
from gateway.edge.messages import (
    Ack,
    CommandAck,
    CommandReport,
    CrlUpdate,
    Hello,
    Ping,
    Pong,
    SampleBatch,
    Welcome,
    decode,
    encode,
)
from gateway.edge.uplink import RESTARTED_REASON, EdgeUplink
from gateway.south.modbus import ModbusDriver
from gateway.transports.secure import open_secure_channel
from model.command import Command, CommandState
from model.edge import EdgeHubConfig, EdgeLinkDriverConfig, EdgePoint, EdgeRoleConfig
from model.natures import ResourceKind
from model.quality import OLD_DATA
from model.resources import Aggregator, Limits, Resource
from model.sample import Sample
from model.site import SiteConfig, load_site, parse_site
from security.command_signing import RootSignature, SignedBatch, SignedCommand, verify
from security.identity import (
    CertificateAuthority,
    RevocationList,
    RevokedEntry,
    Role,
    TrustStore,
)
from tests.conftest import ROOT
from tools.sim.modbus import ModbusSimulator
from twin.command_store import RESTART_REASON, CommandStore
from twin.history import HistoryStore, HistoryWriter
from twin.twin import Twin

EDGE_SITE = ROOT / "tools" / "edge_demo_site.yaml"
HVAC_P = "VPP1.HVAC11/MMXU1.TotW.mag.f"
HVAC_SET = "VPP1.HVAC11/DRCC1.WSpt.setMag.f"
BAT_P = "VPP1.BAT11/MMXU1.TotW.mag.f"
BAT_SET = "VPP1.BAT11/DRCC1.WSpt.setMag.f"
BAT_QSET = "VPP1.BAT11/DRCC1.VArSpt.setMag.f"
LOAD_P = "VPP1.LOAD11/MMXU1.TotW.mag.f"
LOAD_Q = "VPP1.LOAD11/MMXU1.TotVAr.mag.f"
FEEDER = Resource(
    id="LOAD11",
    mrid="6f1c2a3e-0b1d-4c5e-9a10-000000000303",
    name="Sub-metered load, fed by the test at a steady rate",
    kind=ResourceKind.LOAD,
    limits=Limits(p_min_kw=-50, p_max_kw=-1),
)


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


async def bounded(aw: Awaitable[object], what: str, timeout: float = 10.0) -> None:
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


# -------------------------------------------------------------------------------------- PKI


@dataclass
class Pki:
    ca: CertificateAuthority
    dir: Path
    platform: Credentials

    def edge(self, name: str) -> Credentials:
        return load_credentials(self.dir, name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("edge-test-ca", directory=d)
    ca.issue_new_key("vpp-platform", role=Role.PLATFORM)
    for name in ("edge-site-1", "edge-revoked"):
        ca.issue_new_key(name, role=Role.EDGE)
    return Pki(ca, d, load_credentials(d, "vpp-platform"))


# ------------------------------------------------------------------------------------ sites


def _edge_site(modbus_port: int) -> SiteConfig:
    site = load_site(EDGE_SITE)
    vpp = site.vpps[0]
    aggs = [*vpp.aggregators, Aggregator(id="FEED", resources=[FEEDER])]
    drivers = []
    for d in site.drivers:
        groups = [g.model_copy(update={"period_s": 0.02}) for g in d.poll_groups]
        drivers.append(d.model_copy(update={"port": modbus_port, "poll_groups": groups}))
    return site.model_copy(
        update={"vpps": [vpp.model_copy(update={"aggregators": aggs})], "drivers": drivers}
    )


def _central(
    edge_site: SiteConfig, *, bat_limit_kw: float, bat_id: str = "BAT11"
) -> tuple[SiteConfig, list[str]]:
    """The platform's site: the edge's resources (the battery with wider limits and perhaps
    another name: `bat_id`), no drivers."""
    resources = []
    for _, r in edge_site.resources():
        if r.id == "BAT11":
            lim = r.limits.model_copy(update={"p_min_kw": -bat_limit_kw, "p_max_kw": bat_limit_kw})
            r = r.model_copy(update={"limits": lim, "id": bat_id})
        resources.append(r.model_dump(mode="json", exclude_defaults=True))
    doc = {
        "site": {"id": "CENTRAL"},
        "vpps": [{"id": "VPP1", "aggregators": [{"id": "EDGE1", "resources": resources}]}],
    }
    site = parse_site(yaml.safe_dump(doc), "<central>")
    plant = {s.ref for s in site.point_specs() if (s.role or "").startswith("plant.")}
    return site, [s.ref for s in site.point_specs() if s.ref not in plant]


def _link_config(
    edge: str, points: list[str], central: SiteConfig, rename: tuple[str, str] | None = None
) -> EdgeLinkDriverConfig:
    """The edge driver; `rename` = (our resource id, the edge's) where the names differ."""
    specs = {s.ref: s for s in central.point_specs()}

    def at_edge(p: str) -> str | None:
        if rename is None or not p.startswith(f"VPP1.{rename[0]}/"):
            return None
        return p.replace(f"VPP1.{rename[0]}/", f"VPP1.{rename[1]}/", 1)

    return EdgeLinkDriverConfig(
        id="edge1",
        protocol="edge",
        edge=edge,
        points=[
            EdgePoint(point=p, writable=specs[p].access == "rw", edge_point=at_edge(p))
            for p in points
        ],
    )


# ---------------------------------------------------------------------------------- the rigs


class Relay:
    """A TCP relay the test can cut: reset (refusing new connections) or stall (drop bytes,
    both ways, or with `stalled_down` only those from the platform to the edge)."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.stalled = False
        self.stalled_down = False
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.add(w)
        if self.stalled:  # like a pulled cable: the connection opens, nothing ever passes
            return
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.transport.abort()
            return
        self.writers.add(w2)
        await asyncio.gather(
            self._pipe(r, w2, down=False), self._pipe(r2, w, down=True), return_exceptions=True
        )

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, down: bool) -> None:
        try:
            while data := await r.read(65536):
                if not (self.stalled or (down and self.stalled_down)):
                    w.write(data)
                    await w.drain()
        finally:
            w.transport.abort()
            self.writers.discard(w)

    def _abort_all(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def cut(self) -> None:
        """Reset every connection and refuse new ones."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self._abort_all()

    async def restore(self) -> None:
        self.stalled = self.stalled_down = False
        self._abort_all()
        if self.server is None:
            await self.start()

    async def stop(self) -> None:
        await self.cut()


class Edge:
    """An edge terminal: twin, Modbus simulator + driver, command path, buffer, uplink; with
    keep_commands, a command store (SQLite) as the gateway keeps one with history enabled."""

    def __init__(
        self, site: SiteConfig, pki: Pki, tmp: Path, url: str, name: str, max_rows: int,
        keep_commands: bool = False,
    ) -> None:  # fmt: skip
        self.site, self.pki, self.tmp = site, pki, tmp
        self.url, self.name, self.max_rows = url, name, max_rows
        self.keep_commands = keep_commands
        self.feed_per_tick = 0
        self._build()

    def _build(self) -> None:
        """Everything an edge process holds in memory; only the buffer file outlives it."""
        site, pki, tmp, name = self.site, self.pki, self.tmp, self.name
        self.twin = Twin.from_site(site)
        cfg = site.drivers[0]
        self.sim = ModbusSimulator(site, cfg.id, port=cfg.port)  # type: ignore[union-attr]
        for m in self.sim.binding.models:
            m.noise = 0.02  # measurements move every tick
        self.driver = ModbusDriver(cfg, self.twin)  # type: ignore[arg-type]
        self.path = CommandPath(self.twin, [self.driver])
        self.buffer = SampleBuffer(tmp / f"{name}-buffer.db", self.max_rows)
        self.store: CommandStore | None = None
        if self.keep_commands:
            self.store = CommandStore(create_engine(f"sqlite:///{tmp / f'{name}-commands.db'}"))
        self.uplink = EdgeUplink(
            self.twin, self.path, self.buffer, pki.edge(name),
            pki.ca.trust_store(), load_certificate(pki.dir, "vpp-platform"),
            url=self.url, batch_size=300, max_inflight_batches=4, reconnect_min_s=0.05,
            reconnect_max_s=0.3, keepalive_s=0.3, idle_timeout_s=1.0, connect_timeout_s=1.0,
        )  # fmt: skip
        plant = {s.ref for s in site.point_specs() if (s.role or "").startswith("plant.")}
        self.record: list[Sample] = []  # what this edge produced: its twin's change sets
        self._rec = self.twin.subscribe("test-record", 1_000_000)
        self._plant = plant
        self.producing = False
        self.fed = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, feed_per_tick: int = 0) -> None:
        self.feed_per_tick = feed_per_tick
        if self.store is not None:  # as the gateway does: restored before the uplink starts
            await asyncio.to_thread(self.store.open)
            self.store.attach(self.twin.commands)
            self.store.restore(self.twin.commands)
        await self.sim.start()
        self._tasks.append(asyncio.create_task(self._record()))
        await self.uplink.start()  # as the gateway does: before anything acquires
        self.producing = True
        self._tasks.append(asyncio.create_task(self._physics()))
        if feed_per_tick:
            self._tasks.append(asyncio.create_task(self._feed(feed_per_tick)))
        await self.driver.start()
        await until(lambda: self.twin.get(BAT_P) is not None, 10, "the edge's first poll")

    async def _record(self) -> None:
        while True:
            cs = await self._rec.get()
            if cs is None:
                return
            self.record.extend(s for s in cs.changes if s.point not in self._plant)

    async def _physics(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            if self.producing:
                now = time.monotonic()
                self.sim.step(now - last)
                last = now

    async def _feed(self, per_tick: int) -> None:
        # A steady 100 ticks/s of distinct values, on top of what the Modbus device gives.
        while True:
            await asyncio.sleep(0.01)
            if not self.producing:
                continue
            batch = []
            for _ in range(per_tick):
                self.fed += 1
                point = LOAD_P if self.fed % 2 else LOAD_Q
                batch.append(Sample(point, -1.0 - self.fed * 1e-3, time.time(), 0, "feeder"))
            self.twin.apply(batch)

    async def stop(self) -> None:
        self.producing = False
        await bounded(self.uplink.stop(), "the uplink to stop")
        await bounded(self.path.close(), "the edge's command path to close")
        # The device goes first: its driver's poll tasks then end by themselves (a poll task
        # cancelled inside a pymodbus request can swallow the cancellation and keep polling).
        await bounded(self.sim.stop(), "the simulator to stop")
        with contextlib.suppress(pytest.fail.Exception):
            await until(lambda: not self.driver.connected, 5, "the Modbus link to drop")
        await bounded(self.driver.stop(), "the Modbus driver to stop")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.flush)
            await asyncio.to_thread(self.store.engine.dispose)

    async def restart(self) -> None:
        """The edge process stops and starts again: a new twin, device link and uplink."""
        await self.stop()
        self._build()
        await self.start(feed_per_tick=self.feed_per_tick)


class Central:
    """The platform: twin, edge link driver, command path, hub, history in SQLite."""

    def __init__(self, site: SiteConfig, pki: Pki, tmp: Path, link: EdgeLinkDriverConfig) -> None:
        self.pki = pki
        self.twin = Twin.from_site(site)
        self.driver = EdgeLinkDriver(link, self.twin)
        self.path = CommandPath(self.twin, [self.driver])
        self.history = HistoryStore(f"sqlite:///{tmp / 'central.db'}")
        self.writer: HistoryWriter | None = None
        self.hub: EdgeHub | None = None
        self.record: list[Sample] = []  # the central twin's change sets, in arrival order
        self._rec = self.twin.subscribe("test-record", 1_000_000)
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    def new_hub(self) -> EdgeHub:
        hub = EdgeHub(
            self.pki.platform, self.pki.ca.trust_store(), port=self.port,
            engine=self.history.engine, revalidate_s=0.5, idle_timeout_s=2.0,
            crl_file=self.pki.dir / "crl.pem",
        )  # fmt: skip
        hub.attach(self.driver)
        return hub

    async def start(self) -> None:
        await asyncio.to_thread(self.history.open)
        self.writer = HistoryWriter(
            self.twin.subscribe("history", 100_000), self.history, batch_size=2000,
            flush_interval_s=0.2,
        )  # fmt: skip
        self._tasks.append(asyncio.create_task(self.writer.run()))
        self._tasks.append(asyncio.create_task(self._record()))
        await self.driver.start()
        self.hub = self.new_hub()
        await self.hub.start()
        self.port = self.hub.port

    async def _record(self) -> None:
        while True:
            cs = await self._rec.get()
            if cs is None:
                return
            self.record.extend(cs.changes)

    async def stop(self) -> None:
        await bounded(self.path.close(), "the central command path to close")
        if self.hub is not None:
            await bounded(self.hub.stop(), "the hub to stop")
        await bounded(self.driver.stop(), "the edge link driver to stop")
        if self.writer is not None:
            await bounded(self.writer.stop(), "the history writer to stop")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.history.close)


@contextlib.asynccontextmanager
async def rig(pki: Pki, tmp: Path, new_port, *, name: str = "edge-site-1", max_rows: int = 10**6,
              feed: int = 0, bat_limit_kw: float = 25.0, keep_commands: bool = False,
              bat_id: str = "BAT11"):  # fmt: skip
    edge_site = _edge_site(new_port())
    central_site, points = _central(edge_site, bat_limit_kw=bat_limit_kw, bat_id=bat_id)
    rename = None if bat_id == "BAT11" else (bat_id, "BAT11")
    central = Central(central_site, pki, tmp, _link_config(name, points, central_site, rename))
    await central.start()
    relay = Relay(new_port(), central.port)
    await relay.start()
    edge = Edge(edge_site, pki, tmp, f"tcp://127.0.0.1:{relay.port}", name, max_rows,
                keep_commands)  # fmt: skip
    try:
        await edge.start(feed_per_tick=feed)
        yield edge, central, relay
    finally:
        await edge.stop()
        await bounded(relay.stop(), "the relay to stop")
        await central.stop()


def _key(s: Sample) -> tuple[int, float, int]:
    return (round(s.ts * 1e6), float(s.value), s.quality)


def _drained(edge: Edge) -> bool:
    return edge.uplink.connected and len(edge.buffer) == 0 and not edge.uplink._inflight


# ------------------------------------------------------------------------ exactly once, in order


async def test_uplink_cut_under_load_then_restored_delivers_every_sample_once_in_order(
    pki, tmp_path, new_port
) -> None:
    async with rig(pki, tmp_path, new_port, feed=10) as (edge, central, relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        await asyncio.sleep(1.5)

        # 1. The network resets every connection and refuses new ones, for 2.5 s.
        await relay.cut()
        await until(lambda: not edge.uplink.connected, 5, "the edge to see the link down")
        await asyncio.sleep(2.5)
        backlog_1 = len(edge.buffer)
        await relay.restore()
        await until(lambda: _drained(edge), 15, "the backlog after the reset")

        # 2. The link goes silent (bytes dropped, no reset), for 2.5 s: the edge must notice.
        relay.stalled = True
        await asyncio.sleep(2.5)
        backlog_2 = len(edge.buffer)
        assert not edge.uplink.connected
        await relay.restore()
        await until(lambda: _drained(edge), 15, "the backlog after the stall")

        # 3. The platform's hub stops for 2 s; a new one takes over from the same database.
        assert central.hub is not None
        await bounded(central.hub.stop(), "the hub to stop")
        await asyncio.sleep(2.0)
        backlog_3 = len(edge.buffer)
        central.hub = central.new_hub()
        await central.hub.start()
        await asyncio.sleep(1.0)

        edge.producing = False  # the device's values freeze, the feeder stops
        await asyncio.sleep(0.3)
        await until(lambda: _drained(edge), 15, "the last backlog")
        await asyncio.sleep(0.3)
        assert central.writer is not None
        await bounded(central.writer.stop(), "history to flush")

        up = edge.uplink.stats()
        assert min(backlog_1, backlog_2, backlog_3) > 500, (backlog_1, backlog_2, backlog_3)
        assert up["connects"] >= 4 and up["buffer"]["dropped"] == 0
        assert up["lost_before_buffer"] == 0
        assert central.driver.gaps == 0

        produced: dict[str, list[Sample]] = defaultdict(list)
        for s in edge.record:
            assert not s.quality & OLD_DATA  # the edge's own devices never went away
            produced[s.point].append(s)
        assert sum(map(len, produced.values())) > 8000
        assert len(produced[LOAD_P]) > 2000 and len(produced[HVAC_P]) > 100

        # Arrival order in the central twin, per point (the hub's own not-topical marks aside).
        arrived: dict[str, list[Sample]] = defaultdict(list)
        for s in central.record:
            if s.source == central.driver.id and not s.quality & OLD_DATA:
                arrived[s.point].append(s)
        for point, mine in produced.items():
            assert [_key(s) for s in arrived[point]] == [_key(s) for s in mine], point

        # History: every sample exactly once.
        for point, mine in produced.items():
            rows = await asyncio.to_thread(central.history.raw, point, None, None, 10**6)
            got = [_key(r) for r in rows if not r.quality & OLD_DATA]
            assert got == [_key(s) for s in mine], point
            marks = [r for r in rows if r.quality & OLD_DATA]
            assert len(marks) <= 3  # one per outage at most


async def test_duplicates_on_the_wire_reach_the_twin_once(pki, tmp_path, new_port) -> None:
    """A raw edge resends what it already sent; the hub drops it by (edge, stream, seq)."""
    edge_site = _edge_site(new_port())
    central_site, points = _central(edge_site, bat_limit_kw=25)
    central = Central(
        central_site, pki, tmp_path, _link_config("edge-site-1", points, central_site)
    )
    await central.start()
    stream = "5e" * 16
    t0 = time.time()
    samples = [(i, Sample(LOAD_P, -float(i), t0 + i / 100, 0, "")) for i in range(1, 81)]
    url = f"tcp://127.0.0.1:{central.port}"
    cfg = ChannelConfig(peer_name="vpp-platform")
    trust = pki.ca.trust_store()

    async def session(batch: list[tuple[int, Sample]]) -> tuple[int, int]:
        ch = await open_secure_channel(url, pki.edge("edge-site-1"), trust, config=cfg)
        try:
            await ch.send(encode(Hello("edge-site-1", stream, 0, 0)))
            welcome = decode((await ch.receive(5)).data)  # type: ignore[union-attr]
            assert isinstance(welcome, Welcome)
            crl = decode((await ch.receive(5)).data)  # type: ignore[union-attr]
            assert isinstance(crl, CrlUpdate)  # the hub's current CRL follows the welcome
            await ch.send(encode(SampleBatch(tuple(batch))))
            ack = decode((await ch.receive(5)).data)  # type: ignore[union-attr]
            assert isinstance(ack, Ack)
            return welcome.acked, ack.seq
        finally:
            await ch.close()

    try:
        assert await session(samples[:50]) == (0, 50)
        assert await session(samples) == (50, 80)  # 1..50 again, then 51..80
        assert central.driver.duplicates == 50
        assert central.hub is not None
        await bounded(central.hub.stop(), "the hub to stop")
        central.hub = central.new_hub()  # the watermark comes back from the database
        await central.hub.start()
        assert await session(samples[70:]) == (80, 80)
        assert central.driver.duplicates == 60
        assert central.writer is not None
        await bounded(central.writer.stop(), "history to flush")
        rows = await asyncio.to_thread(central.history.raw, LOAD_P, None, None, 1000)
        good = [r.value for r in rows if not r.quality & OLD_DATA]
        assert good == [-float(i) for i in range(1, 81)]
    finally:
        await central.stop()


async def test_an_old_copy_of_the_buffer_continues_under_a_new_stream(
    pki, tmp_path, new_port
) -> None:
    """The platform holds more of a stream than the edge ever numbered (the buffer file was
    restored from an older copy): the edge renews its stream rather than being ignored."""
    old = "ab" * 16
    with SampleBuffer(tmp_path / "edge-site-1-buffer.db") as buf:
        buf.append([Sample(LOAD_P, -1.0, time.time(), 0)])
        with sqlite3.connect(buf.path) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'stream'", (old,))
    store = HistoryStore(f"sqlite:///{tmp_path / 'central.db'}").open()
    marks = WatermarkStore(store.engine).open()
    marks.advance("edge-site-1", old, 1000)
    marks.persist("edge-site-1", old)
    store.close()
    async with rig(pki, tmp_path, new_port) as (edge, central, _relay):
        await until(lambda: central.driver.samples > 0, 10, "samples under the new stream")
        assert edge.buffer.stream != old
        assert central.driver.duplicates == 0
        assert central.twin.get(LOAD_P) is not None  # the old copy's sample went up too


async def test_outage_longer_than_the_buffer_drops_the_oldest_and_counts_them(
    pki, tmp_path, new_port
) -> None:
    async with rig(pki, tmp_path, new_port, feed=4, max_rows=1500) as (edge, central, relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        await asyncio.sleep(0.5)
        await relay.cut()
        await until(lambda: edge.buffer.full, 15, "the buffer to fill")
        await asyncio.sleep(1.0)  # and overflow for a while
        await relay.restore()
        edge.producing = False
        await asyncio.sleep(0.3)
        await until(lambda: _drained(edge), 15, "the backlog")
        await asyncio.sleep(0.3)
        assert central.writer is not None
        await bounded(central.writer.stop(), "history to flush")

        st = edge.uplink.stats()["buffer"]
        dropped = st["dropped"]
        assert dropped > 200 and st["max_rows"] == 1500 and st["rows"] == 0
        assert central.driver.edge_dropped == dropped  # the edge said so at hello
        # The buffer's oldest rows may include a batch that reached the hub just before the
        # cut, unacknowledged: dropped at the edge, yet not lost. The hub counts the real loss.
        lost = central.driver.gaps
        assert dropped - 4 * 300 <= lost <= dropped and lost > 0
        # Every produced sample is in the central history once, or lost; the lost ones are one
        # run (the oldest the platform did not have), everything before and after it arrived.
        order = {(*_key(s), s.point): i for i, s in enumerate(edge.record)}
        got: set[int] = set()
        for point in {s.point for s in edge.record}:
            rows = await asyncio.to_thread(central.history.raw, point, None, None, 10**6)
            idx = [order[(*_key(r), point)] for r in rows if not r.quality & OLD_DATA]
            assert len(idx) == len(set(idx)) and idx == sorted(idx)
            got.update(idx)
        missing = sorted(set(range(len(edge.record))) - got)
        assert len(missing) == lost
        assert missing == list(range(missing[0], missing[0] + lost))


async def test_hub_and_uplink_built_from_their_site_file_sections(pki, tmp_path, new_port) -> None:
    port = new_port()
    hub_cfg = EdgeHubConfig(port=port, pki_dir=str(pki.dir), certificate="vpp-platform")
    up_cfg = EdgeRoleConfig(
        name="edge-site-1", uplink=f"tcp://127.0.0.1:{port}", pki_dir=str(pki.dir),
        buffer_path="var/edge-buffer.db", reconnect_min_s=0.05, reconnect_max_s=0.2,
        keepalive_s=0.5, idle_timeout_s=2.0,
    )  # fmt: skip
    edge_site = _edge_site(new_port())
    central_site, points = _central(edge_site, bat_limit_kw=25)
    ctwin = Twin.from_site(central_site)
    driver = EdgeLinkDriver(_link_config("edge-site-1", points, central_site), ctwin)
    hub = EdgeHub.from_config(hub_cfg)
    assert hub.attach_all([driver]) == 1
    etwin = Twin.from_site(edge_site)
    uplink = EdgeUplink.from_config(up_cfg, etwin, CommandPath(etwin, []), root=tmp_path)
    await driver.start()
    await hub.start()
    await uplink.start()
    try:
        await until(lambda: driver.connected, 10, "the edge to connect")
        etwin.apply([Sample(LOAD_P, -2.5, time.time(), 0, "test")])
        await until(lambda: ctwin.get(LOAD_P) is not None, 10, "the sample")
        assert ctwin.get(LOAD_P).value == -2.5
        assert (tmp_path / "var" / "edge-buffer.db").exists()
        assert hub.stats()["edges"]["edge-site-1"]["samples"] == 1
    finally:
        await bounded(uplink.stop(), "the uplink to stop")
        await bounded(hub.stop(), "the hub to stop")
        await bounded(driver.stop(), "the driver to stop")


# ------------------------------------------------------------------------------------ commands


async def test_command_goes_down_signed_and_is_confirmed_by_read_back(
    pki, tmp_path, new_port
) -> None:
    async with rig(pki, tmp_path, new_port) as (edge, central, _relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        await until(lambda: central.twin.get(BAT_SET) is not None, 10, "the first samples")
        now = time.time()
        cmds = [
            Command(BAT_SET, -10.0, "agc", deadline=now + 10),
            Command(HVAC_SET, -30.0, "dr", deadline=now + 10),
        ]
        recs = [await central.path.submit(c) for c in cmds]
        await until(lambda: all(r.done for r in recs), 10, "confirmation")
        for r in recs:
            assert [t.state for t in r.history] == [
                CommandState.ACCEPTED,
                CommandState.SENT,
                CommandState.CONFIRMED,
            ], r.history
        # One signature for the dispatch, one SM2 verification at the edge.
        assert central.driver.batches_signed == 1
        assert edge.uplink.verifier.signature_checks == 1
        assert edge.sim.writes == 2
        # The device follows, and the platform sees it.
        await until(lambda: abs(central.twin.get(BAT_P).value + 10.0) < 0.5, 10, "BAT11 P")
        # The edge recorded the command itself, and its lifecycle, under the same id.
        local = edge.twin.commands.get(cmds[0].id)
        assert local.state == CommandState.CONFIRMED and local.command == cmds[0]
        (ev,) = await asyncio.to_thread(edge.buffer.evidence, cmds[0].id)
        assert ev["verdict"] == "accepted"
        # The evidence proves on its own who ordered exactly this command.
        signed = SignedCommand.decode(ev["signed"])
        assert signed.command == cmds[0]
        verify(signed.command, signed.proof, signed.root_signature,
               load_certificate(pki.dir, "vpp-platform"), trust=pki.ca.trust_store())  # fmt: skip


async def test_bad_signature_or_edge_limits_are_refused_at_the_edge_and_fail_centrally(
    pki, tmp_path, new_port
) -> None:
    # The platform believes the battery takes +-100 kW; the edge knows it takes +-25 kW.
    async with rig(pki, tmp_path, new_port, bat_limit_kw=100) as (edge, central, _relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        hub = central.hub
        assert hub is not None

        too_much = await central.path.submit(Command(BAT_SET, 50.0, "agc"))
        await until(lambda: too_much.done, 10, "the refusal")
        assert too_much.state == CommandState.FAILED
        assert "out_of_limits" in too_much.history[-1].reason

        def forged(cmds) -> SignedBatch:
            good = hub._sign(cmds)
            sig = bytearray(good.root_signature.signature)
            sig[-3] ^= 0x40
            rs = RootSignature(good.root_signature.root, bytes(sig))
            return SignedBatch(rs, tuple(replace(c, root_signature=rs) for c in good.commands))

        hub.signer = forged
        bad = await central.path.submit(Command(BAT_SET, -5.0, "agc"))
        await until(lambda: bad.done, 10, "the refusal")
        assert bad.state == CommandState.FAILED
        assert "bad_signature" in bad.history[-1].reason

        assert edge.sim.writes == 0  # neither reached the device
        assert bad.command.id not in edge.twin.commands
        assert edge.uplink.commands_refused == {"out_of_limits": 1, "bad_signature": 1}
        await until(lambda: len(edge.buffer.evidence()) == 2, 5, "the evidence")
        verdicts = {e["cmd_id"]: (e["verdict"], e["code"]) for e in edge.buffer.evidence()}
        assert verdicts == {
            too_much.command.id: ("refused", "out_of_limits"),
            bad.command.id: ("refused", "bad_signature"),
        }
        # With an honest signature again, the link still works.
        hub.signer = hub._sign
        ok = await central.path.submit(Command(BAT_SET, -5.0, "agc"))
        await until(lambda: ok.done, 10, "confirmation")
        assert ok.state == CommandState.CONFIRMED and edge.sim.writes == 1


# --------------------------------------------------------------- command reports and restarts


def _hold_battery_within(edge: Edge, kw: float) -> None:
    """The battery's own controller keeps it within +-kw, narrower than the edge's site file
    says: the device takes a set-point beyond that, clamped, so it is never read back and the
    command stays in flight at the edge (SENT) until its deadline."""
    for m in edge.sim.binding.models:
        if m.resource.id == "BAT11":
            lim = m.resource.limits.model_copy(update={"p_min_kw": -kw, "p_max_kw": kw})
            m.resource = m.resource.model_copy(update={"limits": lim})


async def _in_flight(edge: Edge, central: Central, deadline_s: float) -> Command:
    """A command the edge wrote to its device that is never confirmed there (central: SENT)."""
    await until(lambda: central.driver.connected, 10, "the edge to connect")
    _hold_battery_within(edge, 5.0)
    cmd = Command(BAT_SET, 20.0, "agc", deadline=time.time() + deadline_s)
    rec = await central.path.submit(cmd)
    await until(lambda: rec.state == CommandState.SENT, 10, "the edge to write it")
    assert edge.twin.commands.get(cmd.id).state == CommandState.SENT
    return cmd


async def test_reports_queued_while_the_uplink_is_down_survive_an_edge_restart(
    pki, tmp_path, new_port
) -> None:
    async with rig(pki, tmp_path, new_port) as (edge, central, relay):
        cmd = await _in_flight(edge, central, deadline_s=3.0)
        await relay.cut()
        await until(lambda: not edge.uplink.connected, 5, "the edge to see the link down")
        # The deadline passes at the edge while the link is down: the edge's housekeeping
        # (the runtime's twin.tick(); the rig has none) times the command out there.
        await asyncio.sleep(max(0.0, cmd.deadline - time.time()) + 0.1)
        edge.twin.tick()
        assert edge.twin.commands.get(cmd.id).state == CommandState.TIMED_OUT
        await until(lambda: edge.buffer.reports_queued == 1, 5, "the report in the file")

        await edge.restart()  # while the link is still down
        assert edge.uplink.stats()["reports_queued"] == 1
        assert edge.uplink.reports_resumed == 0  # past its deadline: nothing more to settle
        await relay.restore()

        central_rec = central.twin.commands.get(cmd.id)
        await until(lambda: central_rec.done, 10, "the edge's report")
        assert central_rec.state == CommandState.TIMED_OUT
        assert central_rec.history[-1].reason == "edge edge-site-1: no read-back before deadline"
        await until(lambda: edge.buffer.reports_queued == 0, 5, "the queue to empty")
        assert edge.uplink.reports_sent == 1 and edge.uplink.stats()["reports_lost"] == 0
        assert central.driver.reports_ignored == {}


@pytest.mark.parametrize("keep_commands", [False, True], ids=["no-store", "command-store"])
async def test_a_command_in_flight_when_the_edge_restarts_ends_unknown_once(
    pki, tmp_path, new_port, keep_commands
) -> None:
    async with rig(pki, tmp_path, new_port, keep_commands=keep_commands) as (edge, central, _):
        cmd = await _in_flight(edge, central, deadline_s=20.0)
        central_rec = central.twin.commands.get(cmd.id)
        await until(lambda: central.driver.reports_received == 2, 5, "accepted and sent")
        assert edge.buffer.reported_state(cmd.id) == CommandState.SENT

        # The edge restarts: it cannot know what its device did meanwhile. Its command store
        # (if kept) restores the record as UNKNOWN; without one the uplink says UNKNOWN itself.
        await edge.restart()
        assert edge.uplink.reports_resumed == 1
        await until(lambda: central_rec.done, 10, "the edge's report after its restart")
        assert [t.state for t in central_rec.history] == [
            CommandState.ACCEPTED,
            CommandState.SENT,
            CommandState.UNKNOWN,
        ]
        why = RESTART_REASON if keep_commands else RESTARTED_REASON
        assert central_rec.history[-1].reason == f"edge edge-site-1: {why}"
        assert time.time() < cmd.deadline  # the edge said so; no timeout was needed
        assert edge.buffer.reported_state(cmd.id) == CommandState.UNKNOWN

        # Once: a second restart has nothing more to say about it.
        await until(lambda: edge.buffer.reports_queued == 0, 5, "the report to go")
        received, sessions = central.driver.reports_received, central.driver.sessions
        await edge.restart()
        assert edge.uplink.reports_resumed == 0 and edge.uplink.stats()["reports_queued"] == 0
        await until(lambda: central.driver.sessions > sessions, 10, "the edge to reconnect")
        await asyncio.sleep(0.5)
        assert central.driver.reports_received == received == 3
        assert central.driver.reports_ignored == {}
        assert central_rec.state == CommandState.UNKNOWN and len(central_rec.history) == 3


async def test_repeated_and_stale_reports_change_nothing_at_the_hub_and_are_counted(
    pki, tmp_path, new_port
) -> None:
    async with rig(pki, tmp_path, new_port) as (edge, central, _relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        await until(lambda: central.twin.get(HVAC_SET) is not None, 10, "the first samples")
        done = await central.path.submit(Command(HVAC_SET, -30.0, "dr", deadline=time.time() + 20))
        await until(lambda: done.done, 10, "confirmation")
        await until(lambda: central.driver.reports_received == 3, 5, "the edge's three reports")
        held = (await _in_flight(edge, central, deadline_s=20.0)).id
        await until(lambda: central.driver.reports_received == 5, 5, "held: accepted and sent")
        before = {r.command.id: list(r.history) for r in central.twin.commands.records()}
        assert central.driver.reports_ignored == {}

        # What a link broken before the acknowledgement, or a restart, can bring up again.
        d, h, now = done.command.id, held, time.time()
        again = [
            CommandReport(d, CommandState.CONFIRMED, "again", "", now),
            CommandReport(d, CommandState.SENT, "late", "", now),
            CommandReport(d, CommandState.FAILED, "after the final one", "", now),
            CommandReport(h, CommandState.SENT, "again", "", now),
            CommandReport(h, CommandState.ACCEPTED, "late", "", now),
            CommandReport("f" * 32, CommandState.UNKNOWN, "not the hub's", "", now),
        ]
        await asyncio.to_thread(edge.buffer.queue_reports, again)
        await until(lambda: central.driver.reports_received == 11, 5, "the reports")
        assert central.driver.reports_ignored == {"repeated": 2, "stale": 3, "unknown_command": 1}
        # Ignored is handled too: acknowledged, and gone from the edge's file.
        await until(lambda: edge.buffer.reports_queued == 0, 5, "their acknowledgement")
        assert edge.uplink.reports_acked == 11 and edge.uplink.reports_resent == 0
        after = {r.command.id: list(r.history) for r in central.twin.commands.records()}
        assert after == before
        assert central.twin.commands.get(h).state == CommandState.SENT

        # A real step forward still applies, once.
        news = CommandReport(h, CommandState.FAILED, "the device tripped", "", now)
        await asyncio.to_thread(edge.buffer.queue_reports, [news, news])
        await until(lambda: central.driver.reports_received == 13, 5, "the reports")
        rec = central.twin.commands.get(h)
        assert [t.state for t in rec.history][-2:] == [CommandState.SENT, CommandState.FAILED]
        assert rec.history[-1].reason == "edge edge-site-1: the device tripped"
        assert central.driver.reports_ignored["repeated"] == 3
        assert central.driver.connected and edge.uplink.connected
        assert central.driver.stats()["reports_ignored"] == central.driver.reports_ignored


@pytest.mark.parametrize("lost", ["report", "ack"])
async def test_a_report_or_its_ack_lost_with_a_broken_link_is_sent_again_and_applied_once(
    pki, tmp_path, new_port, lost
) -> None:
    """The link goes silent right after the edge wrote a report to it: either nothing reaches
    the hub (the report is lost on the wire), or only the hub's answers are lost (it applied
    the report; its acknowledgement never arrives). Either way the edge keeps the report in its
    file, sends it again on the next connection, and the central command ends as the edge says,
    once."""
    async with rig(pki, tmp_path, new_port) as (edge, central, relay):
        cmd = await _in_flight(edge, central, deadline_s=30.0)
        central_rec = central.twin.commands.get(cmd.id)
        up = edge.uplink
        await until(lambda: edge.buffer.reports_queued == 0, 5, "accepted and sent acknowledged")
        assert central.driver.reports_received == 2

        if lost == "report":
            relay.stalled = True
        else:
            relay.stalled_down = True
        sent = up.reports_sent
        edge.twin.commands.transition(cmd.id, CommandState.FAILED, "the device tripped")
        await until(lambda: up.reports_sent == sent + 1, 5, "the report written to the link")
        await until(lambda: not up.connected, 5, "the edge to give up the silent link")
        assert edge.buffer.reports_queued == 1  # written, never acknowledged: still in the file
        if lost == "report":
            assert central_rec.state == CommandState.SENT and central.driver.reports_received == 2
        else:
            assert central_rec.state == CommandState.FAILED  # the hub did apply it

        await relay.restore()
        await until(lambda: edge.buffer.reports_queued == 0, 10, "the report's acknowledgement")
        assert central_rec.state == CommandState.FAILED  # the edge's word, not a timeout
        assert [t.state for t in central_rec.history] == [
            CommandState.ACCEPTED,
            CommandState.SENT,
            CommandState.FAILED,
        ]
        assert central_rec.history[-1].reason == "edge edge-site-1: the device tripped"
        # The file's count drops in the remover's thread, the uplink's counter just after.
        await until(lambda: up.reports_acked == 3, 5, "the uplink to count the acknowledgements")
        assert up.reports_resent == 1
        assert up.stats()["reports_lost"] == 0 and up.stats()["reports_queued"] == 0
        # A resend of what the hub had applied is acknowledged and counted, never applied twice.
        ignored = {} if lost == "report" else {"repeated": 1}
        assert central.driver.reports_ignored == ignored
        assert central.driver.reports_received == (3 if lost == "report" else 4)


async def test_the_edge_ends_a_connection_whose_report_acknowledgement_is_overdue(
    pki, tmp_path, new_port, monkeypatch
) -> None:
    """A hub that hears reports (and answers pings, and acknowledges samples) but never
    acknowledges a report: after idle_timeout_s the edge drops the connection and keeps the
    report; once acknowledged it is removed."""
    import gateway.edge.hub as hub_module

    async with rig(pki, tmp_path, new_port) as (edge, central, _relay):
        up = edge.uplink
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        monkeypatch.setattr(hub_module, "CommandAck", lambda n: Pong(0.0))  # no acks
        connects = up.connects
        report = CommandReport("f" * 32, CommandState.UNKNOWN, "not the hub's", "", time.time())
        await asyncio.to_thread(edge.buffer.queue_reports, [report])
        await until(lambda: central.driver.reports_received == 1, 5, "the report at the hub")
        await until(
            lambda: "no acknowledgement of command reports" in (up.last_error or ""),
            5,
            "the edge to drop the connection",
        )
        assert edge.buffer.reports_queued == 1
        monkeypatch.undo()
        await until(lambda: edge.buffer.reports_queued == 0, 10, "the acknowledgement")
        assert up.connects > connects and up.reports_acked == 1 and up.reports_resent >= 1
        received = central.driver.reports_received
        assert received >= 2 and central.driver.reports_ignored == {"unknown_command": received}


async def test_hub_acknowledges_numbered_reports_and_still_takes_unnumbered_ones(
    pki, tmp_path, new_port
) -> None:
    """A raw edge: a `cmd` without `n` (an older edge) is handled and not acknowledged; numbered
    ones are, cumulatively, whatever became of them."""
    edge_site = _edge_site(new_port())
    central_site, points = _central(edge_site, bat_limit_kw=25)
    central = Central(
        central_site, pki, tmp_path, _link_config("edge-site-1", points, central_site)
    )
    await central.start()
    url = f"tcp://127.0.0.1:{central.port}"
    cfg = ChannelConfig(peer_name="vpp-platform")
    ch = await open_secure_channel(url, pki.edge("edge-site-1"), pki.ca.trust_store(), config=cfg)

    async def next_message() -> object:
        return decode((await ch.receive(5)).data)  # type: ignore[union-attr]

    try:
        await ch.send(encode(Hello("edge-site-1", "7a" * 16, 0, 0)))
        assert isinstance(await next_message(), Welcome)
        assert isinstance(await next_message(), CrlUpdate)
        now = time.time()
        old = b'{"t":"cmd","id":"%s","state":"sent","reason":"","code":"","ts":%f}' % (
            b"a" * 32,
            now,
        )
        await ch.send(old)
        await ch.send(encode(Ping(1.0)))
        assert await next_message() == Pong(1.0)  # no cmdack came first
        assert central.driver.reports_received == 1
        for n in (5, 9, 7):  # a lower number after a higher one: the ack stays cumulative
            report = CommandReport("b" * 32, CommandState.SENT, "", "", now, n)
            await ch.send(encode(report))
            assert await next_message() == CommandAck(9 if n == 7 else n)
        assert central.driver.reports_received == 4
        assert central.driver.reports_ignored == {"unknown_command": 4}
        assert central.driver.connected
    finally:
        await ch.close()
        await central.stop()


# ---------------------------------------------------------------------------------- identity


async def test_revoked_edge_certificate_is_refused_at_the_hub(pki, tmp_path, new_port) -> None:
    async with rig(pki, tmp_path, new_port, name="edge-revoked") as (edge, central, _relay):
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        hub = central.hub
        assert hub is not None
        pki.ca.revoke("edge-revoked", "key_compromise")
        assert hub.update_crl(pki.ca.revocation_list()) == 1  # dropped at once
        await until(lambda: not central.driver.connected, 5, "the session to end")
        await until(
            lambda: hub.refused_handshakes.get("cert_revoked", 0) >= 2, 10, "refused reconnects"
        )
        assert not central.driver.connected and not edge.uplink.connected
        assert "revoked" in (edge.uplink.last_error or "")
        # Samples the edge keeps acquiring wait in its buffer; nothing reaches the platform.
        n = central.driver.samples
        await asyncio.sleep(0.5)
        assert central.driver.samples == n and len(edge.buffer) > 0


@pytest.fixture
def own_pki(tmp_path) -> Pki:
    """A PKI of the test's own: these tests revoke the platform itself."""
    d = tmp_path / "pki"
    ca = CertificateAuthority.create("crl-test-ca", directory=d)
    ca.issue_new_key("vpp-platform", role=Role.PLATFORM)
    for name in ("edge-site-1", "edge-other"):
        ca.issue_new_key(name, role=Role.EDGE)
    return Pki(ca, d, load_credentials(d, "vpp-platform"))


async def test_crls_reach_the_edge_and_a_revoked_platform_is_refused_there(
    own_pki, tmp_path, new_port
) -> None:
    pki = own_pki
    async with rig(pki, tmp_path, new_port) as (edge, central, relay):
        hub, up = central.hub, edge.uplink
        assert hub is not None and up.trust.crl is not None
        up.crl_file = tmp_path / "edge-crl.pem"
        start = up.trust.crl.number
        await until(lambda: central.driver.connected, 10, "the edge to connect")
        assert up.crl_updates == 0  # the hub sent the CRL the edge already holds

        # `vpp keys revoke` while the edge is cut off: the hub takes the rewritten CRL file by
        # itself and the edge gets it when it is back.
        await relay.cut()
        await until(lambda: not up.connected, 5, "the cut")
        (other,) = pki.ca.revoke("edge-other", "key_compromise")
        await until(lambda: hub.trust.crl.number == start + 1, 5, "the hub to take the CRL file")
        await relay.restore()
        await until(lambda: up.crl_updates == 1, 10, "the CRL at the edge")
        assert up.trust.crl.number == start + 1
        kept = RevocationList.load(up.crl_file.read_bytes(), pki.ca.certificate)
        assert kept.number == start + 1 and other.serial in kept.entries
        st = up.stats()
        assert (st["crl_number"], st["crl_next_update"], st["crl_stale"]) == (
            start + 1,
            kept.next_update,
            False,
        )
        later = TrustStore(pki.ca.certificate, kept, clock=lambda: kept.next_update + 1)
        assert crl_status(later)["crl_stale"] is True  # still used, shown as stale
        assert up.connected and central.driver.connected  # nothing of theirs is revoked

        # A CRL the CA did not sign is refused and changes nothing.
        rogue = CertificateAuthority.create("crl-test-ca")
        forged = RevocationList.build(
            rogue.key, rogue.certificate, [RevokedEntry(pki.platform.certificate.serial, 1.0)],
            number=start + 50, now=time.time(),
        )  # fmt: skip
        session = central.driver._session
        assert session is not None
        await session.channel.send(encode(CrlUpdate(forged.der)))
        await until(lambda: up.crl_refused == 1, 5, "the forged CRL's refusal")
        assert up.trust.crl.number == start + 1 and up.connected

        # The platform's own certificate revoked: the edge ends the session and refuses every
        # handshake after, though the hub still presents that certificate.
        pki.ca.revoke("vpp-platform", "key_compromise")
        await until(lambda: up.crl_updates == 2, 5, "the second CRL at the edge")
        await until(lambda: not up.connected, 5, "the edge to drop the platform")
        await until(lambda: "revoked" in (up.last_error or ""), 10, "a refused reconnect")
        failures = up.connect_failures
        await until(lambda: up.connect_failures >= failures + 2, 10, "more refused reconnects")
        assert not up.connected and not central.driver.connected
        assert RevocationList.load(up.crl_file.read_bytes(), pki.ca.certificate).number == start + 2


async def test_the_platform_may_name_an_edge_point_otherwise(pki, tmp_path, new_port) -> None:
    """edge_point: samples arrive under the platform's name; commands are signed with the edge's."""
    ours_p, ours_set = "VPP1.OFFICEBAT/MMXU1.TotW.mag.f", "VPP1.OFFICEBAT/DRCC1.WSpt.setMag.f"
    async with rig(pki, tmp_path, new_port, bat_id="OFFICEBAT") as (edge, central, _relay):
        await until(lambda: central.twin.get(ours_p) is not None, 10, "the renamed samples")
        assert central.driver.unknown_points == 0
        rec = await central.path.submit(Command(ours_set, -10.0, "agc", deadline=time.time() + 10))
        await until(lambda: rec.done, 10, "confirmation")
        assert rec.state == CommandState.CONFIRMED, rec.history
        assert edge.sim.writes == 1
        # The edge acted on its own name for the point, and its evidence proves that command.
        local = edge.twin.commands.get(rec.command.id)
        assert local.command.target == BAT_SET and local.command.value == -10.0
        (ev,) = await asyncio.to_thread(edge.buffer.evidence, rec.command.id)
        assert SignedCommand.decode(ev["signed"]).command.target == BAT_SET
        await until(lambda: abs(central.twin.get(ours_p).value + 10.0) < 0.5, 10, "OFFICEBAT P")


def test_edge_point_names_must_be_unique_on_both_sides() -> None:
    a, b = "VPP1.A/MMXU1.TotW.mag.f", "VPP1.B/MMXU1.TotW.mag.f"
    with pytest.raises(ValueError, match=r"points\[1\]: the edge's 'VPP1.A/MMXU1.TotW.mag.f'"):
        EdgeLinkDriverConfig(
            id="e", protocol="edge", edge="edge-site-1",
            points=[EdgePoint(point=a), EdgePoint(point=b, edge_point=a)],
        )  # fmt: skip
