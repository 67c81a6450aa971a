"""Who may start something over SIP: sources in the `sip.allow` CIDRs, or callers with digest
credentials (`sip.users`). Anyone else gets at most a cheap answer, rate-limited per source,
and one log line per source, so a SIP scanner costs next to nothing.

Requests inside a dialog we created are not checked here: the dialog's random tag is the
credential (the endpoint routes them before asking the guard).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

import structlog

from providers.sip.digest import DigestVerifier
from providers.sip.message import Request

log = structlog.get_logger()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RATE_PER_SEC = 2.0
"""Answers per second a stranger may get, on average."""
BURST = 5.0
MAX_SOURCES = 4096
"""Strangers remembered at once (least recently seen forgotten first), so a flood of spoofed
sources cannot grow memory."""


class Verdict(Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    """Answer 401 with a digest challenge (digest users are configured)."""
    REFUSE = "refuse"
    """Answer 403."""
    DROP = "drop"
    """Say nothing (over the rate limit, or an ACK)."""


def parse_networks(text: str | None) -> list[Network]:
    """`sip.allow`: comma-separated CIDRs (a bare address is a /32 or /128); ValueError if bad."""
    networks = []
    for item in (text or "").split(","):
        if item := item.strip():
            networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def parse_users(text: str | None) -> dict[str, str]:
    """`sip.users`: comma-separated `user:password`; ValueError if an item has no password."""
    users = {}
    for item in (text or "").split(","):
        if not (item := item.strip()):
            continue
        user, colon, password = item.partition(":")
        if not colon or not user or not password:
            raise ValueError("sip.users items are user:password")
        users[user] = password
    return users


@dataclass
class _Bucket:
    tokens: float
    updated: float


class SipGuard:
    def __init__(
        self,
        allow: list[Network],
        users: dict[str, str],
        realm: str = "callgate",
        rate_per_sec: float = RATE_PER_SEC,
        burst: float = BURST,
    ) -> None:
        self._allow = allow
        self._verifier = (
            DigestVerifier(realm, users, secrets.token_bytes(32)) if users else None
        )
        self._rate, self._burst = rate_per_sec, burst
        self._strangers: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0
        self.dropped = 0

    def allowed_source(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._allow)

    def check(self, request: Request, source: tuple[str, int], now: float | None = None) -> Verdict:
        """What to do with an out-of-dialog request from `source`."""
        if self.allowed_source(source[0]) or self._authenticated(request):
            return Verdict.ALLOW
        if request.method == "ACK" or not self._take(source[0], now or time.monotonic()):
            self.dropped += 1
            return Verdict.DROP
        self.refused += 1
        if self._verifier is not None and request.method in ("INVITE", "OPTIONS"):
            return Verdict.CHALLENGE
        return Verdict.REFUSE

    def challenge(self) -> str:
        """A WWW-Authenticate value (only when the verdict was CHALLENGE)."""
        assert self._verifier is not None
        return self._verifier.challenge()

    def _authenticated(self, request: Request) -> bool:
        authorization = request.headers.get("Authorization")
        if self._verifier is None or authorization is None:
            return False
        return self._verifier.verify(authorization, request.method) is not None

    def _take(self, host: str, now: float) -> bool:
        """One token from the source's bucket; the first sight of a source is logged."""
        bucket = self._strangers.get(host)
        if bucket is None:
            log.warning("sip_stranger", source=host[:64])
            bucket = _Bucket(self._burst, now)
            self._strangers[host] = bucket
            if len(self._strangers) > MAX_SOURCES:
                self._strangers.popitem(last=False)
        else:
            self._strangers.move_to_end(host)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
