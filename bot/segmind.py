"""Typed client for Segmind's Kandinsky 2.1 text-to-image API (DESIGN.md §1).

The request model (:class:`Txt2ImgRequest`, :func:`build_request`), one
:class:`SegmindError` per kind of failure with a translatable ``user_message``, and
:class:`SegmindClient`, which retries only what :data:`RETRY_POLICY` allows. No error,
log record or exception chain ever carries the API key.
"""

from __future__ import annotations

import asyncio
import binascii
import email.utils
import json
import logging
import math
import random
import re
import time
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

import aiohttp
from aiolimiter import AsyncLimiter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from bot.i18n import _N, LocaleLike, render
from bot.images import ImageInfo, InvalidImage, probe_image

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "MAX_SEED",
    "PROMPT_MAX_LENGTH",
    "RETRY_POLICY",
    "GeneratedImage",
    "GenerationResult",
    "InvalidRequest",
    "RateLimiter",
    "RetryRule",
    "Scheduler",
    "SegmindBadGateway",
    "SegmindBadRequest",
    "SegmindClient",
    "SegmindConnectionDropped",
    "SegmindConnectionError",
    "SegmindError",
    "SegmindForbidden",
    "SegmindGatewayTimeout",
    "SegmindInvalidResponse",
    "SegmindNotFound",
    "SegmindOutOfCredits",
    "SegmindRateLimited",
    "SegmindServerError",
    "SegmindTimeout",
    "SegmindUnauthorized",
    "SegmindUnavailable",
    "SegmindValidationError",
    "Txt2ImgRequest",
    "build_request",
    "parse_retry_after",
    "retry_rule",
]

logger = logging.getLogger("bot.segmind")

MAX_SEED: Final = 4294967295
PROMPT_MAX_LENGTH: Final = 1000
_SEED_MODULUS: Final = MAX_SEED + 1
_UNIT_PIXELS: Final = 512 * 512

#: Largest successful answer we read (eight base64 1024² images fit easily).
_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Error bodies are only read for their message.
_MAX_ERROR_BODY_BYTES: Final = 64 * 1024
_SNIPPET_CHARS: Final = 200
_REDACTED: Final = "***"


# --------------------------------------------------------------------------
# Request model
# --------------------------------------------------------------------------


class Scheduler(StrEnum):
    """The sampling schedulers the API accepts."""

    DDIM = "DDIM"
    P_SAMPLER = "P-Sampler"


