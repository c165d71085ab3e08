"""bot/segmind.py against the fake Segmind server (HTTP is faked at the server).

Every test keeps its waits bounded and small: backoff is shrunk to
milliseconds, timeouts to a fraction of a second. An autouse fixture checks
that the API key never reaches a log record in any of them.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from bot.config import Settings
from bot.images import probe_image
from bot.segmind import (
    MAX_SEED,
    RETRY_POLICY,
    GeneratedImage,
    InvalidRequest,
    Scheduler,
    SegmindBadGateway,
    SegmindBadRequest,
    SegmindClient,
    SegmindConnectionDropped,
    SegmindConnectionError,
    SegmindError,
    SegmindForbidden,
    SegmindGatewayTimeout,
    SegmindInvalidResponse,
    SegmindNotFound,
    SegmindOutOfCredits,
    SegmindRateLimited,
    SegmindServerError,
    SegmindTimeout,
    SegmindUnauthorized,
    SegmindUnavailable,
    SegmindValidationError,
    Txt2ImgRequest,
    build_request,
    parse_retry_after,
    retry_rule,
)
from tests.fakes.fake_segmind import DEFAULT_MODEL, FakeSegmind

SECRET = "sk-SECRET-5f0c9d2e7a41"
WRONG_KEY = "sk-WRONG-0b7e1a93c2d8"


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture everything at DEBUG; afterwards no record may mention a key."""
    caplog.set_level(logging.DEBUG)
    yield
    formatter = logging.Formatter()
    for record in caplog.records:
        text = formatter.format(record)
        assert SECRET not in text, record
        assert WRONG_KEY not in text, record


@pytest.fixture
def fake(fake_segmind: FakeSegmind) -> FakeSegmind:
    """The shared fake, with a key distinctive enough to search logs for."""
    fake_segmind.api_key = SECRET
    return fake_segmind


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def make_client(
    session: aiohttp.ClientSession, fake: FakeSegmind, **overrides: Any
) -> SegmindClient:
    options: dict[str, Any] = {
        "api_key": SecretStr(SECRET),
        "base_url": fake.url,
        "model": DEFAULT_MODEL,
        "timeout": 5.0,
        "backoff_base": 0.001,
        "backoff_max": 0.01,
    }
    options.update(overrides)
    return SegmindClient(session, **options)


