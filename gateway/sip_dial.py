"""Outbound SIP: `POST /v1/calls` with provider "sip" sends an INVITE through the configured
trunk (answering 401/407 digest challenges once), rings for up to `sip.ring_timeout_secs`
(then CANCELs), ACKs the 2xx and runs the call like an inbound one. Optionally keeps a
REGISTER binding with the trunk.
"""

from __future__ import annotations

import asyncio
import secrets

import structlog

from gateway.registry import CallRecord
from gateway.rtp_session import RtpSession
from gateway.sip_call import SDP, SipCall, offer_sdp
from gateway.sip_calls import SipCalls
from gateway.sip_endpoint import DialError, SipTimeout, resolve
from providers.sip.dialog import Dialog, cancel_for, new_request, with_credentials
from providers.sip.digest import authorization, parse_challenge
from providers.sip.message import (
    Request,
    Response,
    SipError,
    SipUri,
    new_call_id,
    parse_cseq,
    parse_name_addr,
    parse_uri,
)
from providers.sip.sdp import SdpError, negotiate, parse_sdp
from providers.sip.transaction import T1, Address, ClientTransaction

log = structlog.get_logger()

REGISTER_RETRY_SECS = 30.0
REFRESH_AT = 0.8
"""Refresh a registration when this share of its lifetime has passed."""
_REASONS = {486: "busy", 600: "busy", 408: "no_answer", 480: "no_answer", 487: "no_answer"}


