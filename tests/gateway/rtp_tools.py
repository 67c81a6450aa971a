"""RTP for the real-peer SIP tests: speech pcaps for sipp to play, and a collector that hears
what the far end sends back and measures the gaps between its packets.

sipp's `play_pcap_audio` replays a capture's UDP payloads with its own addresses and ports; the
only speech capture Debian ships (g711a.pcap) is A-law in 30 ms packets, so PCMU speech is
written here from the corpus's 8 kHz WAVs (pcap format: libpcap 2.4, Ethernet link type).
"""

from __future__ import annotations

import math
import selectors
import socket
import struct
import threading
import time
import wave
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.codecs import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm

SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
PCAP_PEER_PORTS = (6000, 10000)
"""(source, destination) UDP ports written into pcaps: sipp replaces both with the call's."""
_ENCODE = {0: pcm_to_ulaw, 8: pcm_to_alaw}
_DECODE = {0: ulaw_to_pcm, 8: alaw_to_pcm}
SO_TIMESTAMPNS = 35
"""Linux: the kernel stamps each datagram as it arrives (a `struct timespec`, CLOCK_REALTIME),
so the gaps measured are the wire's, not this thread's scheduling."""
_TIMESTAMP_SPACE = socket.CMSG_SPACE(16)
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET


def wav_pcm8k(paths: Iterable[Path], gap_secs: float = 0.0) -> bytes:
    """8 kHz 16-bit mono WAVs joined into one PCM stream, `gap_secs` of silence after each."""
    pcm = bytearray()
    for path in paths:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                raise ValueError(f"{path}: expected 8 kHz 16-bit mono")
            pcm += w.readframes(w.getnframes())
        pcm += bytes(2 * int(8000 * gap_secs))
    return bytes(pcm)


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def silence(secs: float, rate: int = 8000) -> bytes:
    return bytes(2 * int(rate * secs))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(udp_payload: bytes, ident: int) -> bytes:
    """Ethernet + IPv4 (127.0.0.1 both ways) + UDP around one payload."""
    src_port, dst_port = PCAP_PEER_PORTS
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(udp_payload), 0) + udp_payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes(12) + b"\x08\x00" + ip + udp


def rtp_packets(pcm8k: bytes, payload_type: int = 0, ssrc: int = 0x5EED0001) -> Iterator[bytes]:
    """PCMU (0) or PCMA (8) RTP of `pcm8k`, one 20 ms packet after another (one talkspurt)."""
    encode = _ENCODE[payload_type]
    step = 2 * SAMPLES_PER_PACKET
    for count, start in enumerate(range(0, len(pcm8k) - step + 1, step)):
        marker = 0x80 if count == 0 else 0
        yield struct.pack(
            "!BBHII", 0x80, marker | payload_type, (1000 + count) & 0xFFFF,
            count * SAMPLES_PER_PACKET, ssrc,
        ) + encode(pcm8k[start : start + step])


def write_rtp_pcap(
    path: Path, pcm8k: bytes, payload_type: int = 0, ssrc: int = 0x5EED0001
) -> int:
    """`rtp_packets` as a capture, 20 ms apart; the packet count."""
    with path.open("wb") as out:
        out.write(_PCAP_HEADER)
        count = 0
        for count, rtp in enumerate(rtp_packets(pcm8k, payload_type, ssrc), start=1):
            frame = _frame(rtp, count - 1)
            micros = (count - 1) * 20_000
            out.write(struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000,
                                  micros % 1_000_000, len(frame), len(frame)))
            out.write(frame)
        return count


def send_rtp(
    sock: socket.socket, address: tuple[str, int], pcm8k: bytes, ssrc: int = 0x5EED0002
) -> list[float]:
    """Sends `pcm8k` as PCMU to `address` the way a phone does, a packet every 20 ms on absolute
    deadlines; when each packet left, on time.time()'s clock (the collector's kernel stamps)."""
    sent = []
    start = time.monotonic()
    for index, packet in enumerate(rtp_packets(pcm8k, 0, ssrc)):
        delay = start + index * SAMPLES_PER_PACKET / 8000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(packet, address)
        sent.append(time.time())
    return sent


