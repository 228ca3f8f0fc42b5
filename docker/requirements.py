#!/usr/bin/env python3
"""Print the project's requirements, one per line: pyproject.toml's [project] dependencies plus the named
extras. The images install these in a layer of their own, which is rebuilt only when pyproject.toml changes,
and then the project itself with --no-deps.

    python docker/requirements.py [--pyproject PATH] [EXTRA ...]

EXTRA may also be a comma or space separated list ("worker,gpu"). An unknown extra is an error (exit 2),
not silently nothing. A requirement that names the project itself (`pixelmill[worker]`) is expanded.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_extras(args: Iterable[str]) -> list[str]:
    return [e for arg in args for e in re.split(r"[\s,]+", arg) if e]


def requirements(pyproject: dict, extras: Iterable[str]) -> list[str]:
    project = pyproject["project"]
    own_name = canonical(project["name"])
    optional = {canonical(k): v for k, v in project.get("optional-dependencies", {}).items()}
    result: list[str] = []
    visited: set[str] = set()

    def add(reqs: Iterable[str]) -> None:
        for req in reqs:
            match = _NAME.match(req)
            if match and canonical(match.group(1)) == own_name:  # pixelmill[worker]: expand the extra
                for extra in split_extras([match.group(2) or ""]):
                    visit(extra)
            elif req not in result:
                result.append(req)

    def visit(extra: str) -> None:
        key = canonical(extra)
        if key in visited:
            return
        if key not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise KeyError(f"pyproject.toml has no extra {extra!r} (extras: {known})")
        visited.add(key)
        add(optional[key])

    add(project.get("dependencies", []))
    for extra in extras:
        visit(extra)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("extras", nargs="*")
    args = parser.parse_args(argv)
    pyproject = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))
    try:
        reqs = requirements(pyproject, split_extras(args.extras))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