class InvalidRequest(ValueError):
    """Generation parameters are out of range; ``user_message`` says which and why."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


def _no_bool(value: object, info: ValidationInfo) -> object:
    # pydantic's lax mode reads True as 1; for a sample count that is a bug.
    if isinstance(value, bool):
        raise PydanticCustomError(
            "segmind_bool",
            "{field} must be a number (got {value}).",
            {"field": info.field_name, "value": str(value).lower()},
        )
    return value


class Txt2ImgRequest(BaseModel):
    """One text-to-image request, validated against the API's ranges.

    Immutable: derive variants with :meth:`with_seed` or :meth:`per_image`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    negative_prompt: str | None = None
    scheduler: Scheduler = Scheduler.DDIM
    samples: int = Field(default=1, ge=1, le=8)
    num_inference_steps: int = Field(default=25, ge=10, le=40)
    guidance_scale: float = Field(default=7.5, ge=1, le=20, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    img_width: Literal[512, 1024] = 512
    img_height: Literal[512, 1024] = 512

    @field_validator("prompt", "negative_prompt", mode="after")
    @classmethod
    def _clean_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not text:
            if info.field_name == "negative_prompt":
                return None
            raise PydanticCustomError("segmind_blank", "prompt must not be empty.")
        if len(text) > PROMPT_MAX_LENGTH:
            raise PydanticCustomError(
                "segmind_too_long",
                "{field} must be at most {limit} characters (got {length}).",
                {"field": info.field_name, "limit": PROMPT_MAX_LENGTH, "length": len(text)},
            )
        return text

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            wanted = value.strip().casefold()
            for scheduler in Scheduler:
                if scheduler.value.casefold() == wanted:
                    return scheduler
        return value

    @field_validator("img_width", "img_height", mode="before")
    @classmethod
    def _size_from_text(cls, value: object, info: ValidationInfo) -> object:
        value = _no_bool(value, info)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value

    @field_validator("samples", "num_inference_steps", "guidance_scale", "seed", mode="before")
    @classmethod
    def _numbers_not_bools(cls, value: object, info: ValidationInfo) -> object:
        return _no_bool(value, info)

    @property
    def units_per_image(self) -> int:
        """Credits one image of this size costs: 1 (512²), 2 (512x1024) or 4 (1024²)."""
        return (self.img_width * self.img_height) // _UNIT_PIXELS

    @property
    def cost(self) -> int:
        """Credits the whole request costs (DESIGN.md §3)."""
        return self.samples * self.units_per_image

    def with_seed(self, seed: int) -> Txt2ImgRequest:
        """A copy with ``seed`` (0…MAX_SEED)."""
        if isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"seed must be between 0 and {MAX_SEED} (got {seed}).")
        return self.model_copy(update={"seed": seed})

    def with_random_seed(self) -> Txt2ImgRequest:
        """``self`` if a seed is set, else a copy with a freshly drawn seed."""
        if self.seed is not None:
            return self
        return self.with_seed(random.randint(0, MAX_SEED))

    def per_image(self) -> list[Txt2ImgRequest]:
        """One single-image request per sample, seeds ``seed, seed+1, …`` (mod 2³²).

        A seed is drawn first when none is set, so every image is reproducible.
        """
        seed = self.seed if self.seed is not None else random.randint(0, MAX_SEED)
        return [
            self.model_copy(update={"samples": 1, "seed": (seed + offset) % _SEED_MODULUS})
            for offset in range(self.samples)
        ]

    def api_payload(self, *, base64: bool = False) -> dict[str, object]:
        """The exact JSON body the API expects; unset optional fields are omitted."""
        payload: dict[str, object] = {"prompt": self.prompt}
        if self.negative_prompt is not None:
            payload["negative_prompt"] = self.negative_prompt
        payload.update(
            scheduler=self.scheduler.value,
            samples=self.samples,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
        )
        if self.seed is not None:
            payload["seed"] = self.seed
        payload.update(img_width=self.img_width, img_height=self.img_height, base64=base64)
        return payload


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:39] + "…"
        return f"'{text}'"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _bounds(name: str) -> tuple[object, object] | None:
    info = Txt2ImgRequest.model_fields.get(name)
    if info is None:
        return None
    low: object = None
    high: object = None
    for constraint in info.metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    if low is None or high is None:
        return None
    return low, high


def _describe_problem(problem: Mapping[str, Any]) -> str:
    name = ".".join(str(part) for part in problem["loc"]) or "request"
    kind = str(problem["type"])
    got = _show(problem.get("input"))
    if kind.startswith("segmind_"):
        return str(problem["msg"])
    if kind == "missing":
        return f"{name} is required."
    if kind == "extra_forbidden":
        return f"{name} is not a known option."
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        bounds = _bounds(name)
        if bounds is not None:
            return f"{name} must be between {bounds[0]} and {bounds[1]} (got {got})."
    if kind == "literal_error":
        expected = str(problem.get("ctx", {}).get("expected", "one of the allowed values"))
        return f"{name} must be {expected} (got {got})."
    if kind == "enum":
        choices = " or ".join(scheduler.value for scheduler in Scheduler)
        return f"{name} must be {choices} (got {got})."
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"{name} must be a whole number (got {got})."
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return f"{name} must be a number (got {got})."
    if kind == "string_type":
        return f"{name} must be text."
    message = str(problem["msg"]).rstrip(".")
    return f"{name}: {message}."


