"""The mint request body: ``{sessionConfig?, model?, expiresAfterSeconds?}``."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string, and only a string: no numbers turned into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MintRequestSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # The AI SDK sends sessionConfig and applies it over the socket later; it
    # is accepted (as an object) and not forwarded to the Gateway's mint route.
    sessionConfig = serializers.DictField(required=False, allow_null=True)
    model = StrictCharField(required=False, allow_null=True, max_length=200, trim_whitespace=False)
    # Any JSON value: mint_client_secret validates the lifetime (whole seconds
    # within the user's maximum) for every caller in one place.
    expiresAfterSeconds = serializers.JSONField(required=False, allow_null=True)
