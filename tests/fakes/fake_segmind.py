"""A fake Segmind text-to-image API for tests, benchmarks and local development.

It implements the contract in DESIGN.md §1 on 127.0.0.1: ``POST /v1/{model}``
with an ``x-api-key`` header, the API's parameter ranges, JPEG (or PNG) answers
of the requested size whose colour is derived from ``(seed, prompt)``, base64
JSON answers, and an ``x-remaining-credits`` header that drops with every
billed (200) call.

Tests script failures with a FIFO consumed one entry per request::

    fake.fail(429, headers={"Retry-After": "1"})   # next request gets a 429
    fake.drop(times=2)                             # then two dropped connections
    fake.hang()                                    # then one that never answers

and can hold every answer (``pause()``/``resume()``) or enforce a rate limit like
the real API's (``rate_limit = (600, 60.0)``: 429 beyond 600 requests a minute).

Run it standalone and point the bot at it::

    python -m tests.fakes.fake_segmind --port 8089 --key dev-key
    SEGMIND_BASE_URL=http://127.0.0.1:8089/v1 SEGMIND_API_KEY=dev-key python -m bot
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import random
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Self

import pytest_asyncio
from aiohttp import web
from PIL import Image

__all__ = ["FakeSegmind", "Fault", "RecordedRequest", "fake_segmind", "main"]

DEFAULT_MODEL = "kandinsky2.1-txt2im"
MAX_SEED = 4294967295

_FIELDS = {
    "prompt",
    "negative_prompt",
    "scheduler",
    "samples",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "img_width",
    "img_height",
    "base64",
}
_INT_RANGES = {"samples": (1, 8), "num_inference_steps": (10, 40), "seed": (0, MAX_SEED)}
_SCHEDULERS = ("DDIM", "P-Sampler")
_SIZES = (512, 1024)
_LEVELS = (0, 85, 170, 255)  # 64 colours: few enough to cache every encoding

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    406: "Not enough credits",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_NGINX_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

FaultKind = Literal["fail", "drop", "hang", "garbage", "corrupt", "wrong_size"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour, consumed by one request."""

    kind: FaultKind
    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] = (256, 256)


@dataclass(slots=True)
class RecordedRequest:
    """What the fake saw. The key itself is not kept: only whether it matched."""

    path: str
    headers: dict[str, str]
    key_matched: bool
    json: Any
    received_at: float
    status: int | None = None  # None: dropped, hung, or still in progress


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


