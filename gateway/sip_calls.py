"""SIP calls as gateway calls: an INVITE becomes a `Call` served over RTP, the way
`gateway.media_calls` serves a media stream (registry record with provider "sip", prewarmed
services, status webhooks, `gateway.calls`), with BYE, CANCEL, re-INVITE and REFER.

`SipCalls` answers INVITEs (the endpoint's `InviteHandler`; an INVITE without SDP gets our
offer) and owns every call task; each call's dialog is a `gateway.sip_call.SipCall`. Outbound
dialling is `gateway.sip_dial`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

import structlog

from gateway.call import Call
from gateway.media_calls import UNKNOWN_AGENT_APOLOGY, Ringing, admit
from gateway.registry import CallRecord
from gateway.rtp_session import RtpPortPool, RtpSession
from gateway.settings import SipSettings
from gateway.sip_call import SipCall
from gateway.sip_endpoint import SipEndpoint
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks
from pipeline.services import build_services
from providers.sip.dialog import Dialog
from providers.sip.message import (
    Request,
    SipError,
    new_tag,
    parse_name_addr,
    response_to,
)
from providers.sip.sdp import SdpError, negotiate, parse_sdp
from providers.sip.transaction import Address, ServerTransaction

log = structlog.get_logger()


class SipCalls:
    """Every SIP call of this process."""

    def __init__(
        self,
        gateway: Gateway,
        endpoint: SipEndpoint,
        webhooks: StatusWebhooks,
        settings: SipSettings,
    ) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.webhooks = webhooks
        self.settings = settings
        low, _, high = settings.rtp_ports.partition("-")
        self.ports = RtpPortPool(int(low), int(high))
        self.rtp_host = endpoint.bind_host
        self.live: dict[str, SipCall] = {}
        """Our call id -> the call, from its 2xx on."""
        self._tasks: set[asyncio.Task[None]] = set()
        endpoint.invites = self

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_call_task_failed", error=repr(task.exception()))

    async def close(self) -> None:
        """Hang up every live call and end every task (the app is stopping)."""
        for call in list(self.live.values()):
            call.send_bye()
            call.stop("shutdown")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hang_up(self, call_id: str) -> bool:
        if (call := self.live.get(call_id)) is None:
            return False
        call.record.hangup_by = call.record.hangup_by or "api"
        call.send_bye()
        call.stop("hangup")
        return True

    def uri_for(self, number: str, peer: Address) -> str:
        host = self.settings.trunk_uri and parse_name_addr(self.settings.trunk_uri).uri.host
        return f"sip:{number}@{host or peer[0]}"

    # InviteHandler

    def on_invite(self, request: Request, tx: ServerTransaction) -> None:
        self.endpoint.respond(tx, response_to(request, 100))
        self.spawn(self._answer(request, tx))

    def on_cancel(self, invite: ServerTransaction) -> None:
        """CANCEL before our answer: 487 at once; `_answer` sees it at its next step."""
        self.endpoint.respond(invite, response_to(invite.request, 487))
        log.info("sip_cancelled")

    async def _answer(self, request: Request, tx: ServerTransaction) -> None:
        offer = None
        if request.body:  # else a late offer: ours goes in the 200, the answer in the ACK
            try:
                offer = negotiate(parse_sdp(request.body))
            except SdpError as exc:
                log.info("sip_offer_refused", error=str(exc)[:120])
                self.endpoint.respond(tx, response_to(request, 488))
                return
        ringing = _ringing(request)
        agent = self.gateway.config.settings.routes.get(ringing.to_number or "")
        admitted = await admit(self.gateway, "sip", agent or self.settings.agent, ringing)
        if isinstance(admitted, str):
            if tx.state == "proceeding":
                self.endpoint.respond(tx, response_to(request, self._refusal(admitted)))
            return
        record = admitted.record
        tag = new_tag()
        source = tx.source
        if tx.state == "proceeding":
            self._ring(request, tx, tag)
            await asyncio.sleep(self.settings.answer_delay_secs)
        try:
            rtp = await RtpSession.open(self.rtp_host, self.ports)
        except OSError as exc:
            log.warning("sip_rtp_unavailable", error=str(exc))
            await self.fail(record, "rtp_ports")
            if tx.state == "proceeding":
                self.endpoint.respond(tx, response_to(request, 503))
            return
        if tx.state != "proceeding":  # CANCELled meanwhile
            await rtp.close()
            await self.fail(record, "caller_cancelled")
            return
        dialog = Dialog.as_uas(
            request, tag, self.endpoint.contact(source[0]), self.endpoint.sent_by(source[0])
        )
        call = SipCall(self, dialog, source, rtp, record, offer)
        if offer is not None:
            rtp.start_negotiated(offer)
        self.endpoint.dialogs[dialog.key] = call
        self.endpoint.respond(tx, call.ok_with_sdp(request))
        await self.serve(call)

    def _ring(self, request: Request, tx: ServerTransaction, tag: str) -> None:
        """180 Ringing with the dialog's tag and our Contact: an early dialog the caller can
        CANCEL while `sip.answer_delay_secs` runs."""
        ringing = response_to(request, 180, to_tag=tag)
        ringing.headers.add("Contact", f"<{self.endpoint.contact(tx.source[0])}>")
        self.endpoint.respond(tx, ringing)

    def _refusal(self, message: str) -> int:
        if message == UNKNOWN_AGENT_APOLOGY:
            return 404
        return 486 if self.gateway.ready else 503

    async def fail(self, record: CallRecord, reason: str) -> None:
        """A call that never started: failed with `reason`, its slot given back."""
        record.status, record.end_reason = "failed", reason
        record.ended_at = time.time()
        await self.gateway.registry.release(record.id)
        await self.gateway.registry.save(record)
        self.webhooks.notify(record, "failed")
        log.info("sip_call_failed", call_id=record.id, reason=reason)

    async def serve(self, call: SipCall) -> None:
        """Wait for the dialog to be confirmed, then run the call; always clean up."""
        gateway, record = self.gateway, call.record
        self.live[record.id] = call
        try:
            await _first(call.confirmed.wait(), call.ended.wait())
            if not call.confirmed.is_set():
                await self.fail(record, record.end_reason or "ended_before_ack")
                return
            await gateway.registry.hold(record.id, None)
            agent = gateway.config.agents[record.agent]
            services = await gateway.prewarmer.take(record.id)
            running = Call(
                record,
                agent,
                services or build_services(agent, record.variables),
                call.rtp,
                gateway.metrics,
                call.hang_up,
                gateway.config.settings.calls.playout_lead_ms / 1000,
                transfer_provider=call.transfer,
                save_record=gateway.registry.save,
            )
            gateway.calls.add(running)
            self.webhooks.notify(record, "answered")
            try:
                await running.run()
            finally:
                gateway.calls.discard(running)
                await gateway.registry.release(record.id)
                ended = "failed" if record.status == "failed" else "completed"
                self.webhooks.notify(record, ended)
        finally:
            self.live.pop(record.id, None)
            call.send_bye()
            call.stop("ended")
            self.endpoint.dialogs.pop(call.dialog.key, None)
            await call.rtp.close()


def _ringing(request: Request) -> Ringing:
    def user(header: str) -> str | None:
        try:
            name = parse_name_addr(request.headers.get(header) or "").uri.user
        except SipError:
            return None
        return name[:64] if name else None

    return Ringing(request.headers.get("Call-ID"), user("From"), user("To"))


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
