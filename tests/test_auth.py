"""JWT verification (transport.auth): keys, algorithms, claims, JWKS rotation, dev tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from config.settings import Settings
from transport.auth import AuthError, Identity, TokenVerifier, issue_dev_token

ISSUER = "https://idp.example"
AUDIENCE = "tilehall"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return _rsa_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return _rsa_key()


def _public_pem(private: rsa.RSAPrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _settings(mode: str = "production", **auth: Any) -> Settings:
    extra: dict[str, Any] = {}
    if mode == "production":
        extra = {
            "database_url": "postgresql://u@localhost:5432/tilehall",
            "redis_url": "redis://localhost:6379/0",
            "admin_token": "admin-secret",
        }
    return Settings(mode=mode, auth=auth, **extra)


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "name": "Alice",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _rs256(private: rsa.RSAPrivateKey, kid: str | None = None, **over: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(_claims(**over), private, algorithm="RS256", headers=headers)


def _pem_verifier(key: rsa.RSAPrivateKey, mode: str = "production", **auth: Any) -> TokenVerifier:
    auth = {"public_key_pem": _public_pem(key), "issuer": ISSUER, "audience": AUDIENCE, **auth}
    return TokenVerifier(_settings(mode, **auth))


def _refused(verifier: TokenVerifier, token: str, code: str = "bad_token") -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert info.value.code == code
    if token:
        assert token not in str(info.value)
    return info.value


def test_valid_rs256_token_gives_identity(key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    ident = _pem_verifier(key).verify(_rs256(key, iat=now, exp=now + 600))
    assert ident == Identity("user-1", "Alice", float(now + 600), float(now))


def test_display_name_falls_back_to_preferred_username_then_sub(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key)
    assert v.verify(_rs256(key, name=None, preferred_username="ally")).display_name == "ally"
    assert v.verify(_rs256(key, name=None)).display_name == "user-1"
    long_name = "\x00Bob" + "x" * 100
    assert v.verify(_rs256(key, name=long_name)).display_name == ("Bob" + "x" * 100)[:32]


def test_expired_token(key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    err = _refused(_pem_verifier(key), _rs256(key, iat=now - 7200, exp=now - 3600), "token_expired")
    assert "expired" in str(err)


def test_not_yet_valid_token(key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    err = _refused(_pem_verifier(key), _rs256(key, nbf=now + 3600))
    assert "not valid yet" in str(err)


def test_leeway_is_honoured(key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    v = _pem_verifier(key, leeway_s=60)
    assert v.verify(_rs256(key, exp=now - 30, iat=now - 600)).user_id == "user-1"
    assert v.verify(_rs256(key, nbf=now + 30)).user_id == "user-1"
    _refused(v, _rs256(key, exp=now - 120, iat=now - 600), "token_expired")
    _refused(v, _rs256(key, nbf=now + 120))


def test_wrongly_signed_token(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    err = _refused(_pem_verifier(key), _rs256(other_key))
    assert "signature" in str(err)


def test_alg_none_is_refused(key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), None, algorithm="none")
    _refused(_pem_verifier(key), token)
    _refused(_pem_verifier(key, mode="dev"), token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_secret(secret: bytes, claims: dict[str, Any]) -> str:
    # PyJWT refuses to HMAC with a PEM key, so the attacker's token is built by hand.
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


@pytest.mark.parametrize("mode", ["production", "dev"])
def test_hs256_signed_with_public_key_is_refused(key: rsa.RSAPrivateKey, mode: str) -> None:
    token = _hs256_with_secret(_public_pem(key).encode(), _claims())
    _refused(_pem_verifier(key, mode=mode), token)


def test_wrong_issuer_and_audience(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key)
    assert "issuer" in str(_refused(v, _rs256(key, iss="https://evil.example")))
    assert "audience" in str(_refused(v, _rs256(key, aud="someone-else")))


def test_configured_issuer_and_audience_are_required(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key)
    assert "'iss'" in str(_refused(v, _rs256(key, iss=None)))
    assert "'aud'" in str(_refused(v, _rs256(key, aud=None)))


def test_missing_sub(key: rsa.RSAPrivateKey) -> None:
    assert "'sub'" in str(_refused(_pem_verifier(key), _rs256(key, sub=None)))


@pytest.mark.parametrize("sub", ["", "   ", "x" * 129, "a\nb"])
def test_bad_sub(key: rsa.RSAPrivateKey, sub: str) -> None:
    _refused(_pem_verifier(key), _rs256(key, sub=sub))


def test_iat_required(key: rsa.RSAPrivateKey) -> None:
    assert "'iat'" in str(_refused(_pem_verifier(key), _rs256(key, iat=None)))


def test_exp_required(key: rsa.RSAPrivateKey) -> None:
    assert "'exp'" in str(_refused(_pem_verifier(key), _rs256(key, exp=None)))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 9000])
def test_malformed_tokens(key: rsa.RSAPrivateKey, token: str) -> None:
    _refused(_pem_verifier(key), token)


def test_algorithm_outside_allow_list(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key, algorithms=["ES256"])
    _refused(v, _rs256(key))


def test_public_key_file(key: rsa.RSAPrivateKey, tmp_path: Any) -> None:
    path = tmp_path / "idp.pem"
    path.write_text(_public_pem(key))
    v = TokenVerifier(_settings(public_key_file=path, issuer=ISSUER, audience=AUDIENCE))
    assert v.verify(_rs256(key)).user_id == "user-1"


def test_unusable_pem_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="PEM"):
        TokenVerifier(_settings(public_key_pem="not a key"))


# --- dev mode -----------------------------------------------------------------------------


def test_dev_token_round_trip() -> None:
    settings = _settings("dev")
    token = issue_dev_token(settings, "alice", name="Alice A.", ttl_s=120)
    ident = TokenVerifier(settings).verify(token)
    assert ident.user_id == "alice"
    assert ident.display_name == "Alice A."
    assert ident.expires_at - ident.issued_at == 120


def test_dev_token_default_name_and_ttl() -> None:
    settings = _settings("dev", dev_token_ttl_s=90)
    ident = TokenVerifier(settings).verify(issue_dev_token(settings, "bob"))
    assert (ident.display_name, ident.expires_at - ident.issued_at) == ("bob", 90)


def test_dev_token_carries_configured_audience() -> None:
    settings = _settings("dev", audience=AUDIENCE)
    assert TokenVerifier(settings).verify(issue_dev_token(settings, "bob")).user_id == "bob"


def test_dev_token_rejected_in_production(key: rsa.RSAPrivateKey) -> None:
    token = issue_dev_token(_settings("dev"), "alice")
    _refused(_pem_verifier(key, issuer=None, audience=None), token)


def test_issue_dev_token_refuses_production(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises((AuthError, ValueError)):
        issue_dev_token(_settings(public_key_pem=_public_pem(key)), "alice")


@pytest.mark.parametrize("user", ["", "x" * 129, "a\tb"])
def test_issue_dev_token_refuses_bad_user(user: str) -> None:
    with pytest.raises(ValueError):
        issue_dev_token(_settings("dev"), user)


def test_dev_token_with_other_secret_or_issuer_is_refused() -> None:
    settings = _settings("dev")
    v = TokenVerifier(settings)
    forged = issue_dev_token(
        _settings("dev", dev_secret="another-secret-of-enough-length-000"), "x"
    )
    assert "signature" in str(_refused(v, forged))
    other_iss = issue_dev_token(_settings("dev", dev_issuer="elsewhere"), "x")
    assert "issuer" in str(_refused(v, other_iss))


def test_dev_mode_also_accepts_production_keys(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key, mode="dev")
    assert v.verify(_rs256(key)).user_id == "user-1"
    dev_token = issue_dev_token(_settings("dev", audience=AUDIENCE), "carol")
    assert v.verify(dev_token).user_id == "carol"


def test_dev_mode_without_keys_refuses_rs256(key: rsa.RSAPrivateKey) -> None:
    _refused(TokenVerifier(_settings("dev")), _rs256(key))


def test_expired_dev_token() -> None:
    settings = _settings("dev", leeway_s=0)
    now = int(time.time())
    claims = {"sub": "a", "iss": "tilehall-dev", "iat": now - 100, "exp": now - 50}
    token = jwt.encode(claims, settings.auth.dev_secret, algorithm="HS256")
    _refused(TokenVerifier(settings), token, "token_expired")


# --- verify_async -------------------------------------------------------------------------


def test_verify_async_runs_off_the_calling_thread(key: rsa.RSAPrivateKey) -> None:
    v = _pem_verifier(key)
    caller = threading.get_ident()
    seen: list[int] = []
    real_verify = v.verify

    def spy(token: str) -> Identity:
        seen.append(threading.get_ident())
        return real_verify(token)

    v.verify = spy  # type: ignore[method-assign]
    try:
        ident = asyncio.run(v.verify_async(_rs256(key)))
        assert ident.user_id == "user-1"
        assert seen and seen[0] != caller
        with pytest.raises(AuthError) as info:
            asyncio.run(v.verify_async("garbage"))
        assert info.value.code == "bad_token"
    finally:
        v.close()


# --- JWKS ---------------------------------------------------------------------------------


class _JwksServer:
    """A real HTTP server on 127.0.0.1 serving a replaceable JWKS document."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, **keys: rsa.RSAPrivateKey) -> None:
        jwks = []
        for kid, private in keys.items():
            jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
            jwk.update(kid=kid, use="sig", alg="RS256")
            jwks.append(jwk)
        self.document = {"keys": jwks}


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    server = _JwksServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def _jwks_verifier(url: str, cooldown: float = 0.0) -> TokenVerifier:
    settings = _settings(jwks_url=url, issuer=ISSUER, audience=AUDIENCE, jwks_cache_s=300)
    return TokenVerifier(settings, jwks_refetch_cooldown_s=cooldown)


