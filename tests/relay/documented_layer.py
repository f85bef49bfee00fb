"""The channel layer docs/relay.md's Deployment section configures, read from the page.

Tests build on the page's own dict literal, so a change to the documented
configuration is a change to what they check.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
RELAY_DOC = ROOT / "docs" / "relay.md"


def documented_channel_layers() -> Any:
    """``CHANNEL_LAYERS`` as docs/relay.md's settings snippet sets it."""
    # From the assignment to the brace at its own indentation.
    pattern = r"^( *)CHANNEL_LAYERS = (\{.*?^\1\})$"
    snippet = re.search(pattern, RELAY_DOC.read_text(), re.S | re.M)
    assert snippet is not None, "docs/relay.md no longer shows CHANNEL_LAYERS"
    return ast.literal_eval(snippet.group(2))
