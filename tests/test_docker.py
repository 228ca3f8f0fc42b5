"""Static checks of docker/: the compose file, the two Dockerfiles, their ignore files and helper scripts.

None of this needs a Docker engine (there was none where these files were written). What an engine would
add, `docker compose config` and hadolint, runs only where those tools are installed and is skipped
otherwise. The images themselves are never built here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (in the dev extra) is needed to read docker/compose.yaml")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
WORKER_DOCKERFILE = "docker/worker.Dockerfile"
PRODUCER_DOCKERFILE = "docker/producer.Dockerfile"

# Variables compose.yaml reads that are not pixelmill settings (they must not become Settings fields either).
COMPOSE_ONLY = {"PIXELMILL_MODELS_DIR", "PIXELMILL_WORK_DIR", "PIXELMILL_IMAGE_TAG"}
# Relative bind-mount sources the user creates (docker/README.md says how); all others must exist.
OPTIONAL_BIND_SOURCES = {"./models": "PIXELMILL_MODELS_DIR"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# Never in the producer image.
WORKER_STACK = {"torch", "diffusers", "transformers", "nvidia-modelopt", "onnx", "tensorrt", "safetensors"}


# ---------------------------------------------------------------------------------------------------------
# Compose-style interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt}, nesting,
# $$ for a literal $.

_VAR = r"[A-Za-z_][A-Za-z0-9_]*"


def _closing_brace(text: str, start: int) -> int:
    """Index of the } closing the { at `start`."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced braces in {text!r}")


def interpolate(text: str, env: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 1)
            match = re.fullmatch(rf"({_VAR})(?:(:?[-?+])(.*))?", text[i + 2 : end], re.S)
            if not match:
                raise ValueError(f"bad interpolation in {text!r}")
            name, op, arg = match.groups()
            value = env.get(name)
            empty = value is None or (op is not None and op.startswith(":") and value == "")
            if op in ("-", ":-"):
                out.append(interpolate(arg, env) if empty or value is None else value)
            elif op in ("?", ":?"):
                if empty or value is None:
                    raise ValueError(f"{name} is required: {arg}")
                out.append(value)
            elif op in ("+", ":+"):
                out.append("" if empty else interpolate(arg, env))
            else:
                out.append(value or "")
            i = end + 1
        else:
            match = re.match(_VAR, text[i + 1 :])
            out.append(env.get(match.group(), "") if match else "$")
            i += 1 + (len(match.group()) if match else 0)
    return "".join(out)


def references(text: str) -> set[str]:
    """Every variable a string refers to, those inside defaults included."""
    text = text.replace("$$", "")
    return set(re.findall(rf"\$\{{({_VAR})", text)) | set(re.findall(rf"\$({_VAR})", text))


def literal_defaults(text: str) -> list[tuple[str, str]]:
    """(VAR, default) for each ${VAR:-default} whose default is a plain literal."""
    return re.findall(rf"\$\{{({_VAR}):?-([^${{}}]*)\}}", text.replace("$$", ""))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    return node


# ---------------------------------------------------------------------------------------------------------
# Loading


@cache
def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{COMPOSE_FILE} is not a mapping"
    return loaded


# The secrets compose.yaml requires (`${VAR:?…}`: no default passwords); docker/.env sets them.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-test",
    "REDIS_PASSWORD": "redis-test",
    "MINIO_ROOT_PASSWORD": "minio-test",
    "WORKER_S3_SECRET_KEY": "worker-test",
    "MONITOR_PASSWORD": "flower-test",
}


@cache
def compose() -> dict[str, Any]:
    """compose.yaml as Compose sees it with a docker/.env holding only the required secrets: every other
    variable at its default."""
    resolved: dict[str, Any] = interpolated(raw_compose(), SECRETS)
    return resolved


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def dockerfile_of(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return str(Path(build, "Dockerfile"))
    context_dir: str = build.get("context", ".")
    dockerfile: str = build.get("dockerfile", "Dockerfile")
    return ((DOCKER / context_dir).resolve() / dockerfile).relative_to(ROOT).as_posix()


def workers() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if dockerfile_of(s) == WORKER_DOCKERFILE}


