"""RFC 3261 messages without I/O: parse a datagram into a Request/Response, serialize one back.

`parse` checks what every later layer relies on (start line, the five mandatory headers and
their syntax, Content-Length framing) so that transaction and dialog code can read From, To,
Via and CSeq without guarding each access. Content-Length is framing, not content: `parse`
drops it from the headers (the body's length says it) and `serialize` always writes the true one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from providers.sip.address import (
    NameAddr,
    SipError,
    SipUri,
    Via,
    is_token,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_outside_quotes,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "SipError",
    "SipUri",
    "Via",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse",
    "parse_cseq",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "response_to",
    "serialize",
]

MAX_MESSAGE_BYTES = 65535
"""Largest message we parse: the largest UDP payload."""

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 branch prefix."""

_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "o": "Event", "r": "Refer-To", "s": "Subject",
    "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
_SPELLING = {
    name.lower(): name
    for name in (
        *_COMPACT.values(),
        "Accept", "Alert-Info", "Allow", "Authorization", "Call-Info", "CSeq", "Date", "Expires",
        "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "Priority",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reason",
        "Replaces", "Require", "Retry-After", "Route", "RSeq", "RAck", "Server", "Timestamp",
        "Unsupported", "User-Agent", "Warning", "WWW-Authenticate", "P-Asserted-Identity",
    )
}  # fmt: skip
_LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Allow-Events", "Path", "Service-Route",
    )
)  # fmt: skip
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Content-Length")
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REQUEST_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f]+")
_MAX_CSEQ = 2**31 - 1


def _canonical(name: str) -> str:
    """Expanded, conventionally spelled header name; SipError unless it is a token."""
    if not is_token(name):
        raise SipError(f"bad header name {name[:40]!r}")
    lower = name.lower()
    if len(lower) == 1 and lower in _COMPACT:
        return _COMPACT[lower]
    return _SPELLING.get(lower, name)


def _clean_value(value: str) -> str:
    value = value.strip()
    if _BAD_VALUE_CHARS.search(value):
        raise SipError("control character in header value")
    return value


class Headers:
    """Ordered, case-insensitive SIP headers; compact names are expanded on the way in.

    Values are stripped and may not contain CR, LF or other control characters (a value built
    from user input cannot inject a header).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (lower-case name, name, value)
        for name, value in items:
            self.add(name, value)

    def get(self, name: str) -> str | None:
        key = _canonical(name).lower()
        return next((v for k, _, v in self._items if k == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every value, in order; comma lists of Via, Contact, Route, ... split into items."""
        key = _canonical(name).lower()
        values = [v for k, _, v in self._items if k == key]
        if key not in _LIST_HEADERS:
            return values
        return [item for v in values for item in split_outside_quotes(v, ",") if item]

    def add(self, name: str, value: str) -> None:
        name = _canonical(name)
        self._items.append((name.lower(), name, _clean_value(value)))

    def set(self, name: str, value: str) -> None:
        """Replace all values of `name` with one, where the first one was (else at the end)."""
        name = _canonical(name)
        key, value = name.lower(), _clean_value(value)
        index = next((i for i, item in enumerate(self._items) if item[0] == key), None)
        self.remove(name)
        self._items.insert(len(self._items) if index is None else index, (key, name, value))

    def remove(self, name: str) -> None:
        key = _canonical(name).lower()
        self._items = [item for item in self._items if item[0] != key]

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _, name, value in self._items]

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


@dataclass
class Request:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


