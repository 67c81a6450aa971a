"""Sans-I/O core of Twilio's bidirectional Media Streams WebSocket.

Text frames in, events out (`receive_text`); outbound audio, marks and clears as ready-to-send
JSON text (`send_audio`, `send_mark`, `send_clear`). No sockets: the edge moves the strings.
Wire format: https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import binascii
import json
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


class TwilioProtocolError(ProtocolError):
    """Twilio (or something posing as it) sent a message the protocol does not allow.

    `fatal` tells the edge whether the stream can go on (drop this message and log) or must end
    (the state of the stream is broken, or the peer is not a genuine Twilio media stream).
    """


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


SUPPORTED_FORMAT = MediaFormat("audio/x-mulaw", 8000, 1)


def _bad(message: str) -> TwilioProtocolError:
    return TwilioProtocolError(message, fatal=False)


def _broken(message: str) -> TwilioProtocolError:
    return TwilioProtocolError(message, fatal=True)


def _object(msg: dict[str, Any], key: str, *, fatal: bool = False) -> dict[str, Any]:
    return require_object(msg, key, TwilioProtocolError, fatal=fatal)


def _string(obj: dict[str, Any], key: str, *, fatal: bool = False) -> str:
    return require_string(obj, key, TwilioProtocolError, fatal=fatal)


class TwilioMediaProtocol:
    """One Media Stream: parses Twilio's messages and formats ours.

    Per-message work is kept small: this runs fifty times a second per call in each direction.
    """

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.media_format: MediaFormat | None = None
        self.tracks: tuple[str, ...] = ()
        self.stopped = False
        self.sequence_gaps = 0
        """How many times `sequenceNumber` did not follow the previous one (counted, not fatal)."""
        self._last_sequence: int | None = None
        self._media_prefix: str | None = None
        self._clear: str | None = None

    @property
    def started(self) -> bool:
        return self.stream_sid is not None

    # -- inbound ---------------------------------------------------------------------------

    def receive_text(self, message: str) -> list[Event]:
        """Parse one inbound text frame into zero or one events; raise TwilioProtocolError."""
        msg = parse_message(message, TwilioProtocolError)
        if self.stopped:
            raise _broken("message after stop")

        event = msg.get("event")
        if event != "connected":
            self._track_sequence(msg.get("sequenceNumber"))
        if event == "media":
            return self._on_media(msg)
        if event == "start":
            return [self._on_start(msg)]
        if event == "mark":
            self._require_started("mark")
            return [PlaybackMarked(_string(_object(msg, "mark"), "name"))]
        if event == "dtmf":
            self._require_started("dtmf")
            return [Dtmf(dtmf_key(msg, TwilioProtocolError))]
        if event == "stop":
            self._require_started("stop")
            self.stopped = True
            return [CallStopped("stopped")]
        if event == "connected":
            if self.started:
                raise _bad("connected after start")
            return []
        raise _bad(f"unknown event {str(event)[:40]!r}")

    def _track_sequence(self, value: object) -> None:
        seq = int_or_none(value)
        if seq is None:
            return
        if self._last_sequence is not None and seq != self._last_sequence + 1:
            self.sequence_gaps += 1
        self._last_sequence = seq

    def _require_started(self, event: str) -> None:
        if self.stream_sid is None:
            raise _broken(f"{event} before start")

    def _on_start(self, msg: dict[str, Any]) -> CallStarted:
        if self.started:
            raise _broken("second start")
        start = _object(msg, "start", fatal=True)
        stream_sid = _string(start, "streamSid", fatal=True)
        call_sid = _string(start, "callSid", fatal=True)
        params = start.get("customParameters", {})
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise _broken("customParameters is not an object of strings")
        fmt = _object(start, "mediaFormat", fatal=True)
        wanted = SUPPORTED_FORMAT
        if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != (
            wanted.encoding,
            wanted.sample_rate,
            wanted.channels,
        ):
            raise _broken(f"unsupported mediaFormat {fmt!r:.120}")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise _broken("tracks is not a list of strings")

        self.stream_sid = stream_sid
        self.call_sid = call_sid
        account_sid = start.get("accountSid")
        self.account_sid = account_sid if isinstance(account_sid, str) else None
        self.media_format = wanted
        self.tracks = tuple(tracks)
        quoted_sid = json.dumps(stream_sid)
        self._media_prefix = '{"event":"media","streamSid":' + quoted_sid + ',"media":{"payload":"'
        self._clear = '{"event":"clear","streamSid":' + quoted_sid + "}"
        return CallStarted(provider_call_id=call_sid, stream_id=stream_sid, parameters=params)

    def _on_media(self, msg: dict[str, Any]) -> list[Event]:
        if self.stream_sid is None:
            raise _broken("media before start")
        media = msg.get("media")
        if not isinstance(media, dict):
            raise _bad("media is missing or not an object")
        track = media.get("track", "inbound")
        if track != "inbound" and track != "inbound_track":
            return []  # the agent's own audio echoed back: not caller speech
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            raise _bad("media for another streamSid")
        audio = payload_audio(media, TwilioProtocolError)
        if not audio:
            return []
        return [AudioIn(audio, int_or_none(media.get("timestamp")))]

    # -- outbound --------------------------------------------------------------------------

    def send_audio(self, mulaw: bytes) -> str:
        """JSON text of a `media` message carrying 8 kHz mu-law audio to the caller."""
        prefix = self._media_prefix
        if prefix is None:
            raise StreamNotStarted("send_audio before start")
        return prefix + binascii.b2a_base64(mulaw, newline=False).decode("ascii") + '"}}'

    def send_mark(self, name: str) -> str:
        """JSON text of a `mark`; Twilio echoes it back once everything before it has played."""
        if self.stream_sid is None:
            raise StreamNotStarted("send_mark before start")
        return json.dumps(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}},
            separators=(",", ":"),
        )

    def send_clear(self) -> str:
        """JSON text of a `clear`: Twilio drops queued audio and echoes every pending mark."""
        if self._clear is None:
            raise StreamNotStarted("send_clear before start")
        return self._clear
