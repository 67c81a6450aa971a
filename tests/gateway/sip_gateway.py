"""A real `callgate serve` process with its SIP endpoint on (loopback), for the real-peer tests,
and the `/v1/calls` look-ups that show what a SIP call did inside the gateway."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.gateway.server import Server, start_server, write_config
from tests.gateway.sip_peers import LOOPBACK, free_udp_block

RTP_PORTS = 240
"""Enough for 50 calls (RTP + RTCP each) and then some, so a leaked port shows as a failure."""


@dataclass
class SipGateway:
    server: Server
    sip_port: int
    rtp_ports: tuple[int, int]

    @property
    def sip(self) -> str:
        """HOST:PORT to send SIP to."""
        return f"{LOOPBACK}:{self.sip_port}"

    def api(self) -> httpx.Client:
        key = self.server.env["CALLGATE_API_KEY"]
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def records(self) -> list[dict]:
        with self.api() as api:
            response = api.get("/v1/calls")
        response.raise_for_status()
        return response.json()["calls"]

    def record_of(self, sip_call_id: str, ended: bool = True, timeout: float = 30) -> dict:
        """The call record whose provider_call_id is this SIP Call-ID (once it has ended)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if r.get("provider_call_id") == sip_call_id]
            if found and (not ended or found[0].get("ended_at")):
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {'ended ' if ended else ''}record for Call-ID {sip_call_id}: "
                    f"{[(r.get('provider'), r.get('provider_call_id')) for r in self.records()]}"
                )
            time.sleep(0.2)

    def stop(self) -> int:
        return self.server.stop()


def start_sip_gateway(
    directory: Path,
    agents: dict[str, dict],
    sip_agent: str,
    routes: dict[str, str] | None = None,
    **sip: object,
) -> SipGateway:
    """A gateway whose SIP endpoint answers loopback callers with `sip_agent` (or the agent
    `routes` names for the dialled number); `sip` adds settings (trunk, users ...)."""
    sip_port = free_udp_block(1)
    low = free_udp_block(RTP_PORTS, low=41000)
    settings = {
        "listen": f"{LOOPBACK}:{sip_port}",
        "allow": f"{LOOPBACK}/32",
        "rtp_ports": f"{low}-{low + RTP_PORTS - 1}",
        "agent": sip_agent,
        **sip,
    }
    config = write_config(directory, agents, sip=settings, routes=routes or {})
    env = {
        "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
        "CALLGATE_SECRET": secrets.token_hex(16),
    }
    server = start_server(config, env, directory / "server.log")
    return SipGateway(server, sip_port, (low, low + RTP_PORTS - 1))
