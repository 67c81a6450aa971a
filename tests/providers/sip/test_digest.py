"""providers/sip/digest.py: the RFCs' worked examples, and client <-> verifier round trips."""

from __future__ import annotations

import hashlib
import time

import pytest

from providers.sip.digest import (
    Challenge,
    DigestVerifier,
    authorization,
    parse_challenge,
)
from providers.sip.message import SipError

# RFC 2617 section 3.5.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def _params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    return {k.strip(): v.strip('"') for k, _, v in (p.partition("=") for p in rest.split(", "))}


def test_rfc2617_worked_example() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge == Challenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm="MD5",
        qop=("auth", "auth-int"),
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        stale=False,
    )
    value = authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                          password="Circle Of Life", cnonce="0a4f113b")  # fmt: skip
    params = _params(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert (params["qop"], params["nc"], params["cnonce"]) == ("auth", "00000001", "0a4f113b")
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def test_rfc7616_sha256_example() -> None:
    """RFC 8760 takes SHA-256 digest from RFC 7616, whose section 3.9.1 has this example."""
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    value = authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                          password="Circle of Life",
                          cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")  # fmt: skip
    params = _params(value)
    assert params["algorithm"] == "SHA-256"
    assert params["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2069_form_without_qop() -> None:
    """Old trunks challenge without qop: response = H(HA1:nonce:HA2), no nc or cnonce."""
    challenge = parse_challenge('Digest realm="asterisk",nonce="4f2b1c7e",algorithm=md5')
    value = authorization(challenge, method="INVITE", uri="sip:100@pbx", username="100",
                          password="secret")  # fmt: skip
    params = _params(value)
    assert "qop" not in params and "cnonce" not in params and "nc" not in params

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5("100:asterisk:secret"), md5("INVITE:sip:100@pbx")
    assert params["response"] == md5(f"{ha1}:4f2b1c7e:{ha2}")
    assert parse_challenge('Digest realm="a", nonce="n", stale=TRUE').stale


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="x"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", nonce="m"',
        'Digest realm="r, nonce="n"',
        "Digest realm",
        'Digest realm=a b, nonce="n"',
    ],
)
def test_bad_challenges(value: str) -> None:
    with pytest.raises(SipError):
        parse_challenge(value)


def test_auth_int_only_is_refused() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    with pytest.raises(SipError, match="auth-int"):
        authorization(challenge, method="INVITE", uri="sip:a@b", username="u", password="p")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_verifier_round_trip(algorithm: str) -> None:
    verifier = DigestVerifier("callgate", {"alice": "s3cret", "bob": "other"}, b"k" * 32)
    challenge = parse_challenge(verifier.challenge(algorithm=algorithm))
    assert (challenge.realm, challenge.algorithm, challenge.qop) == (
        "callgate",
        algorithm,
        ("auth",),
    )

    def creds(password: str = "s3cret", **overrides: str) -> str:
        args = dict(method="INVITE", uri="sip:agent@gw", username="alice", password=password)
        args.update(overrides)
        return authorization(challenge, nc=1, **args)  # type: ignore[arg-type]

    assert verifier.verify(creds(), "INVITE") == "alice"
    assert verifier.verify(creds(), "INVITE", uri="sip:agent@gw") == "alice"
    assert verifier.verify(creds(), "INVITE", uri="sip:other@gw") is None
    assert verifier.verify(creds("wrong"), "INVITE") is None
    assert verifier.verify(creds(), "BYE") is None  # method is in the hash
    assert verifier.verify(creds(username="mallory"), "INVITE") is None
    assert verifier.verify(creds(username="bob"), "INVITE") is None  # bob's password differs
    other_server = DigestVerifier("callgate", {"alice": "s3cret"}, b"x" * 32)
    assert other_server.verify(creds(), "INVITE") is None  # nonce not ours
    forged = creds().replace(challenge.nonce, "0." + "0" * 32)
    assert verifier.verify(forged, "INVITE") is None
    assert verifier.verify("Digest garbage", "INVITE") is None
    session_key = Challenge("callgate", challenge.nonce, f"{algorithm}-sess", ("auth",))
    sess = authorization(
        session_key, method="BYE", uri="sip:a@gw", username="bob", password="other"
    )
    assert "cnonce=" in sess and verifier.verify(sess, "BYE") == "bob"
    assert verifier.verify('Digest username="alice\u00e9", response="\u00e9"', "INVITE") is None


def test_expired_nonce_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = DigestVerifier("callgate", {"alice": "s3cret"}, b"k" * 32, nonce_ttl_secs=30)
    challenge = parse_challenge(verifier.challenge())
    value = authorization(challenge, method="INVITE", uri="sip:a@gw", username="alice",
                          password="s3cret")  # fmt: skip
    assert verifier.verify(value, "INVITE") == "alice" and not verifier.stale(value, "INVITE")
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    assert verifier.verify(value, "INVITE") is None
    assert verifier.stale(value, "INVITE")
    wrong = authorization(challenge, method="INVITE", uri="sip:a@gw", username="alice",
                          password="guess")  # fmt: skip
    assert not verifier.stale(wrong, "INVITE")  # stale only tells a right password to retry
    assert "stale=TRUE" in verifier.challenge(stale=True)
