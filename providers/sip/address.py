"""RFC 3261 header-value syntax: SIP URIs, name-addr (From/To/Contact), Via, and the quote-aware
splitting they share. Re-exported by providers.sip.message, which is where callers import from.

Every parser here is a single left-to-right pass (regexes without nested quantifiers), so a
64 KiB hostile value costs linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class SipError(ValueError):
    """Malformed SIP; str() says what."""


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOST = re.compile(r"[A-Za-z0-9\-._]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_USERINFO = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:#]+")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]/]+|\"(?:[^\"\\]|\\.)*\"")
_URI_HEADERS = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$&=]*")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_SPLITTERS = {
    sep: re.compile(rf'"(?:[^"\\]|\\.)*"?|<[^>]*>?|[^"<{sep}]+|{sep}') for sep in (",", ";")
}
_VIA = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)", re.DOTALL)


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` (',' or ';') except inside "quoted strings" and <angle brackets>.

    Items are stripped. An unterminated quote or bracket runs to the end of the text (the item
    parser then rejects it), so this never raises.
    """
    items: list[str] = []
    current: list[str] = []
    for piece in _SPLITTERS[sep].findall(text):
        if piece == sep:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(piece)
    items.append("".join(current).strip())
    return items


def unquote(text: str) -> str:
    """The content of a quoted-string (backslash escapes resolved), or SipError."""
    if _QUOTED.fullmatch(text) is None:
        raise SipError(f"bad quoted string {_short(text)}")
    return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.DOTALL)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(items: list[str]) -> list[tuple[str, str | None]]:
    """`name[=value]` items (already split on ';'). Names are lower-cased; quoted values keep
    their quotes, so formatting them again gives the same text."""
    params: list[tuple[str, str | None]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise SipError(f"bad parameter {_short(item)}")
        if not sep:
            params.append((name, None))
            continue
        value = value.strip()
        if _PARAM_VALUE.fullmatch(value) is None:
            raise SipError(f"bad value of parameter {name}")
        params.append((name, value))
    return params


def format_params(params: dict[str, str | None] | tuple[tuple[str, str | None], ...]) -> str:
    pairs = params.items() if isinstance(params, dict) else params
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in pairs)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; IPv6 hosts are returned without brackets."""
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or _IPV6.fullmatch(host) is None or ":" not in host:
            raise SipError(f"bad IPv6 host {_short(text)}")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if _HOST.fullmatch(host) is None:
            raise SipError(f"bad host {_short(text)}")
    if not rest:
        return host, None
    port_text = rest[1:]
    if rest[0] != ":" or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise SipError(f"bad port in {_short(text)}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise SipError(f"port {port} out of range")
    return host, port


def format_hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _short(text: str) -> str:
    return repr(text[:60])


@dataclass(frozen=True)
class SipUri:
    """sip: or sips: URI. `user` keeps its escapes (and a `:password`, if someone sends one);
    `headers` is the raw text after '?' (e.g. Replaces in a Refer-To)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str = ""

    def param(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.params if k == name), None)

    def __str__(self) -> str:
        user = "" if self.user is None else self.user + "@"
        headers = "?" + self.headers if self.headers else ""
        hostport = format_hostport(self.host, self.port)
        return f"{self.scheme}:{user}{hostport}{format_params(self.params)}{headers}"


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise SipError(f"not a sip: URI {_short(text)}")
    user: str | None = None
    at = rest.find("@")
    if at >= 0:
        user, rest = rest[:at], rest[at + 1 :]
        if _USERINFO.fullmatch(user) is None:
            raise SipError(f"bad user part in {_short(text)}")
    rest, question, headers = rest.partition("?")
    if question and _URI_HEADERS.fullmatch(headers) is None:
        raise SipError(f"bad URI headers in {_short(text)}")
    hostport, *params = rest.split(";")
    host, port = parse_hostport(hostport)
    return SipUri(scheme, user, host, port, tuple(parse_params(params)), headers)


@dataclass
class NameAddr:
    """From, To, Contact, Route, Refer-To value: optional display name, URI, header params."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = "" if self.display is None else quote(self.display) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """`"Bob" <sip:bob@h>;tag=x`, `Bob <sip:bob@h>`, `<sip:bob@h>` or `sip:bob@h;tag=x`
    (without brackets, the ';' parameters belong to the header, RFC 3261 20.10)."""
    text = text.strip()
    display: str | None = None
    if text.startswith('"'):
        match = _QUOTED.match(text)
        if match is None:
            raise SipError(f"unterminated display name in {_short(text)}")
        display = unquote(match.group())
        rest = text[match.end() :].lstrip()
        if not rest.startswith("<"):
            raise SipError(f"display name without <URI> in {_short(text)}")
    else:
        lt = text.find("<")
        rest = text[lt:] if lt >= 0 else ""
        if lt > 0:
            display = " ".join(text[:lt].split())
            if '"' in display or not all(is_token(word) for word in display.split()):
                raise SipError(f"bad display name in {_short(text)}")
    if rest:
        gt = rest.find(">")
        if gt < 0:
            raise SipError(f"unterminated <URI> in {_short(text)}")
        uri_text, tail = rest[1:gt], rest[gt + 1 :].strip()
        if tail and not tail.startswith(";"):
            raise SipError(f"junk after <URI> in {_short(text)}")
        param_items = split_outside_quotes(tail, ";")[1:] if tail else []
    else:
        uri_text, *param_items = split_outside_quotes(text, ";")
    return NameAddr(parse_uri(uri_text), display, dict(parse_params(param_items)))


@dataclass
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        hostport = format_hostport(self.host, self.port)
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """One Via value (split a multi-value header with Headers.get_all first)."""
    match = _VIA.fullmatch(text)
    if match is None:
        raise SipError(f"bad Via {_short(text)}")
    hostport, *params = split_outside_quotes(match.group(2), ";")
    host, port = parse_hostport(hostport)
    return Via(match.group(1).upper(), host, port, dict(parse_params(params)))
