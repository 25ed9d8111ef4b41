"""docs/reference/*.md are generated from the components' declarations and kept current."""

from __future__ import annotations

import subprocess
import sys

from flumed import docgen


def test_reference_pages_are_current():
    r = subprocess.run(
        [sys.executable, "-m", "flumed.docgen", "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_every_type_and_key_is_documented():
    pages = docgen.pages()
    text = "".join(pages.values())
    from flumed import registry

    for kind, table in registry.TABLES.items():
        for row in table.values():
            assert f"## `{row.name}`" in pages[docgen.DOCS / f"{kind}.md"], row.name
    # A key of each of the components that had no reference before.
    for key in ("`max-line-length`", "`keep-alive`", "`maxBytesToLog`", "`totalEvents`"):
        assert key in text
