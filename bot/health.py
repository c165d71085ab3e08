"""``/healthz`` and ``/metrics`` on a small aiohttp server, when ``HEALTH_PORT`` is set."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["HealthServer", "health_report"]

log = logging.getLogger(__name__)

_DB_PROBE_TIMEOUT = 2.0


async def health_report(bot: ImagineBot) -> tuple[bool, dict[str, Any]]:
    """Whether the bot is healthy, with the details an operator needs."""
    shards = {str(shard_id): not info.is_closed() for shard_id, info in sorted(bot.shards.items())}
    gateway_ok = bot.is_ready() and not bot.is_closed() and bool(shards) and all(shards.values())
    try:
        await asyncio.wait_for(bot.storage.ping(), _DB_PROBE_TIMEOUT)
        database_ok = True
    except Exception as error:  # noqa: BLE001 - any failure to answer means unhealthy
        log.warning("health check: database did not answer (%s)", type(error).__name__)
        database_ok = False
    details: dict[str, Any] = {
        "gateway": "connected" if gateway_ok else "disconnected",
        "shards": shards,
        "database": "ok" if database_ok else "unavailable",
        "accepting_jobs": bot.accepting_jobs,
        "queue_depth": bot.jobs.depth if bot.accepting_jobs else 0,
        "api_calls_in_flight": bot.jobs.in_flight if bot.accepting_jobs else 0,
        "latency_ms": round(bot.latency * 1000, 1) if gateway_ok else None,
    }
    healthy = gateway_ok and database_ok
    details["status"] = "ok" if healthy else "unhealthy"
    return healthy, details


class HealthServer:
    """Serves health and Prometheus metrics on ``HEALTH_HOST:HEALTH_PORT``."""

    def __init__(self, bot: ImagineBot, host: str, port: int) -> None:
        self._bot = bot
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        log.info("health server on http://%s:%s", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        healthy, details = await health_report(self._bot)
        return web.json_response(details, status=200 if healthy else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        metrics = self._bot.metrics
        if self._bot.accepting_jobs:
            metrics.queue_depth.set(self._bot.jobs.depth)
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