def _validate(body: Any) -> str | None:
    """The API's parameter rules; a message for the first problem, or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return f"Unknown parameter(s): {', '.join(unknown)}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    negative = body.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        return "negative_prompt must be a string"
    if body.get("scheduler", "DDIM") not in _SCHEDULERS:
        return f"scheduler must be one of {', '.join(_SCHEDULERS)}"
    for name, (low, high) in _INT_RANGES.items():
        if name not in body:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name} must be an integer between {low} and {high}"
    guidance = body.get("guidance_scale", 7.5)
    if isinstance(guidance, bool) or not isinstance(guidance, int | float):
        return "guidance_scale must be a number"
    if not 1 <= guidance <= 20:
        return "guidance_scale must be between 1 and 20"
    for name in ("img_width", "img_height"):
        value = body.get(name, 512)
        if isinstance(value, bool) or value not in _SIZES:
            return f"{name} must be 512 or 1024"
    if not isinstance(body.get("base64", False), bool):
        return "base64 must be a boolean"
    return None


class _Plan(NamedTuple):
    """What a valid request asks for (the seed drawn when it has none)."""

    width: int
    height: int
    seed: int
    prompt: str
    samples: int
    base64: bool


def _plan(body: Any) -> _Plan | None:
    """The images a request asks for, or None when it is invalid."""
    if _validate(body) is not None:
        return None
    seed = body.get("seed")
    return _Plan(
        width=body.get("img_width", 512),
        height=body.get("img_height", 512),
        seed=random.randint(0, MAX_SEED) if seed is None else seed,
        prompt=body["prompt"],
        samples=body.get("samples", 1),
        base64=body.get("base64", False),
    )


def _colour(seed: int, prompt: str) -> tuple[int, int, int]:
    digest = hashlib.blake2b(f"{seed}:{prompt}".encode(), digest_size=3).digest()
    red, green, blue = (_LEVELS[byte % len(_LEVELS)] for byte in digest)
    return red, green, blue


def _encode(width: int, height: int, colour: tuple[int, int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


class FakeSegmind:
    """The fake API server. Use ``async with FakeSegmind() as fake:`` or start()/close()."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        model: str = DEFAULT_MODEL,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        remaining_credits: float = 100.0,
        price_per_call: float = 0.01,
        image_format: Literal["JPEG", "PNG"] = "JPEG",
        multi_image: bool = False,
    ) -> None:
        self.api_key = api_key
        self.model = model
        self.host = host
        self.port = port
        #: Seconds every request waits before it is answered.
        self.latency = latency
        self.initial_credits = remaining_credits
        self.remaining_credits = remaining_credits
        self.price_per_call = price_per_call
        #: Format of successful answers.
        self.image_format: Literal["JPEG", "PNG"] = image_format
        #: Answer ``base64`` requests with ``{"images": [...]}`` (``samples`` images).
        self.multi_image = multi_image
        self.requests: list[RecordedRequest] = []
        self.calls = 0
        self.billed_calls = 0
        #: Requests being answered right now, and the most there ever were at once.
        self.in_flight = 0
        self.peak_in_flight = 0
        self._faults: deque[Fault] = deque()
        #: Fault injection (soak runs): this share of calls misbehave, at random.
        self.fault_rate = 0.0
        self._fault_random = random.Random(0)
        #: ``(requests, seconds)``: beyond that many in any such window, answer 429.
        self.rate_limit: tuple[int, float] | None = None
        #: Requests answered 429 because of :attr:`rate_limit`.
        self.rate_limited = 0
        self._window: deque[float] = deque()
        self._open = asyncio.Event()
        self._open.set()
        self._images: dict[tuple[int, int, tuple[int, int, int], str], bytes] = {}
        self._closing = asyncio.Event()
        self._arrivals = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError("FakeSegmind is already started")
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/v1/{model:.+}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening; hung requests are released first so nothing waits."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base URL to configure as ``SEGMIND_BASE_URL``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting ---------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        body: str | bytes | dict[str, Any] | None = None,
        html: bool = False,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status``.

        The default body is ``{"error": "<reason>"}``, or an nginx-style HTML
        page with ``html=True``; a dict is sent as JSON, str/bytes as given
        (``text/plain``, or ``text/html`` with ``html=True``). ``content_type``
        overrides the type.
        """
        reason = _REASONS.get(status, "Error")
        if body is None and html:
            raw = _NGINX_PAGE.format(status=status, reason=reason).encode()
            default_type = "text/html"
        elif body is None:
            raw = json.dumps({"error": reason}).encode()
            default_type = "application/json"
        elif isinstance(body, dict):
            raw = json.dumps(body).encode()
            default_type = "application/json"
        else:
            raw = body.encode() if isinstance(body, str) else body
            default_type = "text/html" if html else "text/plain"
        fault = Fault(
            "fail",
            status=status,
            body=raw,
            content_type=content_type or default_type,
            headers=dict(headers or {}),
        )
        self._faults.extend([fault] * times)

    def inject_faults(self, rate: float, *, seed: int = 0) -> None:
        """From now on answer ``rate`` of the calls not scripted otherwise with a random
        fault, equally often: 429 (Retry-After 1 s), 500, 502, 504, a hang, a drop."""
        self.fault_rate = rate
        self._fault_random = random.Random(seed)

    def _random_fault(self) -> Fault | None:
        if self.fault_rate <= 0 or self._fault_random.random() >= self.fault_rate:
            return None
        status = self._fault_random.choice([429, 500, 502, 504, 0, 1])
        if status == 0:
            return Fault("hang")
        if status == 1:
            return Fault("drop")
        body = json.dumps({"error": _REASONS.get(status, "Error")}).encode()
        headers = {"Retry-After": "1"} if status == 429 else {}
        return Fault("fail", status=status, body=body, headers=headers)

    def drop(self, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests without answering."""
        self._faults.extend([Fault("drop")] * times)

    def hang(self, times: int = 1) -> None:
        """Never answer the next ``times`` requests (until :meth:`close`)."""
        self._faults.extend([Fault("hang")] * times)

    def garbage(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with bytes that are not HTTP at all."""
        self._faults.extend([Fault("garbage", body=b"NOT HTTP AT ALL\r\n\r\n")] * times)

    def corrupt(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with a 200 whose body is not an image."""
        self._faults.extend(
            [Fault("corrupt", body=b"\xff\xd8 definitely not a jpeg", content_type="image/jpeg")]
            * times
        )

    def wrong_size(self, times: int = 1, *, width: int = 256, height: int = 256) -> None:
        """Answer the next ``times`` requests with a valid image of the wrong size."""
        self._faults.extend([Fault("wrong_size", size=(width, height))] * times)

    def pause(self) -> None:
        """Hold every answer (requests are still received and counted) until :meth:`resume`."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def _over_rate_limit(self, now: float) -> float | None:
        """Seconds until a slot frees if this request is over :attr:`rate_limit`, else None."""
        if self.rate_limit is None:
            return None
        limit, period = self.rate_limit
        while self._window and self._window[0] <= now - period:
            self._window.popleft()
        if len(self._window) >= limit:
            return self._window[0] + period - now
        self._window.append(now)
        return None

    async def wait_for_requests(self, count: int, *, timeout: float = 5.0) -> None:
        """Wait until :attr:`calls` reaches ``count`` (TimeoutError after ``timeout`` s).

        The bound is built in so that a test can never hang here.
        """
        async with asyncio.timeout(timeout), self._arrivals:
            await self._arrivals.wait_for(lambda: self.calls >= count)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def reset(self) -> None:
        """Forget requests, counters and scripted faults; refill the credits."""
        self.requests.clear()
        self._window.clear()
        self.rate_limited = 0
        self._faults.clear()
        self.calls = 0
        self.billed_calls = 0
        self.peak_in_flight = self.in_flight
        self.remaining_credits = self.initial_credits

    # -- images ------------------------------------------------------------

    async def image(self, width: int, height: int, seed: int, prompt: str) -> bytes:
        """The deterministic image for ``(seed, prompt)`` at this size (cached)."""
        key = (width, height, _colour(seed, prompt), self.image_format)
        data = self._images.get(key)
        if data is None:
            data = await asyncio.to_thread(_encode, *key)
            self._images[key] = data
        return data

    # -- request handling --------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, parsed = _parse_json(raw)
        key_matched = request.headers.get("x-api-key") == self.api_key
        record = RecordedRequest(
            path=request.path,
            headers={k: v for k, v in request.headers.items() if k.lower() != "x-api-key"},
            key_matched=key_matched,
            json=body,
            received_at=time.monotonic(),
        )
        self.requests.append(record)
        self.calls += 1
        over = self._over_rate_limit(record.received_at)
        async with self._arrivals:
            self._arrivals.notify_all()
        plan = _plan(body) if parsed else None
        early: asyncio.Task[list[bytes]] | None = None
        if (
            self.latency > 0
            and plan is not None
            and key_matched
            and request.match_info["model"] == self.model
            and not self._faults
        ):
            # The latency is the time to the answer, like a real server's: the images
            # are made while it runs, so encoding them does not add to it.
            early = asyncio.ensure_future(self._make_images(plan))
        try:
            if over is not None:
                self.rate_limited += 1
                return self._respond(
                    record,
                    429,
                    json.dumps({"error": "Rate limit exceeded"}).encode(),
                    "application/json",
                    {"Retry-After": f"{over:.3f}"},
                )
            if not self._open.is_set():
                await self._wait_open()
            return await self._respond_after_latency(request, record, body, parsed, plan, early)
        finally:
            if early is not None and not early.done():
                early.cancel()

    async def _respond_after_latency(
        self,
        request: web.Request,
        record: RecordedRequest,
        body: Any,
        parsed: bool,
        plan: _Plan | None,
        early: asyncio.Task[list[bytes]] | None,
    ) -> web.StreamResponse:
        if self.latency > 0:
            await self._sleep(self.latency)

        fault = self._faults.popleft() if self._faults else self._random_fault()
        if fault is not None and fault.kind in {"drop", "hang", "garbage"}:
            if fault.kind == "hang":
                await self._sleep(3600.0)
            transport = request.transport
            if transport is not None and fault.kind == "garbage":
                transport.write(fault.body or b"")
                transport.close()
            elif transport is not None:
                transport.abort()
            return web.Response()
        if fault is not None and fault.kind == "fail":
            return self._respond(
                record, fault.status, fault.body, fault.content_type, fault.headers
            )

        if not record.key_matched:
            return self._error(record, 401, "Unauthorized")
        if request.match_info["model"] != self.model:
            return self._error(record, 404, f"Model {request.match_info['model']} not found")
        if not parsed:
            return self._error(record, 400, "Request body is not valid JSON")
        if plan is None:
            return self._error(record, 422, _validate(body) or "invalid request")
        if fault is not None and fault.kind == "corrupt":
            return self._success(record, fault.body or b"", fault.content_type)
        if fault is not None and fault.kind == "wrong_size":
            plan = plan._replace(width=fault.size[0], height=fault.size[1])
            early = None
        images = await early if early is not None else await self._make_images(plan)
        if not plan.base64:
            return self._success(record, images[0], f"image/{self.image_format.lower()}")
        encoded = [base64.b64encode(image).decode("ascii") for image in images]
        document = {"images": encoded} if self.multi_image else {"image": encoded[0]}
        return self._success(record, json.dumps(document).encode(), "application/json")

    async def _make_images(self, plan: _Plan) -> list[bytes]:
        count = plan.samples if plan.base64 and self.multi_image else 1
        return [
            await self.image(plan.width, plan.height, (plan.seed + n) % (MAX_SEED + 1), plan.prompt)
            for n in range(count)
        ]

    async def _wait_open(self) -> None:
        closing = asyncio.ensure_future(self._closing.wait())
        opened = asyncio.ensure_future(self._open.wait())
        await asyncio.wait((closing, opened), return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        opened.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _error(self, record: RecordedRequest, status: int, message: str) -> web.Response:
        body = json.dumps({"error": message}).encode()
        return self._respond(record, status, body, "application/json", {})

    def _success(self, record: RecordedRequest, body: bytes, content_type: str) -> web.Response:
        self.billed_calls += 1
        self.remaining_credits = round(max(0.0, self.remaining_credits - self.price_per_call), 6)
        headers = {"x-remaining-credits": f"{self.remaining_credits:.4f}"}
        return self._respond(record, 200, body, content_type, headers)

    @staticmethod
    def _respond(
        record: RecordedRequest,
        status: int,
        body: bytes | None,
        content_type: str,
        headers: dict[str, str],
    ) -> web.Response:
        record.status = status
        response = web.Response(status=status, body=body or b"", headers=headers)
        response.content_type = content_type
        return response


@pytest_asyncio.fixture
async def fake_segmind() -> AsyncIterator[FakeSegmind]:
    """A started :class:`FakeSegmind` with api_key ``"test-key"``."""
    async with FakeSegmind(api_key="test-key") as fake:
        yield fake


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSegmind(
        api_key=args.key,
        model=args.model,
        host=args.host,
        port=args.port,
        latency=args.latency,
        multi_image=args.multi_image,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"Fake Segmind listening: SEGMIND_BASE_URL={fake.url}", flush=True)
        print(f"  model {fake.model!r}, key {fake.api_key!r}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.fake_segmind --port 8089 --key dev-key``."""
    parser = argparse.ArgumentParser(description="Run the fake Segmind API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--key", default="test-key", help="the accepted x-api-key")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the accepted model slug")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--multi-image", action="store_true", help='answer base64 calls with {"images": [...]}'
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
