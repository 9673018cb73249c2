"""What the stack itself costs per operation, in this process, before any of our code.

These floors bound what the service can reach: if one PyMongo round trip or one bare
Strawberry execution already costs more CPU than a target allows, no change in our code
meets that target (issue 7 asks for the measurement that proves it).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import jwt
import strawberry
from cryptography.hazmat.primitives.asymmetric import rsa
from pymongo import AsyncMongoClient
from svix.webhooks import Webhook

from bench.harness import Result, say
from datadiver_graph.storage.embedded import EmbeddedMongo

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def _cpu_per_op(op: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(min(200, count)):  # warm-up: caches, connection pool, JIT-free but lazy
        await op()
    began = time.process_time()
    for _ in range(count):
        await op()
    return (time.process_time() - began) / count * 1e6


def _sync_cpu_per_op(op: Callable[[], object], count: int) -> float:
    for _ in range(min(200, count)):
        op()
    began = time.process_time()
    for _ in range(count):
        op()
    return (time.process_time() - began) / count * 1e6


@strawberry.type
class _Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


async def _measure(quick: bool) -> list[tuple[str, float, str]]:
    count = 2_000 if quick else 10_000
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        mongo = EmbeddedMongo(Path(tmp) / "mongo")
        mongo.start()
        try:
            client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo.uri)
            users = client.floors.users
            await users.insert_one({"externalId": "user_1", "name": "Ada"})
            await users.create_index("externalId", unique=True)
            rows.append(
                (
                    "PyMongo async `find_one` by unique key (client CPU only)",
                    await _cpu_per_op(lambda: users.find_one({"externalId": "user_1"}), count),
                    "one round trip; getCurrentUser makes 1, a webhook batch 3",
                )
            )
            await client.close()
        finally:
            mongo.stop()

    schema = strawberry.Schema(query=_Query)
    rows.append(
        (
            "Strawberry `schema.execute('{ hello }')`, no extensions",
            await _cpu_per_op(lambda: schema.execute("{ hello }"), count),
            "the GraphQL floor per operation, before HTTP, auth or data",
        )
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode(
        {"sub": "user_1", "iss": "https://x", "iat": now, "exp": now + 3600},
        key,
        algorithm="RS256",
        headers={"kid": "k"},
    )
    public = key.public_key()
    rows.append(
        (
            "PyJWT RS256 decode + verify",
            _sync_cpu_per_op(
                lambda: jwt.decode(token, public, algorithms=["RS256"], issuer="https://x"),
                count,
            ),
            "paid once per distinct token (verified tokens are remembered until exp)",
        )
    )

    hook = Webhook(SECRET)
    body = b'{"type":"user.updated","data":{"id":"user_1"}}'
    stamp = datetime.now(UTC)
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(int(stamp.timestamp())),
        "svix-signature": hook.sign("msg_1", stamp, body.decode()),
    }
    rows.append(
        (
            "svix `Webhook.verify`",
            _sync_cpu_per_op(lambda: hook.verify(body, headers), count),
            "per webhook delivery",
        )
    )
    return rows


def run(quick: bool, profile: bool) -> Result:
    say("floors: measuring the stack's own per-operation CPU")
    rows = asyncio.run(_measure(quick))
    result = Result(name="Stack floors: CPU per operation in one process")
    result.table(
        ["operation", "CPU us/op", "why it matters"],
        [(what, f"{cost:.0f}", why) for what, cost, why in rows],
    )
    return result
