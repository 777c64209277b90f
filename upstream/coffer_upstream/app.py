"""The ASGI application: the routes of protocol v1 on Starlette, built from a config.

:func:`create_app` wires the parts (database, store, keys, endpoints); the
lifespan starts and stops the janitor. :func:`from_environment` is the factory
uvicorn's workers call: each worker process builds its own app from the
config ``serve`` put in the environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route

from coffer_upstream.accesslog import AccessLog
from coffer_upstream.accounts import Accounts
from coffer_upstream.api import Api
from coffer_upstream.auth import Auth
from coffer_upstream.blobstore import BlobStore
from coffer_upstream.blobstore.local import LocalStore
from coffer_upstream.cdn import Cdn
from coffer_upstream.config import ServerConfig
from coffer_upstream.db import default_url, make_engine
from coffer_upstream.db.session import Transactions
from coffer_upstream.devices import Devices
from coffer_upstream.hashing import PasswordPool
from coffer_upstream.janitor import Janitor
from coffer_upstream.keys import load_secret
from coffer_upstream.leases import LeaseIssuer, LeaseKey
from coffer_upstream.parts import Parts
from coffer_upstream.ratelimit import LoginLimiter
from coffer_upstream.signing import Signer
from coffer_upstream.store import Store
from coffer_upstream.trust.files import Files
from coffer_upstream.trust.onlinekey import OnlineKey
from coffer_upstream.trust.repository import Lifetimes, Repository
from coffer_upstream.trust.web import TrustApi
from coffer_upstream.uploads import Publisher
from coffer_upstream.web import EncodedSlashes, by_method, exception_handlers

CONFIG_ENV = "COFFER_UPSTREAM_CONFIG"


def make_blobstore(config: ServerConfig, signer: Signer) -> BlobStore:
    if config.store == "local":
        return LocalStore(config.data_dir, signer, lambda: config.public_url or "")
    if config.store == "s3" and config.s3_bucket:
        # boto3 loads only when S3 is used.
        from coffer_upstream.blobstore.s3 import S3Store

        # The keys come from boto3's chain (AWS_ACCESS_KEY_ID... in the environment).
        return S3Store(
            config.s3_bucket,
            endpoint=config.s3_endpoint,
            region=config.s3_region,
            part_size=config.s3_part_size,
        )
    raise ValueError(f"store {config.store} is not available")


def create_app(config: ServerConfig) -> Starlette:
    config.check()
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = Signer(load_secret(config.data_dir / "secret"))
    now = signer.now
    engine = make_engine(config.database_url or default_url(config.data_dir))
    transactions = Transactions(engine)
    store = Store(transactions)
    accounts = Accounts(transactions)
    devices = Devices(transactions)
    blobs = make_blobstore(config, signer)
    publisher = Publisher(store, blobs, config.upload_ttl, now)
    passwords = PasswordPool(config.password_workers, config.password_queue)
    limiter = LoginLimiter(accounts, config.login_max_failures, config.login_window, time.time)
    auth = Auth(config, accounts, devices, signer, limiter, passwords, now)
    leases = LeaseIssuer(
        LeaseKey.load_or_create(config.data_dir / "lease-key.pem"), config.lease_seconds
    )
    api = Api(config, auth, store, publisher, leases, now)
    parts = Parts(config, auth, store, publisher, now)
    repository = Repository(
        Files(transactions),
        OnlineKey.load_or_create(config.data_dir),
        Lifetimes(config.snapshot_expiry, config.timestamp_expiry),
        now,
    )
    trust = TrustApi(config, auth, repository)
    # Often enough that an upload is gone soon after it expires, and that a
    # timestamp is renewed well before it does.
    shortest = min(config.upload_ttl, config.timestamp_expiry, config.snapshot_expiry)
    interval = min(60.0, max(0.2, shortest / 4))
    janitor = Janitor(
        transactions, publisher, accounts, devices, repository, interval, config.login_window, now
    )

    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/login", auth.login, methods=["POST"]),
        Route("/v1/token", auth.token, methods=["POST"]),
        Route("/v1/devices", auth.enroll, methods=["POST"]),
        Route("/v1/resources/{folder}", api.list_resources, methods=["GET"]),
        Route(
            "/v1/resources/{folder}/{name}",
            by_method(GET=api.get_resource, DELETE=api.delete_resource),
            methods=["GET", "DELETE"],
        ),
        Route("/v1/resources/{folder}/{name}/uploads", api.begin_upload, methods=["POST"]),
        Route(
            "/v1/resources/{folder}/{name}/versions/{version}/segments",
            api.get_segments,
            methods=["GET"],
        ),
        Route(
            "/v1/resources/{folder}/{name}/uploads/{upload_id}/commit",
            api.commit_upload,
            methods=["POST"],
        ),
        Route(
            "/v1/resources/{folder}/{name}/uploads/{upload_id}/parts",
            parts.part_url,
            methods=["POST"],
        ),
        Route(
            "/v1/archives/{archive_id}/key",
            by_method(GET=api.get_archive_key, PUT=api.put_archive_key),
            methods=["GET", "PUT"],
        ),
        Route("/v1/tuf/roles/{role}", trust.put_role, methods=["PUT"]),
        Route("/v1/tuf/{file}", trust.get_file, methods=["GET"]),
    ]
    if isinstance(blobs, LocalStore):
        cdn = Cdn(blobs, signer, store, publisher, config.idle_timeout)
        # HEAD comes with GET in Starlette's routes.
        endpoint = by_method(GET=cdn.get, PUT=cdn.put)
        routes.append(Route("/cdn/{blob_id}", endpoint, methods=["GET", "PUT"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        janitor.start()
        try:
            yield
        finally:
            janitor.stop()
            passwords.close()
            blobs.close()
            engine.dispose()

    app = Starlette(routes=routes, exception_handlers=exception_handlers(), lifespan=lifespan)
    app.add_middleware(EncodedSlashes)
    app.add_middleware(AccessLog)
    app.state.janitor = janitor
    return app


def config_to_environment(config: ServerConfig) -> str:
    fields = dataclasses.asdict(config)
    fields["data_dir"] = str(config.data_dir)
    return json.dumps(fields)


def from_environment() -> Starlette:
    """The factory of each uvicorn worker: the config ``serve`` left in the environment."""
    fields = json.loads(os.environ[CONFIG_ENV])
    fields["data_dir"] = Path(fields["data_dir"])
    fields["audiences"] = tuple(fields["audiences"])
    return create_app(ServerConfig(**fields))