def assert_no_key(error: BaseException) -> None:
    """Neither the error nor anything in its cause/context chain shows a key."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts = [str(current), repr(current), *map(str, current.args)]
        if isinstance(current, SegmindError):
            texts += [current.user_message, str(current.api_message), str(current.detail)]
        for text in texts:
            assert SECRET not in text
            assert WRONG_KEY not in text
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


async def fail_with(client: SegmindClient, request: Txt2ImgRequest | None = None) -> SegmindError:
    with pytest.raises(SegmindError) as caught:
        await client.generate(request or build_request(prompt="a red fox", seed=1))
    assert_no_key(caught.value)
    return caught.value


def prompt(**values: Any) -> Txt2ImgRequest:
    return build_request(prompt="a lighthouse at dusk", **values)


# --------------------------------------------------------------------------
# the request model
# --------------------------------------------------------------------------


def test_defaults_follow_the_api_page() -> None:
    request = build_request(prompt="  a cat  ")
    assert request.prompt == "a cat"
    assert request.negative_prompt is None
    assert request.scheduler is Scheduler.DDIM
    assert (request.samples, request.num_inference_steps) == (1, 25)
    assert request.guidance_scale == 7.5
    assert request.seed is None
    assert (request.img_width, request.img_height) == (512, 512)


def test_negative_prompt_is_stripped_and_blank_means_none() -> None:
    assert prompt(negative_prompt="  blurry ").negative_prompt == "blurry"
    assert prompt(negative_prompt=" \n ").negative_prompt is None
    assert prompt(negative_prompt=None).negative_prompt is None


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_prompt_is_rejected(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(prompt=text)
    assert caught.value.user_message == "prompt must not be empty."


def test_missing_prompt_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(samples=2)
    assert caught.value.user_message == "prompt is required."


def test_prompt_length_limit() -> None:
    assert len(build_request(prompt="x" * 1000).prompt) == 1000
    assert len(build_request(prompt=" " + "x" * 1000 + " ").prompt) == 1000  # after stripping
    with pytest.raises(InvalidRequest) as caught:
        build_request(prompt="x" * 1001)
    assert caught.value.user_message == "prompt must be at most 1000 characters (got 1001)."
    with pytest.raises(InvalidRequest) as caught:
        prompt(negative_prompt="y" * 1001)
    assert caught.value.user_message == (
        "negative_prompt must be at most 1000 characters (got 1001)."
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("samples", 0, "samples must be between 1 and 8 (got 0)."),
        ("samples", 9, "samples must be between 1 and 8 (got 9)."),
        ("num_inference_steps", 9, "num_inference_steps must be between 10 and 40 (got 9)."),
        ("num_inference_steps", 41, "num_inference_steps must be between 10 and 40 (got 41)."),
        ("guidance_scale", 0.5, "guidance_scale must be between 1 and 20 (got 0.5)."),
        ("guidance_scale", 20.01, "guidance_scale must be between 1 and 20 (got 20.01)."),
        ("seed", -1, "seed must be between 0 and 4294967295 (got -1)."),
        ("seed", MAX_SEED + 1, "seed must be between 0 and 4294967295 (got 4294967296)."),
        ("img_width", 640, "img_width must be 512 or 1024 (got 640)."),
        ("img_width", 768, "img_width must be 512 or 1024 (got 768)."),
        ("img_height", 256, "img_height must be 512 or 1024 (got 256)."),
        ("img_height", 2048, "img_height must be 512 or 1024 (got 2048)."),
        ("scheduler", "Euler", "scheduler must be DDIM or P-Sampler (got 'Euler')."),
        ("samples", 2.5, "samples must be a whole number (got 2.5)."),
        ("samples", True, "samples must be a number (got true)."),
        ("samples", None, "samples must be a whole number (got nothing)."),
        ("guidance_scale", float("nan"), "guidance_scale must be a number (got nan)."),
        ("guidance_scale", "lots", "guidance_scale must be a number (got 'lots')."),
        ("seed", "abc", "seed must be a whole number (got 'abc')."),
        ("style", "anime", "style is not a known option."),
    ],
)
def test_out_of_range_values_get_readable_messages(name: str, value: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prompt(**{name: value})
    assert caught.value.user_message == message
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("samples", 1),
        ("samples", 8),
        ("num_inference_steps", 10),
        ("num_inference_steps", 40),
        ("guidance_scale", 1),
        ("guidance_scale", 20),
        ("guidance_scale", 12.25),
        ("seed", 0),
        ("seed", MAX_SEED),
        ("img_width", 1024),
        ("img_height", 1024),
        ("scheduler", "P-Sampler"),
        ("scheduler", Scheduler.DDIM),
    ],
)
def test_boundary_values_are_accepted(name: str, value: object) -> None:
    assert getattr(prompt(**{name: value}), name) == value


def test_lenient_spellings_are_normalised() -> None:
    assert prompt(scheduler="p-sampler").scheduler is Scheduler.P_SAMPLER
    assert prompt(scheduler=" ddim ").scheduler is Scheduler.DDIM
    assert prompt(img_width="1024").img_width == 1024
    assert prompt(samples="3").samples == 3


def test_several_problems_are_reported_on_separate_lines() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(prompt=" ", samples=9, img_width=640)
    assert caught.value.user_message.splitlines() == [
        "prompt must not be empty.",
        "samples must be between 1 and 8 (got 9).",
        "img_width must be 512 or 1024 (got 640).",
    ]


def test_invalid_request_is_a_value_error_not_a_pydantic_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_request(prompt="x", samples=0)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, ValidationError)
    assert caught.value.__context__ is None


def test_the_model_is_frozen_and_strict_about_extra_fields() -> None:
    request = prompt()
    with pytest.raises(ValidationError):
        request.samples = 3
    with pytest.raises(ValidationError):
        Txt2ImgRequest(prompt="x", extra_field=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("width", "height", "samples", "units", "cost"),
    [
        (512, 512, 1, 1, 1),
        (512, 1024, 1, 2, 2),
        (1024, 512, 1, 2, 2),
        (1024, 1024, 1, 4, 4),
        (512, 512, 8, 1, 8),
        (1024, 1024, 3, 4, 12),
        (512, 1024, 5, 2, 10),
    ],
)
def test_cost(width: int, height: int, samples: int, units: int, cost: int) -> None:
    request = prompt(img_width=width, img_height=height, samples=samples)
    assert request.units_per_image == units
    assert request.cost == cost


def test_per_image_splits_samples_with_consecutive_seeds() -> None:
    request = prompt(samples=3, seed=10, negative_prompt="fog", img_width=1024)
    parts = request.per_image()
    assert [part.seed for part in parts] == [10, 11, 12]
    assert all(part.samples == 1 for part in parts)
    for part in parts:
        assert part.model_dump(exclude={"seed", "samples"}) == request.model_dump(
            exclude={"seed", "samples"}
        )
    assert sum(part.cost for part in parts) == request.cost


def test_per_image_seeds_wrap_around() -> None:
    parts = prompt(samples=4, seed=MAX_SEED - 1).per_image()
    assert [part.seed for part in parts] == [MAX_SEED - 1, MAX_SEED, 0, 1]


def test_per_image_draws_a_seed_when_none_is_set() -> None:
    parts = prompt(samples=5).per_image()
    first = parts[0].seed
    assert first is not None
    assert [part.seed for part in parts] == [(first + n) % (MAX_SEED + 1) for n in range(5)]


def test_with_seed_and_with_random_seed() -> None:
    seeded = prompt(seed=42)
    assert seeded.with_random_seed() is seeded
    assert seeded.with_seed(7).seed == 7
    drawn = prompt().with_random_seed().seed
    assert drawn is not None
    assert 0 <= drawn <= MAX_SEED
    with pytest.raises(InvalidRequest):
        seeded.with_seed(-1)
    with pytest.raises(InvalidRequest):
        seeded.with_seed(MAX_SEED + 1)


def test_api_payload_minimal_has_exactly_the_api_keys() -> None:
    assert prompt().api_payload() == {
        "prompt": "a lighthouse at dusk",
        "scheduler": "DDIM",
        "samples": 1,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "img_width": 512,
        "img_height": 512,
        "base64": False,
    }


def test_api_payload_full() -> None:
    request = build_request(
        prompt="castle",
        negative_prompt="people",
        scheduler="P-Sampler",
        samples=2,
        num_inference_steps=30,
        guidance_scale=9,
        seed=123,
        img_width=1024,
        img_height=512,
    )
    payload = request.api_payload(base64=True)
    assert payload == {
        "prompt": "castle",
        "negative_prompt": "people",
        "scheduler": "P-Sampler",
        "samples": 2,
        "num_inference_steps": 30,
        "guidance_scale": 9.0,
        "seed": 123,
        "img_width": 1024,
        "img_height": 512,
        "base64": True,
    }
    # Plain JSON types only: the enum serialises as its value.
    assert json.loads(json.dumps(payload)) == payload
    assert type(payload["scheduler"]) is str


# --------------------------------------------------------------------------
# successful calls
# --------------------------------------------------------------------------


async def test_success_with_image_bytes(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    client = make_client(session, fake)
    assert client.remaining_credits is None
    request = prompt(seed=1234, negative_prompt="blur")

    result = await client.generate(request)

    assert result.attempts == 1
    assert result.elapsed >= 0
    [image] = result.images
    assert (image.format, image.width, image.height, image.seed) == ("JPEG", 512, 512, 1234)
    assert probe_image(image.data).format == "JPEG"
    assert result.remaining_credits == pytest.approx(99.99)
    assert client.remaining_credits == pytest.approx(99.99)
    [seen] = fake.requests
    assert seen.path == f"/v1/{DEFAULT_MODEL}"
    assert seen.key_matched is True
    assert seen.json == request.api_payload()
    assert seen.status == 200
    assert "x-api-key" not in {name.lower() for name in seen.headers}
    assert (fake.calls, fake.billed_calls) == (1, 1)


async def test_images_are_deterministic_per_seed_and_prompt(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    client = make_client(session, fake)
    first = await client.generate(prompt(seed=99))
    again = await client.generate(prompt(seed=99))
    assert first.images[0].data == again.images[0].data


@pytest.mark.parametrize(("width", "height"), [(1024, 512), (512, 1024), (1024, 1024)])
async def test_success_at_every_size(
    fake: FakeSegmind, session: aiohttp.ClientSession, width: int, height: int
) -> None:
    result = await make_client(session, fake).generate(
        prompt(img_width=width, img_height=height, seed=5)
    )
    assert (result.images[0].width, result.images[0].height) == (width, height)


async def test_success_with_png(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    fake.image_format = "PNG"
    result = await make_client(session, fake).generate(prompt(seed=3))
    assert result.images[0].format == "PNG"


async def test_success_with_base64_image(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    result = await make_client(session, fake).generate(prompt(seed=8), base64=True)
    [image] = result.images
    assert (image.format, image.seed) == ("JPEG", 8)
    assert fake.requests[0].json["base64"] is True


async def test_success_with_base64_images_list(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.multi_image = True
    result = await make_client(session, fake).generate(
        prompt(samples=3, seed=MAX_SEED - 1), base64=True
    )
    assert [image.seed for image in result.images] == [MAX_SEED - 1, MAX_SEED, 0]
    assert all(probe_image(image.data).width == 512 for image in result.images)
    assert fake.billed_calls == 1


async def test_base64_data_uri_is_accepted(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    jpeg = await fake.image(512, 512, 1, "x")
    uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    fake.fail(200, body={"image": uri})
    result = await make_client(session, fake).generate(prompt(seed=1), base64=True)
    assert result.images[0].data == jpeg


async def test_without_a_seed_the_image_seed_is_unknown(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    result = await make_client(session, fake).generate(prompt())
    assert result.images[0].seed is None
    assert "seed" not in fake.requests[0].json


async def test_remaining_credits_follow_the_header(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    client = make_client(session, fake)
    await client.generate(prompt(seed=1))
    await client.generate(prompt(seed=2))
    assert client.remaining_credits == pytest.approx(99.98)
    fake.fail(502, headers={"x-remaining-credits": "not a number"})
    await client.generate(prompt(seed=3))
    assert client.remaining_credits == pytest.approx(99.97)


async def test_concurrent_generations(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    client = make_client(session, fake)
    results = await asyncio.gather(*(client.generate(prompt(seed=n)) for n in range(20)))
    assert sorted(result.images[0].seed or 0 for result in results) == list(range(20))
    assert fake.billed_calls == 20


async def test_on_attempt_reports_every_attempt(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    seen: list[tuple[str, int | None, float]] = []
    client = make_client(session, fake, on_attempt=lambda *event: seen.append(event))
    fake.fail(503)
    fake.fail(502)
    await client.generate(prompt(seed=1))
    assert [(kind, status) for kind, status, _ in seen] == [
        ("unavailable", 503),
        ("bad_gateway", 502),
        ("ok", 200),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


async def test_a_failing_on_attempt_hook_does_not_fail_the_generation(
    fake: FakeSegmind, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(kind: str, status: int | None, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    result = await make_client(session, fake, on_attempt=broken).generate(prompt(seed=1))
    assert len(result.images) == 1
    assert "on_attempt hook failed" in caplog.text


async def test_from_settings(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    settings = Settings(
        discord_token=SecretStr("discord-token"),
        segmind_api_key=SecretStr(SECRET),
        segmind_base_url=fake.url,
        segmind_timeout=3,
        segmind_max_attempts=2,
        segmind_retry_budget=10,
    )
    client = SegmindClient.from_settings(session, settings, backoff_base=0.001)
    assert client.url == f"{fake.url}/{DEFAULT_MODEL}"
    assert client.rate_limiter is None
    fake.fail(503, times=5)
    error = await fail_with(client)
    assert isinstance(error, SegmindServerError)
    assert fake.calls == 2  # segmind_max_attempts
    assert SECRET not in repr(client)


async def test_constructor_rejects_nonsense(session: aiohttp.ClientSession) -> None:
    common: dict[str, Any] = {"api_key": SecretStr("k"), "base_url": "http://x/v1", "model": "m"}
    bad_options: list[dict[str, Any]] = [
        {"timeout": 0},
        {"max_attempts": 0},
        {"retry_budget": -1},
        {"rpm": -1},
        {"rate_period": 0},
    ]
    for bad in bad_options:
        with pytest.raises(ValueError, match="must"):
            SegmindClient(session, **common, **bad)


def test_generated_image_repr_omits_the_bytes() -> None:
    image = GeneratedImage(data=b"\xff" * 1000, format="JPEG", width=512, height=512, seed=1)
    assert "\\xff" not in repr(image)


# --------------------------------------------------------------------------
# HTTP errors
# --------------------------------------------------------------------------

NON_RETRYABLE = [
    (400, SegmindBadRequest, "bad_request", "Bad Request"),
    (401, SegmindUnauthorized, "unauthorized", "Unauthorized"),
    (403, SegmindForbidden, "forbidden", "Forbidden"),
    (404, SegmindNotFound, "not_found", "Not Found"),
    (406, SegmindOutOfCredits, "out_of_credits", "Not enough credits"),
    (422, SegmindValidationError, "validation", "Unprocessable Entity"),
    (418, SegmindBadRequest, "http_418", "Error"),
]

# 429 is retryable too, but by the job queue (see the 429 tests below).
RETRYABLE = [
    (502, SegmindBadGateway, "bad_gateway", "Bad Gateway"),
    (503, SegmindUnavailable, "unavailable", "Service Unavailable"),
]
# The model may have run (and been billed): the member is told, never a blind retry.
MAY_BE_BILLED = [
    (500, SegmindServerError, "server_error", "Internal Server Error"),
    (504, SegmindGatewayTimeout, "gateway_timeout", "Gateway Timeout"),
    (599, SegmindServerError, "server_error", "Error"),
]


def test_the_retry_policy_table_says_what_is_retried() -> None:
    retried = {kind for kind, rule in RETRY_POLICY.items() if rule.retried}
    assert retried == {"rate_limited", "bad_gateway", "unavailable", "connection_refused"}
    assert not retry_rule("timeout").retried
    assert not retry_rule("connection_dropped").retried
    assert not retry_rule("bad_request").retried


@pytest.mark.parametrize(("status", "cls", "kind", "api_message"), NON_RETRYABLE + MAY_BE_BILLED)
async def test_errors_unsafe_to_repeat_are_never_retried(
    fake: FakeSegmind,
    session: aiohttp.ClientSession,
    status: int,
    cls: type[SegmindError],
    kind: str,
    api_message: str,
) -> None:
    fake.fail(status, times=5)
    error = await fail_with(make_client(session, fake, max_attempts=5))
    assert type(error) is cls
    assert (error.kind, error.status, error.api_message) == (kind, status, api_message)
    assert error.retryable is False
    assert error.retry_after is None
    assert error.user_message
    if status >= 500:
        assert "not retried, because the call may have been charged" in error.user_message
    assert fake.calls == 1
    assert fake.billed_calls == 0


@pytest.mark.parametrize(("status", "cls", "kind", "api_message"), RETRYABLE)
async def test_server_errors_are_retried_up_to_max_attempts(
    fake: FakeSegmind,
    session: aiohttp.ClientSession,
    status: int,
    cls: type[SegmindError],
    kind: str,
    api_message: str,
) -> None:
    fake.fail(status, times=5)
    error = await fail_with(make_client(session, fake, max_attempts=3))
    assert type(error) is cls
    assert (error.kind, error.status, error.api_message) == (kind, status, api_message)
    assert error.retryable is True
    assert fake.calls == 3


@pytest.mark.parametrize(
    ("status", "cls", "api_message"),
    [
        (502, SegmindBadGateway, "502 Bad Gateway"),
        (504, SegmindGatewayTimeout, "504 Gateway Timeout"),
    ],
)
async def test_html_gateway_pages(
    fake: FakeSegmind,
    session: aiohttp.ClientSession,
    status: int,
    cls: type[SegmindError],
    api_message: str,
) -> None:
    fake.fail(status, html=True, times=2)
    error = await fail_with(make_client(session, fake, max_attempts=2))
    assert type(error) is cls
    assert error.api_message == api_message
    assert "<" not in error.user_message


async def test_a_server_error_then_success(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(503)
    fake.fail(502, html=True)
    result = await make_client(session, fake).generate(prompt(seed=4))
    assert result.attempts == 3
    assert fake.calls == 3
    assert fake.billed_calls == 1


def test_user_messages_are_specific() -> None:
    assert SegmindUnauthorized(status=401).user_message == (
        "The Segmind API key was rejected. A server admin needs to fix the bot's configuration."
    )
    assert "SEGMIND_MODEL" in SegmindNotFound(status=404).user_message
    assert "out of API credits" in SegmindOutOfCredits(status=406).user_message
    assert "steps too high" in SegmindValidationError(api_message="steps too high").user_message
    assert "Try again in 30 seconds" in SegmindRateLimited(retry_after=29.2).user_message
    assert "Try again in 5 minutes" in SegmindRateLimited(retry_after=300).user_message
    assert "Try again in a minute" in SegmindRateLimited().user_message
    assert SegmindTimeout(timeout=120).user_message == (
        "Segmind did not answer within 120 s. It was not retried, because the call may "
        "have been charged. Please try again in a minute."
    )
    assert "HTTP 500" in SegmindServerError(status=500).user_message
    assert "HTTP 503" in SegmindUnavailable(status=503).user_message


@pytest.mark.parametrize("error_type", [SegmindBadRequest, SegmindValidationError])
def test_the_apis_reason_is_quoted_only_when_it_says_something(
    error_type: type[SegmindBadRequest] | type[SegmindValidationError],
) -> None:
    quoted = error_type(api_message="steps too high.").user_message
    assert "rejected" in quoted and ": steps too high. " in quoted
    plain = error_type().user_message
    assert error_type(api_message="...").user_message == plain == error_type.default_user_message
    assert ":" not in plain


def test_str_is_a_safe_log_line() -> None:
    error = SegmindRateLimited(status=429, api_message="slow down", retry_after=2.5)
    assert str(error) == "rate_limited [HTTP 429]: slow down; retry after 2.5 s"
    assert str(SegmindTimeout(timeout=3)) == "timeout: no answer within 3 s"
    assert str(SegmindUnauthorized(status=401)) == "unauthorized [HTTP 401]"


async def test_json_error_message_is_passed_on(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(422, body={"error": "num_inference_steps must be <= 40"})
    error = await fail_with(make_client(session, fake))
    assert error.api_message == "num_inference_steps must be <= 40"
    assert "num_inference_steps must be <= 40" in error.user_message


async def test_an_echoed_key_is_redacted(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    fake.fail(400, body={"error": f"key {SECRET} is not valid here"})
    error = await fail_with(make_client(session, fake))
    assert error.api_message == "key *** is not valid here"


async def test_long_text_bodies_are_trimmed(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(400, body="oops " * 1000)
    error = await fail_with(make_client(session, fake))
    assert error.api_message is not None
    assert error.api_message.startswith("oops oops")
    assert len(error.api_message) <= 200


async def test_real_401_for_a_wrong_key(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    client = make_client(session, fake, api_key=SecretStr(WRONG_KEY), max_attempts=4)
    error = await fail_with(client)
    assert isinstance(error, SegmindUnauthorized)
    assert fake.calls == 1
    assert fake.requests[0].key_matched is False
    assert WRONG_KEY not in repr(client)


async def test_real_404_for_a_wrong_model_slug(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    error = await fail_with(make_client(session, fake, model="kandinsky2.1-txt2img"))
    assert isinstance(error, SegmindNotFound)
    assert error.api_message == "Model kandinsky2.1-txt2img not found"
    assert fake.calls == 1


async def test_real_422_from_the_fake_validation(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    # model_construct skips our validation so the fake's own rules answer.
    bad = Txt2ImgRequest.model_construct(**{**prompt().model_dump(), "samples": 9})
    error = await fail_with(make_client(session, fake), bad)
    assert isinstance(error, SegmindValidationError)
    assert error.api_message == "samples must be an integer between 1 and 8"
    assert fake.calls == 1


# --------------------------------------------------------------------------
# 429 and Retry-After
# --------------------------------------------------------------------------


async def test_retry_after_seconds_reaches_the_caller_without_a_retry(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    # The job queue, not the client, waits out a 429 (for every job at once).
    fake.fail(429, headers={"Retry-After": "0.3"})
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindRateLimited)
    assert error.retry_after == pytest.approx(0.3)
    assert fake.calls == 1


async def test_rate_limit_reset_header_reaches_the_caller(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    reset_at = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()
    fake.fail(429, headers={"x-rate-limit-reset-at-utc": reset_at})
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindRateLimited)
    assert error.retry_after is not None and 15 < error.retry_after <= 20
    assert fake.calls == 1


async def test_rate_limit_beyond_the_budget_gives_up_at_once(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(429, headers={"Retry-After": "30"}, body={"error": "Rate limit exceeded"})
    started = time.monotonic()
    error = await fail_with(make_client(session, fake, retry_budget=5))
    assert time.monotonic() - started < 1.0
    assert isinstance(error, SegmindRateLimited)
    assert error.retry_after == pytest.approx(30)
    assert error.api_message == "Rate limit exceeded"
    assert "Try again in 30 seconds" in error.user_message
    assert fake.calls == 1


async def test_rate_limit_without_headers_is_not_retried_either(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(429, times=2)
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindRateLimited) and error.retry_after is None
    assert fake.calls == 1


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"Retry-After": email.utils.formatdate(NOW + 12, usegmt=True)}, 12.0),
        ({"x-rate-limit-reset-at-utc": "2023-11-14T22:13:40Z"}, 20.0),
        ({"x-rate-limit-reset-at-utc": "2023-11-14T22:13:40+00:00"}, 20.0),
        ({"x-rate-limit-reset-at-utc": "2023-11-14T22:13:40"}, 20.0),  # naive means UTC
        ({"x-rate-limit-reset-at-utc": str(int(NOW + 45))}, 45.0),
        ({"x-rate-limit-reset-at-utc": str(int((NOW + 3) * 1000))}, 3.0),  # milliseconds
        ({"Retry-After": "5", "x-rate-limit-reset-at-utc": str(NOW + 9)}, 9.0),  # later wins
        ({"Retry-After": "-3"}, 0.0),
        ({"x-rate-limit-reset-at-utc": "2000-01-01T00:00:00Z"}, 0.0),  # in the past
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert datetime.fromtimestamp(NOW, UTC).isoformat() == "2023-11-14T22:13:20+00:00"
    result = parse_retry_after(headers, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=0.01)


# --------------------------------------------------------------------------
# timeouts, dropped connections, budgets
# --------------------------------------------------------------------------


async def test_timeout_after_bounded_attempts(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.hang(times=5)
    error = await fail_with(make_client(session, fake, timeout=0.2, max_attempts=3))
    assert isinstance(error, SegmindTimeout)
    # The request was sent: the call may have been billed, so it is not sent again.
    assert (error.kind, error.status, error.retryable) == ("timeout", None, False)
    assert "did not answer within 0.2 s" in error.user_message
    assert "not retried, because the call may have been charged" in error.user_message
    assert fake.calls == 1


async def test_a_connection_dropped_mid_answer_is_not_retried(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.drop(times=10)
    error = await fail_with(make_client(session, fake, max_attempts=3))
    assert isinstance(error, SegmindConnectionDropped)
    assert (error.kind, error.status, error.retryable) == ("connection_dropped", None, False)
    assert error.detail is not None
    assert "ServerDisconnectedError" in error.detail
    assert "not retried, because the call may have been charged" in error.user_message
    assert fake.calls == 1


async def test_a_malformed_http_answer_does_not_leak_the_key(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    # The threat: aiohttp's own error for this carries the request headers.
    fake.garbage()
    with pytest.raises(aiohttp.ClientResponseError) as raw:
        async with session.post(f"{fake.url}/{DEFAULT_MODEL}", headers={"x-api-key": SECRET}):
            pass
    assert SECRET in repr(raw.value)

    fake.garbage()
    error = await fail_with(make_client(session, fake, max_attempts=2))
    assert isinstance(error, SegmindConnectionDropped)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert error.detail is not None
    assert error.detail.startswith("ClientResponseError: 400")
    assert fake.calls == 2


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    attempts: list[str] = []
    client = SegmindClient(
        session,
        api_key=SecretStr(SECRET),
        base_url=f"http://127.0.0.1:{port}/v1",
        model=DEFAULT_MODEL,
        max_attempts=2,
        backoff_base=0.001,
        on_attempt=lambda kind, status, seconds: attempts.append(kind),
    )
    error = await fail_with(client)
    assert type(error) is SegmindConnectionError
    assert error.detail is not None
    assert error.detail.startswith("ClientConnectorError")
    # Refused before the request was sent: nothing can have been billed, so retried.
    assert attempts == ["connection_refused", "connection_refused"]
    assert error.user_message == (
        "The bot could not reach Segmind, also when retried. Please try again in a few minutes."
    )


async def test_retries_are_bounded_by_the_budget(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    # Waits: 0.2-0.4 s, then 0.4-0.6 s; the second would overrun 0.5 s.
    fake.fail(502, times=10)
    client = make_client(
        session, fake, max_attempts=10, backoff_base=0.2, backoff_max=5.0, retry_budget=0.5
    )
    started = time.monotonic()
    error = await fail_with(client)
    assert isinstance(error, SegmindServerError)
    assert fake.calls == 2
    assert time.monotonic() - started < 0.5 + 0.3


@pytest.mark.parametrize("options", [{"retry_budget": 0}, {"max_attempts": 1}])
async def test_no_retry_without_budget_or_attempts(
    fake: FakeSegmind, session: aiohttp.ClientSession, options: dict[str, Any]
) -> None:
    fake.fail(503, times=3)
    error = await fail_with(make_client(session, fake, **options))
    assert isinstance(error, SegmindServerError)
    assert fake.calls == 1


async def test_cancellation_is_not_swallowed(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.hang()
    task = asyncio.create_task(make_client(session, fake, timeout=30).generate(prompt(seed=1)))
    await fake.wait_for_requests(1, timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


# --------------------------------------------------------------------------
# answers that are not the requested image
# --------------------------------------------------------------------------


async def test_corrupt_image_is_an_invalid_response(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.corrupt()
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindInvalidResponse)
    assert (error.kind, error.status, error.retryable) == ("invalid_response", 200, False)
    assert fake.calls == 1


async def test_wrong_size_is_an_invalid_response(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.wrong_size(width=256, height=256)
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindInvalidResponse)
    assert error.detail == "image is 256x256, requested 512x512"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param({"image": "!!! not base64 !!!"}, "not valid base64", id="bad-base64"),
        pytest.param(
            {"image": base64.b64encode(b"text, not pixels").decode()},
            "image 1: data is not a recognisable image",
            id="not-image",
        ),
        pytest.param({"images": []}, "has no image", id="no-images"),
        pytest.param({"images": [1, 2]}, "not a base64 string", id="not-strings"),
        pytest.param({"status": "queued"}, "has no image", id="no-image-key"),
        pytest.param("[1, 2, 3]", "not an object", id="json-list"),
        pytest.param("{not json", "not valid JSON", id="broken-json"),
    ],
)
async def test_unusable_json_answers(
    fake: FakeSegmind,
    session: aiohttp.ClientSession,
    body: dict[str, Any] | str,
    problem: str,
) -> None:
    fake.fail(200, body=body, content_type="application/json")
    error = await fail_with(make_client(session, fake), prompt(seed=1))
    assert isinstance(error, SegmindInvalidResponse)
    assert error.detail is not None
    assert problem in error.detail
    assert (error.status, error.retryable) == (200, False)
    assert fake.calls == 1


async def test_html_with_status_200_is_an_invalid_response(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake.fail(200, body="<html><title>Maintenance</title></html>", html=True)
    error = await fail_with(make_client(session, fake))
    assert isinstance(error, SegmindInvalidResponse)
    assert error.api_message == "Maintenance"


# --------------------------------------------------------------------------
# client-side rate limit
# --------------------------------------------------------------------------


async def test_rate_limiter_delays_the_request_over_the_limit(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    # 2 requests per 0.4 s: one every 0.2 s, never a burst of two.
    client = make_client(session, fake, rpm=2, rate_period=0.4)
    assert client.rate_limiter is not None
    await client.generate(prompt(seed=1))
    assert not client.rate_limiter.has_capacity()
    await client.generate(prompt(seed=2))
    await client.generate(prompt(seed=3))
    times = [request.received_at for request in fake.requests]
    assert 0.19 <= times[1] - times[0] < 2.0
    assert 0.39 <= times[2] - times[0] < 4.0


async def test_rate_limiter_also_paces_retries(
    fake: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    client = make_client(session, fake, rpm=1, rate_period=0.3)
    fake.fail(502)
    result = await client.generate(prompt(seed=1))
    assert result.attempts == 2
    gap = fake.requests[1].received_at - fake.requests[0].received_at
    assert 0.25 <= gap < 2.0


async def test_no_rate_limiter_by_default(session: aiohttp.ClientSession) -> None:
    client = SegmindClient(session, api_key=SecretStr("k"), base_url="http://x/v1", model="m")
    assert client.rate_limiter is None


# --------------------------------------------------------------------------
# the key never leaks
# --------------------------------------------------------------------------


async def test_the_key_never_leaks_from_any_failure(
    fake: FakeSegmind, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(session, fake, timeout=0.2, max_attempts=2, retry_budget=10)
    scenarios: list[Callable[[], None]] = [
        lambda: fake.fail(400, body={"error": f"bad key {SECRET}"}),
        lambda: fake.fail(401),
        lambda: fake.fail(429, headers={"Retry-After": "100"}),
        lambda: fake.fail(502, html=True, times=2),
        fake.drop,
        fake.garbage,
        fake.hang,
        fake.corrupt,
        fake.wrong_size,
    ]
    errors: list[SegmindError] = []
    for script in scenarios:
        script()
        errors.append(await fail_with(client))
    assert len({type(error) for error in errors}) >= 7
    assert all(error.__cause__ is None and error.__context__ is None for error in errors)
    assert SECRET not in repr(client)
    assert SECRET not in str(vars(client).get("_api_key"))
    assert SECRET not in caplog.text
    assert any(record.name == "bot.segmind" for record in caplog.records)


# --------------------------------------------------------------------------
# the fake itself (other suites and the benchmarks rely on it)
# --------------------------------------------------------------------------


async def test_fixture_defaults(fake_segmind: FakeSegmind) -> None:
    assert fake_segmind.api_key == "test-key"
    assert fake_segmind.url.startswith("http://127.0.0.1:")
    assert fake_segmind.url.endswith("/v1")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"prompt": "x", "samples": 0}, 422),
        ({"prompt": "x", "num_inference_steps": 41}, 422),
        ({"prompt": "x", "guidance_scale": 0}, 422),
        ({"prompt": "x", "seed": MAX_SEED + 1}, 422),
        ({"prompt": "x", "img_width": 640}, 422),
        ({"prompt": "x", "scheduler": "Euler"}, 422),
        ({"prompt": "x", "style": "anime"}, 422),
        ({"samples": 1}, 422),
        ({"prompt": "x", "samples": True}, 422),
        ({"prompt": "x", "base64": "yes"}, 422),
        ("not json", 400),
        ({"prompt": "x", "seed": MAX_SEED, "img_width": 1024, "scheduler": "P-Sampler"}, 200),
    ],
)
async def test_fake_validates_like_the_api(
    fake: FakeSegmind, session: aiohttp.ClientSession, body: object, status: int
) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with session.post(
        f"{fake.url}/{DEFAULT_MODEL}", data=data, headers={"x-api-key": SECRET}
    ) as response:
        assert response.status == status
        if status != 200:
            assert "error" in await response.json()
    assert fake.requests[0].status == status
    assert fake.billed_calls == (1 if status == 200 else 0)


async def test_fake_reset_and_close(fake: FakeSegmind, session: aiohttp.ClientSession) -> None:
    client = make_client(session, fake)
    await client.generate(prompt(seed=1))
    fake.fail(500)
    fake.reset()
    assert (fake.calls, fake.billed_calls, fake.pending_faults, fake.requests) == (0, 0, 0, [])
    assert fake.remaining_credits == fake.initial_credits
    # close() releases a hung request at once instead of waiting for it.
    fake.hang()
    task = asyncio.create_task(client.generate(prompt(seed=2)))
    await fake.wait_for_requests(1, timeout=5)
    async with asyncio.timeout(5):
        await fake.close()
        with pytest.raises(SegmindConnectionError):
            await task
