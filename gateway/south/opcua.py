"""OPC UA south driver: subscribes to a device server's variables, writes set-points.

Theory of operation: one supervisor task owns the session. asyncua's client does not reconnect
reliably (upstream #1660, #1072), so every attempt builds a fresh Client, connects within
timeout_s, resolves the configured nodes (NodeIds or browse paths from Objects), reads them once
(a full refresh after every reconnect) and subscribes to data changes. The subscription handler
only puts notifications on an asyncio queue (no work in asyncua's callback, upstream #1252); a
pump task turns them into Samples in batches. A watchdog calls check_connection() every
watchdog_s; when it fails, the points are marked not topical once, the client is dropped
(disconnect bounded in time) and the supervisor retries with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway.errors import CommandRejected, DeviceError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from model.command import Command, CommandState
from model.drivers import OpcUaClientDriverConfig, OpcUaPointMap
from model.quality import (
    BAD_REFERENCE,
    FAILURE,
    GOOD,
    OLD_DATA,
    OPERATOR_BLOCKED,
    SUBSTITUTED,
    Validity,
    with_validity,
)
from model.sample import Sample, Value

__all__ = ["OpcUaDriver", "status_to_quality"]

log = logging.getLogger(__name__)

_VALUE_ATTR = ua.AttributeIds.Value  # type: ignore[attr-defined]
_UNCERTAIN_DETAILS = {
    "UncertainLastUsableValue": OLD_DATA,
    "UncertainSubstituteValue": SUBSTITUTED,
}
_BAD_DETAILS = {
    "BadOutOfService": OPERATOR_BLOCKED,
    "BadDeviceFailure": FAILURE,
    "BadSensorFailure": FAILURE,
    "BadNotConnected": OLD_DATA,
    "BadNodeIdUnknown": BAD_REFERENCE,
    "BadNodeIdInvalid": BAD_REFERENCE,
    "BadCommunicationError": OLD_DATA,
}


def status_to_quality(code: ua.StatusCode) -> int:
    """IEC 61850 quality of an OPC UA status code (Part 4 7.39: the top two bits give severity)."""
    value = code.value
    if value & 0xC0000000 == 0:
        return GOOD
    name = code.name
    if value & 0x80000000:
        return with_validity(_BAD_DETAILS.get(name, 0), Validity.INVALID)
    return with_validity(_UNCERTAIN_DETAILS.get(name, 0), Validity.QUESTIONABLE)


class _Handler:
    """asyncua subscription handler: hand notifications to the loop, nothing more."""

    def __init__(self, queue: asyncio.Queue[tuple[Node, ua.DataValue]]) -> None:
        self.queue = queue

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((node, data.monitored_item.Value))

    def status_change_notification(self, status: Any) -> None:
        log.debug("opcua subscription status %s", status)


class OpcUaDriver(SouthDriver):
    """An OPC UA device server acquired by subscription and commanded by writes."""

    protocol = "opcua"

    def __init__(self, config: OpcUaClientDriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self._maps: dict[str, OpcUaPointMap] = {}  # resolved NodeId string -> map entry
        self._by_point: dict[str, OpcUaPointMap] = {p.point: p for p in config.points}
        self._nodes: dict[str, Node] = {}  # point -> resolved node
        self._vtypes: dict[str, ua.VariantType] = {}
        self._last: dict[str, Value] = {}
        self._client: Client | None = None
        self._up = False
        self._marked_down = True
        self._task: asyncio.Task[None] | None = None
        self.counters = {"samples": 0, "connects": 0, "reconnects": 0, "writes": 0, "errors": 0,
                         "dropped_notifications": 0}  # fmt: skip

    # --- SouthDriver -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"opcua {self.id}")

    async def stop(self) -> None:
        """Stop the supervisor and drop the session."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()
        self._link_down()

    @property
    def connected(self) -> bool:
        """True while the session is up."""
        return self._up

    def monitored_points(self) -> set[str]:
        """Every mapped point (writable ones are read back)."""
        return {p.point for p in self.config.points}

    def command_points(self) -> set[str]:
        """Points mapped as writable."""
        return {p.point for p in self.config.points if p.writable}

    def stats(self) -> dict[str, Any]:
        """Counters."""
        out = super().stats()
        out.update(endpoint=self.config.endpoint, **self.counters)
        return out

    async def execute(self, cmd: Command, report: Report) -> None:
        """Write the set-point; SENT once the server answered Good."""
        pm = self._by_point.get(cmd.target)
        if pm is None or not pm.writable:
            raise CommandRejected(f"{cmd.target!r} is not writable through {self.id}", "no_route")
        node = self._nodes.get(cmd.target)
        if not self._up or node is None or self._client is None:
            raise LinkDown(f"driver {self.id}: not connected to {self.config.endpoint}")
        raw = (float(cmd.value) - pm.offset) / pm.scale
        vtype = self._vtypes.get(cmd.target, ua.VariantType.Double)
        value: Any
        if vtype == ua.VariantType.Boolean:
            value = bool(raw)
        elif vtype in _INT_TYPES:
            if not math.isclose(raw, round(raw), abs_tol=1e-9):
                raise CommandRejected(
                    f"{pm.node} holds integers: {cmd.value} does not fit", "bad_value"
                )
            value = round(raw)
        else:
            value = raw
        try:
            await asyncio.wait_for(
                node.write_value(ua.DataValue(ua.Variant(value, vtype))), self.config.timeout_s
            )
        except UaStatusCodeError as e:
            self.counters["errors"] += 1
            raise DeviceError(f"driver {self.id}: server refused {pm.node} = {value!r}: {e}") from e
        except (TimeoutError, ConnectionError, OSError) as e:
            raise LinkDown(f"driver {self.id}: write to {pm.node} failed: {e!r}") from e
        self.counters["writes"] += 1
        report(CommandState.SENT, f"{pm.node} <- {value!r}")

    # --- session supervisor ------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while True:
            served = False
            try:
                served = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # connection refused, timeouts, bad nodes: retry later
                self.counters["errors"] += 1
                log.warning("opcua %s: %s: %r", self.id, cfg.endpoint, e)
            await self._drop()
            self._link_down()
            if served:
                delay = cfg.reconnect_min_s
            await asyncio.sleep(delay)
            if not served:
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _session(self) -> bool:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.timeout_s)
        if cfg.username is not None:
            client.set_user(cfg.username)
            client.set_password(cfg.password or "")
        if cfg.security:
            await client.set_security_string(cfg.security)
        self._client = client
        await asyncio.wait_for(client.connect(), cfg.timeout_s)
        await self._resolve(client)
        # Counted before the refresh reaches the twin: whoever sees refreshed values sees the
        # reconnect counted too.
        if self.counters["connects"]:
            self.counters["reconnects"] += 1
        self.counters["connects"] += 1
        queue: asyncio.Queue[tuple[Node, ua.DataValue]] = asyncio.Queue(maxsize=100_000)
        # Full refresh first: read every node once, then follow changes.
        nodes = list(self._nodes.values())
        values = await asyncio.wait_for(client.read_attributes(nodes, _VALUE_ATTR), cfg.timeout_s)
        self._apply([(n, dv) for n, dv in zip(nodes, values, strict=True)])
        sub = await client.create_subscription(cfg.publishing_interval_ms, _Handler(queue))
        await sub.subscribe_data_change(nodes)
        self._up, self._marked_down = True, False
        log.info("opcua %s: subscribed to %d nodes at %s", self.id, len(nodes), cfg.endpoint)
        pump = asyncio.create_task(self._pump(queue))
        try:
            while True:
                await asyncio.sleep(cfg.watchdog_s)
                await asyncio.wait_for(client.check_connection(), cfg.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("opcua %s: session to %s lost: %r", self.id, cfg.endpoint, e)
            return True
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self._up = False

    async def _resolve(self, client: Client) -> None:
        self._maps.clear()
        self._nodes.clear()
        for pm in self.config.points:
            if "=" in pm.node.split(";")[0]:
                node = client.get_node(pm.node)
            else:
                node = await client.nodes.objects.get_child(pm.node.split("/"))
            self._maps[node.nodeid.to_string()] = pm
            self._nodes[pm.point] = node
            if pm.writable:
                self._vtypes[pm.point] = await node.read_data_type_as_variant_type()

    async def _pump(self, queue: asyncio.Queue[tuple[Node, ua.DataValue]]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 10_000:
                batch.append(queue.get_nowait())
            self._apply(batch)

    def _apply(self, items: list[tuple[Node, ua.DataValue]]) -> None:
        out: list[Sample] = []
        now = time.time()
        for node, dv in items:
            pm = self._maps.get(node.nodeid.to_string())
            if pm is None:
                continue
            v = dv.Value.Value if dv.Value is not None else None
            status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
            ts = dv.SourceTimestamp or dv.ServerTimestamp
            quality = status_to_quality(status)
            if v is None and quality:
                # A Bad/Uncertain notification may carry no value: keep the last one.
                value: Value = self._last.get(pm.point, 0.0)
            else:
                try:
                    value = _convert(v, pm)
                except (TypeError, ValueError):
                    self.counters["errors"] += 1
                    log.warning("opcua %s: %s sent %r, not a number", self.id, pm.node, v)
                    continue
                self._last[pm.point] = value
            out.append(Sample(pm.point, value, _epoch(ts) if ts else now, quality, self.id))
        if out:
            self.counters["samples"] += len(out)
            self.sink.apply(out)

    def _link_down(self) -> None:
        self._up = False
        if not self._marked_down:
            self._marked_down = True
            self.sink.mark_not_topical(self.monitored_points(), self.id)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2.0)


_INT_TYPES = frozenset(
    {ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
     ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64}
)  # fmt: skip


def _convert(v: Any, pm: OpcUaPointMap) -> Value:
    if v is None:
        raise ValueError("no value")
    if isinstance(v, bool):
        return v if pm.scale == 1 and pm.offset == 0 else float(v) * pm.scale + pm.offset
    if isinstance(v, int) and pm.scale == 1 and pm.offset == 0:
        return v
    return float(v) * pm.scale + pm.offset


def _epoch(ts: Any) -> float:
    # asyncua gives naive UTC datetimes or aware ones depending on the path; both are UTC.
    from datetime import UTC

    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return float(ts.timestamp())
