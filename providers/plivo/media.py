"""Sans-I/O core of Plivo's bidirectional Audio Streaming WebSocket.

Text frames in, events out (`receive_text`); outbound audio, checkpoints and clears as
ready-to-send JSON text (`send_audio`, `send_mark`, `send_clear`). No sockets: the edge moves
the strings. Wire format: https://www.plivo.com/docs/voice/audio-streaming/audio-streaming

Plivo's documented stream has no `stop` message: it ends by closing the socket, so the edge
turns a close into `CallStopped`. A `stop` event is still accepted if one arrives.

Checkpoint acknowledgements differ from Twilio's marks: Plivo answers `playedStream` only for
audio that was actually played, and after `clearAudio` sends one `clearedAudio` and nothing for
the checkpoints it dropped. To give the gateway Twilio's semantics (every mark is echoed once,
a clear echoes all pending marks), this core remembers the checkpoints it sent and reports the
ones a clear discarded when `clearedAudio` arrives.
"""

from __future__ import annotations

import binascii
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from providers.events import (
    AudioIn,
    CallStarted,
    CallStopped,
    Dtmf,
    Event,
    PlaybackMarked,
    ProtocolError,
    StreamNotStarted,
)
from providers.json_fields import (
    dtmf_key,
    int_or_none,
    parse_message,
    payload_audio,
    require_object,
    require_string,
)

MAX_PENDING_CHECKPOINTS = 4096
"""Checkpoints remembered until acknowledged; beyond this the oldest are forgotten."""

MAX_PENDING_CLEARS = 256
"""Clears remembered until Plivo acknowledges them; beyond this the oldest are forgotten."""


class PlivoProtocolError(ProtocolError):
    """Plivo (or something posing as it) sent a message the protocol does not allow.

    `fatal` tells the edge whether the stream can go on (drop this message and log) or must end
    (the state of the stream is broken, or the peer is not a genuine Plivo audio stream).
    """


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int


SUPPORTED_FORMAT = MediaFormat("audio/x-mulaw", 8000)

_PLAY_AUDIO_PREFIX = (
    '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"'
)


def _bad(message: str) -> PlivoProtocolError:
    return PlivoProtocolError(message, fatal=False)


def _broken(message: str) -> PlivoProtocolError:
    return PlivoProtocolError(message, fatal=True)


def _object(msg: dict[str, Any], key: str, *, fatal: bool = False) -> dict[str, Any]:
    return require_object(msg, key, PlivoProtocolError, fatal=fatal)


def _string(obj: dict[str, Any], key: str, *, fatal: bool = False) -> str:
    return require_string(obj, key, PlivoProtocolError, fatal=fatal)


def parse_extra_headers(raw: object) -> dict[str, str]:
    """The `extra_headers` of a stream message as a dict.

    Plivo's docs show it as `k=v` pairs joined by `,` (as written in the XML) or `;`, and its
    own SDK describes it as a JSON string; accept all three, and skip malformed items (a missing
    call token is caught by the caller's check, not here).
    """
    if isinstance(raw, dict):
        items: Any = raw.items()
    elif isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                decoded = json.loads(text)
            except (ValueError, RecursionError):
                return {}
            items = decoded.items() if isinstance(decoded, dict) else ()
        else:
            items = (
                part.split("=", 1) for part in text.replace(";", ",").split(",") if "=" in part
            )
    else:
        return {}
    headers: dict[str, str] = {}
    for key, value in items:
        if isinstance(key, str) and key.strip() and isinstance(value, str | int | float):
            headers[key.strip()] = str(value).strip()
    return headers