@dataclass
class Stream:
    """The RTP one far-end source sent to one collector port."""

    source: tuple[str, int]
    arrivals: list[float] = field(default_factory=list)  # kernel receive time of each packet
    headers: list[tuple[int, int]] = field(default_factory=list)  # (sequence, timestamp) each
    payload_types: set[int] = field(default_factory=set)
    ssrcs: set[int] = field(default_factory=set)
    audio: bytearray = field(default_factory=bytearray)  # 8 kHz PCM16 of the G.711 packets
    levels: list[float] = field(default_factory=list)  # RMS of each packet's audio, 0..1 (0: none)
    malformed: int = 0

    def gaps_ms(self) -> list[float]:
        """Arrival gaps between packets the sender numbered and stamped back to back (next
        sequence number, timestamp one packet on): what a caller hears as a stutter. A pause
        the sender means (a timestamp jump between talkspurts) is not a gap."""
        gaps = []
        for i in range(1, len(self.arrivals)):
            (seq0, ts0), (seq1, ts1) = self.headers[i - 1], self.headers[i]
            if (seq1 - seq0) & 0xFFFF == 1 and (ts1 - ts0) & 0xFFFFFFFF == SAMPLES_PER_PACKET:
                gaps.append(1000 * (self.arrivals[i] - self.arrivals[i - 1]))
        return gaps

    def arrival_gaps_ms(self) -> list[float]:
        """Arrival gaps between every two packets the sender numbered back to back, whatever
        their timestamps: for a stream that never pauses (comfort silence between turns), a
        timestamp jump is a stall of the sender, and its gap must count."""
        return [
            1000 * (self.arrivals[i] - self.arrivals[i - 1])
            for i in range(1, len(self.arrivals))
            if (self.headers[i][0] - self.headers[i - 1][0]) & 0xFFFF == 1
        ]

    def timestamp_jumps(self) -> int:
        """Packets numbered back to back whose timestamps are not one packet apart."""
        return sum(
            (b[0] - a[0]) & 0xFFFF == 1 and (b[1] - a[1]) & 0xFFFFFFFF != SAMPLES_PER_PACKET
            for a, b in zip(self.headers, self.headers[1:], strict=False)
        )

    def lost(self) -> int:
        """Sequence numbers skipped (packets the sender numbered that never arrived)."""
        return sum(
            ((b[0] - a[0]) & 0xFFFF) - 1
            for a, b in zip(self.headers, self.headers[1:], strict=False)
            if 1 < (b[0] - a[0]) & 0xFFFF < 0x8000
        )

    def packets_between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.arrivals)

    def voiced_arrivals(self, threshold_dbfs: float = -40.0) -> list[float]:
        """When each packet louder than the threshold arrived: speech heard, whether the sender
        sends nothing or silence between its turns."""
        floor = 10 ** (threshold_dbfs / 20)
        levels = zip(self.arrivals, self.levels, strict=False)  # the collector may be mid-packet
        return [t for t, level in levels if level > floor]

    def voiced_secs(self, threshold_dbfs: float = -40.0) -> float:
        """Seconds of 20 ms blocks louder than the threshold: speech, not silence or noise."""
        return voiced_secs(bytes(self.audio), 8000, threshold_dbfs)


def voiced_secs(pcm: bytes, rate: int, threshold_dbfs: float = -40.0) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    block = rate // 50
    blocks = samples[: len(samples) // block * block].reshape(-1, block)
    if not len(blocks):
        return 0.0
    rms = np.sqrt((blocks**2).mean(axis=1))
    return float((rms > 10 ** (threshold_dbfs / 20)).sum()) / 50


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = struct.unpack_from("qq", data)
            return seconds + nanos / 1e9
    return time.time()


class RtpCollector:
    """UDP sockets on loopback ports, read by one thread: each packet's arrival time, per
    (port, source). A packet that is not RTP version 2 is counted as malformed, not kept."""

    def __init__(self, ports: Iterable[int]) -> None:
        self._selector = selectors.DefaultSelector()
        self.streams: dict[int, dict[tuple[str, int], Stream]] = {}
        self._lock = threading.Lock()
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind(("127.0.0.1", port))
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, port)
            self.streams[port] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-collector", daemon=True)

    def __enter__(self) -> RtpCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def socket_of(self, port: int) -> socket.socket:
        """The collector's socket on `port`: send from it so symmetric RTP answers here."""
        for key in self._selector.get_map().values():
            if key.data == port:
                return key.fileobj  # type: ignore[return-value]
        raise KeyError(port)

    def port_streams(self, port: int) -> list[Stream]:
        with self._lock:
            return list(self.streams[port].values())

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                while True:
                    try:
                        data, ancillary, _, source = key.fileobj.recvmsg(  # type: ignore[union-attr]
                            2048, _TIMESTAMP_SPACE
                        )
                    except BlockingIOError:
                        break
                    self._record(key.data, source, data, _arrival(ancillary))

    def _record(self, port: int, source: tuple[str, int], data: bytes, now: float) -> None:
        with self._lock:
            stream = self.streams[port].get(source)
            if stream is None:
                stream = self.streams[port][source] = Stream(source)
        if len(data) < 12 or data[0] >> 6 != 2:
            stream.malformed += 1
            return
        payload_type = data[1] & 0x7F
        stream.arrivals.append(now)
        stream.headers.append(struct.unpack_from("!HI", data, 2))
        stream.payload_types.add(payload_type)
        stream.ssrcs.add(struct.unpack_from("!I", data, 8)[0])
        decode = _DECODE.get(payload_type)
        level = 0.0
        if decode is not None:
            header = 12 + 4 * (data[0] & 0x0F)
            pcm = decode(data[header:])
            stream.audio += pcm
            if pcm:
                samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
                level = float(np.sqrt((samples**2).mean()))
        stream.levels.append(level)
