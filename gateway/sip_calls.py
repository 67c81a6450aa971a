"""SIP calls as gateway calls: an INVITE becomes a `Call` served over RTP, the way
`gateway.media_calls` serves a media stream (registry record with provider "sip", prewarmed
services, status webhooks, `gateway.calls`), with BYE, CANCEL, re-INVITE and REFER.

`SipCall` is one call's dialog (the endpoint's `DialogUser`); `SipCalls` answers INVITEs (the
endpoint's `InviteHandler`) and owns every call task. Outbound dialling is `gateway.sip_dial`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
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
from gateway.sip_endpoint import SipEndpoint, SipTimeout
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks
from pipeline.services import build_services
from providers.sip.dialog import Dialog
from providers.sip.message import (
    Request,
    Response,
    SipError,
    new_tag,
    parse_name_addr,
    response_to,
)
from providers.sip.sdp import Negotiated, SdpError, build_sdp, negotiate, parse_sdp
from providers.sip.transaction import Address, ServerTransaction

log = structlog.get_logger()

REFER_NOTIFY_SECS = 30.0
SDP = "application/sdp"


class SipCall:
    """One call's dialog and RTP session; what the endpoint routes in-dialog requests to."""

    def __init__(
        self,
        calls: SipCalls,
        dialog: Dialog,
        peer: Address,
        rtp: RtpSession,
        record: CallRecord,
        media: Negotiated,
    ) -> None:
        self.calls = calls
        self.dialog = dialog
        self.peer = peer
        self.rtp = rtp
        self.record = record
        self.media = media
        self.confirmed = asyncio.Event()
        """The 2xx of the INVITE that made the dialog was ACKed (or, outbound, we ACKed)."""
        self.ended = asyncio.Event()
        self._session_id = secrets.randbelow(2**31)
        self._sdp_version = 0
        self._refer_progress: asyncio.Queue[int] | None = None

    # DialogUser

    def on_request(self, request: Request, tx: ServerTransaction | None) -> None:
        endpoint = self.calls.endpoint
        if request.method == "ACK":
            self.confirmed.set()
            return
        assert tx is not None
        if not self.dialog.receive(request):
            endpoint.respond(tx, response_to(request, 500))
            return
        if request.method == "BYE":
            endpoint.respond(tx, response_to(request, 200))
            log.info("sip_bye_received", call_id=self.record.id)
            self.stop("caller_hangup")
        elif request.method == "INVITE":
            self._reinvite(request, tx)
        elif request.method == "NOTIFY":
            endpoint.respond(tx, response_to(request, 200))
            self._notified(request)
        elif request.method in ("OPTIONS", "INFO"):
            endpoint.respond(tx, response_to(request, 200))
        else:
            endpoint.respond(tx, response_to(request, 405))

    def on_timeout(self, tx: ServerTransaction) -> None:
        """Our 2xx was never ACKed: the dialog is dead (RFC 3261 §13.3.1.4)."""
        log.warning("sip_ack_timeout", call_id=self.record.id)
        self.record.end_reason = self.record.end_reason or "no_ack"
        self.send_bye()
        self.stop("no_ack")

    # call control

    def answer_sdp(self) -> bytes:
        """Our SDP for the negotiated media; each call to it is a new version (re-INVITE)."""
        self._sdp_version += 1
        media = self.media
        return build_sdp(
            host=self.calls.endpoint.host_for(self.peer[0]),
            port=self.rtp.local_port,
            session_id=self._session_id,
            version=self._sdp_version,
            codecs=[(media.payload_type, media.codec)],
            dtmf_payload_type=media.dtmf_payload_type,
            direction=media.direction,
        )

    def stop(self, reason: str) -> None:
        if not self.ended.is_set():
            self.ended.set()
            self.rtp.stop(reason)

    def send_bye(self) -> None:
        """BYE in its own client transaction; its retransmissions need no task of ours."""
        if not self.ended.is_set():
            self.calls.endpoint.send_request(self.dialog.request("BYE"), self.peer)

    async def hang_up(self) -> None:
        self.send_bye()
        self.stop("hangup")

    async def transfer(self, to: str) -> None:
        """REFER the caller to `to` (a number or a SIP URI); once the far end reports the new
        call answered (NOTIFY with a sipfrag 200), hang up (RFC 3515)."""
        target = to if to.startswith(("sip:", "sips:")) else self.calls.uri_for(to, self.peer)
        refer = self.dialog.request(
            "REFER",
            extra=[("Refer-To", f"<{target}>"), ("Referred-By", f"<{self.dialog.local_contact}>")],
        )
        self._refer_progress = asyncio.Queue()
        try:
            _, response = await self.calls.endpoint.request(refer, self.peer)
        except SipTimeout as exc:
            raise RuntimeError("the caller's phone did not answer the REFER") from exc
        if not 200 <= response.status < 300:
            raise RuntimeError(f"transfer refused: {response.status} {response.reason}")
        status = await asyncio.wait_for(self._final_refer_status(), REFER_NOTIFY_SECS)
        if not 200 <= status < 300:
            raise RuntimeError(f"transfer failed: {status}")
        log.info("sip_transferred", call_id=self.record.id)
        await self.hang_up()

    async def _final_refer_status(self) -> int:
        assert self._refer_progress is not None
        while (status := await self._refer_progress.get()) < 200:
            pass
        return status

    def _notified(self, request: Request) -> None:
        """A REFER progress report: the body is a sipfrag status line (`SIP/2.0 200 OK`)."""
        if self._refer_progress is None:
            return
        match = re.match(rb"\s*SIP/2\.0\s+(\d{3})", request.body)
        if match:
            self._refer_progress.put_nowait(int(match.group(1)))

    def _reinvite(self, request: Request, tx: ServerTransaction) -> None:
        """Hold/resume or a media change: new remote address and direction, same RTP session."""
        endpoint = self.calls.endpoint
        if not request.body:  # an offerless re-INVITE: offer what we have
            media = self.media
        else:
            try:
                media = negotiate(parse_sdp(request.body))
            except SdpError:
                endpoint.respond(tx, response_to(request, 488))
                return
            if (media.codec, media.payload_type) != (self.media.codec, self.media.payload_type):
                endpoint.respond(tx, response_to(request, 488))  # a codec change mid-call
                return
        self.media = media
        self.rtp.update(remote=(media.remote_host, media.remote_port), direction=media.direction)
        log.info("sip_reinvite", call_id=self.record.id, direction=media.direction)
        endpoint.respond(tx, self.calls.ok_with_sdp(request, self))


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

    def ok_with_sdp(self, request: Request, call: SipCall) -> Response:
        ok = response_to(request, 200, to_tag=call.dialog.local_tag)
        ok.headers.add("Contact", f"<{call.dialog.local_contact}>")
        ok.headers.add("Content-Type", SDP)
        ok.body = call.answer_sdp()
        return ok

    # InviteHandler

    def on_invite(self, request: Request, tx: ServerTransaction) -> None:
        self.endpoint.respond(tx, response_to(request, 100))
        self.spawn(self._answer(request, tx))

    def on_cancel(self, invite: ServerTransaction) -> None:
        """CANCEL before our answer: 487 at once; `_answer` sees it at its next step."""
        self.endpoint.respond(invite, response_to(invite.request, 487))
        log.info("sip_cancelled")

    async def _answer(self, request: Request, tx: ServerTransaction) -> None:
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
        source = tx.source
        dialog = Dialog.as_uas(
            request, new_tag(), self.endpoint.contact(source[0]), self.endpoint.sent_by(source[0])
        )
        call = SipCall(self, dialog, source, rtp, record, offer)
        rtp.start(
            remote=(offer.remote_host, offer.remote_port),
            codec=offer.codec,
            payload_type=offer.payload_type,
            dtmf_payload_type=offer.dtmf_payload_type,
            direction=offer.direction,
        )
        self.endpoint.dialogs[dialog.key] = call
        self.endpoint.respond(tx, self.ok_with_sdp(request, call))
        await self.serve(call)

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