def pixelmill_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if dockerfile_of(s) in (WORKER_DOCKERFILE, PRODUCER_DOCKERFILE)}


_ASSIGNMENT = re.compile(rf"^(#\s*)?({_VAR})=(.*)$")


@cache
def env_example() -> tuple[frozenset[str], dict[str, str]]:
    """(variables documented, commented out or not; values of the uncommented ones)."""
    documented, values = set(), {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            documented.add(match.group(2))
            if not match.group(1):
                values[match.group(2)] = match.group(3)
    return frozenset(documented), values


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    result = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def dockerfile_args(path: Path) -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG":
            name, eq, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"') if eq else None
    return args


def last_json(path: Path, keyword: str) -> list[str] | None:
    found = [rest for kw, rest in dockerfile_instructions(path) if kw == keyword]
    return json.loads(found[-1]) if found else None


def healthcheck_command(path: Path) -> list[str] | None:
    found = [rest for kw, rest in dockerfile_instructions(path) if kw == "HEALTHCHECK"]
    if not found:
        return None
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", found[-1])
    assert match, f"{path.name}: HEALTHCHECK should use the exec form CMD [...]"
    command: list[str] = json.loads(match.group(1))
    return command


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docker_{name}", DOCKER / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option(args: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert match, req
    return canonical(match.group(1))


def pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------
# compose.yaml


def test_compose_has_the_expected_services() -> None:
    expected = {"redis", "postgres", "minio", "minio-init", "migrate", "flower", "cli", "intake", "http"}
    assert expected <= set(services())
    assert len(workers()) >= 1, "no worker service built from docker/worker.Dockerfile"
    assert all(name.startswith("worker-gpu") for name in workers())


def test_every_service_has_an_image_or_a_build_that_exists() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        image = service.get("image", "")
        if "build" not in service:
            tag = image.rsplit("/", 1)[-1]
            assert ":" in tag and not tag.endswith(":latest"), f"{name}: pin the image's tag ({image})"
            continue
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context should be the repository root (context: ..)"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        assert ignore.is_file(), f"{name}: {ignore.name} is missing, so the whole repository is sent to the build"
        assert image.startswith("pixelmill-"), f"{name}: name the image it builds (pixelmill-...)"


def test_build_args_are_declared_by_the_dockerfile_with_the_same_default() -> None:
    for name, service in services().items():
        build = service.get("build")
        if not build:
            continue
        declared = dockerfile_args(ROOT / build["dockerfile"])
        for arg, value in (build.get("args") or {}).items():
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of {build['dockerfile']}"
            raw = raw_compose()["services"][name]
            raw_value = str(raw.get("build", {}).get("args", {}).get(arg, ""))
            if "${" in raw_value and declared[arg] is not None:  # a default, not a value set on purpose
                assert value == declared[arg], (
                    f"{name}: {arg} defaults to {value!r} in compose.yaml but to "
                    f"{declared[arg]!r} in {build['dockerfile']}"
                )


def test_volumes_are_declared_or_exist_or_are_documented_optional() -> None:
    declared = set(compose().get("volumes") or {})
    documented, _ = env_example()
    readme = (DOCKER / "README.md").read_text(encoding="utf-8")
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, kind = volume.get("source", ""), volume.get("type")
            else:
                source = volume.split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "volume":
                assert source in declared, f"{name}: named volume {source!r} is not declared under volumes:"
                continue
            if source.startswith("/"):
                continue  # an absolute host path is the user's to provide
            if (DOCKER / source).exists():
                continue
            assert source in OPTIONAL_BIND_SOURCES, f"{name}: bind source {source} (relative to docker/) is missing"
            variable = OPTIONAL_BIND_SOURCES[source]
            assert variable in documented and variable in readme, (
                f"{name}: {source} does not exist here; document {variable} in .env.example and README.md"
            )


def test_env_files_exist_or_are_optional() -> None:
    for name, service in services().items():
        for entry in service.get("env_file", []):
            if isinstance(entry, str):
                assert (DOCKER / entry).is_file(), f"{name}: env_file {entry} is required but missing"
                continue
            path = entry["path"]
            if entry.get("required", True):
                assert (DOCKER / path).is_file(), f"{name}: env_file {path} is required but missing"
            else:
                example = DOCKER / (Path(path).name + ".example")
                assert example.is_file(), f"{name}: optional env_file {path} has no {example.name} to copy"


def test_each_worker_reserves_exactly_one_nvidia_gpu_and_they_differ() -> None:
    ids, hostnames = [], []
    for name, service in workers().items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        assert len(devices) == 1, f"{name}: reserve exactly one device request, got {devices}"
        device = devices[0]
        assert device.get("driver") == "nvidia", f"{name}: driver should be nvidia"
        assert "gpu" in device.get("capabilities", []), f"{name}: capabilities must include gpu"
        assert "count" not in device, f"{name}: count and device_ids are mutually exclusive"
        assert isinstance(device.get("device_ids"), list) and len(device["device_ids"]) == 1, (
            f"{name}: device_ids should name exactly one GPU"
        )
        assert all(isinstance(i, str) for i in device["device_ids"]), f"{name}: device ids are strings"
        ids.append(device["device_ids"][0])
        assert service.get("hostname"), f"{name}: set hostname, which makes the node name gpu0@<hostname> stable"
        hostnames.append(service["hostname"])
        # Inside its container the reserved GPU is GPU 0; the health check pings this container's node.
        command = service.get("command", [])
        assert command[:1] == ["worker"] and option(command, "--gpus") == "0", (
            f"{name}: run `worker --gpus 0` (the one GPU the container sees), got {command}"
        )
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "pixelmill", "ping"] and option(test, "--node") == "gpu0@%h", (
            f"{name}: the health check should ping this container's own node, gpu0@%h; got {test}"
        )
    assert len(set(ids)) == len(ids), f"two workers reserve the same GPU: {ids}"
    assert len(set(hostnames)) == len(hostnames), f"two workers share a host name (node name): {hostnames}"


