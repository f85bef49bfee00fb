"""The README and docs/ tell the truth about the code, and the README stays short.

The reference lives in docs/ (settings.md holds the settings and the check
ids); the README is read on PyPI too, where relative links break.
"""

import re
import tomllib
from pathlib import Path

import pytest

from gateway_realtime import checks
from gateway_realtime.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
SETTINGS_DOC = (DOCS / "settings.md").read_text()
SOURCE_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
#: Where README links to a file of the repository: absolute, so PyPI can follow it.
BLOB = SOURCE_URL + "/blob/main/"

MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def documented_settings() -> dict[str, str]:
    rows = re.findall(r"^\| `GATEWAY_REALTIME_(\w+)` \| `?([^|]*?)`? \|", SETTINGS_DOC, re.M)
    return dict(rows)


def test_every_setting_is_documented_with_its_default():
    documented = documented_settings()
    assert set(documented) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        expected = f'"{default}"' if isinstance(default, str) else repr(default)
        assert documented[name] == expected, name


def test_every_check_id_is_documented():
    source = Path(checks.__file__).read_text()
    ids = set(re.findall(r'id="(gateway_realtime\.[EW]\d{3})"', source))
    documented = set(re.findall(r"^\| `(gateway_realtime\.[EW]\d{3})` \|", SETTINGS_DOC, re.M))
    assert ids == documented


def test_readme_starts_with_the_two_commands():
    head = README.split("## ", 1)[0]
    assert "make demo" in head
    assert "make test" in head


def test_readme_is_short():
    assert len(README.splitlines()) < 250


def test_readme_links_are_absolute():
    relative = [link for link in MARKDOWN_LINK.findall(README) if not link.startswith("https://")]
    assert relative == []


def test_readme_links_every_docs_page():
    linked = set(MARKDOWN_LINK.findall(README))
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    for page in pages:
        assert f"{BLOB}docs/{page.name}" in linked, page.name


def test_readme_links_into_the_repository_point_at_files():
    for link in MARKDOWN_LINK.findall(README):
        if link.startswith(BLOB):
            assert (ROOT / link.removeprefix(BLOB).split("#", 1)[0]).is_file(), link


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_relative_links_resolve(page):
    for link in MARKDOWN_LINK.findall(page.read_text()):
        if "://" in link or link.startswith("#"):
            continue
        assert (page.parent / link.split("#", 1)[0]).exists(), f"{page.name}: {link}"


def test_readme_quickstart_migrates_the_whole_project():
    # `migrate gateway_realtime` alone half-migrates a new project.
    assert "python manage.py migrate\n" in README
    assert not re.search(r"migrate gateway_realtime", README)


def test_readme_names_no_example_project_variable_as_a_setting():
    # AI_GATEWAY_BASE_URL is read by example_project only, not by the app.
    assert "AI_GATEWAY_BASE_URL" not in README


def test_relay_close_codes_table_matches_the_consumer():
    pytest.importorskip("channels")
    from gateway_realtime.relay.consumers import CLOSE_CODES

    text = (DOCS / "relay.md").read_text()
    section = text.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        (int(code), reason)
        for code, reason in re.findall(r"^\| (\d{4}) \| `([^`]+)` \|", section, re.MULTILINE)
    }
    assert documented == set(CLOSE_CODES)


