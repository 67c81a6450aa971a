"""SIP trunking without a PBX: sans-I/O message, SDP, digest, transaction, dialog and RTP cores.

The asyncio edges (UDP sockets, calls) live in gateway/sip_endpoint.py and gateway/rtp_session.py.
"""
