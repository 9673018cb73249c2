"""The database fails during a delivery: 5xx within Svix's 15 s, and the retry is applied."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.embedded import EmbeddedMongo
from tests.servers import serve_app
from tests.webhook_support import SECRET, USER_CREATED, USER_ID, sign, user_event

SVIX_TIMEOUT_S = 15
OTHER_USER = "user_other"


async def test_database_down_is_5xx_and_the_retry_is_stored(
    tmp_path: Path, settings: Settings
) -> None:
    data_path = tmp_path / "mongo"
    mongo = EmbeddedMongo(data_path)
    await asyncio.to_thread(mongo.start)
    restarted: EmbeddedMongo | None = None
    try:
        app_settings = settings.model_copy(
            update={"mongodb_uri": mongo.uri, "clerk_webhook_secret": SecretStr(SECRET)}
        )
        # Two messages at once: they are stored together (one batch), and fail together.
        signed = [
            sign(USER_CREATED, msg_id="msg_retry"),
            sign(user_event(user_id=OTHER_USER), msg_id="msg_retry_other"),
        ]
        async with (
            serve_app(create_app(app_settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):

            async def deliver_all() -> list[httpx.Response]:
                return await asyncio.gather(
                    *(client.post("/webhooks/clerk", content=b, headers=h) for b, h in signed)
                )

            await asyncio.to_thread(mongo.kill)
            started = time.monotonic()
            responses = await deliver_all()
            # About 5 s: the driver's server selection timeout, inside our 10 s bound.
            assert time.monotonic() - started < SVIX_TIMEOUT_S
            for response in responses:
                assert response.status_code == 503
                assert response.json() == {"error": "storage unavailable; retry later"}

            # Svix retries the same message (same id, same signature) once the database is back.
            restarted = EmbeddedMongo(data_path, port=mongo.port)
            await asyncio.to_thread(restarted.start)
            for response in await deliver_all():
                assert response.status_code == 200
                assert response.json() == {"status": "applied"}
            for again in await deliver_all():
                assert again.json() == {"status": "duplicate"}

        check: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(restarted.uri)
        try:
            database = check[settings.mongodb_db]
            users = await database[db.USERS].find({}).to_list()
            assert sorted(user["externalId"] for user in users) == sorted([USER_ID, OTHER_USER])
            deliveries = await database[db.WEBHOOK_DELIVERIES].find({}).to_list()
            assert sorted(d["_id"] for d in deliveries) == ["msg_retry", "msg_retry_other"]
        finally:
            await check.close()
    finally:
        for server in (restarted, mongo):
            if server is not None:
                await asyncio.to_thread(server.stop)
