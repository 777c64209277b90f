"""Login, refresh tokens, and the bearer check of every other endpoint.

- ``POST /v1/login`` checks the password (scrypt, in the bounded
  :class:`PasswordPool`) and answers an access token and, as an extension, a
  ``refresh_token``.
- ``POST /v1/token`` (extension) trades a refresh token for a new access token
  without a password hash: renewals at fleet rate.
- ``POST /v1/token`` with the JWT bearer grant (RFC 7523): a device's login
  by proof of key. The assertion is verified with PyJWT against the device's
  enrolled Ed25519 key, the algorithm pinned to EdDSA; its ``jti`` is stored
  until it could no longer pass, so a replay is refused on every replica.
- ``POST /v1/devices``: enrollment with an enrollment token (``devices``).
- :meth:`Auth.authorize` checks a bearer token's signature, then looks its
  user (or device) up: a disabled user, a token from before a password change
  or a disable (an older epoch), or a revoked device, is 401 at once; the role
  is the one stored now.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coffer_upstream.accounts import Accounts, User
from coffer_upstream.config import ServerConfig
from coffer_upstream.devices import DEVICE_ID, Devices, KeyRevoked, TokenRefused
from coffer_upstream.errors import HttpError, bad_request, forbidden, unauthorized
from coffer_upstream.fields import field_str
from coffer_upstream.hashing import PasswordPool
from coffer_upstream.passwords import DUMMY_HASH
from coffer_upstream.ratelimit import LoginLimiter
from coffer_upstream.signing import Signer
from coffer_upstream.web import answer, bearer, read_json

#: What each role may do, as the set of roles allowed per kind of call.
READERS = frozenset({"reader", "publisher"})
PUBLISHERS = frozenset({"publisher"})
_MAX_EMAIL = 254
_MAX_PASSWORD = 1024
_MAX_REFRESH = 256
_MAX_ASSERTION = 4096
_MAX_ENROLLMENT_TOKEN = 256
_MAX_DEVICE_NAME = 128
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The longest ``exp - iat`` of a login assertion, and the clock skew allowed.
ASSERTION_MAX_LIFE = 300
CLOCK_SKEW = 60
_JTI_CHARS = (16, 256)
#: The one answer to a bad enrollment token: it is a secret, so no more is said.
TOKEN_REFUSED = "enrollment token unknown, spent or expired"  # noqa: S105 (a message)


@dataclass(frozen=True)
class Caller:
    """Who an authorized call speaks for: ``subject`` is the email, or
    ``device:<id>`` for a device (then ``device_id`` is its id)."""

    subject: str
    role: str
    device_id: str | None = None


class Auth:
    def __init__(
        self,
        config: ServerConfig,
        accounts: Accounts,
        devices: Devices,
        signer: Signer,
        limiter: LoginLimiter,
        passwords: PasswordPool,
        now: Callable[[], int],
    ) -> None:
        self._config = config
        self._accounts = accounts
        self._devices = devices
        self._audiences = config.token_audiences()
        self._signer = signer
        self._limiter = limiter
        self._passwords = passwords
        self._now = now

    async def login(self, request: Request) -> Response:
        body = await read_json(request, self._config.max_json_bytes, self._config.idle_timeout)
        email = field_str(body, "email", _MAX_EMAIL)
        password = field_str(body, "password", _MAX_PASSWORD)
        source = request.client.host if request.client else "-"
        retry_after = await run_in_threadpool(self._limiter.retry_after, source)
        if retry_after is not None:
            raise HttpError(
                429, "too many failed logins, retry later", {"Retry-After": str(retry_after)}
            )
        user = await run_in_threadpool(self._accounts.user, email)
        # The hash is checked even for an unknown email, against a dummy no
        # password matches: both failures cost the same time and read the same.
        matches = await self._passwords.verify(password, user.password_hash if user else DUMMY_HASH)
        if user is None or not matches:
            await run_in_threadpool(self._limiter.failed, source)
            raise unauthorized("invalid email or password")
        if user.disabled:
            raise unauthorized("account disabled")
        request.state.user = user.email
        return await run_in_threadpool(self._tokens, user, source)

    def _tokens(self, user: User, source: str) -> Response:
        self._limiter.succeeded(source)
        refresh = secrets.token_urlsafe(32)
        ttl = self._config.refresh_ttl
        self._accounts.add_refresh_token(refresh, user.email, self._now() + ttl)
        body = self._access(user)
        body.update({"refresh_token": refresh, "refresh_expires_in": ttl})
        return answer(200, body, {"Cache-Control": "no-store"})

    async def token(self, request: Request) -> Response:
        body = await read_json(request, self._config.max_json_bytes, self._config.idle_timeout)
        # No grant_type: the refresh grant, as before device logins.
        grant = body.get("grant_type", "refresh_token")
        if grant == "refresh_token":
            refresh = field_str(body, "refresh_token", _MAX_REFRESH)
            return await run_in_threadpool(self._refresh, request, refresh)
        if grant == JWT_BEARER:
            assertion = field_str(body, "assertion", _MAX_ASSERTION)
            return await run_in_threadpool(self._device_login, request, assertion)
        raise bad_request("unsupported grant_type")

    def _refresh(self, request: Request, refresh: str) -> Response:
        email = self._accounts.refresh_token_user(refresh, self._now())
        user = None if email is None else self._accounts.user(email)
        if user is None or user.disabled:
            raise unauthorized("invalid refresh token")
        request.state.user = user.email
        return answer(200, self._access(user), {"Cache-Control": "no-store"})

    def _device_login(self, request: Request, assertion: str) -> Response:
        """An access token for the device whose enrolled key signed ``assertion``."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed assertion") from exc
        # Pinned: never "none", never HS* (a public key as an HMAC secret).
        if header.get("alg") != "EdDSA":
            raise unauthorized("assertion must be signed with EdDSA")
        kid = header.get("kid")
        if not isinstance(kid, str) or DEVICE_ID.fullmatch(kid) is None:
            raise unauthorized("unknown device")
        device = self._devices.device(kid)
        if device is None:
            raise unauthorized("unknown device")
        claims = _verify_assertion(
            assertion, Ed25519PublicKey.from_public_bytes(device.public_key), kid, self._audiences
        )
        request.state.user = f"device:{kid}"
        if device.revoked_at is not None:
            raise unauthorized("device revoked")
        # Kept until it could no longer pass: its exp and the skew allowed.
        if not self._devices.use_jti(kid, claims["jti"], int(claims["exp"]) + CLOCK_SKEW):
            raise unauthorized("assertion replayed")
        self._devices.seen(device, self._now())
        ttl = self._config.token_ttl
        token = self._signer.issue_token(f"device:{kid}", device.role, ttl, device_id=kid)
        body = {"access_token": token, "token_type": "bearer", "expires_in": ttl}
        return answer(200, body, {"Cache-Control": "no-store"})

    async def enroll(self, request: Request) -> Response:
        body = await read_json(request, self._config.max_json_bytes, self._config.idle_timeout)
        token = field_str(body, "enrollment_token", _MAX_ENROLLMENT_TOKEN)
        public_key = _public_key(body)
        name = body.get("name")
        if name is not None and (
            not isinstance(name, str)
            or not 0 < len(name) <= _MAX_DEVICE_NAME
            or not name.isprintable()
        ):
            raise bad_request(f"field 'name' must be 1 to {_MAX_DEVICE_NAME} printable characters")
        try:
            enrolled = await run_in_threadpool(
                self._devices.enroll, token, public_key, name, self._now()
            )
        except TokenRefused as exc:
            raise unauthorized(TOKEN_REFUSED) from exc
        except KeyRevoked as exc:
            raise unauthorized("device revoked: make a new key to enroll again") from exc
        request.state.user = f"device:{enrolled.device_id}"
        return answer(
            201 if enrolled.created else 200,
            {"device_id": enrolled.device_id, "role": enrolled.role},
            {"Cache-Control": "no-store"},
        )

    def _access(self, user: User) -> dict[str, object]:
        ttl = self._config.token_ttl
        token = self._signer.issue_token(user.email, user.role, ttl, user.token_epoch)
        return {"access_token": token, "token_type": "bearer", "expires_in": ttl}

    def authorize(self, request: Request, roles: frozenset[str]) -> str:
        """The email (or ``device:<id>``) the bearer token speaks for, if its role may."""
        return self.caller(request, roles).subject

    def caller(self, request: Request, roles: frozenset[str]) -> Caller:
        """Who the bearer token speaks for, if its user's (device's) role is in ``roles``."""
        token = bearer(request)
        if token is None:
            raise unauthorized("missing bearer token")
        claims = self._signer.check_token(token)
        if claims.device_id is not None:
            caller = self._device_caller(claims.device_id, claims.email)
        else:
            user = self._accounts.user(claims.email)
            if user is None or user.disabled or user.token_epoch != claims.epoch:
                raise unauthorized("token revoked")
            caller = Caller(user.email, user.role)
        request.state.user = caller.subject
        if caller.role not in roles:
            raise forbidden(f"role {caller.role} may not do this")
        return caller

    def _device_caller(self, device_id: str, subject: str) -> Caller:
        # One lookup by primary key, as for a user; a write at most once a minute.
        device = self._devices.device(device_id)
        if device is None or subject != f"device:{device.id}":
            raise unauthorized("token revoked")
        if device.revoked_at is not None:
            raise unauthorized("device revoked")
        self._devices.seen(device, self._now())
        return Caller(subject, device.role, device.id)


