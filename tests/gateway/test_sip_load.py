"""50 concurrent sipp calls into one gateway process on this machine: all answered, none
dropped, and the gateway's RTP output evenly paced (gap p99 at most 60 ms), measured on the
receive side by kernel timestamps between every two packets of each call (the stream never
pauses: comfort silence flows between the agent's turns). The agent is `bench` (real denoise,
VAD and Smart Turn, stand-in STT/LLM/TTS), so what is measured is the gateway itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.corpus import select_prompts
from tests.gateway.rtp_tools import RtpCollector, percentile, silence, wav_pcm8k, write_rtp_pcap
from tests.gateway.server import REPO
from tests.gateway.sip_gateway import SipGateway, start_sip_gateway
from tests.gateway.sip_peers import Sipp, media_ports

pytestmark = pytest.mark.slow

CALLS = 50
CALL_SECS = 12.0
GAP_P99_MS = 60.0


@pytest.fixture(scope="module")
def bench_gateway(tmp_path_factory) -> Iterator[SipGateway]:
    bench = yaml.safe_load((REPO / "config" / "agents" / "bench.yaml").read_text())
    bench["tts"]["secs"] = 1.0  # short answers: a greeting and a reply fit each 12 s call
    gateway = start_sip_gateway(tmp_path_factory.mktemp("sip-load"), {"bench": bench}, "bench")
    yield gateway
    assert gateway.stop() == 0


def test_fifty_concurrent_calls(bench_gateway: SipGateway, tmp_path: Path, report_figure):
    prompts = select_prompts(2, seed=3, min_secs=1.5, max_secs=3.0)
    pcm = silence(1.5) + wav_pcm8k([p.wav for p in prompts], gap_secs=2.0) + silence(6)
    write_rtp_pcap(tmp_path / "speech.pcap", pcm)
    uac = Sipp("uac_speech.xml", tmp_path, remote=bench_gateway.sip, calls=CALLS, rate=25,
               call_secs=CALL_SECS, timeout_secs=90)
    ports = media_ports(uac.media_port, CALLS)
    with RtpCollector(ports) as collector:
        started = time.time()
        result = uac.run()
    assert result.returncode == 0, result.explain()
    assert (result.successful, result.failed) == (CALLS, 0), result.explain()

    streams = {port: collector.port_streams(port) for port in ports}
    silent = [port for port, found in streams.items() if len(found) != 1]
    assert not silent, f"calls without exactly one agent stream: {silent}"
    gaps = [gap for found in streams.values() for gap in found[0].arrival_gaps_ms()]
    jumps = sum(found[0].timestamp_jumps() for found in streams.values())
    lost = sum(found[0].lost() for found in streams.values())
    packets = sum(len(found[0].arrivals) for found in streams.values())
    voiced = [found[0].voiced_secs() for found in streams.values()]
    records = [bench_gateway.record_of(call_id) for call_id in result.call_ids()]
    completed = sum(r["status"] == "completed" and r["hangup_by"] == "caller" for r in records)
    answered_turns = [sum(t["role"] == "assistant" for t in r["transcript"]) for r in records]

    report_figure("sip_load_calls", {"placed": CALLS, "answered": result.successful,
                                     "completed": completed, "secs": round(time.time() - started)})
    report_figure("sip_load_rtp_gap_ms", {
        "p50": round(percentile(gaps, 50), 1), "p99": round(percentile(gaps, 99), 1),
        "max": round(max(gaps), 1), "gaps": len(gaps), "packets": packets, "lost": lost,
        "timestamp_jumps": jumps,
    })
    report_figure("sip_load_agent_turns_per_call_min", min(answered_turns))
    assert completed == CALLS
    assert min(voiced) > 0.5, "a call where the agent's audio was silence"
    assert min(answered_turns) >= 2, answered_turns  # the greeting and at least one answer
    assert lost == 0
    # comfort silence between turns: every packet's gap is measured, none left out as a pause
    assert len(gaps) == packets - CALLS
    assert percentile(gaps, 99) <= GAP_P99_MS
