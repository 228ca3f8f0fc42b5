"""The reference in docs/ against the code, both ways: every setting, CLI command and long option, v1 field, event
type and HTTP route is documented, and every one the README or docs/ name exists. The README stays a guide."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer

from contract.events import EVENT_TYPES
from contract.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SCHEMA = ROOT / "contract" / "schemas" / "request-v1.json"
# Where the code that reads environment variables lives (tests excluded: their variables are theirs).
CODE_DIRS = ("contract", "producer", "worker", "pixelmill", "bench", "docker", "migrations")
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".example", ".toml", ".Dockerfile"}

# A whole variable name: `PIXELMILL_S3_*` and `PIXELMILL_*` are patterns, not names.
VARIABLE = re.compile(r"\bPIXELMILL_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
# The CLI's warning for a mistyped variable quotes a name that must not exist.
TYPO_EXAMPLE = re.compile(r"unknown\s+variable\s+PIXELMILL_\w+")
MAX_README_LINES = 300


def guides() -> dict[str, str]:
    """README.md and every docs/*.md, by name."""
    pages = {"README.md": README.read_text(encoding="utf-8")}
    pages.update({f"docs/{p.name}": p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))})
    return pages


def doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str) -> Iterator[tuple[str, str]]:
    """(heading, body) per markdown heading, code blocks skipped so a `# comment` is not a heading."""
    heading, body = "", list[str]()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            yield heading, "\n".join(body)
            heading, body = line, []
        else:
            body.append(line)
    yield heading, "\n".join(body)


def table_first_cells(text: str, header: str) -> list[str]:
    """The first cell of every row of the tables whose header's first cell is `header`."""
    cells, inside = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        first = line.strip("|").split(" | ", 1)[0].strip()
        if not inside:
            inside = first == header
            continue
        if not set(first) <= set("-: "):
            cells.append(first)
    return cells


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def has_option(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


# --- README ------------------------------------------------------------------------------------------------


def test_the_readme_is_a_guide_of_at_most_300_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"
    assert "docs/reference.md" in README.read_text(encoding="utf-8"), "the README links to the reference"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"^#+\s*", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("page", sorted(guides()))
def test_every_link_in_the_guides_resolves(page: str) -> None:
    """Relative links name files that exist and, with `#anchor`, a heading there (anchors moved with the text)."""
    here = (ROOT / page).parent
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", guides()[page]):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (here / path).resolve() if path else ROOT / page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md":
            anchors = {slug(heading) for heading, _ in sections(file.read_text(encoding="utf-8")) if heading}
            if anchor not in anchors:
                problems.append(f"{target}: no heading #{anchor}")
    assert not problems, f"{page}:\n" + "\n".join(problems)


# --- settings ----------------------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


@cache
def variables_in_code() -> frozenset[str]:
    """Every whole `PIXELMILL_*` name the code mentions: Settings fields, and what is read beside them
    (PIXELMILL_ENV_FILE, PIXELMILL_FAKE_GPUS, the compose file's own variables, ...)."""
    found: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and (path.suffix in CODE_SUFFIXES or path.name.endswith("Dockerfile")):
                found.update(VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(found)


def test_every_setting_has_a_row_in_the_settings_reference() -> None:
    documented = {name for cell in table_first_cells(doc("settings.md"), "Variable") for name in VARIABLE.findall(cell)}
    missing = sorted(settings_variables() - documented)
    assert not missing, f"docs/settings.md has no row for {missing}"
    unknown = sorted(documented - settings_variables() - variables_in_code())
    assert not unknown, f"docs/settings.md lists variables nothing reads: {unknown}"


@pytest.mark.parametrize("page", sorted(guides()))
def test_every_variable_a_guide_names_exists(page: str) -> None:
    text = TYPO_EXAMPLE.sub("", guides()[page])
    known = settings_variables() | variables_in_code()
    unknown = sorted(set(VARIABLE.findall(text)) - known)
    assert not unknown, f"{page} names variables that are neither settings nor read by the code: {unknown}"


def test_the_code_reads_the_variables_outside_settings_the_reference_lists() -> None:
    """The settings reference's own table of other variables: each is read somewhere in the code."""
    text = doc("settings.md").split("## Variables outside Settings", 1)[1]
    listed = {name for cell in table_first_cells(text, "Variable") for name in VARIABLE.findall(cell)}
    assert listed, "docs/settings.md lists the variables read outside Settings"
    assert listed <= variables_in_code() - settings_variables(), sorted(listed - variables_in_code())


# --- CLI -----------------------------------------------------------------------------------------------------


@cache
def cli() -> Any:
    from pixelmill.cli import app

    return typer.main.get_command(app)


def leaf_commands() -> dict[str, Any]:
    """'submit', 'db upgrade', ...: every command that runs something, by its words."""
    found: dict[str, Any] = {}

    def walk(command: Any, words: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*words, name])
        elif words:
            found[" ".join(words)] = command

    walk(cli(), [])
    return found


def long_options(command: Any) -> list[str]:
    return [
        opt
        for param in command.params
        if param.param_type_name == "option" and not param.hidden
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    ]


def takes_extra_options(command: Any) -> bool:
    """`pixelmill flower` hands options it does not know to Flower."""
    return bool(command.context_settings.get("ignore_unknown_options"))


def test_every_command_and_long_option_is_in_the_cli_reference() -> None:
    parts = list(sections(doc("cli.md")))
    problems = []
    for words, command in sorted(leaf_commands().items()):
        mention = re.compile(rf"pixelmill {re.escape(words)}(?![\w-])")
        bodies = [body for heading, body in parts if mention.search(heading)]
        if not bodies:
            problems.append(f"no heading names `pixelmill {words}`")
            continue
        for option in long_options(command):
            if not any(has_option(body, option) for body in bodies):
                problems.append(f"`pixelmill {words}`: {option} is not described in its section")
    for option in long_options(cli()):
        if not has_option(doc("cli.md"), option):
            problems.append(f"the global option {option} is not described")
    assert not problems, "docs/cli.md:\n" + "\n".join(problems)


def test_every_option_the_cli_reference_tabulates_exists() -> None:
    """Each command section's option table lists only that command's options."""
    commands = leaf_commands()
    problems = []
    for heading, body in sections(doc("cli.md")):
        named = [words for words in commands if re.search(rf"pixelmill {re.escape(words)}(?![\w-])", heading)]
        if not named:
            continue
        allowed = {option for words in named for option in long_options(commands[words])}
        for cell in table_first_cells(body, "Option"):
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cell):
                if option not in allowed:
                    problems.append(f"{heading}: no option {option}")
    assert not problems, "docs/cli.md:\n" + "\n".join(problems)


def code_of(text: str) -> Iterator[str]:
    """The code in a page, one command line at a time: fenced blocks (continued lines joined), inline spans, and
    indented command lines."""
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for block in fence.findall(text):
        yield from block.replace("\\\n", " ").splitlines()
    prose = fence.sub("", text)
    for span in re.findall(r"`([^`]+)`", prose):
        yield span.replace("\n", " ")
    yield from re.findall(r"^ {4,}(pixelmill .*)$", prose, re.M)


# `pixelmill WORD` where pixelmill is the command (not part of a path, package, or XMP name).
INVOCATION = re.compile(r"(?:^|(?<=[\s`/(\"']))pixelmill[ \t]+([a-z][\w-]*)(?:[ \t]+([a-z][\w-]*))?")


def invocations(line: str) -> Iterator[tuple[str, str | None, str]]:
    """(word, next word or None, the rest of the command up to a comment, `&&`, `;` or the next invocation)."""
    matches = list(INVOCATION.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        rest = re.split(r"\s#|&&|;", line[match.end(1) : end], maxsplit=1)[0]
        yield match.group(1), match.group(2), rest


@pytest.mark.parametrize("page", sorted(guides()))
def test_every_command_and_option_a_guide_names_exists(page: str) -> None:
    root = cli()
    global_options = set(long_options(root))
    problems = []
    for line in code_of(guides()[page]):
        for word, after, rest in invocations(line):
            command = root.commands.get(word)
            if command is None:
                problems.append(f"`pixelmill {word}`: no such command")
                continue
            if getattr(command, "commands", None):
                if after is None:
                    continue  # the group itself, named in prose
                sub = command.commands.get(after)
                if sub is None:
                    problems.append(f"`pixelmill {word} {after}`: no such command")
                    continue
                command, rest = sub, rest.split(after, 1)[1]
            if takes_extra_options(command):
                continue
            allowed = set(long_options(command)) | global_options
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                if option not in allowed:
                    problems.append(f"`pixelmill {word}`: no option {option} (in {line.strip()!r})")
    assert not problems, f"{page}:\n" + "\n".join(problems)


# --- the v1 message and its events ---------------------------------------------------------------------


def schema_fields() -> set[str]:
    """Every property of the v1 schema, nested ones as `parent.child`."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    fields: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            fields.add(prefix + name)
            walk(sub, f"{prefix}{name}.")

    walk(schema, "")
    return fields


def test_the_message_reference_lists_every_v1_field_and_no_other() -> None:
    listed = {name for cell in table_first_cells(doc("message-v1.md"), "Field") for name in ticked(cell)}
    fields = schema_fields()
    assert not fields - listed, f"docs/message-v1.md lacks the v1 fields {sorted(fields - listed)}"
    assert not listed - fields, f"docs/message-v1.md lists fields the v1 schema lacks: {sorted(listed - fields)}"


def test_the_message_reference_lists_every_event_type_and_no_other() -> None:
    events = doc("message-v1.md").split("## Events", 1)[1]
    listed = {name for cell in table_first_cells(events, "Type") for name in ticked(cell)}
    assert listed == set(EVENT_TYPES), f"missing {set(EVENT_TYPES) - listed}, unknown {listed - set(EVENT_TYPES)}"


# --- HTTP ------------------------------------------------------------------------------------------------------


def test_the_http_reference_lists_every_route_and_no_other(tmp_path: Path) -> None:
    from pixelmill.api.http import create_app

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])

    app = create_app(load_settings(data_dir=tmp_path), dispatch=False)
    # The OpenAPI document lists every route the app serves, included routers too (FastAPI's own pages aside).
    served = {f"{method.upper()} {shape(path)}" for path, item in app.openapi()["paths"].items() for method in item}
    listed: set[str] = set()
    for cell in table_first_cells(doc("http.md"), "Route"):
        for documented in ticked(cell):
            method, _, path = documented.partition(" ")
            listed.add(f"{method} {shape(path)}")
    assert served - listed == set(), f"docs/http.md lacks {sorted(served - listed)}"
    assert listed - served == set(), f"docs/http.md lists routes the app lacks: {sorted(listed - served)}"


# --- paths and modules the guides name -------------------------------------------------------------------------

# Where the guides point into the repository. docs/benchmarks.md is a record of what was measured at the time, so
# its paths and modules are the ones of that time.
TREE_FOLDERS = ("contract", "producer", "worker", "pixelmill", "tests", "bench", "migrations", "docker", "examples")
PACKAGES = ("contract", "producer", "worker", "pixelmill", "tests", "bench", "migrations")
HISTORICAL = {"docs/benchmarks.md"}
TREE_PATH = re.compile(rf"(?<![\w./<>-])(?:{'|'.join(TREE_FOLDERS)})/[\w./*-]*")
DOTTED = re.compile(rf"(?<![\w./<>-])(?:{'|'.join(PACKAGES)})(?:\.\w+)+(?![\w/-])")


def inline_code(text: str) -> list[str]:
    """The inline code spans of a page, outside fenced blocks."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M))


def statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A body's statements, those under `if`, `try` and `with` included (TYPE_CHECKING imports, fallbacks)."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from statements(block)
            for handler in getattr(node, "handlers", []):
                yield from statements(handler.body)


def bound_names(node: ast.stmt) -> list[str]:
    """The names a statement binds at its level: defs, classes, assignment targets."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)]


def module_file(name: str) -> Path | None:
    """The tree's file for a dotted module name, by file existence (nothing is imported)."""
    base = ROOT.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def has_attribute(module: str, parts: tuple[str, ...]) -> bool:
    """Whether `module.parts[0]` (and `.parts[1]`, a member of that class) is defined at the module's top level,
    following `from x import name` re-exports to the module they come from."""
    path = module_file(module)
    if path is None or not parts:
        return path is not None
    name, rest = parts[0], parts[1:]
    for node in statements(parsed(path).body):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = next(a.name for a in node.names if (a.asname or a.name) == name)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if module_file(f"{base}.{source}") is not None:
                return has_attribute(f"{base}.{source}", rest)
            return has_attribute(base, (source, *rest))
        if name in bound_names(node):
            if not rest:
                return True
            if isinstance(node, ast.ClassDef) and len(rest) == 1:
                return any(rest[0] in bound_names(member) for member in statements(node.body))
            return False
    return False


def names_module_or_attribute(dotted: str) -> bool:
    """The longest prefix that is a module of the tree exists, and the rest is an attribute of it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        if module_file(".".join(parts[:cut])) is not None:
            return has_attribute(".".join(parts[:cut]), tuple(parts[cut:]))
    return False


@cache
def strings_in_code() -> frozenset[str]:
    """Every string constant of the code: Celery task and queue names (`pixelmill.generate`, `pixelmill.intake`)
    are dotted like modules but are names the code spells."""
    found: set[str] = set()
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            found.update(
                n.value for n in ast.walk(parsed(path)) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )
    return frozenset(found)


def path_exists(written: str) -> bool:
    """A path into the tree, with or without a trailing `/`; `file.py::test_name` names a test of that file."""
    path, _, test = written.partition("::")
    path = re.sub(r":\d+$", "", path.rstrip(".,;:"))
    if "*" in path:
        return any(ROOT.glob(path))
    if not (ROOT / path).exists():
        return False
    return not test or test.split("[")[0] in {n for s in parsed(ROOT / path).body for n in bound_names(s)}


def tree_names_offenders(text: str) -> list[str]:
    """The paths and dotted modules a page names in inline code that the tree does not have."""
    problems = []
    for span in inline_code(text):
        for written in TREE_PATH.findall(span):
            if not path_exists(written):
                problems.append(f"`{span}`: no file or folder {written}")
        for dotted in DOTTED.findall(span):
            if not names_module_or_attribute(dotted) and dotted not in strings_in_code():
                problems.append(f"`{span}`: no module or attribute {dotted}")
    return problems


@pytest.mark.parametrize("page", sorted(set(guides()) - HISTORICAL))
def test_every_path_and_module_a_guide_names_exists(page: str) -> None:
    problems = tree_names_offenders(guides()[page])
    assert not problems, f"{page}:\n" + "\n".join(problems)


def test_the_name_check_catches_invented_names() -> None:
    real = "`producer/submit.py`, `worker/engine/`, `producer.submit.submit_request`, `contract.promptfilter`"
    assert tree_names_offenders(real) == []
    invented = "`producer/frontdoor.py`, `worker/hardening/`, `producer.submit.no_such_function`, `worker.judge`"
    assert len(tree_names_offenders(invented)) == 4
    assert tree_names_offenders("`contract.transitions.NewItem.no_such_field`"), "class members are checked"
