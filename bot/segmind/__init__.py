"""Typed client for Segmind's Kandinsky 2.1 text-to-image API (DESIGN.md §1).

The request model (:class:`Txt2ImgRequest`, :func:`build_request`), one
:class:`SegmindError` per kind of failure with a translatable ``user_message``, and
:class:`SegmindClient`, which retries only what :data:`RETRY_POLICY` allows. No error,
log record or exception chain ever carries the API key.
"""

from __future__ import annotations

from bot.segmind._answers import parse_retry_after
from bot.segmind.client import RateLimiter, SegmindClient
from bot.segmind.errors import (
    RETRY_POLICY,
    RetryRule,
    SegmindBadGateway,
    SegmindBadRequest,
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
    retry_rule,
)
from bot.segmind.request import (
    MAX_SEED,
    PROMPT_MAX_LENGTH,
    GeneratedImage,
    GenerationResult,
    InvalidRequest,
    Scheduler,
    Txt2ImgRequest,
    build_request,
)

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
