"""A user's status-webhook endpoint on loopback: records every delivery, may fail the first."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http_server import LoopbackHttpServer


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() when it arrived
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class WebhookReceiver(LoopbackHttpServer):
    """`with WebhookReceiver() as receiver:` takes deliveries at `receiver.hook_url`."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail_first = 0  # answer this many requests with 500
        super().__init__()

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hooks/callgate"

    def for_call(self, call_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.json["call"]["id"] == call_id]

    def wait_for(self, call_id: str, event: str, timeout: float) -> list[Delivery]:
        """Every delivery for the call, once `event` has arrived (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            deliveries = self.for_call(call_id)
            if any(d.json["event"] == event for d in deliveries):
                return deliveries
            time.sleep(0.05)
        seen = [d.json for d in self.for_call(call_id)]
        raise AssertionError(f"no {event} for {call_id}: {seen}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(time.monotonic(), dict(self.headers.items()), body)
                    )
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= failing
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
