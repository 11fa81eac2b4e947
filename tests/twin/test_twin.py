"""The twin: change sets, bounded subscribers, staleness, aggregates, command lifecycle."""

import asyncio

import pytest

from model.command import Command, CommandState
from model.errors import UnknownPointError
from model.quality import OLD_DATA, IEC104Flags, Validity, from_iec104
from model.resources import plant_ref
from model.sample import Sample
from twin.errors import CommandConflict
from twin.twin import Twin

P_BAT1 = "VPP1.BAT01/MMXU1.TotW.mag.f"
SOC_BAT1 = "VPP1.BAT01/ZBAT1.SoC.mag.f"
SET_BAT1 = "VPP1.BAT01/DRCC1.WSpt.setMag.f"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def twin(demo_site, clock) -> Twin:
    return Twin(
        demo_site.point_specs(),
        plants=Twin.from_site(demo_site).plants,
        default_stale_after_s=5.0,
        clock=clock,
        monotonic=clock,
    )


def full_state(twin: Twin, ts: float = 1.0) -> list[Sample]:
    """A value for every resource's P, Q, SoC, set-point and temperature."""
    vals = {
        "VPP1.PV01/MMXU1.TotW.mag.f": 80.0, "VPP1.PV01/DRCC1.WSpt.setMag.f": 120.0,
        "VPP1.PV02/MMXU1.TotW.mag.f": 30.0, "VPP1.PV02/DRCC1.WSpt.setMag.f": 30.0,
        P_BAT1: 10.0, SOC_BAT1: 50.0, SET_BAT1: 10.0,
        "VPP1.BAT02/MMXU1.TotW.mag.f": 0.0, "VPP1.BAT02/ZBAT1.SoC.mag.f": 95.0,
        "VPP1.BAT02/DRCC1.WSpt.setMag.f": 0.0,
        "VPP1.HVAC01/MMXU1.TotW.mag.f": -40.0, "VPP1.HVAC01/STMP1.Tmp.mag.f": 23.0,
        "VPP1.HVAC01/DRCC1.WSpt.setMag.f": -40.0,
        "VPP1.LOAD01/MMXU1.TotW.mag.f": -30.0, "VPP1.LOAD01/DRCC1.WSpt.setMag.f": -30.0,
    }  # fmt: skip
    return [Sample(r, v, ts, 0, "test") for r, v in vals.items()]


def test_only_changes_are_published(twin: Twin) -> None:
    sub = twin.subscribe("t")
    cs = twin.apply([Sample(P_BAT1, 10.0, 1.0), Sample(SOC_BAT1, 50.0, 1.0)])
    assert cs is not None and [s.point for s in cs.changes][:2] == [P_BAT1, SOC_BAT1]
    again = twin.apply([Sample(P_BAT1, 10.0, 2.0)])
    assert again is None  # same value and quality: nothing to publish
    assert twin.get(P_BAT1).ts == 2.0  # but the time of the latest sample is kept
    q_change = twin.apply([Sample(P_BAT1, 10.0, 3.0, from_iec104(IEC104Flags.IV))])
    assert q_change is not None and q_change.changes[0].quality & 0b11 == Validity.INVALID
    assert [c.seq for c in sub.drain()] == [1, 2]


async def test_a_reader_cancelled_as_a_change_set_arrives_is_cancelled(twin: Twin) -> None:
    """Python 3.11's wait_for returned the result and dropped the cancellation here, so a
    server's follow-the-twin loop ran on after stop() and stop() waited for it forever."""
    for _ in range(3):
        sub = twin.subscribe("reader")
        task = asyncio.create_task(sub.get(timeout=5.0))
        await asyncio.sleep(0)  # the reader now waits for a change set
        twin.apply([Sample(P_BAT1, float(_), 10.0 + _)])  # wakes it ...
        task.cancel()  # ... and is cancelled in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await task
        twin.unsubscribe(sub)


def test_unknown_points_are_counted_not_fatal(twin: Twin) -> None:
    cs = twin.apply([Sample("VPP1.NOPE/MMXU1.TotW.mag.f", 1.0, 1.0), Sample(P_BAT1, 5.0, 1.0)])
    assert twin.unknown_samples == 1
    assert cs is not None and cs.changes[0].point == P_BAT1
    with pytest.raises(UnknownPointError):
        twin.get("VPP1.NOPE/MMXU1.TotW.mag.f")


def test_slow_subscriber_drops_and_counts_without_blocking(twin: Twin) -> None:
    slow = twin.subscribe("slow", maxsize=3)
    fast = twin.subscribe("fast", maxsize=100)
    for i in range(10):
        twin.apply([Sample(P_BAT1, float(i), float(i))])
    assert slow.dropped == 7 and len(slow) == 3
    assert [c.seq for c in slow.drain()] == [8, 9, 10]  # the gap tells it to resync
    assert len(fast.drain()) == 10 and fast.dropped == 0
    stats = {s["name"]: s for s in twin.subscriber_stats()}
    assert stats["slow"]["dropped"] == 7


