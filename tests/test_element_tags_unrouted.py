"""A URLconf without the app's setup endpoints (tests/test_element_tags.py)."""

urlpatterns: list[object] = []
