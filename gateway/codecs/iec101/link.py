"""Link-layer state machines of IEC 60870-5-101 (IEC 60870-5-2 procedures), sans-IO.

The machines never read a clock or a socket. The caller feeds received bytes with
``receive_data(data, now)``, calls ``timeout(now)`` once ``now >= deadline``, sends whatever
``bytes_to_send()`` returns, and takes events from ``next_event()`` (a closed set of frozen
dataclasses: LinkUp, LinkDown, UserData, DataRejected, LinkReset, ProcessReset). ``now`` is any
monotonic clock in seconds; the machines only compare and add to it.

Theory of operation
-------------------
Primary station (``UnbalancedPrimary``, and the primary half of ``BalancedLink``)::

    DOWN --(reconnect due)--> request status of link (FC9) --LINK_STATUS--> reset remote link (FC0)
      ^                          | no answer                                     | ACK/E5
      |                          v                                               v
      +---- LinkDown <----- retries spent <--- no answer --- UP: one request at a time

One request is outstanding at a time. Requests with FCV = 1 (user data FC3, class 1/2 requests
FC10/11, test FC2) carry the frame count bit FCB; after the link reset the first one has FCB = 1
and FCB alternates after each transaction that got its answer (IEC 60870-5-2: FCB alternates
for each new SEND/CONFIRM or REQUEST/RESPOND service). When the answer does
not come within ``response_timeout`` the same bytes, with the same FCB, are sent again, up to
``retries`` times; a secondary seeing the same FCB twice repeats its last answer instead of
acting twice. When the retries are spent the link is down (LinkDown) and the machine starts over
with a status request every ``reconnect_interval``.

Unbalanced polling, once UP, in order of priority: our user data (commands; held back while the
secondary signals DFC = 1), class 1 when an answer had ACD = 1 (the outstation has events) or
``class1_interval`` elapsed, class 2 every ``class2_interval`` (at once again while class 2
answers carry data).

Secondary station (``UnbalancedSecondary``, and the secondary half of ``BalancedLink``): answers
each request of the primary; the answer is built when ``bytes_to_send()`` is called, so an
application that handles the UserData event first (e.g. queues its activation confirmation in
class 1) is reflected in the ACD bit of that very answer. The last answer to an FCV = 1 request
is kept; the same FCB again repeats it.

Balanced transmission (``BalancedLink``): both stations are primary and secondary at once over a
full-duplex line; frames carry DIR = 1 from the controlling station, 0 from the controlled one.
There is no class polling: each side sends its user data with SEND/CONFIRM, and the primary
half may send a link test (FC2) after ``test_interval`` of silence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from gateway.codecs.iec101.errors import LocalProtocolError
from gateway.codecs.iec101.ft12 import (
    FixedFrame,
    Frame,
    FT12Decoder,
    PrimaryControl,
    PrimaryFunction,
    SecondaryControl,
    SecondaryFunction,
    SingleCharacter,
    VariableFrame,
    encode_frame,
    max_user_data,
)

__all__ = [
    "BalancedLink",
    "DataRejected",
    "Event",
    "LinkDown",
    "LinkReset",
    "LinkState",
    "LinkUp",
    "ProcessReset",
    "UnbalancedPrimary",
    "UnbalancedSecondary",
    "UserData",
]

PF = PrimaryFunction
SF = SecondaryFunction


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The primary station reset the remote link: user data can flow."""


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The remote station stopped answering (or refused the link)."""

    reason: str


@dataclass(frozen=True, slots=True)
class UserData:
    """User data (an ASDU) received from the other station."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataRejected:
    """User data we sent was refused by the other station's link layer (FC14/FC15)."""

    data: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class LinkReset:
    """The other (primary) station reset our link (FC0)."""


@dataclass(frozen=True, slots=True)
class ProcessReset:
    """The other (primary) station asked to reset the user process (FC1)."""


Event = LinkUp | LinkDown | UserData | DataRejected | LinkReset | ProcessReset


