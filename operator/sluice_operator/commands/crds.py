"""`sluice crds`: print the CustomResourceDefinitions, or write them to a directory (`make crds`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sluice_operator.api import crd


def run(args: argparse.Namespace) -> int:
    """Print both CRDs as one YAML stream, or write one file per CRD into `--out`."""
    out: Path | None = args.out
    if out is None:
        sys.stdout.write(crd.render_all())
        return 0
    try:
        written = crd.write(out)
    except OSError as exc:
        print(f"sluice crds: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
