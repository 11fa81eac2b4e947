"""Sans-IO DL/T 645 endpoints: bytes in with receive_data(), events out with next_event(), send().

`Decoder` turns any byte stream into events. `Connection` adds a role: a MASTER (the gateway on
the bus) sends requests and gets back only the answers to its outstanding request; a METER (a
simulator) sends answers and gets only requests. Neither does any I/O: a driver moves the bytes.

Theory of operation (MASTER): send(request) returns the wire bytes and, unless the request
expects no answer (broadcast address, time sync), remembers it as outstanding. next_event()
decodes what came in: frames travelling the wrong way (the echo of our own request on an
RS-485 adapter, another master) are counted as `ignored`; answers that do not answer the
outstanding request (another meter's late answer, a different DI) are counted as `unexpected`
and dropped; the matching answer is returned and ends the exchange unless it announces follow-up
frames. A bad frame raises DecodeError once (counted in `bad_frames`), and decoding goes on.
"""

from __future__ import annotations

from enum import Enum
from typing import cast

from gateway.codecs.dlt645.bcd import BROADCAST, address_matches
from gateway.codecs.dlt645.errors import DecodeError, LocalProtocolError
from gateway.codecs.dlt645.frame import HEADER, FrameDecoder
from gateway.codecs.dlt645.messages import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ErrorResponse,
    Event,
    OtherFrame,
    ReadData,
    ReadDataResponse,
    ReadFollowUp,
    ReadFollowUpResponse,
    Request,
    Response,
    TimeSync,
    encode,
    event_function,
    to_event,
)

__all__ = ["NEED_DATA", "Connection", "Decoder", "NeedData", "Role", "answers", "expects_answer"]


class NeedData:
    """Sentinel: no complete event yet, feed more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


class Role(Enum):
    """Which end of the bus a Connection plays."""

    MASTER = "master"
    METER = "meter"


def expects_answer(request: Request) -> bool:
    """False for requests meters must not answer: broadcasts and the time sync."""
    return not isinstance(request, TimeSync) and request.address != BROADCAST


def answers(request: Request, response: Response) -> bool:
    """True when `response` is an answer to `request` (function, address, DI and SEQ agree)."""
    if event_function(response) != int(request.function):
        return False
    if not address_matches(request.address, response.address):
        return False
    if isinstance(request, ReadData):
        return not isinstance(response, ReadDataResponse) or response.di == request.di
    if isinstance(request, ReadFollowUp) and isinstance(response, ReadFollowUpResponse):
        return response.di == request.di and response.seq == request.seq
    return True


class Decoder:
    """Bytes in, events out; resynchronises after garbage; bad frames raise DecodeError once."""

    def __init__(self, max_buffer: int = 65536) -> None:
        self.frames = FrameDecoder(max_buffer)
        self.events = 0
        self.bad_content = 0  # well-formed frames whose data do not fit their function

    @property
    def bad_frames(self) -> int:
        """Frames dropped for a bad checksum, end byte, address or data layout."""
        return self.frames.bad_frames + self.bad_content

    def receive_data(self, data: bytes) -> None:
        """Add received bytes."""
        self.frames.receive_data(data)

    def clear(self) -> int:
        """Drop buffered bytes; return how many."""
        return self.frames.clear()

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises DecodeError for a bad frame (already dropped)."""
        fd = self.frames
        start = fd.offset
        frame = fd.next_frame()
        if frame is None:
            return NEED_DATA
        # The frame ended at fd.offset; its data began 2 + len(data) bytes before that.
        data_offset = fd.offset - 2 - len(frame.data)
        assert data_offset >= start + HEADER
        try:
            event = to_event(frame, data_offset)
        except DecodeError:
            self.bad_content += 1
            raise
        self.events += 1
        return event


class Connection:
    """One end of a DL/T 645 exchange (see the module docstring)."""

    def __init__(self, role: Role, max_buffer: int = 65536) -> None:
        self.role = role
        self.decoder = Decoder(max_buffer)
        self.outstanding: Request | None = None
        self._other: OtherFrame | None = None  # an unmodelled request awaiting its answer
        self.ignored = 0
        self.unexpected = 0

    @property
    def bad_frames(self) -> int:
        """Frames dropped as bad."""
        return self.decoder.bad_frames

    def send(self, event: Event, preamble: int = 0) -> bytes:
        """Wire bytes of an event this role may send; LocalProtocolError otherwise."""
        if isinstance(event, OtherFrame):
            up = bool(event.control & 0x80)
            if up != (self.role is Role.METER):
                raise LocalProtocolError(
                    f"a {self.role.value} cannot send control 0x{event.control:02X}"
                )
        elif self.role is Role.MASTER and not isinstance(event, REQUEST_TYPES):
            raise LocalProtocolError(f"a master sends requests, not {type(event).__name__}")
        elif self.role is Role.METER and not isinstance(event, RESPONSE_TYPES):
            raise LocalProtocolError(f"a meter sends answers, not {type(event).__name__}")
        data = encode(event, preamble)
        if self.role is Role.MASTER:
            self.outstanding, self._other = None, None
            if isinstance(event, OtherFrame):
                self._other = event
            else:
                request: Request = event  # type: ignore[assignment]
                self.outstanding = request if expects_answer(request) else None
        return data

    def receive_data(self, data: bytes) -> None:
        """Add received bytes."""
        self.decoder.receive_data(data)

    def clear(self) -> int:
        """Forget buffered bytes and the outstanding request (after a timeout)."""
        self.outstanding, self._other = None, None
        return self.decoder.clear()

    def next_event(self) -> Event | NeedData:
        """The next event for this role, or NEED_DATA; DecodeError for a bad frame."""
        while True:
            event = self.decoder.next_event()
            if isinstance(event, NeedData):
                return event
            if self.role is Role.METER:
                if isinstance(event, REQUEST_TYPES) or (
                    isinstance(event, OtherFrame) and not event.control & 0x80
                ):
                    return event
                self.ignored += 1
                continue
            if not isinstance(event, (*RESPONSE_TYPES, OtherFrame)) or (
                isinstance(event, OtherFrame) and not event.control & 0x80
            ):
                self.ignored += 1  # our own echo, or another master
                continue
            if isinstance(event, OtherFrame):
                other = self._other
                if other is not None and event.control & 0x1F == other.control & 0x1F:
                    self._other = None
                    return event
                self.unexpected += 1
                continue
            req = self.outstanding
            if req is None or not answers(req, cast(Response, event)):
                self.unexpected += 1
                continue
            more = isinstance(event, (ReadDataResponse, ReadFollowUpResponse)) and event.more
            if not more or isinstance(event, ErrorResponse):
                self.outstanding = None
            return event
