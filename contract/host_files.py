"""Files on the host that only this user may read: the data directory (0700), the SQLite ledger (0600) and the
embedded broker's directory.

The data directory holds every prompt, webhook URL and image of every tenant. Another local user must not read
it, and must not have made it: a directory another user owns could have the ledger swapped under us, so it is
refused, not tightened. A directory of ours with group or other bits is tightened, since it was ours to make.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class HostFileError(RuntimeError):
    """A path another local user owns or could have planted; the message names it and what to do."""


def check_ours(path: Path, *, directory: bool, what: str, remedy: str) -> bool:
    """Refuse `path` unless this user owns it (and, for a directory, it is a real directory, not a symlink);
    tighten a directory of ours to 0700 and a file of ours to 0600. False when `path` does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if st.st_uid != os.getuid():
        raise HostFileError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()}); refusing to use it "
            f"for {what} (another local user may have planted it): {remedy}"
        )
    if directory and not stat.S_ISDIR(st.st_mode):
        raise HostFileError(f"{path} is not a directory; refusing to use it for {what}")
    if not directory and (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise HostFileError(f"{path} is a directory or a symlink; refusing to use it for {what}")
    if stat.S_IMODE(st.st_mode) & 0o077 and (directory or stat.S_ISREG(st.st_mode)):
        os.chmod(path, 0o700 if directory else 0o600)
    return True


def private_dir(path: Path, *, what: str, remedy: str) -> Path:
    """`path` as a directory only this user can enter: made 0700 (its missing parents as usual), or checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_ours(path, directory=True, what=what, remedy=remedy)
    return path


def private_file(path: Path, *, what: str, remedy: str) -> Path:
    """`path` as a file only this user can read: made empty with 0600 before anything writes it (SQLite then
    gives its -wal and -shm files the same mode), or checked and tightened."""
    if not check_ours(path, directory=False, what=what, remedy=remedy) and path.parent.is_dir():
        with contextlib.suppress(FileExistsError):  # (a missing directory is left for the opener's own error)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        check_ours(path, directory=False, what=what, remedy=remedy)
    return path


DATA_DIR_REMEDY = "remove it, or set PIXELMILL_DATA_DIR to a directory of your own"


def private_data_dir(data_path: Path) -> Path:
    """The data directory (PIXELMILL_DATA_DIR), 0700 and ours."""
    return private_dir(data_path, what="the data directory (PIXELMILL_DATA_DIR)", remedy=DATA_DIR_REMEDY)
