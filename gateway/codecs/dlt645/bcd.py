"""BCD helpers: numbers, digit strings and meter addresses, least significant byte first."""

from __future__ import annotations

from gateway.codecs.dlt645.errors import DecodeError, LocalProtocolError

__all__ = [
    "BROADCAST",
    "WILDCARD",
    "address_matches",
    "bcd_digits",
    "decode_address",
    "digits_to_bcd",
    "encode_address",
    "is_wildcard",
]

BROADCAST = "999999999999"
"""The broadcast address (DL/T 645-2007 4.3.2: 999999999999H); meters do not answer it."""
WILDCARD = "AAAAAAAAAAAA"
"""The all-wildcard address (AAH in every byte), used to read the address of a lone meter."""

_DIGIT = frozenset("0123456789")


def bcd_digits(data: bytes, offset: int = 0, what: str = "BCD") -> str:
    """Digits of BCD bytes sent least significant first, most significant digit first."""
    digits = data[::-1].hex()
    if digits.isdigit() or not data:  # fast path: every nibble 0..9
        return digits
    out = []
    for i in range(len(data) - 1, -1, -1):
        b = data[i]
        if b >> 4 > 9 or b & 0x0F > 9:
            raise DecodeError(f"{what} byte 0x{b:02X} is not BCD", offset + i)
        out.append(f"{b:02X}")
    return "".join(out)


def digits_to_bcd(digits: str, what: str = "BCD digits") -> bytes:
    """BCD bytes, least significant first, of an even-length decimal digit string."""
    if len(digits) % 2 or not set(digits) <= _DIGIT:
        raise LocalProtocolError(f"{what} {digits!r}: need an even number of decimal digits")
    return bytes(int(digits[i : i + 2], 16) for i in range(len(digits) - 2, -1, -2))


def decode_address(raw: bytes, offset: int = 0) -> str:
    """A 6-byte address field (A0 first) as 12 characters, most significant first.

    DL/T 645-2007 4.3.2: each byte holds two BCD digits; AAH is the wildcard byte (缩位寻址).
    """
    text = raw[5::-1].hex()
    if text.isdigit():  # fast path: a plain BCD address
        return text
    out = []
    for i in range(5, -1, -1):
        b = raw[i]
        if b == 0xAA:
            out.append("AA")
        elif b >> 4 > 9 or b & 0x0F > 9:
            raise DecodeError(f"address byte A{i} = 0x{b:02X} is neither BCD nor AAH", offset + i)
        else:
            out.append(f"{b:02X}")
    return "".join(out)


def encode_address(address: str) -> bytes:
    """The 6 address bytes (A0 first) of a 12-character address ('000000000001', 'AAAAAA123456')."""
    if len(address) != 12:
        raise LocalProtocolError(f"address {address!r} must have 12 characters")
    out = bytearray()
    for i in range(10, -1, -2):
        pair = address[i : i + 2]
        if pair == "AA":
            out.append(0xAA)
        elif pair[0] in _DIGIT and pair[1] in _DIGIT:
            out.append(int(pair, 16))
        else:
            raise LocalProtocolError(
                f"address {address!r}: {pair!r} is neither two decimal digits nor the wildcard AA"
            )
    return bytes(out)


def is_wildcard(address: str) -> bool:
    """True for addresses that more than one meter may answer (contain AA)."""
    return "AA" in address


def address_matches(pattern: str, address: str) -> bool:
    """True when a meter with `address` is addressed by `pattern` (exact, wildcard bytes AA)."""
    if pattern == address:
        return True
    return all(p == "AA" or p == a for p, a in zip(_pairs(pattern), _pairs(address), strict=True))


def _pairs(s: str) -> list[str]:
    return [s[i : i + 2] for i in range(0, 12, 2)]
