"""The edge's pure and local pieces: the on-disk sample buffer and the uplink message format."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge.buffer import EdgeBufferError, SampleBuffer
from gateway.edge.messages import (
    Ack,
    CommandAck,
    CommandReport,
    CrlUpdate,
    EdgeProtocolError,
    Hello,
    Ping,
    Pong,
    SampleBatch,
    Welcome,
    decode,
    encode,
)
from model.command import CommandState
from model.edge import EdgeLinkDriverConfig, EdgeRoleConfig
from model.sample import Sample

P = "VPP1.BAT11/MMXU1.TotW.mag.f"
ON = "VPP1.BAT11/DRCT1.DERSt.stVal"


def _samples(n: int, start: int = 0, point: str = P) -> list[Sample]:
    return [
        Sample(point, float(i), 1_700_000_000.0 + i / 1000, 0, "mb")
        for i in range(start, start + n)
    ]


# ------------------------------------------------------------------------------------- buffer


def test_append_read_ack_keep_order_types_and_sequence(tmp_path) -> None:
    path = tmp_path / "b.db"
    with SampleBuffer(path, 1000) as buf:
        stream = buf.stream
        mixed = [
            Sample(P, 1.5, 10.0, 0),
            Sample(ON, 3, 10.0, 0),
            Sample("VPP1.X/GGIO1.Ind.stVal", True, 10.5, 64),
            Sample(P, math.nan, 11.0, 1),
            Sample(P, 1.0, 12.0, 0),
        ]
        assert buf.append(mixed) == 0
        rows = buf.read(0, 10)
        assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5]
        got = [s for _, s in rows]
        assert [type(s.value) for s in got] == [float, int, bool, float, float]
        assert got[0] == Sample(P, 1.5, 10.0, 0, "")
        assert math.isnan(got[3].value) and got[3].quality == 1
        assert buf.read(3, 10)[0][0] == 4
        assert buf.ack(2) == 2 and len(buf) == 3 and buf.first_seq == 3
        assert buf.ack(2) == 0  # acknowledging again changes nothing
        assert buf.ack(5) == 3 and len(buf) == 0
    # Reopened: same stream, and sequence numbers are never given out twice.
    with SampleBuffer(path, 1000) as buf:
        assert buf.stream == stream and len(buf) == 0 and buf.last_seq == 5
        buf.append(_samples(2))
        assert [seq for seq, _ in buf.read(0, 10)] == [6, 7]


def test_full_buffer_drops_the_oldest_and_counts_them(tmp_path) -> None:
    path = tmp_path / "b.db"
    with SampleBuffer(path, 100) as buf:
        assert buf.append(_samples(60)) == 0
        assert buf.append(_samples(60, 60)) == 20
        assert buf.append(_samples(130, 120)) == 130  # a batch larger than the buffer
        assert len(buf) == 100 and buf.full and buf.dropped == 150
        rows = buf.read(0, 1000)
        # Only the newest 100 remain, contiguous, and nothing else was lost.
        assert [s.value for _, s in rows] == [float(i) for i in range(150, 250)]
        assert [seq for seq, _ in rows] == list(range(151, 251))
        st_ = buf.stats()
        assert st_["full"] is True and st_["dropped"] == 150 and st_["rows"] == 100
    with SampleBuffer(path, 100) as buf:  # the count is kept in the file
        assert buf.dropped == 150 and len(buf) == 100 and buf.first_seq == 151


def test_command_evidence_and_accepted_ids_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "b.db"
    with SampleBuffer(path) as buf:
        buf.record_command("c1", 2e9, b"signed-1", "accepted")
        buf.record_command("c2", 2e9, b"signed-2", "refused", "bad_signature", "does not verify")
        buf.record_command("c3", 1.0, b"signed-3", "accepted")  # deadline long past
    with SampleBuffer(path) as buf:
        assert buf.accepted_ids(1e9) == {"c1"}
        (row,) = buf.evidence("c2")
        assert row["verdict"] == "refused" and row["code"] == "bad_signature"
        assert row["signed"] == b"signed-2"


def _report(cmd_id: str, state: CommandState, n: int = 0) -> CommandReport:
    return CommandReport(cmd_id, state, f"why {n}", "code" if n % 2 else "", 1_700_000_000.5 + n)


def test_command_reports_queue_in_order_and_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "b.db"
    made = [
        _report("c1", CommandState.ACCEPTED, 0),
        _report("c2", CommandState.ACCEPTED, 1),
        _report("c1", CommandState.SENT, 2),
        _report("c2", CommandState.FAILED, 3),
        _report("c1", CommandState.CONFIRMED, 4),
    ]
    with SampleBuffer(path) as buf:
        assert buf.last_report_id == 0
        assert buf.queue_reports(made[:2]) == 0
        assert buf.queue_reports(made[2:]) == 0
        rows = buf.queued_reports(10)
        # Every field, in the order they were made, each numbered by its id (what `cmd.n` says).
        assert [r for _, r in rows] == [
            replace(r, n=i) for r, i in zip(made, range(1, 6), strict=True)
        ]
        assert [i for i, _ in rows] == [1, 2, 3, 4, 5] and buf.last_report_id == 5
        assert buf.queued_reports(10, after=3) == rows[3:]  # what a connection has not sent yet
        assert buf.reports_queued == 5
        assert buf.remove_reports(2) == 2  # the platform acknowledged the first two
        assert buf.reported_state("c1") == CommandState.CONFIRMED
        assert buf.reported_state("c2") == CommandState.FAILED
        assert buf.reported_state("c3") is None
    with SampleBuffer(path) as buf:  # what was not acknowledged yet is still there, in order
        assert buf.reports_queued == 3 and buf.last_report_id == 5
        assert [replace(r, n=None) for _, r in buf.queued_reports(2)] == made[2:4]
        assert [replace(r, n=None) for _, r in buf.queued_reports(10)] == made[2:]
        assert buf.remove_reports(5) == 3 and buf.reports_queued == 0
        assert buf.queued_reports(10) == [] and buf.stats()["reports_queued"] == 0
    with SampleBuffer(path) as buf:  # numbers never go back, not even with an empty queue
        assert buf.last_report_id == 5
        buf.queue_reports([_report("c3", CommandState.ACCEPTED, 5)])
        ((i, r),) = buf.queued_reports(10)
        assert i == r.n == 6 == buf.last_report_id and r.id == "c3"
        assert buf.remove_reports(4) == 0 and buf.reports_queued == 1  # an old ack: nothing


def test_full_report_queue_drops_the_oldest_and_counts_them(tmp_path) -> None:
    path = tmp_path / "b.db"
    with SampleBuffer(path, max_reports=5) as buf:
        assert buf.queue_reports([_report(f"c{i}", CommandState.SENT, i) for i in range(3)]) == 0
        assert buf.queue_reports([_report(f"c{i}", CommandState.SENT, i) for i in range(3, 7)]) == 2
        assert buf.reports_queued == 5 and buf.reports_dropped == 2
        assert [r.id for _, r in buf.queued_reports(10)] == [f"c{i}" for i in range(2, 7)]
        assert buf.queue_reports([_report("c9", CommandState.SENT)] * 7) == 7  # more than fits
        assert [r.id for _, r in buf.queued_reports(10)] == ["c9"] * 5
        assert buf.stats()["reports_dropped"] == 9
    with SampleBuffer(path, max_reports=5) as buf:  # the count is kept in the file
        assert buf.reports_dropped == 9 and buf.reports_queued == 5


def test_unreported_names_accepted_commands_whose_final_state_is_not_reported(tmp_path) -> None:
    path = tmp_path / "b.db"
    now = time.time()
    later = now + 3600
    with SampleBuffer(path) as buf:
        for cid, deadline, verdict in [
            ("sent", later, "accepted"),
            ("none", later, "accepted"),
            ("done", later, "accepted"),
            ("refused", later, "refused"),
            ("old", now - 60, "accepted"),  # deadline past: out of the evidence window
            ("unknown", later, "accepted"),
        ]:
            buf.record_command(cid, deadline, b"signed", verdict)
        buf.queue_reports(
            [
                _report("sent", CommandState.ACCEPTED),
                _report("sent", CommandState.SENT),
                _report("done", CommandState.SENT),
                _report("done", CommandState.CONFIRMED),
                _report("refused", CommandState.FAILED),
                _report("old", CommandState.SENT),
                _report("unknown", CommandState.UNKNOWN),
            ]
        )
        assert buf.unreported(now) == [("sent", CommandState.SENT), ("none", None)]
        assert buf.unreported(0.0)[-1] == ("old", CommandState.SENT)
    with SampleBuffer(path) as buf:  # kept across a restart; the past command's marker is gone
        assert buf.unreported(now) == [("sent", CommandState.SENT), ("none", None)]
        assert buf.reported_state("done") == CommandState.CONFIRMED
        assert buf.reported_state("old") is None


def test_unreadable_file_is_named(tmp_path) -> None:
    path = tmp_path / "b.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EdgeBufferError, match=r"b\.db"):
        SampleBuffer(path).open()


# ------------------------------------------------------------------------------------ messages


def test_every_message_round_trips() -> None:
    items = tuple(
        (i + 7, s)
        for i, s in enumerate(
            [Sample(P, 1.0, 5.25, 0), Sample(ON, 2, 5.5, 128), Sample(P, True, 6.0, 0)]
        )
    )
    msgs = [
        Hello("edge-site-1", "0" * 32, 12, 3),
        Welcome("ab" * 16, 99),
        SampleBatch(items),
        Ack(9),
        CommandReport("c-1", CommandState.FAILED, "refused", "out_of_limits", 12.5),
        CommandReport("c-2", CommandState.SENT, "", "", 13.0, 2**63 - 1),
        CommandAck(0),
        CommandAck(41),
        CrlUpdate(b"0\x82\x01\x00" + bytes(range(256))),
        Ping(1.5),
        Pong(2.5),
    ]
    for m in msgs:
        assert decode(encode(m)) == m
    batch = decode(encode(SampleBatch(items)))
    assert isinstance(batch, SampleBatch)
    assert [type(s.value) for _, s in batch.items] == [float, int, bool]
    assert batch.first == 7 and batch.last == 9


values = st.one_of(
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=True),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([P, ON, "VPP1.HVAC11/STMP1.Tmp.mag.f"]),
            values,
            st.floats(0, 4e9, allow_nan=False),
            st.integers(-(2**31), 2**31 - 1),
        ),
        min_size=1,
        max_size=50,
    ),
    st.integers(0, 2**40),
)
def test_sample_batches_round_trip(rows, first) -> None:
    items = tuple((first + i, Sample(p, v, ts, q, "")) for i, (p, v, ts, q) in enumerate(rows))
    got = decode(encode(SampleBatch(items)))
    assert isinstance(got, SampleBatch)
    assert got.items == items
    assert [type(s.value) for _, s in got.items] == [type(s.value) for _, s in items]


_VALID = [
    encode(SampleBatch(((1, Sample(P, 1.0, 5.0, 0, "")), (2, Sample(ON, 2, 6.0, 0, ""))))),
    encode(CommandReport("c", CommandState.SENT, "", "", 1.0)),
    encode(CommandReport("c", CommandState.SENT, "", "", 1.0, 12)),
    encode(CommandAck(7)),
    encode(Hello("edge-site-1", "0" * 32, 1, 0)),
    encode(CrlUpdate(bytes(range(40)))),
]


def _mutate(t: tuple[bytes, int, int, int]) -> bytes:
    doc, at, byte, keep = t
    at %= len(doc)
    return (doc[:at] + bytes([byte]) + doc[at + 1 :])[:keep]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        # valid messages with one byte changed, perhaps cut short
        st.tuples(
            st.sampled_from(_VALID), st.integers(0, 500), st.integers(0, 255), st.integers(1, 500)
        ).map(_mutate),
    )
)
def test_random_bytes_give_a_message_or_a_typed_error(data) -> None:
    try:
        msg = decode(data)
    except EdgeProtocolError:
        return
    assert isinstance(
        msg,
        Hello | Welcome | SampleBatch | Ack | CommandReport | CommandAck | CrlUpdate | Ping | Pong,
    )


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        (b'{"t":"samples","p":["a"],"s":[[2,0,1.0,1.0,0],[2,0,1.0,1.0,0]]}', "does not increase"),
        (b'{"t":"samples","p":["a"],"s":[[1,1,1.0,1.0,0]]}', "outside samples.p"),
        (b'{"t":"samples","p":["a"],"s":[[1,0,"x",1.0,0]]}', "not a bool or a number"),
        (b'{"t":"samples","p":["a"],"s":[]}', "1..20000 rows"),
        (b'{"t":"ack","seq":-1}', "not a sequence number"),
        (b'{"t":"hello","v":2,"edge":"e","stream":"00000000000000000000000000000000",'
         b'"buffered":0,"dropped":0}', "protocol version 2"),
        (b'{"t":"cmd","id":"x","state":"done","reason":"","code":"","ts":1}', "not a command state"),
        (b'{"t":"cmd","id":"x","state":"sent","reason":"","code":"","ts":1,"n":-1}',
         r"cmd\.n is not a sequence number"),
        (b'{"t":"cmd","id":"x","state":"sent","reason":"","code":"","ts":1,"n":"3"}',
         r"cmd\.n is not a sequence number"),
        (b'{"t":"cmd","id":"x","state":"sent","reason":"","code":"","ts":1,"n":true}',
         r"cmd\.n is not a sequence number"),
        (b'{"t":"cmd","id":"x","state":"sent","reason":"","code":"","ts":1,"n":null}',
         r"cmd\.n is not a sequence number"),
        (b'{"t":"cmdack"}', r"cmdack\.n is not a sequence number .*: None"),
        (b'{"t":"cmdack","n":1.5}', r"cmdack\.n is not a sequence number"),
        (b'{"t":"cmdack","n":9223372036854775808}', r"cmdack\.n is not a sequence number"),
        (b'{"t":"crl","der":"not base64!"}', "not valid base64"),
        (b'{"t":"crl","der":""}', "1..524288 bytes"),
        (b'{"t":"crl"}', "no 'der'"),
        (b'{"t":"nope"}', "unknown message type"),
        (b"[1,2]", "JSON object"),
    ],
)  # fmt: skip
def test_bad_messages_name_what_is_wrong(doc: bytes, what: str) -> None:
    with pytest.raises(EdgeProtocolError, match=what):
        decode(doc)


def test_a_command_report_without_a_number_still_decodes_and_encodes_without_one() -> None:
    """An edge older than `cmdack` sends `cmd` without `n`: still a report, not numbered."""
    old = b'{"t":"cmd","id":"c-1","state":"sent","reason":"","code":"","ts":1.5}'
    assert decode(old) == CommandReport("c-1", CommandState.SENT, "", "", 1.5, None)
    assert b'"n"' not in encode(CommandReport("c-1", CommandState.SENT, "", "", 1.5))
    assert b'"n":7' in encode(CommandReport("c-1", CommandState.SENT, "", "", 1.5, 7))


@pytest.mark.parametrize(
    ("msg", "what"),
    [
        (CommandReport("c", CommandState.SENT, "", "", 1.0, -1), r"cmd\.n is not a sequence"),
        (CommandAck(-1), r"cmdack\.n is not a sequence number"),
        (CommandAck(1 << 63), r"cmdack\.n is not a sequence number"),
    ],
)
def test_numbers_out_of_range_are_not_encoded(msg, what: str) -> None:
    with pytest.raises(EdgeProtocolError, match=what):
        encode(msg)


# -------------------------------------------------------------------------------------- config


def test_edge_configs_validate() -> None:
    cfg = EdgeLinkDriverConfig.model_validate(
        {
            "id": "edge1",
            "protocol": "edge",
            "edge": "edge-site-1",
            "points": [{"point": P}, {"point": "VPP1.BAT11/DRCC1.WSpt.setMag.f", "writable": True}],
        }
    )
    assert cfg.bindings() == [
        ("points", 0, P, False),
        ("points", 1, "VPP1.BAT11/DRCC1.WSpt.setMag.f", False),
        ("points", 1, "VPP1.BAT11/DRCC1.WSpt.setMag.f", True),
    ]
    with pytest.raises(ValueError, match="already listed"):
        EdgeLinkDriverConfig.model_validate(
            {"id": "e", "protocol": "edge", "edge": "e", "points": [{"point": P}, {"point": P}]}
        )
    with pytest.raises(ValueError, match="uplink"):
        EdgeRoleConfig.model_validate({"name": "edge-site-1", "uplink": "http://x"})
    with pytest.raises(ValueError, match="idle_timeout_s"):
        EdgeRoleConfig.model_validate(
            {"name": "e", "uplink": "tcp://h:1", "keepalive_s": 30, "idle_timeout_s": 10}
        )