def build_request(**values: object) -> Txt2ImgRequest:
    """Validate ``values`` into a :class:`Txt2ImgRequest`.

    Raises :class:`InvalidRequest` (never pydantic's ``ValidationError``) whose
    ``user_message`` has one readable line per problem.
    """
    try:
        return Txt2ImgRequest.model_validate(values)
    except ValidationError as error:
        lines = [_describe_problem(problem) for problem in error.errors()]
        message = "\n".join(dict.fromkeys(lines))
    raise InvalidRequest(message)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One decoded, checked image and the seed that reproduces it (if known)."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    seed: int | None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The images of one :meth:`SegmindClient.generate` call and how it went."""

    images: list[GeneratedImage]
    remaining_credits: float | None
    attempts: int
    elapsed: float


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryRule:
    """Whether an outcome of a call is sent again, and why."""

    retried: bool
    why: str


_MAY_BE_BILLED: Final = "not retried, because the call may have been charged"

#: The retry policy (money), by error ``kind``: only what cannot have been billed is
#: sent again (DESIGN.md §4, README "Retry policy"). Any other kind is not retried.
RETRY_POLICY: Final[Mapping[str, RetryRule]] = {
    "rate_limited": RetryRule(True, "retried after the wait the API asks for (429)"),
    "bad_gateway": RetryRule(True, "retried: the gateway did not reach the model (502)"),
    "unavailable": RetryRule(True, "retried: the API took no work (503)"),
    "connection_refused": RetryRule(True, "retried: the request was never sent"),
    "timeout": RetryRule(False, f"{_MAY_BE_BILLED}: the request was sent, no answer came"),
    "connection_dropped": RetryRule(False, f"{_MAY_BE_BILLED}: the answer was cut off"),
    "server_error": RetryRule(False, f"{_MAY_BE_BILLED}: the model may have run (500)"),
    "gateway_timeout": RetryRule(False, f"{_MAY_BE_BILLED}: the model may have run (504)"),
}
_NOT_RETRIED: Final = RetryRule(False, "not retried: the same call would fail the same way")


def retry_rule(kind: str) -> RetryRule:
    return RETRY_POLICY.get(kind, _NOT_RETRIED)


