"""The secure channel between the platform and edge terminals / DER agents, as a sans-IO codec.

Hand-written: no maintained library offers a channel on SM2/SM3/SM4 with certificates (TLCP,
GB/T 38636, exists in Tongsuo/GmSSL builds that install here only with their own OpenSSL fork).
Mutual authentication with the platform CA's certificates (security.identity), session keys from
the SM2 key exchange with key confirmation (GB/T 32918.3), every record SM4-GCM with its header
(sequence number, timestamp, epoch, type) as additional data, a replay window, a clock-skew
limit, periodic re-keying, and signed commands checked by security.command_signing before
delivery. Pure: no sockets, no asyncio; gateway/transports/secure.py moves the bytes.

Layers:
- record.py: the 24-byte record header and the stream framing (RecordDecoder).
- messages.py: handshake messages and alerts.
- events.py: the closed set of frozen events and NEED_DATA.
- connection.py: SecureConnection (CLIENT / SERVER), its handshake and record checks.
- errors.py: LocalProtocolError, RemoteProtocolError, RecordFormatError, TooManyRefused,
  HandshakeError / PeerRefusedHandshake with a HandshakeFailure reason.
"""

from gateway.codecs.secure.connection import (
    REFUSAL_REASONS,
    ChannelConfig,
    Credentials,
    SecureConnection,
    Side,
    State,
)
from gateway.codecs.secure.errors import (
    HandshakeError,
    HandshakeFailure,
    LocalProtocolError,
    PeerRefusedHandshake,
    RecordFormatError,
    RemoteProtocolError,
    SecureChannelError,
    TooManyRefused,
)
from gateway.codecs.secure.events import (
    NEED_DATA,
    CommandReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    KeyUpdated,
    NeedData,
)
from gateway.codecs.secure.messages import (
    Alert,
    ClientFinished,
    ClientHello,
    ServerHello,
    decode_alert,
    decode_handshake,
)
from gateway.codecs.secure.record import (
    HEADER_SIZE,
    ContentType,
    Record,
    RecordDecoder,
    encode_record,
)

__all__ = [
    "HEADER_SIZE",
    "NEED_DATA",
    "REFUSAL_REASONS",
    "Alert",
    "ChannelConfig",
    "ClientFinished",
    "ClientHello",
    "CommandReceived",
    "ConnectionClosed",
    "ContentType",
    "Credentials",
    "DataReceived",
    "Event",
    "HandshakeComplete",
    "HandshakeError",
    "HandshakeFailure",
    "KeyUpdated",
    "LocalProtocolError",
    "NeedData",
    "PeerRefusedHandshake",
    "Record",
    "RecordDecoder",
    "RecordFormatError",
    "RemoteProtocolError",
    "SecureChannelError",
    "SecureConnection",
    "ServerHello",
    "Side",
    "State",
    "TooManyRefused",
    "decode_alert",
    "decode_handshake",
    "encode_record",
]
