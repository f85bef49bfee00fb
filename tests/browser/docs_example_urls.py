"""docs/browser.md's template-tag example, as the page serves it: its view, verbatim.

The view's code block is executed as it stands in the docs; the template and
the page's module are written where the test's settings find them
(tests/browser/test_docs_examples.py).
"""

import re
from pathlib import Path
from types import ModuleType

from django.urls import include, path

DOC = Path(__file__).resolve().parents[2] / "docs" / "browser.md"


def example(first_line: str) -> str:
    """The body of the code block whose first line is ``first_line``."""
    for body in re.findall(r"^```\w*\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL):
        if body.startswith(first_line + "\n"):
            return str(body)
    raise LookupError(f"docs/browser.md has no code block starting {first_line!r}")


views = ModuleType("myapp_views")
exec(
    compile(example("# myapp/views.py"), "docs/browser.md: myapp/views.py", "exec"), views.__dict__
)

urlpatterns = [
    path("chat/", views.chat),
    path("api/realtime-token/", include("gateway_realtime.urls")),
]
