"""HTTP Digest for SIP (RFC 2617, RFC 8760 for SHA-256): the client's Authorization value for
a 401/407 challenge, and a server-side verifier with stateless nonces.

Only qop=auth (and the RFC 2069 form without qop, which old trunks still send) is supported:
auth-int would need the body hash, and no SIP trunk we target asks for it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from providers.sip.address import SipError, is_token, quote, split_outside_quotes, unquote

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}  # RFC 8760 name -> hashlib name
ALGORITHMS = tuple(_HASHES) + tuple(f"{name}-sess" for name in _HASHES)


@dataclass
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _auth_params(value: str) -> dict[str, str]:
    """`Digest a="x", b=y` -> {"a": "x", "b": "y"}; SipError unless the scheme is Digest."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipError(f"not a Digest credential/challenge: {scheme[:20]!r}")
    params: dict[str, str] = {}
    for item in split_outside_quotes(rest, ","):
        name, eq, raw = item.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if not eq or not is_token(name) or name in params:
            raise SipError(f"bad digest parameter {item[:40]!r}")
        params[name] = unquote(raw) if raw.startswith('"') else raw
        if not raw.startswith('"') and not is_token(raw):
            raise SipError(f"bad digest parameter value for {name}")
    return params


def _algorithm(params: Mapping[str, str]) -> str:
    wanted = params.get("algorithm", "MD5")
    algorithm = next((a for a in ALGORITHMS if a.lower() == wanted.lower()), None)
    if algorithm is None:
        raise SipError(f"unsupported digest algorithm {wanted[:20]!r}")
    return algorithm


def parse_challenge(value: str) -> Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value; SipError if malformed or unsupported
    (a server offering several algorithms sends several headers: try each)."""
    params = _auth_params(value)
    if "realm" not in params or "nonce" not in params:
        raise SipError("digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_algorithm(params),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def _response(
    algorithm: str, *, username: str, realm: str, password: str, method: str, uri: str,
    nonce: str, qop: str | None, nc: str, cnonce: str,
) -> str:  # fmt: skip
    """The request-digest of RFC 2617 3.2.2.1 (RFC 8760 3 for other hashes)."""
    hash_name = _HASHES[algorithm.removesuffix("-sess")]

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization (or Proxy-Authorization) value answering `challenge`."""
    if challenge.qop and "auth" not in challenge.qop:
        raise SipError(f"digest qop {','.join(challenge.qop)} not supported (only auth)")
    qop = "auth" if challenge.qop else None
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = _response(
        challenge.algorithm, username=username, realm=challenge.realm, password=password,
        method=method, uri=uri, nonce=challenge.nonce, qop=qop, nc=nc_text, cnonce=cnonce,
    )  # fmt: skip
    parts = [
        f"username={quote(username)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None or challenge.algorithm.endswith("-sess"):
        parts.append(f"cnonce={quote(cnonce)}")
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


class DigestVerifier:
    """Server side of digest: issues challenges and checks credentials.

    Nonces are stateless, `<hex unix time>.<HMAC of it>`, so any instance sharing `secret`
    accepts them and nothing is stored per caller. The price: a captured Authorization can be
    replayed for the same method and URI until its nonce expires (`nonce_ttl_secs`).
    """

    def __init__(
        self,
        realm: str,
        credentials: Mapping[str, str],
        secret: bytes,
        nonce_ttl_secs: float = 300,
    ) -> None:
        self.realm = realm
        self._credentials = dict(credentials)
        self._secret = secret
        self._ttl = nonce_ttl_secs

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        stamp = f"{int(time.time()):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since we issued `nonce`, or None if we did not issue it."""
        stamp, _, signature = nonce.partition(".")
        if len(stamp) > 16 or not _same(signature, self._sign(stamp)):
            return None
        try:
            return time.time() - int(stamp, 16)
        except ValueError:
            return None

    def challenge(self, *, stale: bool = False, algorithm: str = "MD5") -> str:
        """A WWW-Authenticate (or Proxy-Authenticate) value with a fresh nonce."""
        if algorithm not in _HASHES:
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        value = (
            f"Digest realm={quote(self.realm)}, nonce={quote(self.new_nonce())}, "
            f'algorithm={algorithm}, qop="auth"'
        )
        return value + (", stale=TRUE" if stale else "")

    def verify(self, authorization: str, method: str, *, uri: str | None = None) -> str | None:
        """The authenticated username, or None (bad syntax, unknown user, foreign or expired
        nonce, wrong response). `uri`, when given, must equal the credential's digest-uri."""
        return self._check(authorization, method, uri, max_age=self._ttl)

    def stale(self, authorization: str, method: str) -> bool:
        """True if the credentials are right but their nonce has expired: challenge again with
        stale=True so the client retries without asking its user (RFC 2617 3.2.1)."""
        return (
            self._check(authorization, method, None, max_age=float("inf")) is not None
            and self.verify(authorization, method) is None
        )

    def _check(
        self, authorization: str, method: str, uri: str | None, *, max_age: float
    ) -> str | None:
        try:
            params = _auth_params(authorization)
            algorithm = _algorithm(params)
        except SipError:
            return None
        username = params.get("username")
        password = self._credentials.get(username or "")
        age = self._nonce_age(params.get("nonce", ""))
        qop = params.get("qop")
        if (
            username is None
            or password is None
            or params.get("realm") != self.realm
            or age is None
            or not -60 <= age <= max_age
            or "uri" not in params
            or (uri is not None and params["uri"] != uri)
            or qop not in (None, "auth")
            or (qop is not None and ("nc" not in params or "cnonce" not in params))
        ):
            return None
        expected = _response(
            algorithm, username=username, realm=self.realm, password=password, method=method,
            uri=params["uri"], nonce=params["nonce"], qop=qop, nc=params.get("nc", ""),
            cnonce=params.get("cnonce", ""),
        )  # fmt: skip
        return username if _same(expected, params.get("response", "").lower()) else None


def _same(a: str, b: str) -> bool:
    """Constant-time comparison that also takes non-ASCII text from a stranger."""
    return hmac.compare_digest(a.encode(), b.encode())
