"""The transcript of a finished simulated call, read back from the gateway's `/v1` API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

POLL_SECS = 0.2


async def fetch_transcript(
    http: httpx.AsyncClient,
    gateway: str,
    call_id: str | None,
    event: Callable[..., Any],
    *,
    wait: float,
    api_key: str | None,
    call_token: str | None,
) -> list[dict[str, str]]:
    """`GET /v1/calls/{call_id}` until its status is `completed` (at most `wait` seconds).

    Authenticates with the API key if known, else with the call's own token. Returns the
    transcript as [{"role", "text"}]; when there is none to be had, emits
    `transcript_unavailable` with the reason and returns what it last saw (usually []).
    """
    if not call_id:
        event("transcript_unavailable", reason="the answer document named no call_id")
        return []
    if api_key:
        headers = {"Authorization": f"Bearer {api_key}"}
    elif call_token:
        headers = {"X-Callgate-Call-Token": call_token}
    else:
        event("transcript_unavailable", reason="no API key and no call token")
        return []
    url = f"{gateway.rstrip('/')}/v1/calls/{quote(call_id, safe='')}"
    deadline = time.monotonic() + wait
    transcript: list[dict[str, str]] = []
    while True:
        reason, final = await _poll(http, url, headers, transcript)
        if reason is None:
            return transcript
        if final or time.monotonic() >= deadline:
            event("transcript_unavailable", reason=reason)
            return transcript
        await asyncio.sleep(POLL_SECS)


async def _poll(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], transcript: list[dict[str, str]]
) -> tuple[str | None, bool]:
    """One look; fills `transcript` in place. Returns (why not done, whether to give up)."""
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return f"request failed: {exc!r}", False
    if response.status_code in (401, 403):
        return f"HTTP {response.status_code}", True
    if response.status_code != 200:
        return f"HTTP {response.status_code}", False
    try:
        body = response.json()
        entries = body.get("transcript") or []
        transcript[:] = [{"role": str(e["role"]), "text": str(e["text"])} for e in entries]
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        return f"unreadable call record: {exc!r}", True
    status = body.get("status")
    return (None, False) if status == "completed" else (f"call status is {status!r}", False)
