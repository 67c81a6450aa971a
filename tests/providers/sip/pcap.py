"""Reads the UDP payloads of a libpcap capture (Ethernet, IPv4), as sipp's shipped pcaps are.

The format: a 24-byte global header (its magic number tells the byte order), then per packet
a 16-byte record header whose third field is the captured length, then the frame.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAGIC = 0xA1B2C3D4
_ETHERNET = 1
_IPV4 = 0x0800
_UDP = 17


def udp_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    order = "<" if struct.unpack_from("<I", data)[0] == _MAGIC else ">"
    if struct.unpack_from(f"{order}I", data)[0] != _MAGIC:
        raise ValueError(f"{path}: not a microsecond libpcap file")
    if struct.unpack_from(f"{order}I", data, 20)[0] != _ETHERNET:
        raise ValueError(f"{path}: link type is not Ethernet")
    payloads, offset = [], 24
    while offset + 16 <= len(data):
        captured = struct.unpack_from(f"{order}I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if struct.unpack_from("!H", frame, 12)[0] != _IPV4:
            continue
        ip = frame[14:]
        if ip[9] != _UDP:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        length = struct.unpack_from("!H", udp, 4)[0]
        payloads.append(udp[8:length])
    return payloads
