"""Hypothesis strategies shared by the property-based tests."""

from hypothesis import strategies as st

#: Any value ``json.dumps`` can write (no NaN or infinities).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