def _public_key(body: dict[str, Any]) -> bytes:
    value = body.get("public_key")
    if not isinstance(value, str) or len(value) > 64:
        raise bad_request("field 'public_key' must be the base64 of a 32-byte Ed25519 key")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
        # Refuses anything but 32 bytes.
        Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnicodeEncodeError, binascii.Error) as exc:
        raise bad_request("field 'public_key' must be the base64 of a 32-byte Ed25519 key") from exc
    return raw


def _verify_assertion(
    assertion: str, key: Ed25519PublicKey, kid: str, audiences: tuple[str, ...]
) -> dict[str, Any]:
    """The claims of a device's login assertion signed by ``key``, or a 401 naming the rule."""
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key,
            algorithms=["EdDSA"],
            audience=list(audiences),
            issuer=kid,
            leeway=CLOCK_SKEW,
            options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"]},
        )
    except jwt.InvalidSignatureError as exc:
        raise unauthorized("bad signature") from exc
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("assertion expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise unauthorized("assertion for another audience") from exc
    except jwt.ImmatureSignatureError as exc:
        raise unauthorized("assertion issued in the future") from exc
    except jwt.InvalidIssuerError as exc:
        raise unauthorized("assertion issuer is not its device") from exc
    except jwt.PyJWTError as exc:
        raise unauthorized("invalid assertion") from exc
    if claims["sub"] != kid:
        raise unauthorized("assertion subject is not its device")
    issued, expires = claims["iat"], claims["exp"]
    if not 0 < expires - issued <= ASSERTION_MAX_LIFE:
        raise unauthorized(f"assertion lives longer than {ASSERTION_MAX_LIFE} s")
    jti = claims["jti"]
    if not isinstance(jti, str) or not _JTI_CHARS[0] <= len(jti) <= _JTI_CHARS[1]:
        raise unauthorized("assertion jti must be 16 to 256 characters")
    return claims
