"""One running gateway: twin, south drivers, command path, history writer and REST API together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.commands import CommandPath

if TYPE_CHECKING:
    from gateway.edge.hub import EdgeHub
    from gateway.edge.uplink import EdgeUplink
    from gateway.north.iec104_server import IEC104Server
    from gateway.north.mms_server import MmsServer
    from gateway.north.opcua_server import OpcUaServer
from sqlalchemy import create_engine

from gateway.south import SouthDriver, create_driver
from model.site import SiteConfig
from security.audit import AuditError, AuditLog, load_platform_signer
from security.secrets import ColumnCipher, reveal
from twin.command_store import CommandStore
from twin.history import HistoryStore, HistoryWriter
from twin.twin import Twin

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """Assembles and runs everything a site file describes."""

    def __init__(
        self,
        site: SiteConfig,
        *,
        history_url: str | None = None,
        api_host: str | None = None,
        api_port: int | None = None,
        tick_s: float = 1.0,
        role: str = "central",
    ) -> None:
        if role not in ("central", "edge"):
            raise ValueError(f"role must be central or edge, not {role!r}")
        if role == "edge" and (site.edge is None or site.edge.uplink is None):
            raise ValueError("role edge needs an edge.uplink section in the site file")
        self.site = site
        self.role = role
        self.hub: EdgeHub | None = None
        self.uplink: EdgeUplink | None = None
        self.twin = Twin.from_site(site)
        self.drivers: list[SouthDriver] = [
            create_driver(d, self.twin) for d in site.drivers if d.enabled
        ]
        self.commands = CommandPath(self.twin, self.drivers)
        self.iec104: IEC104Server | None = None
        if site.north.iec104.enabled:
            from gateway.north.iec104_server import IEC104Server

            self.iec104 = IEC104Server(site.north.iec104, site, self.twin, self.commands)
        self.opcua: OpcUaServer | None = None
        self.mms: MmsServer | None = None
        # May be sealed (enc:sm4:..., `vpp secrets seal`) to keep the database password off
        # disk; revealed only when the store is opened, never printed.
        self.history_url = history_url or site.history.url
        self.history: HistoryStore | None = None
        self.writer: HistoryWriter | None = None
        self.command_store: CommandStore | None = None
        self.audit: AuditLog | None = None
        self.cipher: ColumnCipher | None = None
        self._tls = False
        self.api_host = api_host or site.api.host
        self.api_port = site.api.port if api_port is None else api_port
        self.tick_s = tick_s
        self.started = 0.0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def api_url(self) -> str:
        """Base URL of the REST API."""
        return f"{'https' if self._tls else 'http'}://{self.api_host}:{self.api_port}"

    async def start(self) -> None:
        """Open history, start drivers, the API and housekeeping."""
        self.started = time.time()
        if self.site.at_rest.encrypt_business_data:
            # Before anything is written: without the key, refuse to start (MasterKeyError says
            # where the key is looked for) rather than store business data in the clear.
            self.cipher = ColumnCipher.from_master_key()
        if self.site.history.enabled:
            self.history = HistoryStore(reveal(self.history_url))  # creates a SQLite file's folder
            await asyncio.to_thread(self.history.open)
            self.writer = HistoryWriter(
                self.twin.subscribe("history", self.site.twin.subscriber_queue),
                self.history,
                batch_size=self.site.history.batch_size,
                flush_interval_s=self.site.history.flush_interval_s,
            )
            self._tasks.append(asyncio.create_task(self.writer.run(), name="history-writer"))
            # Commands live beside history: restored first (in-flight ones become UNKNOWN),
            # then every new transition is recorded in the hash-chained command log.
            self.command_store = CommandStore(self.history.engine, sealer=self.cipher)
            await asyncio.to_thread(self.command_store.open)
            self.command_store.attach(self.twin.commands)
        if self.site.audit.enabled:
            # Attached before the restore, so the UNKNOWN of a restored in-flight command is audited.
            await self._open_audit()
        if self.command_store is not None:
            restored = self.command_store.restore(self.twin.commands)
            if restored:
                log.info("restored %d commands from %s", len(restored), self.history_url)
            self._tasks.append(asyncio.create_task(self._record_commands(), name="command-log"))
        if self.role == "edge":
            from gateway.edge.uplink import EdgeUplink

            assert self.site.edge is not None and self.site.edge.uplink is not None
            self.uplink = EdgeUplink.from_config(self.site.edge.uplink, self.twin, self.commands)
            await self.uplink.start()
        for d in self.drivers:
            await d.start()
        if any(d.protocol == "edge" for d in self.drivers):
            from gateway.edge.hub import EdgeHub
            from model.edge import EdgeHubConfig

            hub_cfg = (self.site.edge.hub if self.site.edge else None) or EdgeHubConfig()
            engine = self.history.engine if self.history is not None else None
            self.hub = EdgeHub.from_config(hub_cfg, engine=engine)
            self.hub.attach_all(self.drivers)
            await self.hub.start()
        if self.iec104 is not None:
            await self.iec104.start()
        if self.site.north.opcua.enabled:
            from gateway.north.opcua_server import OpcUaServer

            self.opcua = OpcUaServer(
                self.site.north.opcua, self.site, self.twin, self.commands, self.history
            )
            await self.opcua.start()
        if self.site.north.mms.enabled:
            from gateway.north.mms_server import MmsServer

            self.mms = MmsServer(self.site.north.mms, self.site, self.twin, self.commands)
            await self.mms.start()
        if self.site.api.enabled:
            from gateway.north.rest import ApiSecurity, create_app, https_context

            api = self.site.api
            if api.auth == "off":  # loopback only (checked when the site file loads)
                security = ApiSecurity.local(self.audit)
                log.warning("REST API auth is off: open to anyone on this machine")
            else:
                security = ApiSecurity.from_config(api, self.api_host, audit=self.audit)
            app = create_app(
                self.twin, self.commands, self.history, status=self.status, security=security
            )
            ssl_ctx = https_context(api.tls, self.api_host) if api.tls.enabled else None
            self._tls = ssl_ctx is not None
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.api_host, self.api_port, ssl_context=ssl_ctx)
            await site.start()
            if self.api_port == 0:  # report the port the OS picked
                server = site._server
                if server is not None and server.sockets:  # type: ignore[attr-defined]
                    self.api_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="twin-tick"))

    async def _open_audit(self) -> None:
        """The SM3-chained audit log, its checkpoints SM2-signed by the platform key when present."""
        cfg = self.site.audit
        signer = None
        try:
            pw = None
            if cfg.key_passphrase_file:
                pw = Path(cfg.key_passphrase_file).read_text().splitlines()[0].encode()
            signer = load_platform_signer(cfg.pki_dir, cfg.certificate, pw)
        except (AuditError, OSError) as e:
            if cfg.require_signing:
                raise
            if self.role == "edge":  # the platform key stays on the platform: expected here
                log.info("edge terminal: audit log hash-chained, checkpoints not signed (%s)", e)
            else:
                log.warning("audit log checkpoints NOT signed (%s); hash chain only", e)
        if cfg.url is None and self.history is not None:
            engine = self.history.engine
        else:
            url = reveal(cfg.url or "sqlite:///var/audit.db")
            _ensure_sqlite_dir(url)
            engine = create_engine(url)
        self.audit = AuditLog(
            engine,
            signer=signer,
            checkpoint_every=cfg.checkpoint_every,
            checkpoint_interval_s=cfg.checkpoint_interval_s,
            cipher=self.cipher,
        )
        await asyncio.to_thread(self.audit.open)
        self.audit.attach(self.twin.commands)
        await asyncio.to_thread(
            self.audit.note_config, "site", self.site.model_dump_json().encode()
        )
        users_file = Path(self.site.api.users_file)
        if users_file.exists():
            await asyncio.to_thread(self.audit.note_config, "users", users_file.read_bytes())
        self._tasks.append(asyncio.create_task(self.audit.run(0.5), name="audit-log"))

    async def _record_commands(self) -> None:
        store = self.command_store
        assert store is not None
        while True:
            await asyncio.sleep(0.2)
            if store.pending:
                try:
                    await asyncio.to_thread(store.flush)
                except Exception:
                    log.exception("recording command transitions failed; will retry")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.twin.tick()
            except Exception:
                log.exception("twin housekeeping failed")

    async def stop(self) -> None:
        """Stop in reverse order; flush history."""
        if self.iec104 is not None:
            await self.iec104.stop()
        if self.opcua is not None:
            await self.opcua.stop()
            self.opcua = None
        if self.mms is not None:
            await self.mms.stop()
            self.mms = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.commands.close()
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
        for d in self.drivers:
            with contextlib.suppress(Exception):
                await d.stop()
        if self.uplink is not None:
            await self.uplink.stop()
            self.uplink = None
        if self.writer is not None:
            await self.writer.stop()
            self.twin.unsubscribe(self.writer.sub)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.command_store is not None:
            try:
                await asyncio.to_thread(self.command_store.flush)
            except Exception:
                log.exception("could not record the last command transitions")
            self.command_store = None
        if self.audit is not None:
            try:
                await asyncio.to_thread(self.audit.close)
            except Exception:
                log.exception("could not write the last audit records")
            self.audit = None
        if self.history is not None:
            await asyncio.to_thread(self.history.close)
            self.history = None

    def status(self) -> dict[str, Any]:
        """What is running and how it is doing."""
        return {
            "site": self.site.site.id,
            "uptime_s": round(time.time() - self.started, 1) if self.started else 0.0,
            "points": len(self.twin),
            "samples_applied": self.twin.applied,
            "unknown_samples": self.twin.unknown_samples,
            "change_sets": self.twin.seq,
            "drivers": [d.stats() for d in self.drivers],
            "history": self.writer.stats() if self.writer is not None else None,
            "commands": len(self.twin.commands),
            "api_auth": self.site.api.auth,
            "role": self.role,
            "edge_hub": self.hub.stats() if self.hub is not None else None,
            "edge_uplink": self.uplink.stats() if self.uplink is not None else None,
            "audit": self.audit.stats() if self.audit is not None else None,
            "at_rest": {
                "encrypt_business_data": self.cipher is not None,
                "sealed": self.cipher.sealed if self.cipher is not None else 0,
                "opened": self.cipher.opened if self.cipher is not None else 0,
            },
            "iec104_server": self.iec104.stats() if self.iec104 is not None else None,
            "opcua_server": self.opcua.stats() if self.opcua is not None else None,
            "mms_server": self.mms.stats() if self.mms is not None else None,
        }


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