class PlivoMediaProtocol:
    """One audio stream: parses Plivo's messages and formats ours.

    Per-message work is kept small: this runs fifty times a second per call in each direction.
    """

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.account_id: str | None = None
        self.media_format: MediaFormat | None = None
        self.tracks: tuple[str, ...] = ()
        self.stopped = False
        self.sequence_gaps = 0
        """How many times a media `chunk` did not follow the previous one (counted, not fatal)."""
        self._last_chunk: int | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_CHECKPOINTS)
        self._clearing: deque[list[str]] = deque(maxlen=MAX_PENDING_CLEARS)
        self._clear: str | None = None

    @property
    def started(self) -> bool:
        return self.stream_id is not None

    # -- inbound ---------------------------------------------------------------------------

    def receive_text(self, message: str) -> list[Event]:
        """Parse one inbound text frame into events; raise PlivoProtocolError."""
        msg = parse_message(message, PlivoProtocolError)
        if self.stopped:
            raise _broken("message after stop")

        event = msg.get("event")
        if event == "media":
            return self._on_media(msg)
        if event == "start":
            return [self._on_start(msg)]
        if event == "playedStream":
            self._require_started(event)
            return self._on_played(_string(msg, "name"))
        if event == "clearedAudio":
            self._require_started(event)
            batch = self._clearing.popleft() if self._clearing else []
            return [PlaybackMarked(name) for name in batch]
        if event == "dtmf":
            self._require_started(event)
            return [Dtmf(dtmf_key(msg, PlivoProtocolError))]
        if event == "stop":
            self._require_started(event)
            self.stopped = True
            return [CallStopped("stopped")]
        raise _bad(f"unknown event {str(event)[:40]!r}")

    def _require_started(self, event: str) -> None:
        if self.stream_id is None:
            raise _broken(f"{event} before start")

    def _on_start(self, msg: dict[str, Any]) -> CallStarted:
        if self.started:
            raise _broken("second start")
        start = _object(msg, "start", fatal=True)
        stream_id = _string(start, "streamId", fatal=True)
        call_id = _string(start, "callId", fatal=True)
        fmt = _object(start, "mediaFormat", fatal=True)
        media_format = MediaFormat(fmt.get("encoding"), int_or_none(fmt.get("sampleRate")))  # type: ignore[arg-type]
        if media_format != SUPPORTED_FORMAT:
            raise _broken(f"unsupported mediaFormat {fmt!r:.120}")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise _broken("tracks is not a list of strings")
        raw_headers = msg.get("extra_headers", start.get("extra_headers"))

        self.stream_id = stream_id
        self.call_id = call_id
        account_id = start.get("accountId")
        self.account_id = account_id if isinstance(account_id, str) else None
        self.media_format = media_format
        self.tracks = tuple(tracks)
        self._clear = json.dumps(
            {"event": "clearAudio", "streamId": stream_id}, separators=(",", ":")
        )
        return CallStarted(
            provider_call_id=call_id,
            stream_id=stream_id,
            parameters=parse_extra_headers(raw_headers),
        )

    def _on_media(self, msg: dict[str, Any]) -> list[Event]:
        if self.stream_id is None:
            raise _broken("media before start")
        media = msg.get("media")
        if not isinstance(media, dict):
            raise _bad("media is missing or not an object")
        if media.get("track", "inbound") != "inbound":
            return []  # the agent's own audio forked back: not caller speech
        stream_id = msg.get("streamId")
        if stream_id is not None and stream_id != self.stream_id:
            raise _bad("media for another streamId")
        audio = payload_audio(media, PlivoProtocolError)
        chunk = int_or_none(media.get("chunk"))
        if chunk is not None:
            if self._last_chunk is not None and chunk != self._last_chunk + 1:
                self.sequence_gaps += 1
            self._last_chunk = chunk
        if not audio:
            return []
        return [AudioIn(audio, int_or_none(media.get("timestamp")))]

    def _on_played(self, name: str) -> list[Event]:
        if _remove_first(self._pending, name):
            return [PlaybackMarked(name)]
        # Played just before a clear reached Plivo: report it now, not again at clearedAudio.
        for batch in self._clearing:
            if _remove_first(batch, name):
                return [PlaybackMarked(name)]
        raise _bad(f"playedStream for unknown checkpoint {name[:40]!r}")

    # -- outbound --------------------------------------------------------------------------

    def send_audio(self, mulaw: bytes) -> str:
        """JSON text of a `playAudio` message carrying 8 kHz mu-law audio to the caller."""
        if self.stream_id is None:
            raise StreamNotStarted("send_audio before start")
        payload = binascii.b2a_base64(mulaw, newline=False).decode("ascii")
        return _PLAY_AUDIO_PREFIX + payload + '"}}'

    def send_mark(self, name: str) -> str:
        """JSON text of a `checkpoint`; reported as PlaybackMarked once played (or cleared)."""
        if self.stream_id is None:
            raise StreamNotStarted("send_mark before start")
        self._pending.append(name)
        return json.dumps(
            {"event": "checkpoint", "streamId": self.stream_id, "name": name},
            separators=(",", ":"),
        )

    def send_clear(self) -> str:
        """JSON text of a `clearAudio`: Plivo drops queued audio and answers `clearedAudio`."""
        if self._clear is None:
            raise StreamNotStarted("send_clear before start")
        self._clearing.append(list(self._pending))
        self._pending.clear()
        return self._clear


def _remove_first(names: deque[str] | list[str], name: str) -> bool:
    try:
        names.remove(name)
    except ValueError:
        return False
    return True
