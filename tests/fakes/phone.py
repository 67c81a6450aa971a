"""The far end of an outbound call that a fake provider places: a simulated phone that answers
and talks, reusing the media stream of `callgate call` (`gateway.simulated_media`).

A fake provider runs each placed call in a thread of its own, with its own event loop, as the
fakes' HTTP servers are threaded and synchronous.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.simulated_audio import load_caller_wav
from gateway.simulated_call import CallOptions
from gateway.simulated_media import Dialect, MediaSession


@dataclass
class Callee:
    """Who answers a placed call, and what they say (one WAV per turn)."""

    wavs: list[Path]
    hangup_after: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    hangup_by: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def event(self, event: str, /, **fields: Any) -> None:
        self.events.append({"event": event, **fields})


def in_thread(run: Callable[[], Coroutine[Any, Any, None]], callee: Callee) -> None:
    """Run a placed call in a daemon thread; `callee.done` is set when it is over."""

    def main() -> None:
        try:
            asyncio.run(run())
        except Exception as exc:  # reported to the test through the callee
            callee.error = repr(exc)
        finally:
            callee.done.set()

    threading.Thread(target=main, daemon=True).start()


async def converse(
    dialect: Dialect,
    stream_url: str,
    parameters: dict[str, str],
    callee: Callee,
    is_live: Callable[[], bool],
) -> None:
    """Open the media stream the answer document named and talk until either side hangs up;
    `is_live` going false (the call was hung up through the REST API) drops the stream."""
    provider = getattr(dialect, "name", "twilio")
    options = CallOptions(
        gateway="", provider=provider, wavs=callee.wavs, hangup_after=callee.hangup_after
    )
    audio = [load_caller_wav(path) for path in callee.wavs]
    session = MediaSession(dialect, audio, options, callee.event)
    stream = urlsplit(stream_url)
    base = ("https" if stream.scheme == "wss" else "http") + "://" + stream.netloc
    ws_url, headers = dialect.stream_target(base, stream_url)
    task = asyncio.create_task(session.run(ws_url, headers, parameters))
    while not task.done():
        await asyncio.wait({task}, timeout=0.05)
        if not task.done() and not is_live():
            task.cancel()
            callee.hangup_by = "rest_api"
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    callee.hangup_by = callee.hangup_by or session.hangup_by
