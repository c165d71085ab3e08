"""One error class per outcome of an API call, each with its retry rule and the member's message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Final

from bot.i18n import _N, LocaleLike, render


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
        detail = (self.api_message or "").rstrip(".")
        return (detail and self._explained(detail)) or self.default_user_message

    def _explained(self, detail: str) -> str | None:
        """The member's message quoting the API's reason, for errors where that reason helps."""
        return None

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
    default_user_message = _N("Segmind rejected the request. Try different settings.")

    def _explained(self, detail: str) -> str:
        return _N("Segmind rejected the request: {detail}. Try different settings.", detail=detail)


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
    default_user_message = _N("Segmind rejected these parameters. Adjust them and try again.")

    def _explained(self, detail: str) -> str:
        return _N(
            "Segmind rejected these parameters: {detail}. Adjust them and try again.", detail=detail
        )


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


STATUS_ERRORS: Final[Mapping[int, type[SegmindError]]] = {
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
