"""RTCP (RFC 3550 section 6): our sender reports out, a tolerant read of what peers send.

Peers send compound packets of SR, RR, SDES, BYE, APP and newer types (XR, feedback); we read
SR, RR and BYE and step over the rest by their length field. A malformed header or a length
that runs past the datagram raises RtcpError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SR, RR, SDES, BYE = 200, 201, 202, 203
NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from 1900-01-01 (NTP era 0) to 1970-01-01."""

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP timestamp, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")


class RtcpError(ValueError):
    """A datagram that is not well-formed RTCP."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    """Out of 256, since the previous report."""
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str = ""


RtcpPacket = SenderReport | ReceiverReport | Bye


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp: seconds since 1900 in the high word, the fraction in the low one."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | fraction


def build_sender_report(
    ssrc: int,
    *,
    unix_time: float,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    cname: str | None = None,
) -> bytes:
    """An SR with no report blocks, compounded with an SDES CNAME when `cname` is given."""
    info = _SENDER_INFO.pack(
        ssrc,
        ntp_timestamp(unix_time),
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    )
    packet = _header(0, SR, info) + info
    if cname is None:
        return packet
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return packet + _header(1, SDES, chunk) + chunk


def build_bye(ssrc: int) -> bytes:
    body = struct.pack("!I", ssrc)
    return _header(1, BYE, body) + body


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """The SR, RR and BYE packets of a compound RTCP datagram, in order."""
    if len(data) < _HEADER.size:
        raise RtcpError(f"{len(data)} bytes is shorter than an RTCP header")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise RtcpError("trailing bytes after the last RTCP packet")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtcpError("RTCP packet length runs past the datagram")
        body = data[offset + 4 : end]
        if first & 0x20:  # padding: its last byte counts the padding bytes
            if not body or not 0 < body[-1] <= len(body):
                raise RtcpError("bad RTCP padding count")
            body = body[: -body[-1]]
        parsed = _parse_one(packet_type, first & 0x1F, body)
        if parsed is not None:
            packets.append(parsed)
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type == SR:
        if len(body) < _SENDER_INFO.size:
            raise RtcpError("sender report shorter than its sender info")
        ssrc, ntp, rtp, packets, octets = _SENDER_INFO.unpack_from(body)
        reports = _blocks(body, _SENDER_INFO.size, count)
        return SenderReport(ssrc, ntp, rtp, packets, octets, reports)
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpError("receiver report without an SSRC")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _blocks(body, 4, count))
    if packet_type == BYE:
        if len(body) < 4 * count:
            raise RtcpError("BYE shorter than its SSRC list")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        rest = body[4 * count :]
        reason = rest[1 : 1 + rest[0]].decode("utf-8", "replace") if rest else ""
        return Bye(ssrcs, reason)
    return None


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + count * _BLOCK.size:
        raise RtcpError("report blocks run past the packet")
    blocks = []
    for n in range(count):
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, offset + n * _BLOCK.size)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:  # a signed 24-bit count (duplicates can make it negative)
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)
