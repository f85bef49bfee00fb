"""``gateway_realtime.parsers``: strict UTF-8 JSON, capped in size, no NaN or Infinity.

What the endpoint answers for hostile bodies: tests/test_bad_input.py.
"""

import contextlib
import io
import json

import pytest
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import exceptions

from gateway_realtime.parsers import RequestTooLarge, StrictJSONParser
from tests.strategies import json_values


def parse(raw, media_type="application/json"):
    return StrictJSONParser().parse(io.BytesIO(raw), media_type, {})


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_parser_on_arbitrary_bytes_parses_or_says_parse_error(raw):
    with contextlib.suppress(exceptions.ParseError):
        parse(raw)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_parser_round_trips_json_it_accepts(value):
    raw = json.dumps(value).encode()
    if len(raw) > 16384:
        with pytest.raises(RequestTooLarge):
            parse(raw)
    else:
        assert parse(raw) == value


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_parser_accepts_only_utf8_charsets(charset):
    media_type = f"application/json; charset={charset}"
    try:
        parse(b"{}", media_type)
    except exceptions.UnsupportedMediaType:
        return
    except exceptions.ParseError:
        return
    assert charset.strip().strip('"').lower() in {"utf-8", "utf8"}


@given(st.integers(min_value=0, max_value=4096))
@settings(max_examples=50, deadline=None)
@override_settings(GATEWAY_REALTIME_MAX_REQUEST_BYTES=2048)
def test_parser_size_limit_is_exact(size):
    raw = b'"' + b"a" * max(0, size - 2) + b'"'
    if len(raw) > 2048:
        with pytest.raises(RequestTooLarge):
            parse(raw)
    else:
        assert parse(raw) == raw[1:-1].decode()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_parser_rejects_non_finite_numbers(number):
    with pytest.raises(exceptions.ParseError):
        parse(f'{{"expiresAfterSeconds": {number}}}'.encode())