def documented_endpoint_errors() -> set[tuple[int, str]]:
    """(status, type) of every row of endpoint.md's error table (``gateway_<type>`` expanded)."""
    text = (DOCS / "endpoint.md").read_text()
    section = text.split("\n## Errors", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for status, error_type, when in re.findall(
        r"^\| (\d{3}) \| `([^`]+)` \| (.*) \|$", section, re.MULTILINE
    ):
        if error_type == "gateway_<type>":
            pairs |= {(int(status), name) for name in re.findall(r"`(gateway_[a-z_]+)`", when)}
        else:
            pairs.add((int(status), error_type))
    return pairs


def test_the_endpoint_error_table_is_what_the_mapping_answers():
    from gateway_realtime.api_errors import endpoint_errors

    answered = {(status, name) for status, names in endpoint_errors().items() for name in names}
    assert documented_endpoint_errors() == answered


def provoke_view_refusals(user, other_user, settings):
    """One real answer of each of the view's own refusals (``api_errors.VIEW_REFUSALS``).

    Shared with tests/test_openapi.py. Needs the ``gateway`` fixture (one
    mint succeeds before the burst rate refuses the next) and the database.
    """
    from django.urls import reverse

    from gateway_realtime.conf import app_settings
    from tests.conftest import SameOriginClient

    url = reverse("gateway_realtime:realtime")
    browser = SameOriginClient(user)
    too_large = b"{" + b" " * app_settings.MAX_REQUEST_BYTES + b"}"
    refusals = [
        browser(url, b"{not json"),
        SameOriginClient()(url),
        browser(url, HTTP_ORIGIN="https://evil.example", HTTP_SEC_FETCH_SITE="cross-site"),
        browser(url, method="GET"),
        browser(url, too_large),
        browser(url, b"{}", content_type="text/plain"),
    ]
    settings.GATEWAY_REALTIME_RATE = "1/min"
    hurried = SameOriginClient(other_user)
    assert hurried(url).status_code == 200  # the one mint the rate allows
    refusals.append(hurried(url))
    return refusals


@pytest.mark.django_db
def test_the_views_own_refusals_are_the_documented_ones(user, other_user, gateway, settings):
    from gateway_realtime.api_errors import VIEW_REFUSALS
    from tests.conftest import error_of

    refusals = provoke_view_refusals(user, other_user, settings)
    seen = {(response.status_code, error_of(response)["type"]) for response in refusals}
    assert seen == set(VIEW_REFUSALS)
    assert seen <= documented_endpoint_errors()


# The elements' reference tables in browser.md, against the modules.

STATIC = ROOT / "gateway_realtime" / "static" / "gateway_realtime"
ELEMENT_FILES = (
    "element-base.mjs",
    "voice-element.mjs",
    "dictation-element.mjs",
    "speech-element.mjs",
)


def browser_section(title: str) -> str:
    text = (DOCS / "browser.md").read_text()
    return text.split(f"\n### {title}\n", 1)[1].split("\n#", 1)[0]


def first_column(section: str) -> set[str]:
    """The backquoted names in the first column of a section's tables (headers left out)."""
    names = set()
    lines = section.splitlines()
    for index, line in enumerate(lines):
        header = index + 1 < len(lines) and lines[index + 1].startswith("| ---")
        cell = re.match(r"\| ([^|]+) \|", line)
        if cell and not header and not line.startswith("| ---"):
            names |= set(re.findall(r"`([^`]+)`", cell.group(1)))
    return names


def element_source() -> str:
    return "\n".join((STATIC / name).read_text() for name in ELEMENT_FILES)


def test_the_documented_states_are_the_elements():
    source = (STATIC / "element-base.mjs").read_text()
    states = re.search(r"STATES = Object\.freeze\(\[([^\]]*)\]\)", source)
    assert states
    assert first_column(browser_section("The `state` attribute")) == set(
        re.findall(r'"([a-z]+)"', states.group(1))
    )


def test_the_documented_events_are_the_elements():
    source = (STATIC / "element-base.mjs").read_text()
    events = re.search(r"EVENTS = Object\.freeze\(\{([^}]*)\}\)", source)
    assert events
    assert first_column(browser_section("Events")) == set(
        re.findall(r'"([a-z-]+)"', events.group(1))
    )


def test_the_documented_attributes_are_what_the_elements_read():
    read = set(re.findall(r'(?:get|has)Attribute\("([a-z-]+)"\)', element_source()))
    read.discard("state")  # the elements' own, documented under its name
    assert first_column(browser_section("Attributes")) == read


def test_the_documented_parts_are_the_elements():
    source = element_source()
    parts = set()
    for names in re.findall(r'part\("[a-z]+", "([a-z -]+)"', source):
        parts |= set(names.split())
    for name in re.findall(r'button\("([a-z-]+)",', source):
        parts |= {"button", name}
    documented = first_column(browser_section("Parts and custom properties: theming"))
    properties = {name for name in documented if name.startswith("--")}
    assert documented - properties == parts


def test_the_documented_commands_and_flags_are_the_commands():
    from django.core.management import get_commands, load_command_class
    from django.core.management.base import BaseCommand

    text = (DOCS / "settings.md").read_text()
    section = text.split("\n## Management commands\n", 1)[1].split("\n## ", 1)[0]
    documented = set(
        re.findall(r"^\| `([a-z_]+)` \| (?:`(--[a-z-]+)[^`]*`)? *\|", section, re.MULTILINE)
    )
    ours = sorted(name for name, app in get_commands().items() if app == "gateway_realtime")
    actual = set()
    for name in ours:
        parser = load_command_class("gateway_realtime", name).create_parser("manage.py", name)
        base = BaseCommand().create_parser("manage.py", name)
        common = {option for action in base._actions for option in action.option_strings}
        actual.add((name, ""))
        for action in parser._actions:
            actual |= {(name, flag) for flag in action.option_strings if flag not in common}
    assert documented == actual