class SegmindError(Exception):
    """A call to Segmind failed. ``str()`` is safe to log; show ``user_message`` to users.

    ``retryable`` follows :data:`RETRY_POLICY` for the error's ``kind``.
    """

    kind: str = "error"
    retryable: bool = False
    default_user_message: ClassVar[str] = _N("Image generation failed. Please try again later.")

    def __init__(
        self,
        *,
        status: int | None = None,
        api_message: str | None = None,
        retry_after: float | None = None,
        user_message: str | None = None,
        detail: str | None = None,
        kind: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.status = status
        self.api_message = api_message
        self.retry_after = retry_after
        self.detail = detail
        if kind is not None:
            self.kind = kind
        self.retryable = retry_rule(self.kind).retried if retryable is None else retryable
        self.user_message = user_message or self._user_message()
        super().__init__(self._summary())

    def message(self, locale: LocaleLike) -> str:
        """``user_message`` in ``locale``'s language (English when there is no catalog)."""
        return render(locale, self.user_message)

    def _user_message(self) -> str:
        return self.default_user_message

    def _summary(self) -> str:
        head = self.kind if self.status is None else f"{self.kind} [HTTP {self.status}]"
        parts = [part for part in (self.api_message, self.detail) if part]
        if self.retry_after is not None:
            parts.append(f"retry after {self.retry_after:.1f} s")
        return f"{head}: {'; '.join(parts)}" if parts else head

    def __str__(self) -> str:
        return self._summary()


class SegmindBadRequest(SegmindError):
    """400, or another 4xx the API is not known to send: not retryable."""

    kind = "bad_request"

    def _user_message(self) -> str:
        if self.api_message:
            return _N(
                "Segmind rejected the request: {detail}. Try different settings.",
                detail=self.api_message.rstrip("."),
            )
        return _N("Segmind rejected the request. Try different settings.")


class SegmindUnauthorized(SegmindError):
    """401: the API key was rejected (configuration)."""

    kind = "unauthorized"
    default_user_message = _N(
        "The Segmind API key was rejected. A server admin needs to fix the bot's configuration."
    )


class SegmindForbidden(SegmindError):
    """403: the key may not use this model (configuration or account)."""

    kind = "forbidden"
    default_user_message = _N(
        "Segmind refused access to this model. The bot operator needs to check the "
        "Segmind account and API key."
    )


class SegmindNotFound(SegmindError):
    """404: the model slug is wrong (configuration)."""

    kind = "not_found"
    default_user_message = _N(
        "The Segmind model endpoint was not found. The bot operator needs to check "
        "SEGMIND_MODEL in the bot's configuration."
    )


class SegmindOutOfCredits(SegmindError):
    """406: the operator's Segmind account has run out of credits."""

    kind = "out_of_credits"
    default_user_message = _N(
        "The bot's own Segmind account is out of API credits (this server's credits are "
        "not the problem). The bot's operator needs to top it up before images can be "
        "generated again."
    )


class SegmindValidationError(SegmindError):
    """422: the API rejected the parameters."""

    kind = "validation"

    def _user_message(self) -> str:
        if self.api_message:
            return _N(
                "Segmind rejected these parameters: {detail}. Adjust them and try again.",
                detail=self.api_message.rstrip("."),
            )
        return _N("Segmind rejected these parameters. Adjust them and try again.")


class SegmindRateLimited(SegmindError):
    """429: too many requests; ``retry_after`` says when to come back (if known)."""

    kind = "rate_limited"

    def _user_message(self) -> str:
        if self.retry_after is None:
            return _N("Segmind is rate-limiting the bot right now. Try again in a minute.")
        return _N(
            "Segmind is rate-limiting the bot right now. Try again in {wait}.",
            wait=timedelta(seconds=self.retry_after),
        )


class SegmindServerError(SegmindError):
    """500 or another 5xx not named below: the model may have run, so not retried."""

    kind = "server_error"

    def _user_message(self) -> str:
        if self.status:
            return _N(
                "Segmind had a server error (HTTP {status}). "
                "It was not retried, because the call may have been charged. "
                "Please try again in a few minutes.",
                status=str(self.status),
            )
        return _N(
            "Segmind had a server error. "
            "It was not retried, because the call may have been charged. "
            "Please try again in a few minutes."
        )


class SegmindUnavailable(SegmindServerError):
    """503: the API took no work, so the call is retried."""

    kind = "unavailable"

    def _user_message(self) -> str:
        return _N(
            "Segmind is unavailable (HTTP 503), also when retried. "
            "Please try again in a few minutes."
        )


class SegmindBadGateway(SegmindServerError):
    """502 from Segmind's gateway."""

    kind = "bad_gateway"
    default_user_message = _N(
        "Segmind's gateway failed (HTTP 502), also when retried. Please try again in a few minutes."
    )

    def _user_message(self) -> str:
        return self.default_user_message


class SegmindGatewayTimeout(SegmindServerError):
    """504: Segmind's gateway gave up waiting for the model (often a cold start)."""

    kind = "gateway_timeout"
    default_user_message = _N(
        "Segmind's gateway timed out (HTTP 504); the model may be starting up. "
        "It was not retried, because the call may have been charged. Please try again in a minute."
    )

    def _user_message(self) -> str:
        return self.default_user_message


class SegmindTimeout(SegmindError):
    """Our own per-call timeout expired after the request was sent: not retried."""

    kind = "timeout"

    def __init__(self, *, timeout: float, detail: str | None = None) -> None:
        self.timeout = timeout
        super().__init__(detail=detail or f"no answer within {timeout:g} s")

    def _user_message(self) -> str:
        return _N(
            "Segmind did not answer within {timeout} s. "
            "It was not retried, because the call may have been charged. "
            "Please try again in a minute.",
            timeout=self.timeout,
        )


class SegmindConnectionError(SegmindError):
    """No connection could be made (refused, DNS): the request was never sent, so retried."""

    kind = "connection_refused"
    default_user_message = _N(
        "The bot could not reach Segmind, also when retried. Please try again in a few minutes."
    )


class SegmindConnectionDropped(SegmindConnectionError):
    """The connection was reset or closed after the request was sent: not retried."""

    kind = "connection_dropped"
    default_user_message = _N(
        "The connection to Segmind dropped before the answer arrived. "
        "It was not retried, because the call may have been charged. "
        "Please try again in a few minutes."
    )


class SegmindInvalidResponse(SegmindError):
    """A 2xx whose body is not the requested image(s), or a status we cannot interpret."""

    kind = "invalid_response"
    default_user_message = _N(
        "Segmind answered with something that is not a usable image. Please try again."
    )


_STATUS_ERRORS: Final[Mapping[int, type[SegmindError]]] = {
    400: SegmindBadRequest,
    401: SegmindUnauthorized,
    403: SegmindForbidden,
    404: SegmindNotFound,
    406: SegmindOutOfCredits,
    422: SegmindValidationError,
    429: SegmindRateLimited,
    500: SegmindServerError,
    502: SegmindBadGateway,
    503: SegmindUnavailable,
    504: SegmindGatewayTimeout,
}


# --------------------------------------------------------------------------
# Response helpers (pure functions; the thread-side ones never touch the loop)
# --------------------------------------------------------------------------

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:[\w.+/-]+;base64,", re.IGNORECASE)


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, _REDACTED) if secret else text


