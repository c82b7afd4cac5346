"""JWT authentication: verify IdP tokens (JWKS or PEM key) and issue dev-mode tokens.

All JWT checks are PyJWT's; this module only chooses keys, algorithms and required claims,
and turns PyJWT's exceptions into an :class:`AuthError` with one of two codes
(``token_expired`` -> close 4002, ``bad_token`` -> close 4001; the mapping is the caller's).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from actors.vocabulary import ErrorCode
from config.settings import Settings

log = logging.getLogger(__name__)

AuthErrorCode = Literal[ErrorCode.TOKEN_EXPIRED, ErrorCode.BAD_TOKEN]

DEV_ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 8192
MAX_SUB_CHARS = 128
MAX_DISPLAY_NAME_CHARS = 32
JWKS_FETCH_TIMEOUT_S = 5.0


class AuthError(Exception):
    """A token was refused; ``code`` is ``token_expired`` or ``bad_token``, ``str()`` is readable."""

    def __init__(self, code: AuthErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: AuthErrorCode = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    """Who a verified token names: ``user_id`` is ``sub``; times are epoch seconds."""

    user_id: str
    display_name: str
    expires_at: float
    issued_at: float


def _is_symmetric(alg: str) -> bool:
    return alg.upper().startswith("HS")


def _printable_name(raw: object) -> str:
    """``raw`` without unprintable characters, trimmed to 32 characters ("" if none left)."""
    if not isinstance(raw, str):
        return ""
    name = "".join(ch for ch in raw if ch.isprintable()).strip()
    return name[:MAX_DISPLAY_NAME_CHARS].rstrip()


class TokenVerifier:
    """Verifies JWTs as configured by ``settings.mode`` and ``settings.auth``.

    Production: RS/ES/PS/EdDSA tokens signed by a key from ``auth.jwks_url`` (cached for
    ``auth.jwks_cache_s``; an unknown ``kid`` forces one refetch, at most once per
    ``auth.jwks_refetch_cooldown_s``) or from ``auth.public_key_pem`` / ``auth.public_key_file``.
    HS* and ``none`` are never accepted with those keys. Dev mode additionally accepts HS256
    tokens signed with ``auth.dev_secret`` and issued by ``auth.dev_issuer``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        jwks_refetch_cooldown_s: float | None = None,
    ) -> None:
        """Build from settings (``jwks_refetch_cooldown_s`` overrides the setting); raises
        ``ValueError`` on an unusable key or algorithm list."""
        auth = settings.auth
        self._refetch_cooldown_s = (
            auth.jwks_refetch_cooldown_s if jwks_refetch_cooldown_s is None else jwks_refetch_cooldown_s
        )
        self._last_fetch: float | None = None
        self._refetch_lock = threading.Lock()
        self._dev = settings.mode == "dev"
        self._dev_secret = auth.dev_secret
        self._dev_issuer = auth.dev_issuer
        self._issuer = auth.issuer
        self._audience = auth.audience
        self._leeway = auth.leeway_s
        self._algorithms = [
            a for a in auth.algorithms if a.lower() != "none" and not _is_symmetric(a)
        ]
        self._public_key: Any = None
        self._jwks: jwt.PyJWKClient | None = None

        pem = auth.public_key_pem
        if pem is None and auth.public_key_file is not None:
            pem = auth.public_key_file.read_text(encoding="utf-8")
        if pem is not None:
            try:
                self._public_key = load_pem_public_key(pem.encode("utf-8"))
            except ValueError as exc:
                raise ValueError(f"auth public key is not a PEM public key: {exc}") from None
        if auth.jwks_url:
            kwargs: dict[str, Any] = {
                "cache_jwk_set": auth.jwks_cache_s > 0,
                "lifespan": max(auth.jwks_cache_s, 1),
                "timeout": JWKS_FETCH_TIMEOUT_S,
            }
            # The unknown-kid cooldown is ours (_signing_key), the same on every PyJWT 2.x:
            # PyJWT's own (a late 2.x addition) is turned off where it exists.
            if "cooldown_duration" in inspect.signature(jwt.PyJWKClient).parameters:
                kwargs["cooldown_duration"] = 0
            self._jwks = jwt.PyJWKClient(auth.jwks_url, **kwargs)
        if (self._jwks or self._public_key is not None) and not self._algorithms:
            raise ValueError("auth.algorithms has no asymmetric algorithm to verify tokens with")
        if not self._dev and self._jwks is None and self._public_key is None:
            raise ValueError("production mode needs auth.jwks_url or a public key")

        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @property
    def fetches_keys(self) -> bool:
        """True when :meth:`verify` may do network I/O (a JWKS URL is configured)."""
        return self._jwks is not None

    def verify(self, token: str) -> Identity:
        """Check ``token`` and return its :class:`Identity`, or raise :class:`AuthError`.

        BLOCKING: with a JWKS URL this may fetch keys over HTTP. Never call it on the IOLoop
        thread; use :meth:`verify_async` there.
        """
        if not isinstance(token, str) or not token:
            raise AuthError(ErrorCode.BAD_TOKEN, "a token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(ErrorCode.BAD_TOKEN, "token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError(ErrorCode.BAD_TOKEN, "token header has no algorithm")

        # The header only routes to a key; the algorithm lists passed to PyJWT do the checking.
        if self._dev and alg == DEV_ALGORITHM:
            key: Any = self._dev_secret
            algorithms = [DEV_ALGORITHM]
            issuer: str | None = self._dev_issuer
        else:
            key = self._production_key(header)
            algorithms = self._algorithms
            issuer = self._issuer
        return self._decode(token, key, algorithms, issuer)

    async def verify_async(self, token: str) -> Identity:
        """:meth:`verify` on a small dedicated thread pool, safe to await on the IOLoop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(), self.verify, token)

    def close(self) -> None:
        """Stop the verification thread pool (idempotent)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="tilehall-auth"
                )
            return self._executor

    def _production_key(self, header: dict[str, Any]) -> Any:
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise AuthError(ErrorCode.BAD_TOKEN, f"token algorithm {alg!r} is not allowed")
        if self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                if self._public_key is not None:
                    return self._public_key
                raise AuthError(ErrorCode.BAD_TOKEN, "token header has no key id (kid)")
            try:
                return self._signing_key(self._jwks, kid)
            except jwt.PyJWKClientConnectionError as exc:
                log.warning("cannot fetch JWKS: %s", exc)
                raise AuthError(ErrorCode.BAD_TOKEN, "cannot fetch the signing keys; try again") from None
            except jwt.PyJWTError:
                if self._public_key is not None:
                    return self._public_key
                raise AuthError(ErrorCode.BAD_TOKEN, "token is signed with an unknown key") from None
        if self._public_key is not None:
            return self._public_key
        raise AuthError(ErrorCode.BAD_TOKEN, "no verification key is configured for this token")

    def _signing_key(self, jwks: jwt.PyJWKClient, kid: str) -> Any:
        """The key ``kid`` names: from the cached set, else from one refetch when the last
        fetch we saw (the first one, or the last forced one) is at least
        ``auth.jwks_refetch_cooldown_s`` old; else ``PyJWKClientError``."""
        key = jwks.match_kid(jwks.get_signing_keys(), kid)
        with self._refetch_lock:
            now = time.monotonic()
            if self._last_fetch is None:
                self._last_fetch = now  # the first fetch starts the cooldown too
            if key is None:
                if now - self._last_fetch < self._refetch_cooldown_s:
                    raise jwt.PyJWKClientError(
                        f"unknown kid {kid!r}; the key set was fetched {now - self._last_fetch:.1f} s ago")
                self._last_fetch = now
                key = jwks.match_kid(jwks.get_signing_keys(refresh=True), kid)
        if key is None:
            raise jwt.PyJWKClientError(f"no signing key matches kid {kid!r}")
        return key.key

    def _decode(self, token: str, key: Any, algorithms: list[str], issuer: str | None) -> Identity:
        require = ["exp", "iat", "sub"]
        if issuer is not None:
            require.append("iss")
        if self._audience is not None:
            require.append("aud")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=algorithms,
                issuer=issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": require},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(ErrorCode.TOKEN_EXPIRED, "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(ErrorCode.BAD_TOKEN, f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token has the wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token has the wrong audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token signature is invalid") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(ErrorCode.BAD_TOKEN, "token algorithm is not allowed") from None
        except jwt.PyJWTError as exc:
            # Other PyJWT messages describe claims or keys, never the token text.
            raise AuthError(ErrorCode.BAD_TOKEN, f"token is invalid: {exc}") from None

        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_CHARS:
            raise AuthError(ErrorCode.BAD_TOKEN, f"token subject must be 1..{MAX_SUB_CHARS} characters")
        if not sub.isprintable():
            raise AuthError(ErrorCode.BAD_TOKEN, "token subject has unprintable characters")
        raw_name = _printable_name(claims.get("name")) or claims.get("preferred_username")
        return Identity(
            user_id=sub,
            display_name=_printable_name(raw_name) or _printable_name(sub),
            expires_at=float(claims["exp"]),
            issued_at=float(claims["iat"]),
        )


def issue_dev_token(
    settings: Settings, user: str, name: str | None = None, ttl_s: int | None = None
) -> str:
    """Sign an HS256 dev token for ``user`` (the ``sub``); dev mode only.

    Raises :class:`AuthError` (``bad_token``) in production mode and ``ValueError`` for an
    unusable user, name or ttl.
    """
    if settings.mode != "dev":
        raise AuthError(ErrorCode.BAD_TOKEN, "dev tokens exist only in dev mode")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_SUB_CHARS:
        raise ValueError(f"user must be 1..{MAX_SUB_CHARS} characters")
    if not user.isprintable():
        raise ValueError("user must be printable")
    ttl = settings.auth.dev_token_ttl_s if ttl_s is None else ttl_s
    if ttl <= 0:
        raise ValueError("ttl_s must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iss": settings.auth.dev_issuer,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    if settings.auth.audience is not None:
        claims["aud"] = settings.auth.audience
    if name is not None:
        cleaned = _printable_name(name)
        if not cleaned:
            raise ValueError("name must have printable characters")
        claims["name"] = cleaned
    return jwt.encode(claims, settings.auth.dev_secret, algorithm=DEV_ALGORITHM)
