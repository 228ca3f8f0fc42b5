"""Host hygiene (issue 22, findings 11 and 14): what another local user of the machine can read or plant."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import servers  # tests/servers.py

from conftest import Env
from contract.host_files import HostFileError
from contract.ledger import Ledger
from contract.schema import Job
from contract.settings import Settings
from contract.tenants import DEFAULT_TENANT_ID


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finding_11_the_data_directory_and_ledger_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    ledger = Ledger(Settings(data_dir=data))
    with ledger.session() as session:
        session.add(Job(tenant_id=DEFAULT_TENANT_ID, name="secret prompts", model="m", params={}, counts={}))
    assert mode(data) == 0o700
    files = [data / "pixelmill.db", data / "pixelmill.db-wal", data / "pixelmill.db-shm"]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    ledger.close()


def test_finding_11_a_careless_mode_of_our_own_data_directory_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "pixelmill.db").touch()
    os.chmod(data / "pixelmill.db", 0o644)
    Ledger(Settings(data_dir=data)).close()
    assert (mode(data), mode(data / "pixelmill.db")) == (0o700, 0o600)


@pytest.mark.skipif(os.getuid() != 0, reason="planting as another user needs root to fork one")
@pytest.mark.parametrize("planted", ["data-dir", "ledger"])
def test_finding_11_a_data_directory_or_ledger_another_user_made_is_refused(planted: str) -> None:
    shared = Path(tempfile.mkdtemp(prefix="pixelmill-plant-"))  # pytest's tmp_path is not reachable by nobody
    os.chmod(shared, 0o777)
    data = shared / "data"
    if planted == "ledger":
        data.mkdir(mode=0o777)
        os.chmod(data, 0o777)
    pid = os.fork()
    if pid == 0:  # the other user makes the directory, or a ledger in ours, ready to be read or swapped
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.umask(0)
            if planted == "data-dir":
                data.mkdir(mode=0o777)
            else:
                (data / "pixelmill.db").touch(mode=0o666)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    with pytest.raises(HostFileError, match="belongs to uid 65534") as refused:
        Ledger(Settings(data_dir=data))
    assert "PIXELMILL_D" in str(refused.value)  # names the setting to change
    if planted != "ledger":
        return  # the CLI's read commands stop earlier on a directory with no ledger
    cli = subprocess.run(
        [sys.executable, "-m", "pixelmill", "jobs"],
        env={**os.environ, "PIXELMILL_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2 and "belongs to uid 65534" in cli.stderr and "Traceback" not in cli.stderr


# --- Flower's credentials ---------------------------------------------------------------------------------


def flower(env: Env, *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pixelmill", "flower", *args],
        env={**env.vars, **(extra or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "args",
    [["--basic-auth=ops:hunter2"], ["--basic_auth", "ops:hunter2"], ["--cookie-secret=hunter2"], ["--address=0.0.0.0"]],
)
def test_finding_14_flower_refuses_credentials_in_argv_and_an_open_address(env: Env, args: list[str]) -> None:
    proc = flower(env, "--port", str(servers.free_port()), *args)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 2, output
    assert "--auth-file" in output and "Traceback" not in output


def test_finding_14_flower_reads_credentials_from_a_private_file_never_from_argv(env: Env, tmp_path: Path) -> None:
    auth = tmp_path / "flower.auth"
    auth.write_text("# ops team\nops:hunter2\n")
    os.chmod(auth, 0o644)
    loose = flower(env, "--auth-file", str(auth))
    assert loose.wait(timeout=120) == 2 and b"chmod 600" in (loose.stdout.read() if loose.stdout else b"")
    os.chmod(auth, 0o600)
    port = servers.free_port()
    proc = flower(env, "--port", str(port), "--auth-file", str(auth))
    url = f"http://127.0.0.1:{port}/api/workers"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                urllib.request.urlopen(url, timeout=5)
                raise AssertionError("Flower answered without credentials")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.monotonic() < deadline, "Flower did not start"
                time.sleep(0.3)
        good = urllib.request.Request(url, headers={"Authorization": "Basic " + b64encode(b"ops:hunter2").decode()})
        with urllib.request.urlopen(good, timeout=10) as answer:
            assert answer.status == 200
        # What `ps` shows every local user: the command lines of the whole process group.
        group = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == proc.pid]
        assert group
        for pid in group:
            assert b"hunter2" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
