#!/usr/bin/env python3
"""Keep pip from replacing the base image's GPU stack while pixelmill is installed on top of it.

The worker image starts from NVIDIA's NGC PyTorch container, whose torch is NVIDIA's own build (a version
such as 2.10.0a0+<commit>, compiled against the CUDA, cuDNN and TensorRT of that image; it is not on PyPI).
Left alone, pip may decide that some dependency wants another torch and install a PyPI wheel over it, with
its own CUDA libraries: several GB, and a torch that no longer matches the image's TensorRT.

    python pin_base.py write OUT [--base-constraints FILE] [--unpin NAME ...]
    python pin_base.py check OUT

`write` pins every installed distribution of the GPU stack (see `is_protected`) to the exact version
installed now, then appends the base image's own constraints file when it has one (NGC PyTorch 25.03 and
later: /etc/pip/constraint.txt, the versions NVIDIA built and tested the image with), except the names
given with --unpin and the protected names (those are pinned from what is installed, not from the file).
Use OUT as the only constraints file: `PIP_CONSTRAINT=OUT pip install ...`. A dependency that cannot be
satisfied within the pins then fails the build with pip's ResolutionImpossible message, instead of
silently swapping torch; --unpin relaxes a pin from the base file (never a protected one).

`check` exits 1 if any distribution pinned as protected in OUT is now missing or at another version.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

HEADER = "# protected: installed GPU stack of the base image (pin_base.py)"
BASE_HEADER = "# from the base image's constraints file"

_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_PROTECTED = (
    re.compile(r"torch(-.*)?"),  # torch, torch-tensorrt, ...
    re.compile(r"torch(vision|audio|ao|data|text)"),
    re.compile(r"(pytorch-)?triton(-.*)?"),
    re.compile(r"tensorrt(-.*)?"),
    re.compile(r"nvidia-.*-cu\d+"),  # CUDA library wheels: nvidia-cublas-cu12, nvidia-nccl-cu13, ...
    re.compile(r"numpy"),  # torch and the image's other compiled packages are built against it
)


def canonical(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_protected(name: str) -> bool:
    return any(p.fullmatch(canonical(name)) for p in _PROTECTED)


def installed() -> dict[str, str]:
    """Canonical name -> version of every distribution this interpreter sees (first one on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def constraint_name(line: str) -> str | None:
    """The project a constraints-file line is about; None for blanks, comments and pip options."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    match = _NAME.match(text)
    return canonical(match.group(1)) if match else None


def build_constraints(dists: dict[str, str], base_lines: Iterable[str] = (), unpin: Iterable[str] = ()) -> str:
    unpinned = {canonical(n) for n in unpin}
    refused = sorted(n for n in unpinned if is_protected(n))
    if refused:
        raise ValueError(f"refusing to unpin {', '.join(refused)}: the base image's GPU stack must stay as built")
    lines = [HEADER]
    lines += [f"{name}=={version}" for name, version in sorted(dists.items()) if is_protected(name)]
    kept = []
    for raw in base_lines:
        name = constraint_name(raw)
        if name is None or name in unpinned or is_protected(name):
            continue
        line = raw.split("#", 1)[0].strip()
        if " @ " in line or "://" in line:  # pip refuses URLs in constraints files
            continue
        kept.append(line)
    if kept:
        lines += [BASE_HEADER, *kept]
    return "\n".join(lines) + "\n"


def protected_pins(text: str) -> dict[str, str]:
    """The protected `name==version` pins of a file written by build_constraints."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        name = constraint_name(line)
        if name and is_protected(name) and "==" in line:
            pins[name] = line.split("==", 1)[1].strip()
    return pins


def check(pins: dict[str, str], dists: dict[str, str]) -> list[str]:
    problems = []
    for name, version in sorted(pins.items()):
        now = dists.get(name)
        if now is None:
            problems.append(f"{name}: was {version}, now missing")
        elif now != version:
            problems.append(f"{name}: was {version}, now {now}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write the constraints file")
    write.add_argument("out", type=Path)
    write.add_argument("--base-constraints", type=Path, help="the base image's constraints file, if it exists")
    write.add_argument("--unpin", nargs="*", default=[], help="drop these pins of the base file")
    verify = sub.add_parser("check", help="fail if a protected distribution changed since `write`")
    verify.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "write":
        base = args.base_constraints
        base_lines = base.read_text(encoding="utf-8").splitlines() if base and base.is_file() else []
        try:
            text = build_constraints(installed(), base_lines, args.unpin)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        pins = protected_pins(text)
        torch = f"torch=={pins['torch']}" if "torch" in pins else "no torch installed"
        source = f"{len(base_lines)} lines of {base}" if base_lines else "no base constraints file"
        print(f"{args.out}: {len(pins)} protected pins ({torch}); {source}")
        return 0

    problems = check(protected_pins(args.out.read_text(encoding="utf-8")), installed())
    for problem in problems:
        print(f"error: the base image's {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
