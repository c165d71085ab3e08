"""The HTTP client: one POST per image over the shared session, with the retry policy."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
from aiolimiter import AsyncLimiter
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from bot.segmind._answers import (
    decode_answer,
    describe_client_error,
    error_for_status,
    parse_float,
    redact,
)
from bot.segmind.errors import (
    SegmindConnectionDropped,
    SegmindConnectionError,
    SegmindError,
    SegmindInvalidResponse,
    SegmindRateLimited,
    SegmindTimeout,
)
from bot.segmind.request import SEED_MODULUS, GeneratedImage, GenerationResult, Txt2ImgRequest

if TYPE_CHECKING:
    from bot.config import Settings

logger = logging.getLogger("bot.segmind")


#: Largest successful answer we read (eight base64 1024² images fit easily).
_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Error bodies are only read for their message.
_MAX_ERROR_BODY_BYTES: Final = 64 * 1024


AttemptHook = Callable[[str, int | None, float], None]


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes


class RateLimiter(Protocol):
    """What the client waits on before each request (``aiolimiter.AsyncLimiter`` fits)."""

    async def acquire(self) -> None: ...


class SegmindClient:
    """Segmind text-to-image over a shared :class:`aiohttp.ClientSession`.

    The session is the caller's. ``timeout`` bounds each attempt, ``max_attempts`` and
    ``retry_budget`` the retries (a call ends within about ``retry_budget + timeout`` s);
    ``rpm`` > 0 limits attempts per ``rate_period``; ``on_attempt(kind, status, seconds)``
    follows every attempt (``kind`` is ``"ok"`` or the error's).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: SecretStr,
        base_url: str,
        model: str,
        timeout: float = 120.0,
        rpm: int = 0,
        max_attempts: int = 4,
        retry_budget: float = 180.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        on_attempt: AttemptHook | None = None,
        on_credits: Callable[[float], None] | None = None,
        rate_period: float = 60.0,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if retry_budget < 0 or rpm < 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("retry_budget, rpm and backoff times must not be negative")
        if rate_period <= 0:
            raise ValueError("rate_period must be positive")
        self._session = session
        self._api_key = api_key
        self._url = f"{base_url.rstrip('/')}/{model.strip('/')}"
        self._timeout = float(timeout)
        self._client_timeout = aiohttp.ClientTimeout(total=self._timeout)
        self._rpm = rpm
        # Asked before every attempt, retries included: a shared limiter, or a bucket of one
        # (requests period/rpm apart, never a burst the API's sliding window would refuse).
        self._limiter: RateLimiter | None = rate_limiter or (
            AsyncLimiter(1, rate_period / rpm) if rpm > 0 else None
        )
        self._max_attempts = max_attempts
        self._retry_budget = float(retry_budget)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._on_attempt = on_attempt
        self._remaining_credits: float | None = None
        self._on_credits = on_credits  # every reported balance (metrics, the balance watch)

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession, settings: Settings, **overrides: Any
    ) -> SegmindClient:
        """Build a client from :class:`bot.config.Settings`; keyword overrides win."""
        values: dict[str, Any] = {
            "api_key": settings.segmind_api_key,
            "base_url": settings.segmind_base_url,
            "model": settings.segmind_model,
            "timeout": settings.segmind_timeout,
            "rpm": settings.segmind_rpm,
            "max_attempts": settings.segmind_max_attempts,
            "retry_budget": settings.segmind_retry_budget,
        }
        values.update(overrides)
        return cls(session, **values)

    def __repr__(self) -> str:
        url = redact(self._url, self._api_key.get_secret_value())
        return (
            f"{type(self).__name__}(url={url!r}, timeout={self._timeout:g}, rpm={self._rpm}, "
            f"max_attempts={self._max_attempts}, retry_budget={self._retry_budget:g})"
        )

    @property
    def url(self) -> str:
        """The endpoint every request is posted to."""
        return self._url

    @property
    def remaining_credits(self) -> float | None:
        """The last ``x-remaining-credits`` (dollars) Segmind reported, if any."""
        return self._remaining_credits

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The client-side limiter (None when ``rpm`` is 0)."""
        return self._limiter

    async def generate(self, request: Txt2ImgRequest, *, base64: bool = False) -> GenerationResult:
        """Generate the images for ``request``, retrying what is safe to retry.

        Raises a :class:`SegmindError` subclass: the last attempt's error when
        the retries are exhausted, or immediately for a non-retryable one.
        """
        started = time.monotonic()
        payload = request.api_payload(base64=base64)
        attempts = 0
        images: list[GeneratedImage] = []
        retrying = AsyncRetrying(
            stop=self._should_stop,
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                attempts += 1
                images = await self._attempt(request, payload, attempts)
        return GenerationResult(
            images=images,
            remaining_credits=self._remaining_credits,
            attempts=attempts,
            elapsed=time.monotonic() - started,
        )

    # -- retry policy ------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        # base * 2^(n-1) + U(0, base), capped; tenacity's wait_exponential_jitter
        # renamed its parameters between releases.
        exponent = min(state.attempt_number - 1, 32)
        wait = min(
            self._backoff_max,
            self._backoff_base * 2.0**exponent + random.uniform(0, self._backoff_base),
        )
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, SegmindRateLimited) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        elapsed = state.seconds_since_start or 0.0
        return elapsed + state.upcoming_sleep > self._retry_budget

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "Segmind retry %d/%d in %.2fs after %s",
            state.attempt_number + 1,
            self._max_attempts,
            state.upcoming_sleep,
            error,
        )

    # -- one attempt -------------------------------------------------------

    async def _attempt(
        self, request: Txt2ImgRequest, payload: dict[str, object], number: int
    ) -> list[GeneratedImage]:
        if self._limiter is not None:
            await self._limiter.acquire()
        started = time.monotonic()
        try:
            reply = await self._post(payload)
            images = await self._images(request, reply)
        except SegmindError as error:
            elapsed = time.monotonic() - started
            logger.warning("Segmind attempt %d failed after %.2fs: %s", number, elapsed, error)
            self._report(error.kind, error.status, elapsed)
            raise
        elapsed = time.monotonic() - started
        logger.debug(
            "Segmind attempt %d ok [HTTP %d] in %.2fs: %d image(s)",
            number,
            reply.status,
            elapsed,
            len(images),
        )
        self._report("ok", reply.status, elapsed)
        return images

    def _report(self, kind: str, status: int | None, elapsed: float) -> None:
        if self._on_attempt is None:
            return
        try:
            self._on_attempt(kind, status, elapsed)
        except Exception:  # a metrics hook must not fail a generation
            logger.exception("Segmind on_attempt hook failed")

    async def _post(self, payload: dict[str, object]) -> _Reply:
        failure: SegmindError | None = None
        try:
            async with self._session.post(
                self._url,
                json=payload,
                headers={"x-api-key": self._api_key.get_secret_value()},
                timeout=self._client_timeout,
                allow_redirects=False,  # a redirect would carry the key elsewhere
            ) as response:
                self._record_credits(response.headers)
                ok = 200 <= response.status < 300
                body = await _read_body(
                    response, _MAX_BODY_BYTES if ok else _MAX_ERROR_BODY_BYTES, strict=ok
                )
                reply = _Reply(
                    status=response.status,
                    content_type=response.content_type.lower(),
                    headers={
                        name: response.headers[name]
                        for name in ("Retry-After", "x-rate-limit-reset-at-utc")
                        if name in response.headers
                    },
                    body=body,
                )
        except TimeoutError:
            failure = SegmindTimeout(timeout=self._timeout)
        except aiohttp.ClientError as error:
            detail = redact(describe_client_error(error), self._api_key.get_secret_value())
            # Refused before sending (ClientConnectorError) is safe to retry; once the
            # request may have reached Segmind, it is not (RETRY_POLICY).
            if isinstance(error, aiohttp.InvalidURL):
                failure = SegmindConnectionError(detail=detail, retryable=False)
            elif isinstance(error, aiohttp.ClientConnectorError):
                failure = SegmindConnectionError(detail=detail)
            else:
                failure = SegmindConnectionDropped(detail=detail)
        # Raised outside the except blocks: no __context__ pointing at aiohttp's
        # exception, whose request info includes the headers.
        if failure is not None:
            raise failure
        if not 200 <= reply.status < 300:
            raise error_for_status(
                reply.status,
                reply.content_type,
                reply.headers,
                reply.body,
                self._api_key.get_secret_value(),
            )
        return reply

    async def _images(self, request: Txt2ImgRequest, reply: _Reply) -> list[GeneratedImage]:
        decoded = await asyncio.to_thread(
            decode_answer,
            reply.status,
            reply.content_type,
            reply.body,
            self._api_key.get_secret_value(),
        )
        if isinstance(decoded, SegmindInvalidResponse):
            raise decoded
        for blob_info in (info for _, info in decoded):
            if (blob_info.width, blob_info.height) != (request.img_width, request.img_height):
                raise SegmindInvalidResponse(
                    status=reply.status,
                    detail=(
                        f"image is {blob_info.width}x{blob_info.height}, "
                        f"requested {request.img_width}x{request.img_height}"
                    ),
                )
        seed = request.seed
        return [
            GeneratedImage(
                data=blob,
                format=info.format,
                width=info.width,
                height=info.height,
                seed=None if seed is None else (seed + offset) % SEED_MODULUS,
            )
            for offset, (blob, info) in enumerate(decoded)
        ]

    def _record_credits(self, headers: Mapping[str, str]) -> None:
        credits_left = parse_float(headers.get("x-remaining-credits"))
        if credits_left is not None:
            self._remaining_credits = credits_left
            if self._on_credits is not None:
                self._on_credits(credits_left)


def _is_retryable(error: BaseException) -> bool:
    # A 429 is raised at once: the job queue holds every call for as long as the API says.
    if isinstance(error, SegmindRateLimited):
        return False
    return isinstance(error, SegmindError) and error.retryable


async def _read_body(response: aiohttp.ClientResponse, limit: int, *, strict: bool) -> bytes:
    """Read at most ``limit`` bytes; past it, fail (``strict``) or truncate."""
    declared = response.content_length
    if strict and declared is not None and declared > limit:
        raise SegmindInvalidResponse(
            status=response.status, detail=f"body of {declared} bytes is too large"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if strict:
                raise SegmindInvalidResponse(
                    status=response.status, detail=f"body larger than {limit} bytes"
                )
            break
    return b"".join(chunks)[:limit]
