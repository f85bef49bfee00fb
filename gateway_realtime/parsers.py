"""A JSON parser that is strict about size, encoding and structure."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from gateway_realtime.conf import app_settings


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # "1e400" is valid JSON but overflows to inf, which _reject_constant never sees.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


class StrictJSONParser(BaseParser):
    """UTF-8 JSON of at most ``GATEWAY_REALTIME_MAX_REQUEST_BYTES``; no NaN or Infinity.

    The one place the body's size is checked. Not a ``JSONParser`` subclass on
    purpose: DRF reads the whole body into memory before calling one (and
    Django then answers a body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with an
    HTML 400), whereas any other parser gets the stream, so this one reads at
    most one byte past the limit.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        params = _media_params(media_type)
        if params.get("charset", "utf-8").lower() not in {"utf-8", "utf8"}:
            raise exceptions.UnsupportedMediaType(
                media_type or "", detail="Send the request body as UTF-8 encoded JSON."
            )
        limit = app_settings.MAX_REQUEST_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            text = raw.decode("utf-8")
            return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise exceptions.ParseError("The request body is not valid JSON.") from None


def _media_params(media_type: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (media_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return params
