"""The documentation holds together: every module is in the architecture table, every link of the README and of
docs/ leads to a file and a heading that exist, and the README stays a first read."""

from __future__ import annotations

import re

from .conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_module_is_named_in_the_architecture_table():
    table = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `(xray_spark/[\w/]+\.py)` \|", table, flags=re.M))
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "xray_spark").rglob("*.py")}
    assert modules - named == set(), "modules missing from docs/architecture.md"
    assert named - modules == set(), "docs/architecture.md names modules that do not exist"


def test_every_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
    pictures = [m for page in PAGES for m in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8"))]
    assert pictures and all((DOCS / p).is_file() for p in pictures), pictures


def test_every_docs_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {p.name for p in DOCS.glob("*.md")} == set(re.findall(r"\(docs/([\w-]+\.md)[#)]", readme))


def test_the_readme_is_a_first_read():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 320, f"README.md has {len(lines)} lines: move the detail to a docs/ page"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:4] == ["## The two commands", "## The pipeline", "## The jobs", "## Read more"]


def test_the_finding_codes_page_is_the_codes_table():
    from xray_spark.deliver.codes import FINDING_CODES

    text = (ROOT / "docs" / "deliver.md").read_text()
    section = text.split("### How the findings are coded", 1)[1].split("\n\n| finding", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    assert {r[0].strip(): tuple(c.strip() for c in r[1:4]) for r in rows} == FINDING_CODES


def test_the_docs_table_of_tables_is_the_catalogs():
    from xray_spark.lake import catalog

    text = (DOCS / "tables.md").read_text(encoding="utf-8")
    assert catalog.markdown() in text, "docs/tables.md's table of tables differs: python -m xray_spark.lake.catalog"


def test_the_conformance_statement_lists_what_the_code_negotiates_and_codes():
    """docs/conformance.md's SOP classes, transfer syntaxes and finding codes are the ones the node accepts, delivery
    proposes and the SR carries: a class added in code and not in the statement (or the reverse) fails here."""
    from pydicom.uid import UID

    from xray_spark.deliver.codes import FINDING_CODES
    from xray_spark.deliver.send import COMPREHENSIVE_SR, SECONDARY_CAPTURE, SYNTAXES
    from xray_spark.imaging.transfer_syntaxes import DECODED
    from xray_spark.node.query_retrieve import STUDY_ROOT_FIND, STUDY_ROOT_MOVE
    from xray_spark.node.scp import STORAGE_CLASSES, VERIFICATION

    text = (DOCS / "conformance.md").read_text(encoding="utf-8")
    services = text[text.index("Network services:") : text.index("Not supported in this release")]
    listed = dict(re.findall(r"^\| ([^|]+?) \| ([\d.]+) \| (?:yes|no)", services, flags=re.M))
    asked = {STUDY_ROOT_FIND, STUDY_ROOT_MOVE}  # priors from a classic PACS
    assert set(listed.values()) == {*STORAGE_CLASSES, VERIFICATION, COMPREHENSIVE_SR, SECONDARY_CAPTURE, *asked}
    accepted = text[text.index("**Presentation contexts accepted.**") : text.index("**C-STORE statuses returned.**")]
    assert re.findall(r"^\| [^|]+ \| ([\d.]+) \|$", accepted, flags=re.M) == [str(u) for u in DECODED]
    assert all(UID(u).name in accepted for u in DECODED)
    proposed = text[text.index("**Presentation contexts proposed.**") : text.index("**Statuses.**")]
    assert all(f"{UID(u).name}" in proposed for u in SYNTAXES) and proposed.count("|\n") == 4
    coded = dict(
        re.findall(
            r"^\| (\w+) \| (.+?) \|$",
            text[text.index("| finding | code |") : text.index("UIDs of result objects")],
            flags=re.M,
        )
    )
    assert {f: tuple(v.split(", ", 2)) for f, v in coded.items() if f != "finding"} == {
        f: (value, scheme, f'"{meaning}"' + (" (local scheme)" if scheme.startswith("99") else ""))
        for f, (scheme, value, meaning) in FINDING_CODES.items()
    }