def _trim(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _api_message(content_type: str, body: bytes, secret: str) -> str | None:
    """The API's own explanation: ``{"error": …}`` or a snippet of an HTML/text page."""
    text = body.decode("utf-8", errors="replace")
    message: str | None = None
    document: object = None
    if _is_json(content_type) or text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
    if isinstance(document, dict):
        for key in ("error", "message", "detail", "msg"):
            value = document.get(key)
            if isinstance(value, str) and value.strip():
                message = value
                break
            if value is not None and not isinstance(value, str):
                message = json.dumps(value, ensure_ascii=False)
                break
        if message is None:
            return None  # a JSON body without an explanation: no noise
    else:
        title = _TITLE.search(text)
        message = title.group(1) if title else _TAGS.sub(" ", text)
    message = _trim(_redact(message, secret))
    return message or None


def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_instant(value: str) -> float | None:
    """Epoch seconds (or milliseconds), ISO-8601 or an HTTP-date, as a POSIX time."""
    number = _parse_float(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number
    text = value.strip()
    moment: datetime | None = None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            moment = None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait according to ``Retry-After`` and ``x-rate-limit-reset-at-utc``.

    ``Retry-After`` may be delay-seconds or an HTTP-date; the reset header may be
    ISO-8601 or epoch seconds. When both are present the later one wins.
    """
    now = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        seconds = _parse_float(retry_after)
        if seconds is None:
            instant = _parse_instant(retry_after)
            seconds = None if instant is None else instant - now
        if seconds is not None:
            waits.append(seconds)
    reset_at = headers.get("x-rate-limit-reset-at-utc")
    if reset_at is not None:
        instant = _parse_instant(reset_at)
        if instant is not None:
            waits.append(instant - now)
    if not waits:
        return None
    return max(0.0, *waits)


def _error_for_status(
    status: int, content_type: str, headers: Mapping[str, str], body: bytes, secret: str
) -> SegmindError:
    message = _api_message(content_type, body, secret)
    cls = _STATUS_ERRORS.get(status)
    if cls is SegmindRateLimited:
        return SegmindRateLimited(
            status=status, api_message=message, retry_after=parse_retry_after(headers)
        )
    if cls is not None:
        return cls(status=status, api_message=message)
    if 400 <= status < 500:
        return SegmindBadRequest(status=status, api_message=message, kind=f"http_{status}")
    if 500 <= status < 600:
        return SegmindServerError(status=status, api_message=message)
    return SegmindInvalidResponse(
        status=status, api_message=message, kind="unexpected_status", detail="unexpected status"
    )


def _decode_answer(
    status: int, content_type: str, body: bytes, secret: str
) -> list[tuple[bytes, ImageInfo]] | SegmindInvalidResponse:
    """Turn a 2xx body into checked images. Runs in a worker thread.

    Returns the error instead of raising it so that the caller raises it on the
    event loop with a clean (empty) exception context.
    """
    if content_type.startswith("text/"):
        return SegmindInvalidResponse(
            status=status,
            api_message=_api_message(content_type, body, secret),
            detail="text instead of an image",
        )
    blobs: list[bytes] = []
    if _is_json(content_type):
        problem = _json_images(body, blobs)
        if problem is not None:
            return SegmindInvalidResponse(
                status=status, api_message=_api_message(content_type, body, secret), detail=problem
            )
    else:
        blobs.append(body)
    checked: list[tuple[bytes, ImageInfo]] = []
    for number, blob in enumerate(blobs, start=1):
        try:
            info = probe_image(blob)
        except InvalidImage as error:
            problem = f"image {number}: {error}"
        else:
            checked.append((blob, info))
            continue
        return SegmindInvalidResponse(status=status, detail=problem)
    return checked


def _json_images(body: bytes, blobs: list[bytes]) -> str | None:
    """Decode ``{"image": b64}`` / ``{"images": [b64, …]}`` into ``blobs``; a problem or None."""
    try:
        document = json.loads(body)
    except ValueError:
        return "body is not valid JSON"
    if not isinstance(document, dict):
        return "JSON body is not an object"
    encoded: object = document.get("images", document.get("image"))
    if isinstance(encoded, str):
        encoded = [encoded]
    if not isinstance(encoded, list) or not encoded:
        return "JSON body has no image"
    for item in encoded:
        if not isinstance(item, str):
            return "JSON image is not a base64 string"
        text = "".join(_DATA_URI.sub("", item.strip()).split())
        try:
            blobs.append(b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            return "JSON image is not valid base64"
    return None


def _describe_client_error(error: BaseException) -> str:
    # Only the type and aiohttp's short message: never the request info, which
    # includes the headers (and so the key).
    if isinstance(error, aiohttp.ClientResponseError):
        text = f"{error.status} {error.message}"
    else:
        text = str(error)
    return f"{type(error).__name__}: {_trim(text)}" if text else type(error).__name__


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

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

    The client does not own the session. ``timeout`` bounds each attempt;
    ``max_attempts`` and ``retry_budget`` (seconds from the start of
    :meth:`generate`) bound the retries, so a call ends within roughly
    ``retry_budget + timeout`` seconds. ``rpm`` > 0 limits requests (retries
    included) to ``rpm`` per ``rate_period`` seconds. ``on_attempt(kind,
    status, seconds)`` is called after every HTTP attempt, ``kind`` being
    ``"ok"`` or the error's ``kind``.
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
        # A limiter shared with other processes (through the database) replaces the
        # in-memory one; either way it is asked before every attempt, retries included.
        self._limiter: RateLimiter | None = rate_limiter or (
            AsyncLimiter(rpm, rate_period) if rpm > 0 else None
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
        url = _redact(self._url, self._api_key.get_secret_value())
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
        # Exponential backoff with jitter: base * 2^(n-1) + U(0, base), capped.
        # (Computed here rather than with tenacity's wait_exponential_jitter,
        # whose parameters changed names between tenacity releases.)
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
            detail = _redact(_describe_client_error(error), self._api_key.get_secret_value())
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
            raise _error_for_status(
                reply.status,
                reply.content_type,
                reply.headers,
                reply.body,
                self._api_key.get_secret_value(),
            )
        return reply

    async def _images(self, request: Txt2ImgRequest, reply: _Reply) -> list[GeneratedImage]:
        decoded = await asyncio.to_thread(
            _decode_answer,
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
                seed=None if seed is None else (seed + offset) % _SEED_MODULUS,
            )
            for offset, (blob, info) in enumerate(decoded)
        ]

    def _record_credits(self, headers: Mapping[str, str]) -> None:
        credits_left = _parse_float(headers.get("x-remaining-credits"))
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