def test_jwks_key_rotation(
    jwks_server: _JwksServer, key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    jwks_server.publish(k1=key)
    v = _jwks_verifier(jwks_server.url)
    assert v.fetches_keys
    assert v.verify(_rs256(key, kid="k1")).user_id == "user-1"
    assert v.verify(_rs256(key, kid="k1", sub="user-2")).user_id == "user-2"
    assert jwks_server.requests == 1  # the key set is cached

    jwks_server.publish(k2=other_key)  # k1 retired, k2 new
    # The cached set still has k1 until it expires; an unknown kid forces the refetch.
    assert v.verify(_rs256(other_key, kid="k2")).user_id == "user-1"
    assert jwks_server.requests == 2
    assert "unknown key" in str(_refused(v, _rs256(key, kid="k1")))
    # A token claiming the new kid but signed with the retired key fails its signature.
    _refused(v, _rs256(key, kid="k2"))


def test_jwks_unknown_kid_refetch_is_rate_limited(
    jwks_server: _JwksServer, key: rsa.RSAPrivateKey
) -> None:
    jwks_server.publish(k1=key)
    v = _jwks_verifier(jwks_server.url, cooldown=3600)
    assert v.verify(_rs256(key, kid="k1")).user_id == "user-1"
    for i in range(5):
        _refused(v, _rs256(key, kid=f"made-up-{i}"))
    assert jwks_server.requests == 1


def test_jwks_refetch_cooldown_setting_is_read(
    jwks_server: _JwksServer, key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    """``auth.jwks_refetch_cooldown_s`` (not a constructor argument) decides how often an
    unknown kid may refetch the key set: 0 refetches for each, 3600 once per hour at most."""
    jwks_server.publish(k1=key)
    base = {"jwks_url": jwks_server.url, "issuer": ISSUER, "audience": AUDIENCE, "jwks_cache_s": 300}
    eager = TokenVerifier(_settings(**base, jwks_refetch_cooldown_s=0))
    assert eager.verify(_rs256(key, kid="k1")).user_id == "user-1"
    for i in range(3):
        _refused(eager, _rs256(key, kid=f"made-up-{i}"))
    assert jwks_server.requests == 4  # the first fetch, then one per unknown kid

    jwks_server.requests = 0
    patient = TokenVerifier(_settings(**base, jwks_refetch_cooldown_s=3600))
    assert patient.verify(_rs256(key, kid="k1")).user_id == "user-1"
    jwks_server.publish(k1=key, k2=other_key)  # a rotation within the cooldown waits for it
    for i in range(3):
        _refused(patient, _rs256(key, kid=f"made-up-{i}"))
    assert "unknown key" in str(_refused(patient, _rs256(other_key, kid="k2")))
    assert jwks_server.requests == 1

    jwks_server.requests = 0
    quick = TokenVerifier(_settings(**base, jwks_refetch_cooldown_s=0.3))
    jwks_server.publish(k1=key)
    assert quick.verify(_rs256(key, kid="k1")).user_id == "user-1"
    jwks_server.publish(k1=key, k2=other_key)
    _refused(quick, _rs256(other_key, kid="k2"))  # within the cooldown: not fetched yet
    time.sleep(0.35)  # the cooldown itself is what is tested: wait it out
    assert quick.verify(_rs256(other_key, kid="k2")).user_id == "user-1"  # then one refetch finds it
    assert jwks_server.requests == 2


def test_jwks_token_without_kid_is_refused(
    jwks_server: _JwksServer, key: rsa.RSAPrivateKey
) -> None:
    jwks_server.publish(k1=key)
    assert "kid" in str(_refused(_jwks_verifier(jwks_server.url), _rs256(key)))


def test_jwks_unreachable_is_bad_token(key: rsa.RSAPrivateKey) -> None:
    server = _JwksServer()  # bound but never served, then closed: connection refused
    url = server.url
    server.httpd.server_close()
    _refused(_jwks_verifier(url), _rs256(key, kid="k1"))
