"""The SIP bridge against a real softphone: baresip (Debian) calls a real gateway over loopback,
says a sentence from the speech corpus, and records what it hears; the agent's greeting and its
(long) answer must be in that recording, and the sentence in the call's transcript."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus import select_prompts, word_error_rate
from tests.gateway.baresip_peer import Baresip
from tests.gateway.rtp_tools import silence, voiced_secs, wav_pcm8k, write_wav
from tests.gateway.server import LONG_REPLY
from tests.gateway.sip_gateway import SipGateway, start_sip_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sip_gateway(tmp_path_factory) -> Iterator[SipGateway]:
    answers_at_length = {
        "greeting": "Hello, how can I help?",
        "llm": {"provider": "scripted", "fallback": LONG_REPLY},
    }
    gateway = start_sip_gateway(
        tmp_path_factory.mktemp("sip-baresip"), {"talker": answers_at_length}, "talker"
    )
    yield gateway
    assert gateway.stop() == 0


def test_baresip_call_hears_greeting_and_answer(sip_gateway: SipGateway, tmp_path: Path):
    prompt = select_prompts(1, seed=9, min_secs=2.0, max_secs=4.0)[0]
    # The greeting first, then the caller's sentence, then quiet while the agent answers
    # (baresip ends the call when its source file runs out, so the file outlasts the call).
    said = write_wav(tmp_path / "caller.wav",
                     silence(3) + wav_pcm8k([prompt.wav]) + silence(30))
    with Baresip(tmp_path / "baresip", said) as phone:
        assert phone.command("dial", f"sip:agent@{sip_gateway.sip}")["ok"], phone.log()
        established = phone.wait_event("CALL_ESTABLISHED", 10)
        time.sleep(3 + prompt.duration + 10)
        assert phone.command("hangup")["ok"]
        closed = phone.wait_event("CALL_CLOSED", 10)
        recording = phone.dec_recording()
    assert established["peeruri"].startswith("sip:agent@"), established
    assert closed["id"] == established["id"]

    # baresip records only the audio it received: the agent sends none between its turns, so
    # the recording is the greeting (about 1.5 s) followed at once by what was heard of the
    # long answer before the hang-up (several seconds).
    with wave.open(str(recording), "rb") as heard:
        pcm, rate = heard.readframes(heard.getnframes()), heard.getframerate()
    assert len(pcm) / 2 / rate > 5, f"only {len(pcm) / 2 / rate:.1f} s of the agent heard"
    assert voiced_secs(pcm, rate) > 4, "the agent's audio was not speech"

    (record,) = [r for r in sip_gateway.records() if r["provider"] == "sip"]
    record = sip_gateway.record_of(record["provider_call_id"])
    assert record["status"] == "completed" and record["hangup_by"] == "caller", record
    texts = [(t["role"], t["text"]) for t in record["transcript"]]
    assert texts[0] == ("assistant", "Hello, how can I help?"), texts
    assert texts[2][0] == "assistant" and LONG_REPLY.startswith(texts[2][1][:20]), texts
    assert word_error_rate([prompt.text], [texts[1][1]]) <= 0.3, (prompt.text, texts)
