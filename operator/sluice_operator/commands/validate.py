"""`sluice validate FILE...`: check policy and circuit YAML before it reaches a cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sluice_operator.problems import Problem
from sluice_operator.validation import parse_documents, read_text


def check(path: Path) -> tuple[list[str], list[Problem]]:
    """`Kind/name ok` lines for the valid objects of one file, and its problems."""
    text = read_text(path)
    if isinstance(text, Problem):
        return [], [text]
    parsed = parse_documents(text, str(path))
    ok = [f"{path}: {obj.kind}/{obj.metadata.name} ok" for obj in parsed.objects]
    return ok, parsed.problems


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every object of every file is valid, 1 otherwise (every problem printed)."""
    files: list[Path] = args.files
    failed = False
    for path in files:
        try:
            ok, problems = check(path)
        except Exception as exc:  # a bug must still not print a traceback at the user
            print(f"{path}: internal error while validating: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        for line in ok:
            print(line)
        for problem in problems:
            print(problem)
        if not ok and not problems:
            print(f"{path}: no objects found")
        failed = failed or bool(problems)
    return 1 if failed else 0
