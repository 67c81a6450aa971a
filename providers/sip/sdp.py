"""SDP (RFC 4566) for a G.711 voice endpoint: parse an offer, choose a codec the RFC 3264 way,
and build our own offer or answer.

Only what an audio call needs is kept (connection, media lines, rtpmap, fmtp, ptime,
direction); other lines are read past. Anything malformed raises SdpError, which the SIP layer
answers with 400 or 488.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_SDP_BYTES = 65535
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
G711 = {0: "PCMU", 8: "PCMA"}
"""Static payload types (RFC 3551) that mean a G.711 codec without an rtpmap."""
RTP_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP",
                        "UDP/TLS/RTP/SAVPF"})  # fmt: skip

_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}  # fmt: skip
_ADDRESS = re.compile(r"[A-Za-z0-9\-._:]+")
_ENCODING = re.compile(r"[A-Za-z0-9\-._+]+")
_RTPMAP = re.compile(r"(\d{1,3})\s+([^/\s]+)/(\d{1,6})(?:/(\d{1,2}))?")
_FMTP = re.compile(r"(\d{1,3})\s+(.*)", re.DOTALL)
_PTIME = re.compile(r"(\d{1,4})(?:\.\d{1,3})?")


class SdpError(ValueError):
    """Malformed or unusable SDP; str() says what."""


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    connection: str | None = None
    ptime: int | None = None


@dataclass
class SessionDescription:
    origin_session: str
    origin_version: int
    connection: str | None
    direction: str | None
    media: list[MediaDescription]


def parse_sdp(body: bytes) -> SessionDescription:
    if len(body) > MAX_SDP_BYTES:
        raise SdpError(f"SDP of {len(body)} bytes is too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    session = SessionDescription("", -1, None, None, [])
    for line in lines[1:]:
        kind, value = _split_line(line)
        current = session.media[-1] if session.media else None
        if kind == "o":
            session.origin_session, session.origin_version = _parse_origin(value)
        elif kind == "m":
            session.media.append(_parse_media(value))
        elif kind == "c":
            address = _parse_connection(value)
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "a":
            _parse_attribute(value, session if current is None else current)
    if session.origin_version < 0:
        raise SdpError("SDP without an o= line")
    return session


def _split_line(line: str) -> tuple[str, str]:
    if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
        raise SdpError(f"bad SDP line {line[:40]!r}")
    return line[0], line[2:]


def _parse_origin(value: str) -> tuple[str, int]:
    parts = value.split()
    if len(parts) != 6 or not parts[2].isascii() or not parts[2].isdigit() or len(parts[2]) > 20:
        raise SdpError(f"bad o= line {value[:60]!r}")
    return parts[1], int(parts[2])


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:60]!r}")
    address = parts[2].split("/", 1)[0]  # multicast TTL / count
    if _ADDRESS.fullmatch(address) is None:
        raise SdpError(f"bad connection address {address[:60]!r}")
    return address


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line {value[:60]!r}")
    media, port_text, proto, *formats = parts
    port = _number(port_text.split("/", 1)[0], 65535)  # port/count
    if port is None:
        raise SdpError(f"bad port in m= line {value[:60]!r}")
    if proto not in RTP_PROTOS:
        return MediaDescription(media, port, proto, [])
    payload_types = [pt for f in formats if (pt := _number(f, 127)) is not None]
    if not formats or len(payload_types) != len(formats):
        raise SdpError(f"bad RTP payload types in m= line {value[:60]!r}")
    return MediaDescription(media, port, proto, payload_types)


def _number(text: str, maximum: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= maximum else None


def _parse_attribute(value: str, target: SessionDescription | MediaDescription) -> None:
    name, _, arg = value.partition(":")
    if name in DIRECTIONS:
        target.direction = name
    elif not isinstance(target, MediaDescription):
        return
    elif name == "rtpmap":
        match = _RTPMAP.fullmatch(arg.strip())
        if match is None or int(match.group(1)) > 127:
            raise SdpError(f"bad rtpmap {arg[:60]!r}")
        target.rtpmap[int(match.group(1))] = (match.group(2), int(match.group(3)))
    elif name == "fmtp":
        match = _FMTP.fullmatch(arg.strip())
        if match is None or int(match.group(1)) > 127:
            raise SdpError(f"bad fmtp {arg[:60]!r}")
        target.fmtp[int(match.group(1))] = match.group(2).strip()
    elif name == "ptime":
        match = _PTIME.fullmatch(arg.strip())
        if match is None or not 0 < int(match.group(1)) <= 1000:
            raise SdpError(f"bad ptime {arg[:60]!r}")
        target.ptime = int(match.group(1))


@dataclass(frozen=True)
class Negotiated:
    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    direction: str
    """Our direction: the mirror of the peer's (RFC 3264 6.1)."""
    ptime: int


