"""Login, refresh tokens, and the bearer check of every other endpoint.

- ``POST /v1/login`` checks the password (scrypt, in the bounded
  :class:`PasswordPool`) and answers an access token and, as an extension, a
  ``refresh_token``.
- ``POST /v1/token`` (extension) trades a refresh token for a new access token
  without a password hash: renewals at fleet rate.
- :meth:`Auth.authorize` checks a bearer token's signature, then looks its
  user up: a disabled user, or a token from before a password change or a
  disable (an older epoch), is 401 at once; the role is the one stored now.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coffer_upstream.accounts import Accounts, User
from coffer_upstream.config import ServerConfig
from coffer_upstream.errors import HttpError, forbidden, unauthorized
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


class Auth:
    def __init__(
        self,
        config: ServerConfig,
        accounts: Accounts,
        signer: Signer,
        limiter: LoginLimiter,
        passwords: PasswordPool,
        now: Callable[[], int],
    ) -> None:
        self._config = config
        self._accounts = accounts
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
        refresh = field_str(body, "refresh_token", _MAX_REFRESH)
        return await run_in_threadpool(self._refresh, request, refresh)

    def _refresh(self, request: Request, refresh: str) -> Response:
        email = self._accounts.refresh_token_user(refresh, self._now())
        user = None if email is None else self._accounts.user(email)
        if user is None or user.disabled:
            raise unauthorized("invalid refresh token")
        request.state.user = user.email
        return answer(200, self._access(user), {"Cache-Control": "no-store"})

    def _access(self, user: User) -> dict[str, object]:
        ttl = self._config.token_ttl
        token = self._signer.issue_token(user.email, user.role, ttl, user.token_epoch)
        return {"access_token": token, "token_type": "bearer", "expires_in": ttl}

    def authorize(self, request: Request, roles: frozenset[str]) -> str:
        """The email the bearer token speaks for, if its user's role is in ``roles``."""
        token = bearer(request)
        if token is None:
            raise unauthorized("missing bearer token")
        claims = self._signer.check_token(token)
        user = self._accounts.user(claims.email)
        if user is None or user.disabled or user.token_epoch != claims.epoch:
            raise unauthorized("token revoked")
        request.state.user = user.email
        if user.role not in roles:
            raise forbidden(f"role {user.role} may not do this")
        return user.email
