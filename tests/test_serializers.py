"""``gateway_realtime.serializers``: the mint request body, with no coercion of types."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_realtime.serializers import MintRequestSerializer
from tests.strategies import json_values


@given(
    st.dictionaries(
        st.sampled_from(["model", "expiresAfterSeconds", "sessionConfig", "x"]), json_values
    )
)
@settings(max_examples=300, deadline=None)
def test_serializer_accepts_only_well_typed_fields(data):
    serializer = MintRequestSerializer(data=data)
    if not serializer.is_valid():
        return
    valid = serializer.validated_data
    # The lifetime passes through as sent: mint_client_secret validates it
    # (tests/test_services.py::test_lifetime_is_validated_in_one_place).
    model = valid.get("model")
    assert model is None or (isinstance(model, str) and model == data["model"])
    config = valid.get("sessionConfig")
    assert config is None or isinstance(config, dict)
