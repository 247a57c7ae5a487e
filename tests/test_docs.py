"""The documentation against the code: docs/configuration.md lists every setting under the
variable it is read from, with its default; README.md and docs/*.md name no variable that does
not exist; README.md stays short; every relative link leads somewhere. No server needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lea_local.settings import Settings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300

NOT_SETTINGS = {
    # Variables the pages may name that are not settings, and the file that reads (or defines) each.
    "LEA_PYPI_INDEX_URL": "lea_local/catalog/cli.py",  # lea-local models: the wheel sources' index
    "LEA_KEEP_AMX": "scripts/install",  # keep llama.cpp's AMX kernels
    "LEA_TEST_MODELS_DIR": "tests/conftest.py",  # the tests' models
    "LEA_TEST_ARTIFACTS": "tests/browser.py",  # the browser tests' screenshots
    "LEA_NGINX_SERVER_NAME": "deploy/nginx/lea-local.conf",  # envsubst on the nginx configuration
    "LEA_NGINX_LISTEN": "deploy/nginx/lea-local.conf",
    "LEA_NGINX_HTTP_LISTEN": "deploy/nginx/lea-local.conf",
    "LEA_NGINX_CERTIFICATE": "deploy/nginx/lea-local.conf",
    "LEA_NGINX_CERTIFICATE_KEY": "deploy/nginx/lea-local.conf",
    "LEA_NGINX_REPLICAS": "deploy/nginx/lea-local.conf",
    "LEA_MAX_TOKENS": "docs/contract/immoassist-client.md",  # ImmoAssist's own reply length
}


VARIABLE = re.compile(r"(?<![A-Za-z0-9_])(?:LEA|AGENT)_[A-Z0-9_]*")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def field_variables(name: str, field: FieldInfo) -> list[str]:
    """The environment variables a field is read from, as pydantic-settings maps them: its
    validation alias(es) as they are, else the prefix + the field's name."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, str):
        names = [alias]
    else:
        names = [Settings.model_config.get("env_prefix", "") + name]
    return [variable.upper() for variable in names]


SETTING_VARIABLES = {name: field_variables(name, field) for name, field in Settings.model_fields.items()}
ALL_SETTING_VARIABLES = {variable for names in SETTING_VARIABLES.values() for variable in names}
KNOWN = ALL_SETTING_VARIABLES | set(NOT_SETTINGS)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row (header and separator rows included)."""
    rows = []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def configuration_rows() -> dict[str, list[str]]:
    """docs/configuration.md's table rows by each variable their first cell names in backticks."""
    rows: dict[str, list[str]] = {}
    for cells in table_rows(CONFIGURATION.read_text(encoding="utf-8")):
        for code in re.findall(r"`([^`]+)`", cells[0]):
            for variable in VARIABLE.findall(code):
                rows.setdefault(variable, cells)
    return rows


def test_every_setting_is_in_a_table_of_configuration_md():
    rows = configuration_rows()
    missing = sorted(
        f"{variable} ({name})"
        for name, variables in SETTING_VARIABLES.items()
        for variable in variables
        if variable not in rows
    )
    assert not missing, f"settings missing from docs/configuration.md's tables: {missing}"


def written_default(value: object) -> str | None:
    """How configuration.md writes a plain default, in backticks; None for those it describes."""
    if value is None or value is PydanticUndefined or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, int | float | str | Path):
        return str(value)
    return None


def test_configuration_md_gives_each_plain_default():
    rows = configuration_rows()
    wrong = []
    for name, field in Settings.model_fields.items():
        expected = written_default(field.default)
        variable = SETTING_VARIABLES[name][0]
        if expected is not None and variable in rows and f"`{expected}`" not in rows[variable][1]:
            wrong.append(f"{variable}: default `{expected}`, documented as {rows[variable][1]!r}")
    assert not wrong, "docs/configuration.md's defaults differ from lea_local/settings.py:\n" + "\n".join(wrong)


def mentioned_variables(text: str) -> set[str]:
    """Every LEA_… / AGENT_… name in a page; a name that ends in `_`, `…` or `*` is a prefix."""
    names = set()
    for match in VARIABLE.finditer(text):
        name = match.group()
        following = text[match.end() : match.end() + 1]
        if name.endswith("_") or following in ("…", "*"):
            names.add(name.rstrip("_") + "_*")
        else:
            names.add(name)
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_variable_a_page_names_exists(page: Path):
    unknown = []
    for name in sorted(mentioned_variables(page.read_text(encoding="utf-8"))):
        if name.endswith("_*"):
            if not any(variable.startswith(name[:-1]) for variable in KNOWN):
                unknown.append(name)
        elif name not in KNOWN:
            unknown.append(name)
    assert not unknown, (
        f"{page.relative_to(REPO)} names variables that are neither settings (lea_local/settings.py) "
        f"nor in NOT_SETTINGS: {unknown}"
    )


@pytest.mark.parametrize("variable", sorted(NOT_SETTINGS))
def test_each_variable_that_is_not_a_setting_is_real(variable: str):
    assert variable not in ALL_SETTING_VARIABLES, f"{variable} is a setting now: take it out of NOT_SETTINGS"
    where = REPO / NOT_SETTINGS[variable]
    assert re.search(rf"(?<![A-Za-z0-9_]){variable}(?![A-Za-z0-9_])", where.read_text(encoding="utf-8")), (
        f"{variable} does not appear in {NOT_SETTINGS[variable]}: if nothing reads it any more, "
        "take it out of NOT_SETTINGS and of the pages"
    )


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to a page of docs/"
    )


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes for a page: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:…
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        shown = str(linked.relative_to(REPO)) if linked.is_relative_to(REPO) else str(linked)
        if not linked.exists():
            broken.append(f"{target} (no {shown})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{page.relative_to(REPO)} has broken links: {broken}"