async def test_subscription_get_waits_and_times_out(twin: Twin) -> None:
    sub = twin.subscribe("a")
    assert await sub.get(timeout=0.01) is None
    asyncio.get_running_loop().call_later(0.01, twin.apply, [Sample(P_BAT1, 1.0, 1.0)])
    cs = await sub.get(timeout=2.0)
    assert cs is not None and cs.changes[0].value == 1.0


def test_stale_points_go_not_topical(twin: Twin, clock: Clock) -> None:
    twin.apply([Sample(P_BAT1, 10.0, 1.0), Sample(SOC_BAT1, 50.0, 1.0)])
    clock.t += 3
    twin.apply([Sample(SOC_BAT1, 51.0, 2.0)])
    clock.t += 3  # P is 6 s old, SoC 3 s
    cs = twin.check_stale()
    assert cs is not None
    stale = {s.point for s in cs.changes if s.quality & OLD_DATA}
    assert P_BAT1 in stale and SOC_BAT1 not in stale
    assert twin.get(P_BAT1).value == 10.0  # last value kept
    assert twin.check_stale() is None  # not flagged twice
    twin.apply([Sample(P_BAT1, 10.0, 3.0)])
    assert twin.get(P_BAT1).quality == 0


def test_aggregates_follow_limits_and_state(twin: Twin) -> None:
    twin.apply(full_state(twin))
    r = {
        k: twin.get(plant_ref("VPP1", k))
        for k in ("p", "up_w", "down_w", "up_wh", "down_wh", "online")
    }
    assert r["p"].value == pytest.approx(80 + 30 + 10 + 0 - 40 - 30)
    assert r["p"].quality == 0 and r["online"].value == 6
    # up: PV01 not curtailed 0; PV02 curtailed at 30 -> 30; BAT01 60-10=50; BAT02 60-0... limited 30;
    # HVAC -5-(-40)=35; LOAD -10-(-30)=20
    assert r["up_w"].value == pytest.approx(0 + 30 + 50 + 30 + 35 + 20)
    # down: PV01 80, PV02 30, BAT01 10-(-60)=70, BAT02 full (95%) cannot charge: 0,
    # HVAC -40-(-80)=40, LOAD -30-(-50)=20
    assert r["down_w"].value == pytest.approx(80 + 30 + 70 + 0 + 40 + 20)
    assert r["up_wh"].value == pytest.approx((50 - 10) / 100 * 200 + (95 - 10) / 100 * 100)
    assert r["down_wh"].value == pytest.approx((95 - 50) / 100 * 200 + 0)


def test_hvac_at_comfort_edge_offers_no_upward_capacity(twin: Twin) -> None:
    twin.apply(full_state(twin))
    up_before = twin.get(plant_ref("VPP1", "up_w")).value
    twin.apply([Sample("VPP1.HVAC01/STMP1.Tmp.mag.f", 26.5, 2.0)])
    assert twin.get(plant_ref("VPP1", "up_w")).value == pytest.approx(up_before - 35)


def test_link_down_makes_aggregate_questionable(twin: Twin) -> None:
    twin.apply(full_state(twin))
    twin.mark_not_topical([P_BAT1], "ied104")
    p = twin.get(plant_ref("VPP1", "p"))
    assert p.quality & 0b11 == Validity.QUESTIONABLE and p.quality & OLD_DATA
    assert twin.get(P_BAT1).quality & OLD_DATA


def test_command_confirmed_by_read_back(twin: Twin, clock: Clock) -> None:
    seen = []
    twin.commands.add_listener(lambda rec, t: seen.append(t.state))
    cmd = Command(SET_BAT1, -30.0, "test", id="c1", deadline=clock.t + 10)
    assert twin.accept_command(cmd) is True
    assert twin.commands.desired[SET_BAT1] == (-30.0, "c1")
    twin.commands.transition("c1", CommandState.SENT)
    twin.apply([Sample(SET_BAT1, 10.0, 2.0)])  # old value: not confirmed
    assert twin.commands.get("c1").state == CommandState.SENT
    twin.apply([Sample(SET_BAT1, -30.0004, 3.0)])  # read back through float32 scaling
    assert twin.commands.get("c1").state == CommandState.CONFIRMED
    assert seen == [CommandState.ACCEPTED, CommandState.SENT, CommandState.CONFIRMED]
    assert SET_BAT1 not in twin.commands.desired


def test_command_times_out_and_terminal_states_are_final(twin: Twin, clock: Clock) -> None:
    twin.accept_command(Command(SET_BAT1, 5.0, "test", id="c2", deadline=clock.t + 1))
    twin.commands.transition("c2", CommandState.SENT)
    clock.t += 2
    twin.tick()
    rec = twin.commands.get("c2")
    assert rec.state == CommandState.TIMED_OUT
    twin.commands.transition("c2", CommandState.CONFIRMED)
    assert rec.state == CommandState.TIMED_OUT


def test_repeated_command_id_is_not_accepted_twice(twin: Twin, clock: Clock) -> None:
    cmd = Command(SET_BAT1, 5.0, "test", id="c3", deadline=clock.t + 10)
    assert twin.accept_command(cmd) is True
    assert twin.accept_command(cmd) is False
    assert len(twin.commands.get("c3").history) == 1
    with pytest.raises(CommandConflict):
        twin.accept_command(Command(SET_BAT1, 6.0, "test", id="c3", deadline=clock.t + 10))