class SipDialer:
    def __init__(self, calls: SipCalls) -> None:
        self.calls = calls
        self.settings = calls.settings
        self._trunk = parse_uri(self.settings.trunk_uri) if self.settings.trunk_uri else None
        self._ringing: dict[str, tuple[Request, Address]] = {}
        """Our call id -> the INVITE still ringing and where it went (for a CANCEL)."""

    @property
    def configured(self) -> bool:
        return self._trunk is not None

    async def dial(self, record: CallRecord) -> str:
        """Start the call (it goes on in a task of `SipCalls`); its SIP Call-ID."""
        assert self._trunk is not None and record.to_number and record.from_number
        endpoint = self.calls.endpoint
        try:
            peer = await resolve(self._trunk)
            rtp = await RtpSession.open(self.calls.rtp_host, self.calls.ports)
        except OSError as exc:
            raise DialError(str(exc)) from exc
        offer = offer_sdp(endpoint.host_for(peer[0]), rtp.local_port, secrets.randbelow(2**31))
        trunk = _hostport(self._trunk)
        invite = new_request(
            "INVITE",
            request_uri=f"sip:{record.to_number}@{trunk}",
            from_uri=f"sip:{record.from_number}@{trunk}",
            to_uri=f"sip:{record.to_number}@{trunk}",
            contact=endpoint.contact(peer[0]),
            sent_by=endpoint.sent_by(peer[0]),
            body=offer,
            content_type=SDP,
        )
        self.calls.spawn(self._place(record, invite, rtp, peer))
        return invite.headers.get("Call-ID") or ""

    async def _place(
        self, record: CallRecord, invite: Request, rtp: RtpSession, peer: Address
    ) -> None:
        calls, endpoint = self.calls, self.calls.endpoint
        try:
            invite, tx, response = await self._ring(record, invite, peer)
        except (SipTimeout, TimeoutError):
            response = None
        if response is None or not 200 <= response.status < 300:
            await rtp.close()
            status = response.status if response else None
            reason = _REASONS.get(status or 0, f"sip_{status}" if status else "timeout")
            await calls.fail(record, reason)
            return
        sent_by = endpoint.sent_by(peer[0])
        try:
            dialog = Dialog.as_uac(invite, response, sent_by)
        except SipError as exc:  # a 2xx we cannot make a dialog of: nothing to ACK or BYE
            log.warning("sip_bad_answer", call_id=record.id, error=str(exc)[:120])
            await rtp.close()
            await calls.fail(record, "bad_answer")
            return
        endpoint.send_ack(tx, dialog.ack(parse_cseq(invite.headers.get("CSeq") or "")[0]), peer)
        try:
            media = negotiate(parse_sdp(response.body))
        except SdpError:
            endpoint.send_request(dialog.request("BYE"), peer)
            await rtp.close()
            await calls.fail(record, "bad_sdp")
            return
        rtp.start_negotiated(media)
        call = SipCall(calls, dialog, peer, rtp, record, media)
        call.confirmed.set()
        endpoint.dialogs[dialog.key] = call
        log.info("sip_call_answered", call_id=record.id)
        await calls.serve(call)

    async def _ring(
        self, record: CallRecord, invite: Request, peer: Address
    ) -> tuple[Request, ClientTransaction, Response]:
        """The final response to the INVITE (after one digest retry); CANCEL at ring timeout."""
        endpoint = self.calls.endpoint

        def progress(response: Response) -> None:
            if response.status in (180, 183) and record.status == "initiated":
                record.status = "ringing"
                self.calls.webhooks.notify(record, "ringing")

        for attempt in range(2):
            self._ringing[record.id] = (invite, peer)
            ringing = asyncio.ensure_future(endpoint.request(invite, peer, progress))
            done, _ = await asyncio.wait({ringing}, timeout=self.settings.ring_timeout_secs)
            if not done:
                log.info("sip_ring_timeout", call_id=record.id)
                endpoint.send_request(cancel_for(invite), peer)
            try:
                tx, response = await asyncio.wait_for(ringing, 64 * T1)
            finally:
                self._ringing.pop(record.id, None)
            retry = self._with_credentials(invite, response) if attempt == 0 else None
            if retry is None:
                return invite, tx, response
            invite = retry
        raise AssertionError("unreachable")

    def cancel(self, call_id: str) -> bool:
        """CANCEL the call if it is still ringing."""
        if (ringing := self._ringing.pop(call_id, None)) is None:
            return False
        invite, peer = ringing
        self.calls.endpoint.send_request(cancel_for(invite), peer)
        return True

    def _with_credentials(self, request: Request, response: Response) -> Request | None:
        """The request again with credentials for a 401/407 challenge, or None."""
        settings = self.settings
        if response.status not in (401, 407) or not (settings.username and settings.password):
            return None
        ask, answer = (
            ("WWW-Authenticate", "Authorization")
            if response.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        try:
            challenge = parse_challenge(response.headers.get(ask) or "")
        except SipError as exc:
            log.warning("sip_bad_challenge", error=str(exc)[:120])
            return None
        value = authorization(
            challenge,
            method=request.method,
            uri=request.uri,
            username=settings.username,
            password=settings.password,
        )
        return with_credentials(request, answer, value)

    async def keep_registered(self) -> None:
        """REGISTER with the trunk and refresh before the binding expires, until cancelled.

        Every REGISTER of this process has the same Call-ID and a growing CSeq (RFC 3261
        §10.2.4), so the registrar sees refreshes of one binding."""
        assert self._trunk is not None
        endpoint = self.calls.endpoint
        call_id, seq = new_call_id(endpoint.public_host or endpoint.bind_host), 1
        while True:
            seq, expires = await self._register(self.settings.register_expires_secs, call_id, seq)
            await asyncio.sleep(expires * REFRESH_AT if expires else REGISTER_RETRY_SECS)

    async def _register(self, expires: int, call_id: str, seq: int) -> tuple[int, int]:
        """One REGISTER (with a digest retry) from CSeq `seq`: the next CSeq, and the expiry
        the registrar granted (0 on failure)."""
        assert self._trunk is not None
        endpoint, settings = self.calls.endpoint, self.settings
        try:
            peer = await resolve(self._trunk)
        except OSError as exc:
            log.warning("sip_register_failed", error=str(exc))
            return seq, 0
        aor = f"sip:{settings.username}@{_hostport(self._trunk)}"
        contact = endpoint.contact(peer[0], settings.username or "callgate")
        request = new_request(
            "REGISTER",
            request_uri=f"sip:{_hostport(self._trunk)}",
            from_uri=aor,
            to_uri=aor,
            contact=contact,
            sent_by=endpoint.sent_by(peer[0]),
            call_id=call_id,
            seq=seq,
        )
        request.headers.add("Expires", str(expires))
        try:
            for _ in range(2):
                _, response = await endpoint.request(request, peer)
                retry = self._with_credentials(request, response)
                if retry is None:
                    break
                request = retry
        except SipTimeout:
            log.warning("sip_register_failed", error="timeout")
            return _next_seq(request), 0
        if not 200 <= response.status < 300:
            log.warning("sip_register_failed", status=response.status)
            return _next_seq(request), 0
        granted = _granted_expiry(response, contact, expires)
        log.info("sip_registered", expires=granted)
        return _next_seq(request), granted


def _next_seq(request: Request) -> int:
    return parse_cseq(request.headers.get("CSeq") or "")[0] + 1


def _granted_expiry(response: Response, contact: str, asked: int) -> int:
    """The binding's lifetime from a 2xx to REGISTER: the `expires` parameter of our Contact
    in it, else its Expires header, else what we asked for (§10.2.4)."""
    ours = parse_uri(contact)
    for value in response.headers.get_all("Contact"):
        try:
            bound = parse_name_addr(value)
        except SipError:
            continue
        if (bound.uri.user, bound.uri.host, bound.uri.port) == (ours.user, ours.host, ours.port):
            expires = bound.params.get("expires") or ""
            if expires.isdigit():
                return int(expires)
    header = (response.headers.get("Expires") or "").strip()
    return int(header) if header.isdigit() else asked


def _hostport(uri: SipUri) -> str:
    return f"{uri.host}:{uri.port}" if uri.port else uri.host
