"""`callgate call`: a simulated phone that calls the gateway the way the provider does.

It posts the provider's signed voice webhook, follows the answer document to the media socket,
speaks the caller's WAVs in turn on a 20 ms monotonic clock, plays the agent's audio out at
line rate (so marks and clear behave as on a real line), records what the caller heard, and
measures the latencies a caller would feel. Provider specifics live in a dialect
(`gateway.simulated_twilio`, `gateway.simulated_plivo`), the media stream in
`gateway.simulated_media`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from websockets.exceptions import WebSocketException

from gateway.simulated_audio import load_caller_wav, write_wav_8k
from gateway.simulated_media import MediaSession
from gateway.simulated_plivo import PlivoDialect
from gateway.simulated_transcript import fetch_transcript
from gateway.simulated_twilio import Answer, TwilioDialect

log = structlog.get_logger()

Emit = Callable[[dict[str, Any]], None]


@dataclass
class CallOptions:
    """One simulated call. `auth_token`/`api_key` of None fall back to the environment
    (TWILIO_AUTH_TOKEN or PLIVO_AUTH_TOKEN, CALLGATE_API_KEY); an empty string means "none"."""

    gateway: str
    provider: Literal["twilio", "plivo"]
    wavs: list[Path]
    out: Path | None = None
    barge_in_at: float | None = None
    hangup_after: float | None = None
    auth_token: str | None = None
    api_key: str | None = None
    to: str = "+15005550006"
    from_: str = "+15005550001"
    agent: str | None = None
    call_sid: str | None = None
    quiet_secs: float = 0.6
    greeting_timeout: float = 15.0
    answer_timeout: float = 15.0
    transcript_wait: float = 3.0


class EventLog:
    """Stamps each event with `t`, seconds since the call began, and hands it to `emit`."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._origin = time.monotonic()

    def __call__(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "t": round(time.monotonic() - self._origin, 3), **fields}
        self._emit(record)
        return record


Dialect = TwilioDialect | PlivoDialect

AUTH_TOKEN_VARIABLES = {"twilio": "TWILIO_AUTH_TOKEN", "plivo": "PLIVO_AUTH_TOKEN"}


async def _answer(
    http: httpx.AsyncClient, dialect: Dialect, options: CallOptions, event: EventLog
) -> Answer | None:
    """Post the voice webhook and read the answer document; None (after an event) on failure."""
    public_url = os.environ.get("CALLGATE_PUBLIC_URL") or options.gateway
    request = dialect.webhook(options.gateway, public_url, options.agent)
    try:
        response = await http.post(request.url, data=request.form, headers=request.headers)
    except httpx.HTTPError as exc:
        event("error", stage="webhook", message=repr(exc))
        return None
    event("webhook", status=response.status_code)
    if response.status_code != 200:
        event("error", stage="webhook", message=f"HTTP {response.status_code}")
        return None
    document = "twiml" if dialect.name == "twilio" else "plivo_xml"
    try:
        answer = dialect.parse_answer(response.text)
    except ValueError as exc:
        event("error", stage=document, message=str(exc))
        return None
    # Parameter values may carry the call token: only their names are shown.
    event(
        document,
        verbs=answer.verbs,
        stream_url=answer.stream_url,
        parameters=sorted(answer.parameters),
    )
    return answer


async def run_call(options: CallOptions, emit: Emit) -> dict[str, Any]:
    """Place one simulated call; `emit` gets every event, the summary last (also returned)."""
    if options.provider not in AUTH_TOKEN_VARIABLES:
        raise ValueError(f"unknown provider {options.provider!r}")
    if not options.wavs:
        raise ValueError("at least one caller WAV is needed")
    audio = [load_caller_wav(path) for path in options.wavs]
    env = os.environ
    auth_token = options.auth_token
    if auth_token is None:
        auth_token = env.get(AUTH_TOKEN_VARIABLES[options.provider])
    api_key = env.get("CALLGATE_API_KEY") if options.api_key is None else options.api_key
    event = EventLog(emit)
    dialect_class = PlivoDialect if options.provider == "plivo" else TwilioDialect
    dialect = dialect_class(auth_token or None, options.to, options.from_, options.call_sid)
    summary: dict[str, Any] = {
        "call_id": None,
        "status": "failed",
        "transcript": [],
        "latency_ms": {"first_greeting_audio": None, "end_of_speech_to_first_audio": []},
        "hangup_by": None,
        "agent_audio_secs": 0.0,
    }
    if options.barge_in_at is not None:
        summary["barge_in_clear_ms"] = None
    recording = bytearray()
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        answer = await _answer(http, dialect, options, event)
        if answer is not None and answer.stream_url is None:
            rejected = "Reject" in answer.verbs or answer.verbs == ["Hangup"]  # Plivo: no Speak
            summary["status"] = "rejected" if rejected else "ended"
            summary["hangup_by"] = "agent"
            event("no_stream", verbs=answer.verbs, say=answer.say)
        elif answer is not None and answer.stream_url is not None:
            call_id = answer.parameters.get("call_id")
            summary["call_id"] = call_id
            session = MediaSession(dialect, audio, options, event)
            ws_url, headers = dialect.stream_target(options.gateway, answer.stream_url)
            try:
                await session.run(ws_url, headers, answer.parameters)
            except (OSError, TimeoutError, WebSocketException) as exc:
                event("error", stage="media", message=repr(exc))
            else:
                summary["status"] = "completed"
                summary["transcript"] = await fetch_transcript(
                    http,
                    options.gateway,
                    call_id,
                    event,
                    wait=options.transcript_wait,
                    api_key=api_key,
                    call_token=answer.parameters.get("token"),
                )
            _fill_session_summary(summary, session)
            recording = session.playout.recording(session.end_at)
    if options.out is not None:
        write_wav_8k(options.out, recording)
    log.info("simulated_call_done", status=summary["status"], hangup_by=summary["hangup_by"])
    return event("summary", **summary)


def _fill_session_summary(summary: dict[str, Any], session: MediaSession) -> None:
    first = session.first_audio_at
    summary["latency_ms"] = {
        "first_greeting_audio": round(first * 1000, 1) if first is not None else None,
        "end_of_speech_to_first_audio": session.latencies_ms(),
    }
    summary["hangup_by"] = session.hangup_by
    summary["agent_audio_secs"] = round(session.playout.played_secs, 3)
    summary["agent_audio_dropped_secs"] = round(session.playout.dropped_secs, 3)
    summary["duration_secs"] = round(session.end_at, 3)
    if "barge_in_clear_ms" in summary:
        summary["barge_in_clear_ms"] = session.barge_clear_ms
