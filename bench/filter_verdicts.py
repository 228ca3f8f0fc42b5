"""Every verdict of the prompt filter on the test corpora, the probes and 100k generated titles of each bench, as
one line a prompt (`set<TAB>index<TAB>category<TAB>term`), so a speed change can be held to identical verdicts:

    python bench/filter_verdicts.py OUT.tsv [--titles 100000]
    diff BEFORE.tsv AFTER.tsv
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import promptfilter as bench_filter  # noqa: E402
import submit as bench_submit  # noqa: E402

from contract import promptfilter  # noqa: E402


def prompt_sets(count: int) -> dict[str, list[str]]:
    """The sets checked: every tests/data/prompt_{corpus,probes}_*.tsv and both benches' titles."""
    paths = sorted((ROOT / "tests" / "data").glob("prompt_*.tsv"))
    sets = {path.stem: bench_filter.corpus(path.name) for path in paths}
    for name in ("benign_prompts.txt", "evasive_prompts.txt"):
        lines = (ROOT / "tests" / "data" / name).read_text(encoding="utf-8").splitlines()
        sets[name] = [line for line in lines if line.strip() and not line.startswith("#")]
    sets["mixed"] = mixed(sets, count)
    sets["bench_titles"] = bench_filter.titles(count)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "titles.csv"
        bench_submit.write_titles(path, count)
        with path.open(newline="") as handle:
            sets["submit_titles"] = [bench_submit.TEMPLATE.format(**row) for row in csv.DictReader(handle)]
    return sets


def mixed(sets: dict[str, list[str]], count: int) -> list[str]:
    """Corpus prompts and their words spliced into catalogue titles (seeded): the fast path's gate meets every
    trigger beside ordinary catalogue words, at the start, middle and end of a title, upper-cased too."""
    rng = random.Random(26)
    pieces = [
        p for name, prompts in sets.items() if name.startswith("prompt_") or name.endswith(".txt") for p in prompts
    ]
    words = [w for p in pieces for w in p.split()]
    base = bench_filter.titles(count // 2, seed=11)
    out = []
    for index, title in enumerate(base):
        parts = title.split()
        insert = rng.choice(pieces) if index % 2 else " ".join(rng.choices(words, k=rng.randint(1, 3)))
        parts.insert(rng.randint(0, len(parts)), insert.upper() if index % 7 == 0 else insert)
        out.append(" ".join(parts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--titles", type=int, default=100_000)
    args = parser.parse_args()
    sets = prompt_sets(args.titles)
    check = promptfilter.PromptFilter.from_sources(("builtin",))
    with args.out.open("w", encoding="utf-8") as out:
        for name, prompts in sets.items():
            start = time.process_time()
            blocked = 0
            for index, prompt in enumerate(prompts):
                found = check.check(prompt)
                blocked += found is not None
                out.write(f"{name}\t{index}\t{found.category if found else ''}\t{found.term if found else ''}\n")
            cpu = (time.process_time() - start) / len(prompts) * 1e6
            print(f"{name}: {len(prompts)} prompts, {blocked} blocked, {cpu:.1f} CPU µs a prompt (one fresh pass)")


if __name__ == "__main__":
    main()
