"""The README tells the truth about settings and check ids."""

import re
from pathlib import Path

from gateway_realtime import checks
from gateway_realtime.conf import DEFAULTS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_settings() -> dict[str, str]:
    rows = re.findall(r"^\| `GATEWAY_REALTIME_(\w+)` \| `?([^|]*?)`? \|", README, re.M)
    return dict(rows)


def test_every_setting_is_documented_with_its_default():
    documented = readme_settings()
    assert set(documented) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        expected = f'"{default}"' if isinstance(default, str) else repr(default)
        assert documented[name] == expected, name


def test_every_check_id_is_documented():
    source = Path(checks.__file__).read_text()
    ids = set(re.findall(r'id="(gateway_realtime\.[EW]\d{3})"', source))
    documented = set(re.findall(r"^\| `(gateway_realtime\.[EW]\d{3})` \|", README, re.M))
    assert ids == documented


def test_readme_starts_with_the_two_commands():
    head = README.split("## ", 1)[0]
    assert "make demo" in head
    assert "make test" in head