def test_workers_mount_models_read_only() -> None:
    for name, service in workers().items():
        mounts = {v.split(":")[1]: v for v in service["volumes"] if isinstance(v, str)}
        assert mounts.get("/models", "").endswith(":ro"), f"{name}: mount the models read-only at /models"


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart() -> None:
    completed_targets = {
        target
        for s in services().values()
        for target, dep in (s.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }
    for name, service in services().items():
        restart = str(service.get("restart", "no"))
        if restart == "no":
            assert name in completed_targets or service.get("profiles"), (
                f"{name}: restart 'no' but nothing waits for it to complete and it is not in a profile"
            )
            continue
        health = service.get("healthcheck")
        assert health and health.get("test") and not health.get("disable"), f"{name}: long-running, no healthcheck"
    for target in completed_targets:
        assert str(services()[target].get("restart", "no")) == "no", (
            f"{target}: others wait for it to complete, so it must not restart"
        )


def test_depends_on_targets_exist_and_conditions_hold() -> None:
    graph = {}
    for name, service in services().items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = set(deps)
        for target, dep in deps.items():
            assert target in services(), f"{name}: depends on unknown service {target}"
            condition = dep.get("condition", "service_started")
            assert condition in CONDITIONS, f"{name}: unknown condition {condition}"
            if condition == "service_healthy":
                assert services()[target].get("healthcheck"), f"{name}: waits for {target} healthy, no healthcheck"
            if services()[target].get("profiles"):
                assert service.get("profiles"), f"{name}: depends on {target}, which `up` does not start"

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        for nxt in graph[node]:
            visit(nxt, (*path, node))

    for name in graph:
        visit(name, ())


def test_ports_are_bound_to_localhost() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish {port} on 127.0.0.1 only"


# ---------------------------------------------------------------------------------------------------------
# .env.example and settings


def test_env_example_documents_every_compose_variable() -> None:
    used = set().union(*(references(s) for s in strings(raw_compose())))
    documented, _ = env_example()
    missing = sorted(used - documented)
    assert not missing, f"compose.yaml reads variables docker/.env.example does not mention: {missing}"


def test_env_example_values_are_the_compose_defaults() -> None:
    defaults: dict[str, set[str]] = {}
    for text in strings(raw_compose()):
        for name, default in literal_defaults(text):
            defaults.setdefault(name, set()).add(default)
    conflicting = {n: d for n, d in defaults.items() if len(d) > 1}
    assert not conflicting, f"a variable has different defaults in compose.yaml: {conflicting}"
    _, values = env_example()
    for name, value in values.items():
        assert value != "", f".env.example: {name} is set empty; comment it out instead"
        if name in defaults:
            assert value == next(iter(defaults[name])), (
                f".env.example sets {name}={value} but compose.yaml defaults to {next(iter(defaults[name]))}"
            )


def test_pixelmill_variables_are_settings_fields() -> None:
    """Required fields (PIXELMILL_<FIELD>): every PIXELMILL_* variable .env.example, compose.yaml or a
    Dockerfile sets, e.g. database_url, broker_url, storage_url, s3_endpoint_url, s3_region, model, data_dir."""
    from contract.settings import Settings

    fields = {f"PIXELMILL_{name.upper()}" for name in Settings.model_fields}
    assert not COMPOSE_ONLY & fields, f"compose-only variables collide with settings: {COMPOSE_ONLY & fields}"
    documented, _ = env_example()
    variables = {v for v in documented if v.startswith("PIXELMILL_")}
    for service in pixelmill_services().values():
        variables |= {k for k in (service.get("environment") or {}) if k.startswith("PIXELMILL_")}
    for dockerfile in (WORKER_DOCKERFILE, PRODUCER_DOCKERFILE):
        for keyword, rest in dockerfile_instructions(ROOT / dockerfile):
            if keyword == "ENV":
                variables |= set(re.findall(r"\b(PIXELMILL_[A-Z0-9_]+)=", rest))
    unknown = sorted(variables - fields - COMPOSE_ONLY)
    assert not unknown, f"not fields of contract.settings.Settings: {unknown}"


# ---------------------------------------------------------------------------------------------------------
# Command lines


def pixelmill_invocations() -> list[tuple[str, list[str]]]:
    """(where, arguments after `pixelmill`) for every pixelmill command the images and compose run."""
    found = []
    for dockerfile in (WORKER_DOCKERFILE, PRODUCER_DOCKERFILE):
        path = ROOT / dockerfile
        entrypoint = last_json(path, "ENTRYPOINT")
        assert entrypoint and entrypoint[-1] == "pixelmill", f"{dockerfile}: ENTRYPOINT should end in pixelmill"
        cmd = last_json(path, "CMD")
        assert cmd is not None, f"{dockerfile}: no CMD"
        found.append((f"{dockerfile} CMD", cmd))
        health = healthcheck_command(path)
        if health is not None:
            assert health[0] == "pixelmill", f"{dockerfile}: HEALTHCHECK should run pixelmill"
            found.append((f"{dockerfile} HEALTHCHECK", health[1:]))
    for name, service in pixelmill_services().items():
        if "command" in service:
            found.append((f"{name} command", service["command"]))
        test = (service.get("healthcheck") or {}).get("test", [])
        if test[:2] == ["CMD", "pixelmill"]:
            found.append((f"{name} healthcheck", test[2:]))
    return found


def unknown_flower_options(args: list[str]) -> list[str]:
    if not args or importlib.util.find_spec("flower") is None:
        return []
    from flower.options import options

    known = {name.replace("_", "-") for name in options._options}  # tornado.options' registry
    return [
        f"Flower has no option {arg.split('=')[0]}"
        for arg in args
        if arg.startswith("--") and arg[2:].split("=")[0].replace("_", "-") not in known
    ]


def test_commands_are_pixelmill_subcommands_with_valid_options() -> None:
    """Required commands: worker (--gpus), ping (--node, --timeout), flower (--address, --port), db upgrade."""
    import typer.main

    from pixelmill.cli import app

    root = typer.main.get_command(app)
    problems = []
    for where, args in pixelmill_invocations():
        assert isinstance(args, list) and all(isinstance(a, str) for a in args), f"{where}: use the exec (list) form"
        if args in ([], ["--help"]):
            continue
        command, path, rest = root, ["pixelmill"], list(args)
        while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
            sub = command.commands.get(rest[0])
            if sub is None:
                problems.append(
                    f"{where}: `{' '.join(path)}` has no command {rest[0]!r} "
                    f"(has: {', '.join(sorted(command.commands))})"
                )
                break
            command, path, rest = sub, [*path, rest[0]], rest[1:]
        else:
            try:  # parses the options exactly as the command would, without running it
                ctx = command.make_context(" ".join(path), list(rest))
            except Exception as exc:  # click's errors (typer may vendor its own click)
                message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
                problems.append(f"{where}: `{' '.join(path + rest)}`: {message}")
                continue
            if path == ["pixelmill", "flower"]:  # further options go to Flower itself
                problems += [f"{where}: {p}" for p in unknown_flower_options(ctx.args)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# Dockerfiles


def test_producer_image_never_installs_the_worker_stack() -> None:
    text = (ROOT / PRODUCER_DOCKERFILE).read_text(encoding="utf-8")
    assert not re.search(r"\[\s*(worker|gpu)|requirements\.py[^\n]*\b(worker|gpu)\b", text), (
        "producer.Dockerfile installs the worker or gpu extra"
    )
    extras_sets = [dockerfile_args(ROOT / PRODUCER_DOCKERFILE).get("EXTRAS") or ""]
    for service in services().values():
        if dockerfile_of(service) == PRODUCER_DOCKERFILE:
            extras_sets.append((service["build"].get("args") or {}).get("EXTRAS", extras_sets[0]))
    requirements = load_script("requirements")
    for extras in extras_sets:
        names = requirements.split_extras([extras])
        assert not {"worker", "gpu"} & set(names), f"producer image built with EXTRAS={extras!r}"
        reqs = {requirement_name(r) for r in requirements.requirements(pyproject(), names)}
        assert not reqs & WORKER_STACK, f"EXTRAS={extras!r} pulls in {sorted(reqs & WORKER_STACK)}"


def test_worker_image_builds_on_ngc_pytorch_and_installs_under_the_pins() -> None:
    path = ROOT / WORKER_DOCKERFILE
    instructions = dockerfile_instructions(path)
    tag = dockerfile_args(path).get("NGC_PYTORCH_TAG")
    assert tag and re.fullmatch(r"\d\d\.\d\d-py3", tag), f"pin NGC_PYTORCH_TAG to a release (YY.MM-py3), got {tag}"
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms == ["nvcr.io/nvidia/pytorch:${NGC_PYTORCH_TAG}"], froms
    runs = [rest for kw, rest in instructions if kw == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "the worker Dockerfile installs nothing"
    assert any("requirements.py worker gpu" in r for r in runs), "install the worker and gpu extras"
    for run in installs:  # every install is held to the pins, or installs nothing but the project's own wheel
        assert "PIP_CONSTRAINT=/opt/pixelmill/constraints.txt" in run or "--no-deps" in run, run
        assert "pin_base.py check" in run, f"verify the GPU stack after: {run}"
    assert any("pin_base.py write" in r for r in runs)
    assert [rest for kw, rest in instructions if kw == "USER"][-1] != "root"
    # The extras it installs really do bring torch: the pins matter.
    reqs = {requirement_name(r) for r in load_script("requirements").requirements(pyproject(), ["worker", "gpu"])}
    assert "torch" in reqs


def test_images_run_as_a_non_root_user() -> None:
    for dockerfile in (WORKER_DOCKERFILE, PRODUCER_DOCKERFILE):
        users = [rest for kw, rest in dockerfile_instructions(ROOT / dockerfile) if kw == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{dockerfile}: run as a non-root user"


@pytest.mark.parametrize("dockerfile", [WORKER_DOCKERFILE, PRODUCER_DOCKERFILE])
def test_copy_sources_exist_and_are_exactly_what_the_ignore_file_lets_in(dockerfile: str) -> None:
    path = ROOT / dockerfile
    sources = set()
    for keyword, rest in dockerfile_instructions(path):
        if keyword in ("COPY", "ADD") and "--from" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            for source in parts[:-1]:
                source = source.removeprefix("./").rstrip("/")
                assert (ROOT / source).exists(), f"{dockerfile}: COPY source {source} does not exist"
                sources.add(source)
    patterns = [
        line.strip()
        for line in path.with_name(path.name + ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert patterns[0] == "*", "the ignore file should start by excluding everything (an allow-list)"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == sources, f"let in exactly what is copied: extra {allowed - sources}, missing {sources - allowed}"


# ---------------------------------------------------------------------------------------------------------
# The helper scripts the images run


def test_requirements_script() -> None:
    requirements = load_script("requirements")
    project = {
        "project": {
            "name": "pixelmill",
            "dependencies": ["celery>=5"],
            "optional-dependencies": {"worker": ["torch>=2.4"], "all": ["pixelmill[worker]", "x"]},
        }
    }
    assert requirements.requirements(project, []) == ["celery>=5"]
    assert requirements.requirements(project, ["all"]) == ["celery>=5", "torch>=2.4", "x"]
    assert requirements.split_extras(["worker,gpu", "flower dev", ""]) == ["worker", "gpu", "flower", "dev"]
    with pytest.raises(KeyError):
        requirements.requirements(project, ["gpu"])
    run = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), "--pyproject", str(ROOT / "pyproject.toml"), "no-such-extra"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "no-such-extra" in run.stderr


def test_pin_base_pins_the_installed_gpu_stack_and_detects_changes() -> None:
    pin = load_script("pin_base")
    for name in (
        "torch",
        "torch-tensorrt",
        "torchvision",
        "triton",
        "pytorch-triton",
        "tensorrt",
        "tensorrt-cu13-libs",
        "nvidia-cublas-cu12",
        "numpy",
        "Torch_TensorRT",
    ):
        assert pin.is_protected(name), name
    for name in ("nvidia-modelopt", "onnx", "transformers", "diffusers", "torchmetrics", "pillow"):
        assert not pin.is_protected(name), name
    installed = {"torch": "2.10.0a0+b4e4ee81d3.nv25.12", "numpy": "1.26.4", "requests": "2.32.3"}
    base = [
        "torch==2.9.0",
        "requests==2.31.0  # tested",
        "onnx==1.17.0",
        "# comment",
        "-c other.txt",
        "foo @ https://example.invalid/foo.whl",
        "",
    ]
    text = pin.build_constraints(installed, base, unpin=["ONNX"])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == ["numpy==1.26.4", "torch==2.10.0a0+b4e4ee81d3.nv25.12", "requests==2.31.0"]
    with pytest.raises(ValueError):
        pin.build_constraints(installed, base, unpin=["torch"])
    pins = pin.protected_pins(text)
    assert pin.check(pins, installed) == []
    assert pin.check(pins, {**installed, "torch": "2.13.0"}) == ["torch: was 2.10.0a0+b4e4ee81d3.nv25.12, now 2.13.0"]
    assert pin.check(pins, {"numpy": "1.26.4"}) == ["torch: was 2.10.0a0+b4e4ee81d3.nv25.12, now missing"]


def test_pin_base_round_trip_on_this_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "constraints.txt"
    script = str(DOCKER / "pin_base.py")
    write = subprocess.run(
        [sys.executable, script, "write", str(out), "--base-constraints", str(tmp_path / "absent.txt"), "--unpin"],
        capture_output=True,
        text=True,
    )
    assert write.returncode == 0, write.stderr
    check = subprocess.run([sys.executable, script, "check", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    out.write_text(out.read_text() + "torch==0.0.0.dev0\n")  # as if torch had been replaced since
    check = subprocess.run([sys.executable, script, "check", str(out)], capture_output=True, text=True)
    assert check.returncode == 1 and "torch" in check.stderr


# ---------------------------------------------------------------------------------------------------------
# Tools that run only where they are installed


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file() -> None:
    compose_cmd = _docker_compose()
    if compose_cmd is None:
        pytest.skip("`docker compose` is not available here (no docker client or no compose plugin)")
    run = subprocess.run(
        [*compose_cmd, "-f", str(COMPOSE_FILE), "--profile", "cli", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr


def test_hadolint_finds_no_errors() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed here")
    run = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(ROOT / WORKER_DOCKERFILE), str(ROOT / PRODUCER_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------------------------------------------------
# Security (issue: hardening)


def test_no_default_passwords() -> None:
    """Every password or secret compose reads is required (`${VAR:?…}`), never defaulted."""
    for text in strings(raw_compose()):
        for name, _default in literal_defaults(text):
            assert not re.search(r"PASSWORD|SECRET", name), f"{name} has a default in compose.yaml"
    with pytest.raises(ValueError, match="REDIS_PASSWORD is required"):
        interpolated(raw_compose()["services"]["redis"], {})


def test_third_party_images_are_pinned() -> None:
    for name, service in services().items():
        image = service.get("image", "")
        if image.startswith("pixelmill-"):
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        pinned = re.search(r"\d+\.\d+", tag) or tag.startswith("RELEASE.") or "@sha256:" in image
        assert pinned, f"{name}: pin {image} to a version"


def test_redis_requires_a_password_and_clients_send_it() -> None:
    redis = services()["redis"]
    assert "--requirepass" in redis["command"] and "redis-test" in redis["command"]
    for name, service in pixelmill_services().items():
        url = (service.get("environment") or {}).get("PIXELMILL_BROKER_URL")
        assert url and ":redis-test@redis:" in url, f"{name}: broker URL without the Redis password"


def test_workers_use_a_scoped_minio_user_not_root() -> None:
    for name, service in workers().items():
        environment = service["environment"]
        assert environment["AWS_ACCESS_KEY_ID"] != services()["minio"]["environment"]["MINIO_ROOT_USER"], name
        assert environment["AWS_SECRET_ACCESS_KEY"] == SECRETS["WORKER_S3_SECRET_KEY"], name
    script = "\n".join(services()["minio-init"]["command"])
    assert "mc admin user add" in script and "mc admin policy attach" in script


def test_flower_has_basic_auth_and_no_secrets_it_does_not_need() -> None:
    flower = services()["flower"]
    assert str(flower["environment"]["FLOWER_BASIC_AUTH"]).endswith(":flower-test")
    assert not any("flower-test" in str(arg) or "auth" in str(arg) for arg in flower["command"]), "never in argv"
    assert "env_file" not in flower, "flower must not get docker/.env whole"
    assert set(flower["environment"]) == {"PIXELMILL_BROKER_URL", "PIXELMILL_DATA_DIR", "FLOWER_BASIC_AUTH"}
