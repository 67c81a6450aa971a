"""One SIP call's dialog (the endpoint's `DialogUser`): ACK (with the answer to a late
offer), BYE, re-INVITE (hold and resume), REFER for a transfer, and our SDP.

An INVITE without SDP (late offer, RFC 3261 §13.2.1) is answered with our offer in the 200 OK,
and the ACK must carry the answer; the RTP session starts then (a missing or unusable answer
ends the call with BYE). An offerless re-INVITE is handled the same way.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import TYPE_CHECKING

import structlog

from gateway.registry import CallRecord
from gateway.rtp_session import RtpSession
from gateway.sip_endpoint import SipTimeout
from providers.sip.dialog import Dialog
from providers.sip.message import Request, Response, response_to
from providers.sip.sdp import Negotiated, SdpError, build_sdp, negotiate, parse_sdp
from providers.sip.transaction import Address, ServerTransaction

if TYPE_CHECKING:
    from gateway.sip_calls import SipCalls

log = structlog.get_logger()

REFER_NOTIFY_SECS = 30.0
SDP = "application/sdp"
OFFER_CODECS = ((0, "PCMU"), (8, "PCMA"))
DTMF_PAYLOAD_TYPE = 101


def offer_sdp(host: str, port: int, session_id: int, version: int = 1) -> bytes:
    """Our SDP offer: PCMU, PCMA and telephone-event, sendrecv."""
    return build_sdp(
        host=host,
        port=port,
        session_id=session_id,
        version=version,
        codecs=OFFER_CODECS,
        dtmf_payload_type=DTMF_PAYLOAD_TYPE,
    )


class SipCall:
    """One call's dialog and RTP session; what the endpoint routes in-dialog requests to."""

    def __init__(
        self,
        calls: SipCalls,
        dialog: Dialog,
        peer: Address,
        rtp: RtpSession,
        record: CallRecord,
        media: Negotiated | None,
    ) -> None:
        self.calls = calls
        self.dialog = dialog
        self.peer = peer
        self.rtp = rtp
        self.record = record
        self.media = media
        """None until a late offer's answer arrives with the ACK."""
        self.confirmed = asyncio.Event()
        """The 2xx of the INVITE that made the dialog was ACKed (or, outbound, we ACKed)."""
        self.ended = asyncio.Event()
        self._session_id = secrets.randbelow(2**31)
        self._sdp_version = 0
        self._refer_progress: asyncio.Queue[int] | None = None
        self._offered = media is None
        """Our last 2xx carried an offer: the ACK brings the answer."""

    # DialogUser

    def on_request(self, request: Request, tx: ServerTransaction | None) -> None:
        endpoint = self.calls.endpoint
        if request.method == "ACK":
            if self._offered:
                self._offered = False
                if not self._take_answer(request):
                    return
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

    def local_sdp(self) -> bytes:
        """Our SDP: for the negotiated media, or our offer before any (late offer); each call
        to it is a new version (re-INVITE)."""
        self._sdp_version += 1
        media, host = self.media, self.calls.endpoint.host_for(self.peer[0])
        if media is None:
            return offer_sdp(host, self.rtp.local_port, self._session_id, self._sdp_version)
        return build_sdp(
            host=host,
            port=self.rtp.local_port,
            session_id=self._session_id,
            version=self._sdp_version,
            codecs=[(media.payload_type, media.codec)],
            dtmf_payload_type=media.dtmf_payload_type,
            direction=media.direction,
        )

    def ok_with_sdp(self, request: Request) -> Response:
        """The 200 to an INVITE of this dialog, with our SDP."""
        ok = response_to(request, 200, to_tag=self.dialog.local_tag)
        ok.headers.add("Contact", f"<{self.dialog.local_contact}>")
        ok.headers.add("Content-Type", SDP)
        ok.body = self.local_sdp()
        return ok

    def _take_answer(self, ack: Request) -> bool:
        """The answer to the offer in our 2xx, from its ACK: starts (or, after an offerless
        re-INVITE, updates) the RTP session. Without a usable one a new call ends with BYE;
        a running one keeps its media."""
        try:
            media = negotiate(parse_sdp(ack.body))
            if self.media is not None and (media.codec, media.payload_type) != (
                self.media.codec,
                self.media.payload_type,
            ):
                raise SdpError("the answer changes the codec mid-call")
        except SdpError as exc:
            log.warning("sip_answer_refused", call_id=self.record.id, error=str(exc)[:120])
            if self.media is None:
                self.record.end_reason = self.record.end_reason or "bad_sdp"
                self.send_bye()
                self.stop("bad_sdp")
                return False
            return True
        if self.media is None:
            self.rtp.start_negotiated(media)
        else:
            remote = (media.remote_host, media.remote_port)
            self.rtp.update(remote=remote, direction=media.direction)
        self.media = media
        return True

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
        if self.media is None or self._offered:  # our offer is still unanswered
            endpoint.respond(tx, response_to(request, 491))
            return
        if not request.body:  # an offerless re-INVITE: offer what we have, answer in the ACK
            media = self.media
            self._offered = True
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
        endpoint.respond(tx, self.ok_with_sdp(request))
