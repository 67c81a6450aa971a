"""SIP over a stream (TCP), without I/O: bytes in, whole messages out (RFC 3261 §18.3).

On a stream nothing marks where a message ends but its Content-Length, which is therefore
required. CRLFs between messages (keep-alives, RFC 5626 §3.5.1) are skipped. A framing error
leaves the stream unusable: the caller closes the connection.
"""

from __future__ import annotations

from providers.sip.message import MAX_MESSAGE_BYTES, SipError

_END_OF_HEADERS = b"\r\n\r\n"
_LENGTH_NAMES = (b"content-length", b"l")


class StreamFramer:
    """One connection's receive buffer."""

    __slots__ = ("_buffer", "_max_bytes")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """The messages `data` completes (each exactly headers + body); SipError if the stream
        cannot be framed (no or bad Content-Length, a message over the size limit)."""
        buffer = self._buffer
        buffer += data
        messages = []
        while True:
            start = 0
            while buffer[start : start + 2] == b"\r\n":
                start += 2
            del buffer[:start]
            end = buffer.find(_END_OF_HEADERS, 0, self._max_bytes + 4)
            if end < 0:
                if len(buffer) > self._max_bytes:
                    raise SipError(f"no end of headers within {self._max_bytes} bytes")
                return messages
            total = end + 4 + _content_length(bytes(buffer[:end]))
            if total > self._max_bytes:
                raise SipError(f"message of {total} bytes exceeds {self._max_bytes}")
            if len(buffer) < total:
                return messages
            messages.append(bytes(buffer[:total]))
            del buffer[:total]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in _LENGTH_NAMES:
            value = value.strip()
            if not value.isdigit() or len(value) > 6:
                raise SipError("bad Content-Length")
            return int(value)
    raise SipError("no Content-Length on a stream")