def parse(data: bytes) -> Request | Response:
    """One SIP message from a datagram (or a framed stream chunk); SipError if malformed.

    Leading CRLFs (keep-alives) are skipped. Bytes past Content-Length are ignored (RFC 3261
    18.3); without Content-Length the body is the rest of the datagram.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipError("empty message")
    head_end, body_start = _find_blank_line(data)
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipError("headers are not UTF-8") from exc
    start, *lines = (line[:-1] if line.endswith("\r") else line for line in head.split("\n"))
    message = _parse_start_line(start, _parse_header_lines(lines))
    _check_mandatory(message)
    message.body = _frame_body(message.headers, data[body_start:])
    return message


def _find_blank_line(data: bytes) -> tuple[int, int]:
    """End of the header block and start of the body; bare-LF line ends are tolerated."""
    ends = [(i, i + len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    if not ends:
        raise SipError("no blank line after the headers (truncated message?)")
    return min(ends)


def _parse_header_lines(lines: list[str]) -> Headers:
    unfolded: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):  # RFC 3261 7.3.1 line folding
            if not unfolded:
                raise SipError("continuation line before the first header")
            unfolded[-1].append(line.strip())
        else:
            unfolded.append([line])
    headers = Headers()
    for parts in unfolded:
        name, colon, value = " ".join(parts).partition(":")
        if not colon:
            raise SipError(f"header line without ':' {parts[0][:40]!r}")
        headers.add(name.rstrip(" \t"), value)
    return headers


def _parse_start_line(line: str, headers: Headers) -> Request | Response:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != "SIP/2.0":
            raise SipError(f"unsupported version {version[:20]!r}")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
            raise SipError(f"bad status code {code[:20]!r}")
        if _BAD_VALUE_CHARS.search(reason):
            raise SipError("control character in reason phrase")
        return Response(int(code), reason, headers)
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipError(f"bad request line {line[:60]!r}")
    method, uri, version = parts
    if version != "SIP/2.0":
        raise SipError(f"unsupported version {version[:20]!r}")
    if not is_token(method):
        raise SipError(f"bad method {method[:20]!r}")
    if _REQUEST_URI.fullmatch(uri) is None:
        raise SipError(f"bad Request-URI {uri[:60]!r}")
    return Request(method, uri, headers)


def _check_mandatory(message: Request | Response) -> None:
    headers = message.headers
    counts = {name: 0 for name in _SINGLE}
    for name, _ in headers.items():
        if name in counts:
            counts[name] += 1
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in headers:
            raise SipError(f"missing {name} header")
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        raise SipError(f"repeated {repeated[0]} header")
    vias = headers.get_all("Via")
    if not vias:
        raise SipError("empty Via header")
    for via in vias:
        parse_via(via)
    parse_name_addr(headers.get("From") or "")
    parse_name_addr(headers.get("To") or "")
    call_id = headers.get("Call-ID") or ""
    if not call_id or any(ch.isspace() for ch in call_id):
        raise SipError("bad Call-ID")
    _, cseq_method = parse_cseq(headers.get("CSeq") or "")
    if isinstance(message, Request) and cseq_method != message.method:
        raise SipError(f"CSeq method {cseq_method} does not match {message.method}")


def _frame_body(headers: Headers, rest: bytes) -> bytes:
    length_text = headers.get("Content-Length")
    headers.remove("Content-Length")
    if length_text is None:
        return rest
    if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 10:
        raise SipError(f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > len(rest):
        raise SipError(f"Content-Length {length} exceeds the {len(rest)} bytes after the headers")
    return rest[:length]


def serialize(message: Request | Response) -> bytes:
    """Wire bytes of a message; Content-Length is written from the body, last."""
    if isinstance(message, Request):
        if not is_token(message.method) or _REQUEST_URI.fullmatch(message.uri) is None:
            raise SipError(f"bad request line {message.method[:20]!r} {message.uri[:60]!r}")
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        if not 100 <= message.status <= 699 or _BAD_VALUE_CHARS.search(message.reason):
            raise SipError(f"bad status line {message.status} {message.reason[:40]!r}")
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    lines.extend(f"{n}: {v}" for n, v in message.headers.items() if n != "Content-Length")
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + message.body


def parse_cseq(text: str) -> tuple[int, str]:
    """`"314159 INVITE"` -> (314159, "INVITE")."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise SipError(f"bad CSeq {text[:40]!r}")
    number, method = int(parts[0][:12]), parts[1]
    if len(parts[0]) > 10 or number > _MAX_CSEQ or not is_token(method):
        raise SipError(f"bad CSeq {text[:40]!r}")
    return number, method


_REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 429: "Too Many Requests",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip
_CLASS_REASONS = {1: "Progress", 2: "OK", 3: "Redirection", 4: "Client Error",
                  5: "Server Error", 6: "Global Failure"}  # fmt: skip


def reason_phrase(status: int) -> str:
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def response_to(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """A response carrying the request's Via (all), From, To (+ `to_tag` unless the To has a
    tag already), Call-ID and CSeq (RFC 3261 8.2.6.2). Callers add Contact, SDP, ..."""
    source = request.headers
    headers = Headers(("Via", via) for via in source.get_all("Via"))
    to = source.get("To") or ""
    if to_tag is not None and parse_name_addr(to).tag is None:
        to = f"{to};tag={to_tag}"
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = to if name == "To" else source.get(name)
        if value is not None:
            headers.add(name, value)
    return Response(status, reason if reason is not None else reason_phrase(status), headers)


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"
