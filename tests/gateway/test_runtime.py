"""The assembled gateway: a restart mid-command leaves the command UNKNOWN and never re-executes it."""

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from gateway.runtime import Gateway
from model.site import SiteConfig
from tools.sim.modbus import ModbusSimulator

SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"


def _site(demo_site: SiteConfig, port: int, db: str, poll_s: float) -> SiteConfig:
    drivers = []
    for d in demo_site.drivers:
        if d.id == "mb1":  # the IEC 104 outstation is not part of this test
            groups = [g.model_copy(update={"period_s": poll_s}) for g in d.poll_groups]
            drivers.append(d.model_copy(update={"port": port, "poll_groups": groups}))
    return demo_site.model_copy(
        update={
            "drivers": drivers,
            "history": demo_site.history.model_copy(update={"url": f"sqlite:///{db}"}),
            "api": demo_site.api.model_copy(update={"port": 0}),
            "north": demo_site.north.model_copy(
                update={
                    "iec104": demo_site.north.iec104.model_copy(update={"enabled": False}),
                    "opcua": demo_site.north.opcua.model_copy(update={"enabled": False}),
                }
            ),
        }
    )


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.loads(r.read())


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_restart_mid_command(demo_site, port, tmp_path) -> None:
    # Polls an hour apart: the write goes out but no read-back comes before the stop.
    site = _site(demo_site, port, str(tmp_path / "h.db"), poll_s=3600)
    sim = ModbusSimulator(site, "mb1")
    await sim.start()
    try:
        gw = Gateway(site)
        await gw.start()
        await _until(lambda: gw.drivers[0].connected, 10, "link")
        api = f"{gw.api_url}/api/v1"
        body = {"id": "agc-0001", "point": SET, "value": -12.5, "timeout_s": 600}
        status, rec = await asyncio.to_thread(_post, f"{api}/commands", body)
        assert status == 202
        await _until(lambda: _get(f"{api}/commands/agc-0001")["state"] == "sent", 10, "sent")
        assert sim.writes == 1
        await gw.stop()

        gw2 = Gateway(site)
        await gw2.start()
        try:
            api = f"{gw2.api_url}/api/v1"
            rec = await asyncio.to_thread(_get, f"{api}/commands/agc-0001")
            assert rec["state"] == "unknown"
            assert [h["state"] for h in rec["history"]] == ["accepted", "sent", "unknown"]
            status, again = await asyncio.to_thread(_post, f"{api}/commands", body)
            assert status == 200 and again["state"] == "unknown"
            await asyncio.sleep(0.3)
            assert sim.writes == 1  # not executed a second time
            assert gw2.command_store is not None
            await asyncio.to_thread(gw2.command_store.flush)
            assert await asyncio.to_thread(gw2.command_store.verify) is None
        finally:
            await gw2.stop()
    finally:
        await sim.stop()


