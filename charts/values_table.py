"""Generate the values table of charts/sluice/README.md from the comments in values.yaml.

The comment block right above a key documents it (a line starting with `# --` opens a block, further
`#` lines continue it); values.yaml stays the single place where values are explained.

    python charts/values_table.py           # rewrite the table in README.md
    python charts/values_table.py --check   # exit 1 when README.md is out of date (tests use this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "sluice"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


@dataclass(frozen=True)
class Entry:
    """One key of values.yaml: its dotted path and the comment above it."""

    path: tuple[str, ...]
    comment: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def parse_entries(text: str) -> list[Entry]:
    """Every mapping key of values.yaml in file order, with its comment ('' when it has none)."""
    entries: list[Entry] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("--"):
                pending = [body[2:].strip()]
            elif pending:
                pending.append(body)
            continue
        match = _KEY.match(line)
        if match is None:  # list items and continuation lines carry no keys of their own
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        entries.append(Entry(tuple(key for _, key in stack), " ".join(pending)))
        pending = []
    return entries


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(values_path: Path = CHART / "values.yaml") -> str:
    """The Markdown table: one row per value (mappings with children are documented by their rows)."""
    text = values_path.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for entry in parse_entries(text):
        value = _lookup(values, entry.path)
        if isinstance(value, dict) and value:
            continue
        default = json.dumps(value)
        rows.append(f"| `{entry.dotted}` | `{_cell(default)}` | {_cell(entry.comment)} |")
    return "\n".join(rows) + "\n"


def updated_readme(readme: str, table: str) -> str:
    """README text with the table between the markers replaced."""
    start = readme.index(START) + len(START)
    end = readme.index(END)
    return readme[:start] + "\n" + table + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    wanted = updated_readme(readme, render_table())
    if args.check:
        if wanted != readme:
            print(f"{readme_path} is out of date: run python charts/values_table.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
