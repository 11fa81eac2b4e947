"""A sans-IO DL/T 698.45 link endpoint: bytes in, events out; APDUs in, frames out.

Theory of operation: receive_data() feeds a FrameDecoder; next_event() turns each frame into an
event. An unfragmented frame's payload is decoded as an APDU (ApduReceived, or ApduRejected with
the typed error). A data fragment goes to the reassembler of its peer (server address, client
address, direction); a first or middle fragment yields FragmentReceived carrying the
confirmation frame the caller must send back (DL/T 698.45-2017 5.4: the receiver confirms each
fragment before the sender sends the next), and the last one yields ApduReceived for the whole
APDU. A confirmation yields FragmentAcked, which tells a sender to send its next fragment.
Frames with bad checks come out as BadFrame. Like h11, the caller does all I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codecs.dlt698.apdu import Apdu, decode_apdu, encode_apdu
from gateway.codecs.dlt698.errors import DecodeError, EncodeError
from gateway.codecs.dlt698.frame import (
    MAX_FRAME,
    NEED_DATA,
    BadFrame,
    Direction,
    Fragment,
    FragmentType,
    Frame,
    FrameDecoder,
    NeedData,
    Reassembler,
    ServerAddress,
    encode_frame,
    split_apdu,
)

__all__ = [
    "ApduReceived",
    "ApduRejected",
    "Event",
    "FragmentAcked",
    "FragmentReceived",
    "Link",
    "frames_for",
]
_ = NEED_DATA  # re-exported for callers of next_event()


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU: `frame` is its (last) frame, with the reassembled APDU as payload."""

    frame: Frame
    apdu: Apdu


@dataclass(frozen=True, slots=True)
class FragmentReceived:
    """A first or middle fragment arrived; send `ack` back so the peer sends the next."""

    frame: Frame
    ack: bytes


@dataclass(frozen=True, slots=True)
class FragmentAcked:
    """The peer confirmed fragment `frame.fragment.seq`; send the next fragment."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class ApduRejected:
    """A good frame whose APDU (or fragment sequence) is wrong; counted and dropped."""

    frame: Frame
    error: DecodeError


Event = ApduReceived | FragmentReceived | FragmentAcked | ApduRejected | BadFrame

_OVERHEAD = 13  # 68 L L C AF CA HCS(2) word(2) FCS(2) 16, plus the server address


def frames_for(
    apdu: Apdu | bytes,
    server: ServerAddress,
    client: int,
    *,
    direction: Direction = Direction.CLIENT,
    prm: int = 1,
    max_frame: int = MAX_FRAME,
    scrambled: bool = False,
) -> list[bytes]:
    """The frame(s) carrying an APDU: one frame, or fragments when it exceeds max_frame."""
    payload = apdu if isinstance(apdu, bytes) else encode_apdu(apdu)
    one = Frame(server, client, payload, direction, prm, scrambled=scrambled)
    if len(payload) + _OVERHEAD - 2 + len(server.address) <= max_frame:
        return [encode_frame(one)]
    room = max_frame - _OVERHEAD - len(server.address)
    if room < 1:
        raise EncodeError(f"max_frame {max_frame} leaves no room for data")
    return [
        encode_frame(Frame(server, client, part, direction, prm, scrambled=scrambled, fragment=f))
        for f, part in split_apdu(payload, room)
    ]


@dataclass
class Link:
    """One end of a DL/T 698.45 link (client or server), without I/O."""

    max_frame: int = MAX_FRAME
    max_apdu: int = 65536
    apdus: int = 0
    rejected: int = 0
    decoder: FrameDecoder = field(init=False)
    _reassembly: dict[tuple[bytes, int, int], Reassembler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(max_frame=self.max_frame)

    def receive_data(self, data: bytes) -> None:
        """Add received bytes."""
        self.decoder.receive_data(data)

    def reset(self) -> None:
        """Forget partial frames and fragments (after a reconnect)."""
        self.decoder.reset()
        self._reassembly.clear()

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA."""
        got = self.decoder.next_event()
        if not isinstance(got, Frame):
            return got
        frame = got
        frag = frame.fragment
        if frag is None:
            return self._apdu(frame, frame.payload)
        if frag.type == FragmentType.ACK:
            return FragmentAcked(frame)
        key = (frame.server.address, frame.client, int(frame.direction))
        ra = self._reassembly.get(key)
        if ra is None:
            if len(self._reassembly) >= 64:  # bounded: one transfer per peer, few peers
                self._reassembly.clear()
            ra = self._reassembly[key] = Reassembler(self.max_apdu)
        try:
            whole = ra.feed(frame)
        except DecodeError as e:
            self.rejected += 1
            return ApduRejected(frame, e)
        if whole is None:
            ack = Frame(
                frame.server,
                frame.client,
                b"",
                Direction(1 - int(frame.direction)),
                frame.prm,
                frame.function,
                fragment=Fragment(frag.seq, FragmentType.ACK),
            )
            return FragmentReceived(frame, encode_frame(ack))
        del self._reassembly[key]
        return self._apdu(frame, whole)

    def _apdu(self, frame: Frame, payload: bytes) -> ApduReceived | ApduRejected:
        try:
            apdu = decode_apdu(payload)
        except DecodeError as e:
            self.rejected += 1
            return ApduRejected(frame, e)
        self.apdus += 1
        if payload is not frame.payload:
            frame = Frame(
                frame.server,
                frame.client,
                payload,
                frame.direction,
                frame.prm,
                frame.function,
                frame.scrambled,
                frame.fragment,
            )
        return ApduReceived(frame, apdu)
