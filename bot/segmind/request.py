"""The request the bot sends (the API's parameters and ranges) and the images it gets back."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from bot.i18n import _N, Lines, Message, OneOf

MAX_SEED: Final = 4294967295
PROMPT_MAX_LENGTH: Final = 1000
SEED_MODULUS: Final = MAX_SEED + 1
_UNIT_PIXELS: Final = 512 * 512


class Scheduler(StrEnum):
    """The sampling schedulers the API accepts."""

    DDIM = "DDIM"
    P_SAMPLER = "P-Sampler"


class InvalidRequest(ValueError):
    """Generation parameters are out of range; ``user_message`` says which and why.

    It is a :class:`bot.i18n.Message` (its English text), rendered in the member's language.
    """

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


def _custom_error(kind: str, reason: Message) -> PydanticCustomError:
    # The reason travels in the context so it can be rendered in the reader's language later.
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


def _no_bool(value: object, info: ValidationInfo) -> object:
    # pydantic's lax mode reads True as 1; for a sample count that is a bug.
    if isinstance(value, bool):
        raise _custom_error(
            "segmind_bool",
            _N(
                "{field} must be a number (got {value}).",
                field=info.field_name,
                value=str(value).lower(),
            ),
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
            raise _custom_error("segmind_blank", _N("prompt must not be empty."))
        if len(text) > PROMPT_MAX_LENGTH:
            raise _custom_error(
                "segmind_too_long",
                _N(
                    "{field} must be at most {limit} characters (got {length}).",
                    field=info.field_name,
                    limit=str(PROMPT_MAX_LENGTH),
                    length=str(len(text)),
                ),
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
            raise InvalidRequest(
                _N(
                    "{name} must be between {low} and {high} (got {got}).",
                    name="seed",
                    low="0",
                    high=str(MAX_SEED),
                    got=str(seed),
                )
            )
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
            self.model_copy(update={"samples": 1, "seed": (seed + offset) % SEED_MODULUS})
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
        return _N("nothing")
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


def _choices(name: str) -> OneOf | None:
    info = Txt2ImgRequest.model_fields.get(name)
    allowed = get_args(info.annotation) if info is not None else ()
    return OneOf(allowed) if allowed else None


def _describe_problem(problem: Mapping[str, Any]) -> Message:
    """One problem as a sentence (option names stay as the API spells them)."""
    name = ".".join(str(part) for part in problem["loc"]) or "request"
    kind = str(problem["type"])
    got = _show(problem.get("input"))
    if kind.startswith("segmind_"):
        reason: Message = problem["ctx"]["reason"]
        return reason
    if kind == "missing":
        return _N("{name} is required.", name=name)
    if kind == "extra_forbidden":
        return _N("{name} is not a known option.", name=name)
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        bounds = _bounds(name)
        if bounds is not None:
            low, high = (str(bound) for bound in bounds)
            return _N(
                "{name} must be between {low} and {high} (got {got}).",
                name=name,
                low=low,
                high=high,
                got=got,
            )
    if kind in {"literal_error", "enum"}:
        choices = _choices(name) if kind == "literal_error" else OneOf(tuple(Scheduler))
        if choices is not None:
            return _N("{name} must be {choices} (got {got}).", name=name, choices=choices, got=got)
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return _N("{name} must be a whole number (got {got}).", name=name, got=got)
    if kind in {"float_type", "float_parsing", "finite_number"}:
        return _N("{name} must be a number (got {got}).", name=name, got=got)
    if kind == "string_type":
        return _N("{name} must be text.", name=name)
    # pydantic's own wording (English only) for a problem no rule above expects.
    message = str(problem["msg"]).rstrip(".")
    return _N("{name}: {problem}.", name=name, problem=message)


def build_request(**values: object) -> Txt2ImgRequest:
    """Validate ``values`` into a :class:`Txt2ImgRequest`.

    Raises :class:`InvalidRequest` (never pydantic's ``ValidationError``) whose
    ``user_message`` has one readable line per problem.
    """
    try:
        return Txt2ImgRequest.model_validate(values)
    except ValidationError as error:
        lines = tuple(dict.fromkeys(_describe_problem(problem) for problem in error.errors()))
        # Not a marker: "{problems}" is no sentence to translate, only the lines in it are.
        message = Message("{problems}", {"problems": Lines(lines)})
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