def negotiate(offer: SessionDescription, preferred: Sequence[str] = ("PCMU", "PCMA")) -> Negotiated:
    """The first RTP/AVP audio stream with a codec from `preferred` (tried in that order).

    SdpError if there is none (the caller answers 488). A stream on hold the RFC 2543 way
    (c=0.0.0.0) or disabled (port 0) negotiates as inactive.
    """
    for media in offer.media:
        if media.media != "audio" or media.proto != "RTP/AVP":
            continue
        chosen = _choose_codec(media, preferred)
        if chosen is None:
            continue
        host = media.connection or offer.connection
        if host is None:
            raise SdpError("audio stream without a connection address")
        peer = media.direction or offer.direction or "sendrecv"
        on_hold = media.port == 0 or host in ("0.0.0.0", "::")
        return Negotiated(
            codec=chosen[1],
            payload_type=chosen[0],
            dtmf_payload_type=_dtmf_payload_type(media),
            remote_host=host,
            remote_port=media.port,
            direction="inactive" if on_hold else _MIRROR[peer],
            ptime=media.ptime or 20,
        )
    raise SdpError("no RTP/AVP audio stream offers " + "/".join(preferred))


def _encoding(media: MediaDescription, payload_type: int) -> tuple[str, int] | None:
    """(upper-case name, clock rate) of a payload type, from rtpmap or the static table."""
    mapped = media.rtpmap.get(payload_type)
    if mapped is not None:
        return mapped[0].upper(), mapped[1]
    static = G711.get(payload_type)
    return (static, 8000) if static else None


def _choose_codec(media: MediaDescription, preferred: Sequence[str]) -> tuple[int, str] | None:
    for codec in preferred:
        for payload_type in media.formats:
            if _encoding(media, payload_type) == (codec.upper(), 8000):
                return payload_type, codec.upper()
    return None


def _dtmf_payload_type(media: MediaDescription) -> int | None:
    return next(
        (pt for pt in media.formats if _encoding(media, pt) == ("TELEPHONE-EVENT", 8000)), None
    )


def build_sdp(
    *,
    host: str,
    port: int,
    session_id: int,
    version: int,
    codecs: Sequence[tuple[int, str]],
    dtmf_payload_type: int | None,
    direction: str = "sendrecv",
    ptime: int = 20,
) -> bytes:
    """Our SDP, offer or answer alike: one audio stream, G.711 at 8 kHz, optional
    telephone-event (events 0-16), ptime and direction."""
    if _ADDRESS.fullmatch(host) is None or not 0 <= port <= 65535 or direction not in DIRECTIONS:
        raise SdpError(f"bad SDP parameters host={host!r} port={port} direction={direction!r}")
    if not codecs:
        raise SdpError("no codecs to offer")
    payload_types = [pt for pt, _ in codecs]
    if dtmf_payload_type is not None:
        payload_types.append(dtmf_payload_type)
    if any(not 0 <= pt <= 127 for pt in payload_types) or len(set(payload_types)) != len(
        payload_types
    ):
        raise SdpError(f"bad payload types {payload_types}")
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {family} {host}",
        "s=callgate",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, payload_types))}",
    ]
    for pt, name in codecs:
        if _ENCODING.fullmatch(name) is None:
            raise SdpError(f"bad codec name {name!r}")
        lines.append(f"a=rtpmap:{pt} {name}/8000")
    if dtmf_payload_type is not None:
        lines += [f"a=rtpmap:{dtmf_payload_type} telephone-event/8000",
                  f"a=fmtp:{dtmf_payload_type} 0-16"]  # fmt: skip
    lines += [f"a=ptime:{ptime}", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()