async def test_auth_required_login_command_and_audit(demo_site, port, tmp_path) -> None:
    """A site with auth required: no token -> 401, an operator's token commands, all audited."""
    from security.users import UserStore

    users = tmp_path / "users.yaml"
    store = UserStore.load(users, missing_ok=True)
    store.add("olga", "correct horse battery", ["operator"])
    store.add("vic", "viewer password 1", ["viewer"])
    store.save(users)
    site = _site(demo_site, port, str(tmp_path / "h.db"), poll_s=0.2)
    api_cfg = site.api.model_copy(
        update={
            "auth": "required",
            "users_file": str(users),
            "token_secret_file": str(tmp_path / "token.key"),
        }
    )
    site = site.model_copy(update={"api": api_cfg})
    sim = ModbusSimulator(site, "mb1")
    await sim.start()
    gw = Gateway(site)
    await gw.start()
    try:
        api = f"{gw.api_url}/api/v1"
        await _until(lambda: gw.drivers[0].connected, 10, "link")

        def call(method: str, path: str, body: dict | None = None, token: str | None = None):
            req = urllib.request.Request(
                f"{api}{path}", json.dumps(body).encode() if body is not None else None,
                {"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})}, method=method,
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        cmd = {"point": SET, "value": -7.5}
        status, err = await asyncio.to_thread(call, "POST", "/commands", cmd)
        assert status == 401 and err["error"]["code"] == "unauthenticated"
        status, _ = await asyncio.to_thread(
            call, "POST", "/auth/login", {"name": "olga", "password": "wrong"}
        )
        assert status == 401
        _, vic = await asyncio.to_thread(
            call, "POST", "/auth/login", {"name": "vic", "password": "viewer password 1"}
        )
        status, err = await asyncio.to_thread(call, "POST", "/commands", cmd, vic["token"])
        assert status == 403 and sim.writes == 0
        status, olga = await asyncio.to_thread(
            call, "POST", "/auth/login", {"name": "olga", "password": "correct horse battery"}
        )
        assert status == 200
        status, rec = await asyncio.to_thread(call, "POST", "/commands", cmd, olga["token"])
        assert status == 202
        await _until(
            lambda: call("GET", f"/commands/{rec['id']}", token=olga["token"])[1]["state"]
            == "confirmed", 10, "confirmation",
        )  # fmt: skip
        assert sim.writes == 1
        assert gw.audit is not None
        await asyncio.to_thread(gw.audit.flush)
        kinds = {str(r.kind) for r in await asyncio.to_thread(gw.audit.rows, 0, 1000)}
        expected = {"config_change", "login", "login_failed", "access_denied", "command",
                    "command_request"}  # fmt: skip
        assert expected <= kinds, kinds
        check = await asyncio.to_thread(gw.audit.verify)
        assert check.ok and check.records > 0
    finally:
        await gw.stop()
        await sim.stop()


async def test_mms_server_runs_inside_the_gateway(demo_site, port, new_port, tmp_path) -> None:
    """north.mms in the site file: the gateway serves its twin over MMS and stops cleanly."""
    site = _site(demo_site, port, str(tmp_path / "h.db"), poll_s=0.2)
    mms = site.north.mms.model_copy(update={"enabled": True, "port": new_port()})
    site = site.model_copy(update={"north": site.north.model_copy(update={"mms": mms})})
    sim = ModbusSimulator(site, "mb1")
    await sim.start()
    gw = Gateway(site)
    await gw.start()
    try:
        assert gw.mms is not None
        await _until(lambda: gw.drivers[0].connected, 10, "link")
        stats = gw.status()["mms_server"]
        assert stats is not None and stats["points"] >= len(gw.twin.refs("VPP1.BAT02"))
        _, writer = await asyncio.open_connection("127.0.0.1", mms.port)  # it listens
        writer.close()
        await writer.wait_closed()
    finally:
        await gw.stop()
        await sim.stop()
    assert gw.mms is None


async def test_business_data_sealed_at_rest(demo_site, port, tmp_path, monkeypatch) -> None:
    """at_rest.encrypt_business_data: no master key, no start; with it, commands and audit
    details are stored sealed and read back after a restart."""
    import sqlite3

    from security.secrets import MasterKeyError

    db = tmp_path / "h.db"
    site = _site(demo_site, port, str(db), poll_s=0.2)
    site = site.model_copy(update={"at_rest": site.at_rest.model_copy(
        update={"encrypt_business_data": True})})  # fmt: skip
    monkeypatch.delenv("VPP_MASTER_KEY", raising=False)
    monkeypatch.setenv("VPP_MASTER_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(MasterKeyError, match="no master key"):
        await Gateway(site).start()
    monkeypatch.setenv("VPP_MASTER_KEY", "00112233445566778899aabbccddeeff")
    sim = ModbusSimulator(site, "mb1")
    await sim.start()
    try:
        gw = Gateway(site)
        await gw.start()
        try:
            await _until(lambda: gw.drivers[0].connected, 10, "link")
            api = f"{gw.api_url}/api/v1"
            body = {"id": "sealed-1", "point": SET, "value": -12.5}
            status, _ = await asyncio.to_thread(_post, f"{api}/commands", body)
            assert status == 202
            await _until(
                lambda: _get(f"{api}/commands/sealed-1")["state"] == "confirmed", 10, "confirmed"
            )
            assert gw.command_store is not None and gw.audit is not None
            await asyncio.to_thread(gw.command_store.flush)
            await asyncio.to_thread(gw.audit.flush)
            assert gw.status()["at_rest"]["sealed"] >= 3  # value, origin, audit details
        finally:
            await gw.stop()
        con = sqlite3.connect(db)
        value, origin = con.execute(
            "select value, origin from commands where id='sealed-1'"
        ).fetchone()
        details = [d for (d,) in con.execute("select detail from audit_log where kind='command'")]
        con.close()
        assert value.startswith("enc:sm4:") and origin.startswith("enc:sm4:")
        assert details and all(d.startswith("enc:sm4:") for d in details)
        assert not any("12.5" in d for d in details)

        gw2 = Gateway(site)  # the same key reads it all back
        await gw2.start()
        try:
            rec = await asyncio.to_thread(_get, f"{gw2.api_url}/api/v1/commands/sealed-1")
            assert rec["value"] == -12.5 and rec["state"] == "confirmed"
            assert gw2.audit is not None
            cmd = await asyncio.to_thread(gw2.audit.rows, 0, 1000, "command")
            assert {r.details.get("value") for r in cmd} >= {-12.5}
        finally:
            await gw2.stop()
    finally:
        await sim.stop()
