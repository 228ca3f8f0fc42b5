"""s3:// inputs at run time (issue 25): a photo row's `image` and `mask`, and a job's `lora`, checked at submit as
keys under the tenant's s3 roots, are read again from the store by the worker, with the reader the submit used
(contract/storage.py `S3Reader`, bounded by PIXELMILL_INPUT_MAX_BYTES and PIXELMILL_LORA_MAX_BYTES).

Each object is copied into a private directory of this process under the name of the sha256 recorded at submit,
and only once its bytes have that sha256: a changed object fails its items finally, as a changed local file does.
The engine then reads the local copy, and its own checks (worker/photos.py `_open`, worker/engine/lora.py) hash it
again. Photos are deleted after their chunk; the `KEEP_LORAS` most recently used LoRAs stay, so a job's chunks read
its LoRA from the store once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace

from contract.settings import Settings
from contract.storage import FetchError, S3Reader
from contract.transitions import ClaimedItem
from worker.candidates import Failure

log = logging.getLogger(__name__)
KEEP_LORAS = 8


class RemoteInputs:
    """This process's local copies of s3 inputs (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader = S3Reader(settings)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.loras: OrderedDict[str, str] = OrderedDict()  # sha256 -> local copy, least recently used first
        self.fetched = 0  # objects read from the store (the tests read it)

    @property
    def directory(self) -> str:
        if self._dir is None:  # mkdtemp: mode 0700, this user's only
            self._dir = tempfile.TemporaryDirectory(prefix="pixelmill-inputs-")
        return self._dir.name

    def _copy(self, location: str, sha256: str, max_bytes: int) -> str:
        """A local copy of the object at `location` whose bytes have `sha256`; FetchError or ValueError."""
        path = os.path.join(self.directory, sha256)
        if os.path.exists(path):
            return path
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=self.directory, delete=False) as stream:
            try:
                self.reader.copy(location, stream, max_bytes)
            finally:
                stream.close()
            with open(stream.name, "rb") as written:
                while chunk := written.read(1024 * 1024):
                    digest.update(chunk)
        if digest.hexdigest() != sha256:
            os.unlink(stream.name)
            raise ValueError(f"{location!r} changed since it was checked at submit (sha256 differs); submit again")
        os.replace(stream.name, path)
        self.fetched += 1
        return path

    def _lora(self, location: str, sha256: str) -> str:
        path = self._copy(location, sha256, self.settings.lora_max_bytes)
        self.loras[sha256] = path
        self.loras.move_to_end(sha256)
        while len(self.loras) > KEEP_LORAS:
            _, oldest = self.loras.popitem(last=False)
            with contextlib.suppress(OSError):
                os.unlink(oldest)
        return path

    def _local(self, item: ClaimedItem) -> ClaimedItem:
        inputs = dict(item.inputs) if item.inputs is not None else None
        for name in ("image", "mask"):
            location = (inputs or {}).get(name)
            if inputs is not None and isinstance(location, str) and location.startswith("s3://"):
                inputs[name] = self._copy(location, inputs[f"{name}_sha256"], self.settings.input_max_bytes)
        params = item.params
        if params.lora is not None and params.lora.startswith("s3://") and params.lora_sha256:
            params = replace(params, lora=self._lora(params.lora, params.lora_sha256))
        return replace(item, inputs=inputs, params=params)

    def localise(self, items: Sequence[ClaimedItem]) -> tuple[list[ClaimedItem], dict[int, Failure]]:
        """The items with their s3 inputs replaced by local copies, and a Failure for each item whose inputs could
        not be read: final when an object is gone, too large or changed, else an infrastructure failure."""
        ready: list[ClaimedItem] = []
        failures: dict[int, Failure] = {}
        for item in items:
            try:
                ready.append(self._local(item))
            except FetchError as exc:
                final = exc.why != "unreadable"
                what = {"missing": "is gone", "too large": "is over the size limit"}.get(exc.why, exc.detail)
                failures[item.id] = Failure(f"input: an s3 input {what}", final=final, infra=not final)
            except ValueError as exc:
                failures[item.id] = Failure(f"input: {exc}", final=True)
        return ready, failures

    @contextlib.contextmanager
    def for_chunk(self, items: Sequence[ClaimedItem]) -> Iterator[tuple[list[ClaimedItem], dict[int, Failure]]]:
        """`localise`, and the chunk's photo copies deleted afterwards (the LoRAs stay)."""
        try:
            yield self.localise(items)
        finally:
            if self._dir is not None:
                kept = set(self.loras.values())
                for entry in os.scandir(self._dir.name):
                    if entry.path not in kept:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
