"""Request-body validation against Discord's own OpenAPI 3.1 description.

The fake Discord matches every request to an operation of the published spec
(``discord-openapi.json``, from discord/discord-api-spec) by method and path
template, and validates the JSON body (or a multipart request's
``payload_json``) against that operation's ``requestBody`` schema with
``jsonschema`` Draft 2020-12. ``$ref`` into ``#/components/schemas`` resolves
through a ``referencing`` registry holding the whole document.

Where discord.py and the spec disagree on the *encoding* of a value Discord
accepts, the spec is widened once, when it is loaded (never per request):

* snowflakes: the spec's one snowflake schema, ``SnowflakeType``, is a digit
  string; discord.py sends many ids (attachment indices, ``allowed_mentions``
  users, ...) as JSON integers, which Discord accepts. ``SnowflakeType``
  becomes "digit string or non-negative integer".
* ``default_member_permissions``: the spec says integer, Discord's docs say
  string, and discord.py sends a digit string. Both are allowed.

Nothing else is relaxed: lengths, counts, enums and required fields are
checked exactly as published. Validators are built lazily and cached per
(operation, content type); the spec is parsed once per process.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_ENV", "OpenApiSpec", "Operation", "SchemaProblem", "find_spec", "load_spec"]

SPEC_ENV = "DISCORD_OPENAPI_SPEC"
_SPEC_URI = "urn:discord-openapi"
_METHODS = ("get", "put", "post", "patch", "delete")
_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}


def find_spec() -> Path | None:
    """Where the spec lives: ``$DISCORD_OPENAPI_SPEC``, the repo, or ``../shared``."""
    candidates: list[Path] = []
    if os.environ.get(SPEC_ENV):
        candidates.append(Path(os.environ[SPEC_ENV]))
    repo = Path(__file__).resolve().parents[2]
    candidates += [
        repo / "tests" / "fakes" / "discord-openapi.json",
        repo / "discord-openapi.json",
        repo.parent / "shared" / "discord-openapi.json",
    ]
    return next((path for path in candidates if path.is_file()), None)


@dataclass(frozen=True)
class Operation:
    """One (method, path template) of the spec."""

    operation_id: str
    method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    body_types: tuple[str, ...]


@dataclass(frozen=True)
class SchemaProblem:
    """Why a body was rejected: a readable summary and Discord-style ``errors``."""

    message: str
    errors: dict[str, Any]
    count: int


def _widen(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    snowflake = schemas["SnowflakeType"]
    schemas["SnowflakeType"] = {"anyOf": [snowflake, {"type": "integer", "minimum": 0}]}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict) and "default_member_permissions" in properties:
                original = properties["default_member_permissions"]
                properties["default_member_permissions"] = {"anyOf": [original, _DIGITS]}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schemas)
    return document


def _pointer(*parts: str) -> str:
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return "#/" + quote("/".join(escaped), safe="/~@$!&'()*+,;=:-._")


class OpenApiSpec:
    """The parsed spec with an operation matcher and cached body validators."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _widen(document)
        self.version = str(document.get("info", {}).get("version", "?"))
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}
        operations: list[Operation] = []
        for template, item in self.document["paths"].items():
            segments = template.strip("/").split("/")
            pattern = "".join(
                "/" + ("(?P<" + seg[1:-1] + ">[^/]+)" if seg.startswith("{") else re.escape(seg))
                for seg in segments
            )
            literal = sum(1 for seg in segments if not seg.startswith("{"))
            for method in _METHODS:
                if method not in item:
                    continue
                body = item[method].get("requestBody", {}).get("content", {})
                operations.append(
                    Operation(
                        operation_id=item[method].get("operationId", f"{method} {template}"),
                        method=method.upper(),
                        template=template,
                        regex=re.compile(pattern + "/?$"),
                        literal_segments=literal,
                        body_types=tuple(body),
                    )
                )
        # Prefer literal segments: /messages/@original over /messages/{message_id}.
        operations.sort(key=lambda op: (-op.literal_segments, op.template))
        self.operations = operations
        self._by_method: dict[str, list[Operation]] = {}
        for operation in operations:
            self._by_method.setdefault(operation.method, []).append(operation)

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation serving ``method path`` (path without the ``/api/v10`` prefix)."""
        for operation in self._by_method.get(method.upper(), ()):
            found = operation.regex.match(path)
            if found is not None:
                return operation, found.groupdict()
        return None

    def validator(self, operation: Operation, content_type: str) -> Draft202012Validator | None:
        if content_type not in operation.body_types:
            if "application/json" not in operation.body_types:
                return None
            content_type = "application/json"
        key = (operation.operation_id, content_type)
        cached = self._validators.get(key)
        if cached is None:
            ref = _pointer(
                "paths",
                operation.template,
                operation.method.lower(),
                "requestBody",
                "content",
                content_type,
                "schema",
            )
            cached = Draft202012Validator({"$ref": _SPEC_URI + ref}, registry=self._registry)
            self._validators[key] = cached
        return cached

    def check(
        self, operation: Operation, body: Any, content_type: str = "application/json"
    ) -> SchemaProblem | None:
        """``None`` when ``body`` is valid for ``operation``, else what is wrong."""
        validator = self.validator(operation, content_type)
        if validator is None:
            return None
        errors = list(validator.iter_errors(body))
        if not errors:
            return None
        best = _deepest(max(errors, key=relevance))
        return SchemaProblem(
            message=_describe(best),
            errors=_discord_errors(best),
            count=len(errors),
        )


def _discriminator_mismatch(error: ValidationError) -> bool:
    """The branch was for another kind of object (``type`` enum/const, or null)."""
    path = list(error.relative_path)
    if not path and error.validator == "type":
        return True
    return path == ["type"] and error.validator in {"enum", "const"}


def _deepest(error: ValidationError) -> ValidationError:
    """Descend through ``anyOf``/``oneOf`` into the branch meant for this object.

    Branches rejected on their discriminator (``type``) are dropped; of the rest,
    the one with the fewest errors is the one the sender meant.
    """
    while error.validator in {"anyOf", "oneOf"} and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        candidates = [
            errs for errs in branches.values() if not any(map(_discriminator_mismatch, errs))
        ] or list(branches.values())
        chosen = min(candidates, key=len)
        error = max(chosen, key=relevance)
    return error


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    location = "/".join(str(part) for part in error.absolute_path) or "<body>"
    if error.validator in {"maxLength", "minLength"}:
        size = len(error.instance) if isinstance(error.instance, str) else "?"
        reason = f"length {size} violates {error.validator} {error.validator_value}"
    elif error.validator in {"maxItems", "minItems"}:
        size = len(error.instance) if isinstance(error.instance, list) else "?"
        reason = f"{size} items violates {error.validator} {error.validator_value}"
    else:
        reason = error.message
        if len(reason) > 200:
            expected = _short(error.validator_value)
            reason = f"{error.validator} {expected} failed for {_short(error.instance)}"
    return f"{location}: {reason}"


def _discord_errors(error: ValidationError) -> dict[str, Any]:
    """Discord's nested ``{"field": {"0": {"_errors": [...]}}}`` shape."""
    root: dict[str, Any] = {}
    node = root
    for part in error.absolute_path:
        node = node.setdefault(str(part), {})
    code = {
        "maxLength": "BASE_TYPE_MAX_LENGTH",
        "minLength": "BASE_TYPE_MIN_LENGTH",
        "required": "BASE_TYPE_REQUIRED",
        "maxItems": "BASE_TYPE_MAX_LENGTH",
        "type": "BASE_TYPE_BAD",
    }.get(str(error.validator), "BASE_TYPE_INVALID")
    node.setdefault("_errors", []).append({"code": code, "message": _describe(error)})
    return root


@lru_cache(maxsize=4)
def _load(path: str) -> OpenApiSpec:
    with open(path, encoding="utf-8") as handle:
        return OpenApiSpec(json.load(handle))


def load_spec(path: str | Path | None = None) -> OpenApiSpec:
    """The spec, parsed once per process (module-level cache)."""
    found = Path(path) if path is not None else find_spec()
    if found is None or not found.is_file():
        raise FileNotFoundError(
            "discord-openapi.json not found: set DISCORD_OPENAPI_SPEC to its path, put it at "
            "tests/fakes/discord-openapi.json, or pass FakeDiscord(validate=False)"
        )
    return _load(str(found.resolve()))