class LinkState(StrEnum):
    """State of a primary station's link."""

    DOWN = "down"
    STARTING = "starting"  # status requested or reset sent, not yet acknowledged
    UP = "up"


_FCV = {PF.TEST_LINK, PF.USER_DATA_CONFIRMED, PF.REQUEST_CLASS_1, PF.REQUEST_CLASS_2}


class _Wire:
    """Shared output buffer, event queue, decoder and counters of one link end."""

    def __init__(self, address: int, address_size: int, dir_bit: bool) -> None:
        if address_size not in (0, 1, 2):
            raise LocalProtocolError(f"link address size must be 0, 1 or 2, not {address_size}")
        if not 0 <= address < (1 << (8 * address_size)) or (address_size == 0 and address):
            raise LocalProtocolError(f"link address {address} does not fit {address_size} octet(s)")
        self.address = address
        self.address_size = address_size
        self.dir = dir_bit
        self.broadcast = (1 << (8 * address_size)) - 1 if address_size else -1
        self.decoder = FT12Decoder(address_size)
        self.out = bytearray()
        self.events: deque[Event] = deque()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "frames_sent",
                "frames_received",
                "retries",
                "timeouts",
                "link_losses",
                "unexpected",
                "wrong_address",
                "repeats",
                "rejected",
            ),
            0,
        )

    def emit(self, ev: Event) -> None:
        self.events.append(ev)

    def write(self, frame: bytes) -> None:
        self.out += frame
        self.stats["frames_sent"] += 1

    def take(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def frames(self, data: bytes | bytearray) -> list[Frame]:
        self.decoder.receive_data(data)
        out = list(self.decoder)
        self.stats["frames_received"] += len(out)
        return out

    def for_us(self, address: int) -> bool:
        return self.address_size == 0 or address == self.address

    def counters(self) -> dict[str, int]:
        d = dict(self.stats)
        d["bad_frames"] = self.decoder.bad_frames
        d["garbage_bytes"] = self.decoder.garbage_bytes
        return d


@dataclass(slots=True)
class _Request:
    function: PrimaryFunction
    frame: bytes
    deadline: float
    data: bytes | None = None
    attempts: int = 1


class _Primary:
    """Transactions of a primary station: one request outstanding, FCB, retries, link state."""

    def __init__(
        self,
        wire: _Wire,
        *,
        response_timeout: float,
        retries: int,
        reconnect_interval: float,
        max_pending: int,
    ) -> None:
        if response_timeout <= 0 or retries < 0 or reconnect_interval <= 0 or max_pending < 1:
            raise LocalProtocolError("timeouts must be > 0, retries >= 0, max_pending >= 1")
        self.w = wire
        self.response_timeout = response_timeout
        self.retries = retries
        self.reconnect_interval = reconnect_interval
        self.max_pending = max_pending
        self.state = LinkState.DOWN
        self.fcb = True  # FCB of the next FCV=1 request
        self.dfc = False  # the secondary asked us to hold back user data
        self.out: _Request | None = None
        self.pending: deque[bytes] = deque()
        self.next_connect: float | None = None  # None: not started
        self.busy_until = 0.0

    # -- requests --

    def request(self, fn: PrimaryFunction, now: float, data: bytes | None = None) -> None:
        fcv = fn in _FCV
        control = PrimaryControl(fn, self.fcb if fcv else False, fcv, self.w.dir)
        if data is None:
            frame = encode_frame(FixedFrame(control, self.w.address), self.w.address_size)
        else:
            frame = encode_frame(VariableFrame(control, self.w.address, data), self.w.address_size)
        self.w.write(frame)
        self.out = _Request(fn, frame, now + self.response_timeout, data)

    def complete(self) -> _Request:
        req = self.out
        assert req is not None
        if req.function in _FCV:
            self.fcb = not self.fcb  # the transaction got its answer: next request is new
        self.out = None
        return req

    def queue(self, data: bytes) -> None:
        if self.state != LinkState.UP:
            raise LocalProtocolError("the link is not up: user data cannot be sent")
        if len(data) > max_user_data(self.w.address_size):
            raise LocalProtocolError(
                f"user data of {len(data)} octets does not fit a frame "
                f"(at most {max_user_data(self.w.address_size)})"
            )
        if len(self.pending) >= self.max_pending:
            raise LocalProtocolError(f"{self.max_pending} user data frames already waiting")
        self.pending.append(bytes(data))

    def start(self, now: float) -> None:
        if self.next_connect is None:
            self.next_connect = now

    def pump_connect(self, now: float) -> bool:
        """Start connecting if due; True if a request went out."""
        if (
            self.state == LinkState.DOWN
            and self.next_connect is not None
            and now >= self.next_connect
        ):
            self.state = LinkState.STARTING
            self.request(PF.REQUEST_LINK_STATUS, now)
            return True
        return False

    def pump_data(self, now: float) -> bool:
        if self.pending and not self.dfc and now >= self.busy_until:
            self.request(PF.USER_DATA_CONFIRMED, now, self.pending[0])
            return True
        return False

    def deadline(self) -> float | None:
        if self.out is not None:
            return self.out.deadline
        if self.state == LinkState.DOWN:
            return self.next_connect
        if self.state == LinkState.UP and self.pending and not self.dfc:
            return self.busy_until
        return None

    def check_timeout(self, now: float) -> None:
        req = self.out
        if req is None or now < req.deadline:
            return
        self.w.stats["timeouts"] += 1
        if req.attempts <= self.retries:
            # Same bytes, same FCB: the secondary repeats its answer if only the answer was lost.
            req.attempts += 1
            req.deadline = now + self.response_timeout
            self.w.stats["retries"] += 1
            self.w.decoder.discard()
            self.w.write(req.frame)
            return
        self.out = None
        was_up = self.state == LinkState.UP
        self.down(now, f"no answer to {req.function.name} after {req.attempts} attempt(s)", was_up)

    def down(self, now: float, reason: str, announce: bool) -> None:
        self.state = LinkState.DOWN
        self.out = None
        self.pending.clear()
        self.dfc = False
        self.next_connect = now + self.reconnect_interval
        if announce:
            self.w.stats["link_losses"] += 1
            self.w.emit(LinkDown(reason))

    def on_response(self, frame: Frame, now: float) -> SecondaryControl | None:
        """Handle connection and user-data answers; the control field of others is returned."""
        req = self.out
        if isinstance(frame, SingleCharacter):
            control = SecondaryControl(SF.ACK)
        else:
            assert isinstance(frame.control, SecondaryControl)
            control = frame.control
        if req is None:
            self.w.stats["unexpected"] += 1
            return None
        self.dfc = control.dfc
        fn = control.function
        if req.function == PF.REQUEST_LINK_STATUS:
            if fn != SF.LINK_STATUS:
                self.w.stats["unexpected"] += 1
                return None
            self.complete()
            # After the status answer the link is reset; the first FCV=1 frame then has FCB=1.
            self.request(PF.RESET_REMOTE_LINK, now)
            return None
        if req.function == PF.RESET_REMOTE_LINK:
            if fn == SF.ACK:
                self.complete()
                self.state = LinkState.UP
                self.fcb = True
                self.busy_until = 0.0
                self.w.emit(LinkUp())
                return control
            if fn == SF.NACK_BUSY or fn in (SF.LINK_NOT_FUNCTIONING, SF.LINK_NOT_IMPLEMENTED):
                self.complete()
                self.down(now, f"link reset refused ({fn!r})", announce=False)
                return None
            self.w.stats["unexpected"] += 1
            return None
        if req.function in (PF.USER_DATA_CONFIRMED, PF.TEST_LINK):
            if fn == SF.ACK:
                self.complete()
                if req.function == PF.USER_DATA_CONFIRMED and self.pending:
                    self.pending.popleft()
                return control
            if fn == SF.NACK_BUSY:
                # Not accepted, the station is busy: send it again after a while.
                self.complete()
                self.busy_until = now + self.response_timeout
                return control
            if fn in (SF.LINK_NOT_FUNCTIONING, SF.LINK_NOT_IMPLEMENTED):
                self.complete()
                self.w.stats["rejected"] += 1
                if req.function == PF.USER_DATA_CONFIRMED and self.pending:
                    self.w.emit(DataRejected(self.pending.popleft(), SF(fn).name))
                return control
            self.w.stats["unexpected"] += 1
            return None
        return control  # class 1/2 requests: the caller decides


class UnbalancedPrimary:
    """The controlling station of an unbalanced link: polls one secondary (link address)."""

    def __init__(
        self,
        address: int,
        *,
        address_size: int = 1,
        response_timeout: float = 1.0,
        retries: int = 2,
        class1_interval: float = 0.0,
        class2_interval: float = 1.0,
        reconnect_interval: float = 2.0,
        max_pending: int = 32,
    ) -> None:
        if address_size == 0:
            raise LocalProtocolError("unbalanced transmission needs a 1- or 2-octet link address")
        if class2_interval <= 0 or class1_interval < 0:
            raise LocalProtocolError("class 2 interval must be > 0, class 1 interval >= 0")
        self._w = _Wire(address, address_size, False)
        self._p = _Primary(
            self._w,
            response_timeout=response_timeout,
            retries=retries,
            reconnect_interval=reconnect_interval,
            max_pending=max_pending,
        )
        self.class1_interval = class1_interval
        self.class2_interval = class2_interval
        self._want1 = False
        self._next1 = 0.0
        self._next2 = 0.0

    # -- state --

    @property
    def state(self) -> LinkState:
        """DOWN, STARTING or UP."""
        return self._p.state

    @property
    def address(self) -> int:
        """Link address of the secondary station."""
        return self._w.address

    @property
    def pending(self) -> int:
        """User data frames waiting to be sent (the one in flight included)."""
        return len(self._p.pending)

    def counters(self) -> dict[str, int]:
        """Frames, retries, timeouts, bad frames, ..."""
        return self._w.counters()

    @property
    def deadline(self) -> float | None:
        """When timeout(now) must be called next (None: nothing to wait for)."""
        d = self._p.deadline()
        if self._p.out is None and self._p.state == LinkState.UP:
            polls = [self._next2]
            if self._want1:
                polls.append(0.0)
            elif self.class1_interval > 0:
                polls.append(self._next1)
            d = min(polls) if d is None else min(d, *polls)
        return d

    # -- inputs --

    def start(self, now: float) -> None:
        """Begin: request the link status, reset the link, then poll."""
        self._p.start(now)
        self._pump(now)

    def send(self, data: bytes, now: float) -> None:
        """Queue user data (an ASDU) for SEND/CONFIRM; LocalProtocolError if the link is down."""
        self._p.queue(data)
        self._pump(now)

    def poll_class1(self, now: float) -> None:
        """Request class 1 data at the next free slot."""
        self._want1 = True
        self._pump(now)

    def poll_class2(self, now: float) -> None:
        """Request class 2 data at the next free slot."""
        self._next2 = now
        self._pump(now)

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Bytes from the line."""
        for frame in self._w.frames(data):
            self._on_frame(frame, now)
        self._pump(now)

    def timeout(self, now: float) -> None:
        """Time has passed: retry or give up on the outstanding request, start due polls."""
        self._p.check_timeout(now)
        self._pump(now)

    # -- outputs --

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._w.events.popleft() if self._w.events else None

    def bytes_to_send(self) -> bytes:
        """Frames to put on the line now."""
        return self._w.take()

    # -- internals --

    def _on_frame(self, frame: Frame, now: float) -> None:
        w = self._w
        if not isinstance(frame, SingleCharacter):
            if isinstance(frame.control, PrimaryControl):
                w.stats["unexpected"] += 1  # another primary (or our own echo on a bus)
                return
            if not w.for_us(frame.address):
                w.stats["wrong_address"] += 1
                return
        p = self._p
        req = p.out
        control = p.on_response(frame, now)
        if control is None or req is None:
            return
        if req.function in (PF.REQUEST_CLASS_1, PF.REQUEST_CLASS_2):
            fn = control.function
            if fn == SF.USER_DATA and isinstance(frame, VariableFrame):
                p.complete()
                w.emit(UserData(frame.data))
                if req.function == PF.REQUEST_CLASS_2:
                    self._next2 = now  # more class 2 data may be waiting
            elif fn in (SF.NACK_NO_DATA, SF.ACK):  # E5 stands for "no data" here too
                p.complete()
            elif fn in (SF.LINK_NOT_FUNCTIONING, SF.LINK_NOT_IMPLEMENTED):
                p.complete()
                w.stats["rejected"] += 1
            else:
                w.stats["unexpected"] += 1
                return
        if control.acd:
            self._want1 = True
        if p.state == LinkState.UP and req.function == PF.RESET_REMOTE_LINK:
            # Fresh link: ask for class 1 at once (end of initialisation, events) and class 2.
            self._want1 = True
            self._next2 = now

    def _pump(self, now: float) -> None:
        p = self._p
        if p.out is not None:
            return
        if p.pump_connect(now):
            return
        if p.state != LinkState.UP:
            return
        if p.pump_data(now):
            return
        if self._want1 or (self.class1_interval > 0 and now >= self._next1):
            self._want1 = False
            self._next1 = now + self.class1_interval
            p.request(PF.REQUEST_CLASS_1, now)
        elif now >= self._next2:
            self._next2 = now + self.class2_interval
            p.request(PF.REQUEST_CLASS_2, now)


@dataclass(slots=True)
class _Incoming:
    """A request waiting for its answer (built in bytes_to_send)."""

    function: int
    fcv: bool
    data_ok: bool  # a variable frame where one is needed


class _Secondary:
    """Answers of a secondary station: FCB check, repetition of the last answer."""

    def __init__(self, wire: _Wire, *, single_char_ack: bool) -> None:
        self.w = wire
        self.single_char_ack = single_char_ack
        self.last_fcb: bool | None = None
        self.last_answer: bytes | None = None
        self.waiting: list[_Incoming] = []
        self.busy = False  # DFC: set by the application to hold back the primary's user data

    def on_request(self, frame: FixedFrame | VariableFrame, broadcast: bool) -> bool:
        """Register a request; True if it is new (not a repetition)."""
        control = frame.control
        assert isinstance(control, PrimaryControl)
        fn = control.function
        if broadcast:
            # Broadcast: SEND/NO REPLY only (IEC 60870-5-2: a broadcast is never answered).
            if fn == PF.USER_DATA_NO_REPLY and isinstance(frame, VariableFrame):
                self.w.emit(UserData(frame.data))
            return False
        if control.fcv:
            if control.fcb == self.last_fcb and self.last_answer is not None:
                # Same FCB as the last accepted request: the answer was lost, repeat it.
                self.w.stats["repeats"] += 1
                self.w.write(self.last_answer)
                return False
            self.last_fcb = control.fcb
        if fn == PF.RESET_REMOTE_LINK:
            # After a reset the next FCV=1 request carries FCB=1.
            self.last_fcb = False
            self.last_answer = None
            self.w.emit(LinkReset())
        elif fn == PF.RESET_USER_PROCESS:
            self.w.emit(ProcessReset())
        elif fn in (PF.USER_DATA_CONFIRMED, PF.USER_DATA_NO_REPLY):
            if isinstance(frame, VariableFrame):
                self.w.emit(UserData(frame.data))
            if fn == PF.USER_DATA_NO_REPLY:
                return True
        self.waiting.append(_Incoming(fn, control.fcv, isinstance(frame, VariableFrame)))
        return True

    def answer(
        self, inc: _Incoming, acd: bool, data: bytes | None = None, no_data: bool = False
    ) -> None:
        w = self.w
        fn = inc.function
        if data is not None:
            control = SecondaryControl(SF.USER_DATA, acd, self.busy, w.dir)
            frame = encode_frame(VariableFrame(control, w.address, data), w.address_size)
        else:
            if no_data:
                code = SF.NACK_NO_DATA
            elif fn in (PF.REQUEST_LINK_STATUS, PF.REQUEST_ACCESS_DEMAND):
                code = SF.LINK_STATUS
            elif fn in (PF.RESET_REMOTE_LINK, PF.RESET_USER_PROCESS, PF.TEST_LINK) or (
                fn == PF.USER_DATA_CONFIRMED and inc.data_ok
            ):
                code = SF.ACK
            else:
                code = SF.LINK_NOT_IMPLEMENTED
            if (
                self.single_char_ack
                and code in (SF.ACK, SF.NACK_NO_DATA)
                and not acd
                and not self.busy
            ):
                frame = b"\xe5"  # IEC 60870-5-101: E5 may replace ACK and NACK (no data)
            else:
                control = SecondaryControl(code, acd, self.busy, w.dir)
                frame = encode_frame(FixedFrame(control, w.address), w.address_size)
        w.write(frame)
        if inc.fcv:
            self.last_answer = frame


class UnbalancedSecondary:
    """The controlled station of an unbalanced link: answers polls from class 1 / class 2 queues."""

    def __init__(
        self,
        address: int,
        *,
        address_size: int = 1,
        single_char_ack: bool = False,
        max_queue: int = 4096,
    ) -> None:
        if address_size == 0:
            raise LocalProtocolError("unbalanced transmission needs a 1- or 2-octet link address")
        self._w = _Wire(address, address_size, False)
        self._s = _Secondary(self._w, single_char_ack=single_char_ack)
        self.max_queue = max_queue
        self.class1: deque[bytes] = deque()
        self.class2: deque[bytes] = deque()
        self.dropped = 0  # user data dropped because a queue was full

    @property
    def address(self) -> int:
        """Our link address."""
        return self._w.address

    @property
    def busy(self) -> bool:
        """DFC bit sent in our answers."""
        return self._s.busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._s.busy = value

    def counters(self) -> dict[str, int]:
        """Frames, repeats, bad frames, ..."""
        d = self._w.counters()
        d["dropped"] = self.dropped
        return d

    def queue_class1(self, data: bytes) -> bool:
        """Queue an ASDU as class 1 data (events, confirmations); False if the queue is full."""
        return self._queue(self.class1, data)

    def queue_class2(self, data: bytes) -> bool:
        """Queue an ASDU as class 2 data (cyclic values); False if the queue is full."""
        return self._queue(self.class2, data)

    def _queue(self, q: deque[bytes], data: bytes) -> bool:
        if len(data) > max_user_data(self._w.address_size):
            raise LocalProtocolError(f"user data of {len(data)} octets does not fit a frame")
        if len(q) >= self.max_queue:
            self.dropped += 1
            return False
        q.append(bytes(data))
        return True

    def receive_data(self, data: bytes | bytearray, now: float = 0.0) -> None:
        """Bytes from the line (now is unused: a secondary only answers)."""
        w = self._w
        for frame in w.frames(data):
            if isinstance(frame, SingleCharacter) or isinstance(frame.control, SecondaryControl):
                w.stats["unexpected"] += 1
                continue
            broadcast = frame.address == w.broadcast
            if not broadcast and not w.for_us(frame.address):
                w.stats["wrong_address"] += 1
                continue
            self._s.on_request(frame, broadcast)

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._w.events.popleft() if self._w.events else None

    def bytes_to_send(self) -> bytes:
        """Answers to the requests received so far, built with the queues as they are now."""
        s = self._s
        for inc in s.waiting:
            fn = inc.function
            if fn == PF.REQUEST_CLASS_1:
                if self.class1:
                    data = self.class1.popleft()
                    s.answer(inc, bool(self.class1), data)
                else:
                    s.answer(inc, False, no_data=True)
            elif fn == PF.REQUEST_CLASS_2:
                if self.class2:
                    s.answer(inc, bool(self.class1), self.class2.popleft())
                else:
                    s.answer(inc, bool(self.class1), no_data=True)
            else:
                s.answer(inc, bool(self.class1))
        s.waiting.clear()
        return self._w.take()


class BalancedLink:
    """One station of a balanced link: primary (our sends) and secondary (the peer's) at once."""

    def __init__(
        self,
        address: int,
        *,
        address_size: int = 1,
        controlling: bool,
        response_timeout: float = 1.0,
        retries: int = 2,
        reconnect_interval: float = 2.0,
        test_interval: float = 0.0,
        single_char_ack: bool = False,
        max_pending: int = 256,
    ) -> None:
        self._w = _Wire(address, address_size, controlling)
        self._p = _Primary(
            self._w,
            response_timeout=response_timeout,
            retries=retries,
            reconnect_interval=reconnect_interval,
            max_pending=max_pending,
        )
        self._s = _Secondary(self._w, single_char_ack=single_char_ack)
        self.test_interval = test_interval
        self._last_activity = 0.0

    @property
    def state(self) -> LinkState:
        """State of our primary direction."""
        return self._p.state

    @property
    def controlling(self) -> bool:
        """True for station A (DIR = 1 in its frames)."""
        return self._w.dir

    @property
    def pending(self) -> int:
        """User data frames waiting to be sent."""
        return len(self._p.pending)

    def counters(self) -> dict[str, int]:
        """Frames, retries, timeouts, bad frames, ..."""
        return self._w.counters()

    @property
    def deadline(self) -> float | None:
        """When timeout(now) must be called next."""
        d = self._p.deadline()
        if (
            self.test_interval > 0
            and self._p.out is None
            and self._p.state == LinkState.UP
            and not self._p.pending
        ):
            t = self._last_activity + self.test_interval
            d = t if d is None else min(d, t)
        return d

    def start(self, now: float) -> None:
        """Begin: request the peer's link status and reset its link."""
        self._last_activity = now
        self._p.start(now)
        self._pump(now)

    def send(self, data: bytes, now: float) -> None:
        """Queue user data (an ASDU) for SEND/CONFIRM; LocalProtocolError if the link is down."""
        self._p.queue(data)
        self._pump(now)

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Bytes from the line."""
        w = self._w
        for frame in w.frames(data):
            self._last_activity = now
            if isinstance(frame, SingleCharacter):
                self._p.on_response(frame, now)
                continue
            if frame.control.dir == w.dir:
                w.stats["unexpected"] += 1  # our own frame (echo), or a misconfigured peer
                continue
            if not w.for_us(frame.address):
                w.stats["wrong_address"] += 1
                continue
            if isinstance(frame.control, PrimaryControl):
                self._s.on_request(frame, False)
            else:
                self._p.on_response(frame, now)
        self._pump(now)

    def timeout(self, now: float) -> None:
        """Time has passed: retry or give up, send a link test when idle."""
        self._p.check_timeout(now)
        self._pump(now)

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._w.events.popleft() if self._w.events else None

    def bytes_to_send(self) -> bytes:
        """Answers to the peer's requests and our own requests, to put on the line now."""
        s = self._s
        for inc in s.waiting:
            s.answer(inc, False)
        s.waiting.clear()
        return self._w.take()

    def _pump(self, now: float) -> None:
        p = self._p
        if p.out is not None:
            return
        if p.pump_connect(now):
            return
        if p.state != LinkState.UP:
            return
        if p.pump_data(now):
            self._last_activity = now
            return
        if self.test_interval > 0 and now >= self._last_activity + self.test_interval:
            self._last_activity = now
            p.request(PF.TEST_LINK, now)
