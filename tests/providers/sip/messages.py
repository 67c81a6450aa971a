"""Real-world SIP messages shared by the message, SDP and fuzz tests (wire bytes, CRLF ends)."""

from __future__ import annotations


def wire(head: str, body: str = "") -> bytes:
    """Header lines (LF-separated, as written in a test) to wire bytes with a true
    Content-Length, the way sipp's [len] pads it."""
    lines = head.strip("\n").split("\n")
    lines.append(f"Content-Length:   {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp(text: str) -> str:
    return "\r\n".join(text.strip("\n").split("\n")) + "\r\n"


SIPP_SDP = sdp("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

# sipp's built-in `uac` scenario (sipp -sd uac), values filled in as sipp does.
SIPP_INVITE = wire(
    """
INVITE sip:service@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0
From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001
To: service <sip:service@127.0.0.1:5060>
Call-ID: 1-4242@127.0.0.1
CSeq: 1 INVITE
Contact: sip:sipp@127.0.0.1:5061
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
""",
    SIPP_SDP,
)

BARESIP_SDP = sdp("""
v=0
o=- 1284736218 2816453823 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 10368 RTP/AVP 96 0 8 101
b=AS:80
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp-rsize
""")

# baresip 1.x placing a call (display name with a comma, rport, comma lists).
BARESIP_INVITE = wire(
    """
INVITE sip:agent@10.0.0.5:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:43210;branch=z9hG4bK3a1f5c0e1d2b9a77;rport
Contact: <sip:alice-0x55d5c2@192.168.1.20:43210;transport=udp>
Max-Forwards: 70
To: <sip:agent@10.0.0.5:5060>
From: "Doe, Alice" <sip:alice@example.org>;tag=2d8ac3f0f6e0b1c4
Call-ID: 8c2f0a7e3c5d1b4a
CSeq: 31337 INVITE
User-Agent: baresip v1.1.0 (x86_64/linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,PRACK,MESSAGE,SUBSCRIBE,NOTIFY,INFO,REFER,UPDATE
Supported: replaces,norefersub,100rel
Content-Type: application/sdp
""",
    BARESIP_SDP,
)

# A response that went through two proxies, in compact form, with a multi-value Via line.
COMPACT_RESPONSE = wire("""
SIP/2.0 180 Ringing
v: SIP/2.0/UDP p.example;branch=z9hG4bK1,SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK2;received=::1
v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds
f: Alice <sip:alice@example.com>;tag=1928301774
t: "Bob \\"the builder\\"" <sip:bob@example.com>;tag=a6c85cf
i: a84b4c76e66710@pc33.example.com
CSeq: 314159 INVITE
m: <sip:bob@192.0.2.4>, "Bob, mobile" <sip:bob@198.51.100.7;transport=tcp>;q=0.5
""")
