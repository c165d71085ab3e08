"""Prometheus metrics for the bot, each instance on its own registry.

A private registry per :class:`Metrics` keeps tests (which start several bots in
one process) from colliding on prometheus-client's global registry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.logs import job_context

if TYPE_CHECKING:
    from bot.credits import CommitResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

log = logging.getLogger("bot.jobs")  # the job's outcome reads best next to its other lines

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    """Every counter the operator can scrape at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("imagine_jobs", "Jobs finished, by outcome", ["outcome"], registry=r)
        self.queue_depth = Gauge("imagine_queue_depth", "Jobs waiting for a slot", registry=r)
        self.jobs_in_flight = Gauge("imagine_jobs_running", "Jobs generating now", registry=r)
        self.images = Counter("imagine_images_generated", "Images delivered", registry=r)
        self.api_latency = Histogram(
            "imagine_segmind_request_seconds",
            "Segmind API request duration",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.api_errors = Counter(
            "imagine_segmind_errors",
            "Segmind API errors, by kind and status",
            ["kind", "status"],
            registry=r,
        )
        self.credits_spent = Counter("imagine_credits_spent", "Credits committed", registry=r)
        self.credits_refunded = Counter("imagine_credits_refunded", "Credits refunded", registry=r)
        self.segmind_balance = Gauge(
            "imagine_segmind_balance_dollars",
            "The bot's Segmind balance, as the API last reported it (NaN: not yet)",
            registry=r,
        )
        # NaN until the API reports it: a 0 would look like an empty account to alerts.
        self.segmind_balance.set(float("nan"))
        self.interactions = Counter(
            "imagine_interactions", "Interactions received, by type", ["type"], registry=r
        )

    def observe_api(self, kind: str, status: int | None, seconds: float) -> None:
        """Hook for :class:`bot.segmind.SegmindClient`'s ``on_attempt``."""
        self.api_latency.observe(seconds)
        if kind != "ok":
            self.api_errors.labels(kind=kind, status=str(status or "none")).inc()

    def job_settled(self, result: CommitResult, outcome: str) -> None:
        """Count a settled job and log its outcome with the job's context."""
        self.jobs.labels(outcome=outcome).inc()
        self.credits_spent.inc(result.committed)
        self.credits_refunded.inc(result.refunded)
        log.info(
            "job %s: committed %d, refunded %d, balance %d",
            outcome,
            result.committed,
            result.refunded,
            result.balance,
            extra=job_context(
                guild_id=result.job.guild_id, user_id=result.job.user_id, job_id=result.job.id
            ),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
