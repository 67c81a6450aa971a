"""The message reading that Twilio's and Plivo's media protocols share."""

from __future__ import annotations

import json

import pytest

from providers.events import ProtocolError
from providers.json_fields import MAX_MESSAGE_CHARS, dtmf_key, parse_message, payload_audio


class VendorError(ProtocolError):
    """Stands for a provider's own error class: the helpers must raise it, not another."""


@pytest.mark.parametrize("digit", ["1", "#", "*", "a", "D"])
def test_a_dtmf_key_is_one_key_upper_cased(digit):
    assert dtmf_key({"dtmf": {"digit": digit}}, VendorError) == digit.upper()


@pytest.mark.parametrize("digit", ["", "12", "x", "E", " 1", 1, None])
def test_anything_but_one_dtmf_key_is_refused_without_ending_the_stream(digit):
    with pytest.raises(VendorError) as caught:
        dtmf_key({"dtmf": {"digit": digit}}, VendorError)
    assert not caught.value.fatal


def test_a_message_is_a_json_object_and_an_oversized_one_breaks_the_stream():
    assert parse_message('{"event":"media"}', VendorError) == {"event": "media"}
    for bad in ("[1]", "not json", "[" * 5000):
        with pytest.raises(VendorError) as caught:
            parse_message(bad, VendorError)
        assert not caught.value.fatal
    with pytest.raises(VendorError) as caught:
        parse_message(json.dumps({"pad": "x" * MAX_MESSAGE_CHARS}), VendorError)
    assert caught.value.fatal


def test_payload_audio_is_strict_base64():
    assert payload_audio({"payload": "//8A"}, VendorError) == b"\xff\xff\x00"
    for media in ({}, {"payload": 5}, {"payload": "//8"}, {"payload": "//8A!"}):
        with pytest.raises(VendorError):
            payload_audio(media, VendorError)
