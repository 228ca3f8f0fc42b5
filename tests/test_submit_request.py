"""The one submission path, in process: request validation, the caps from settings, the dry run. Fast: no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import Settings
from producer.catalogue import CatalogueError, Defaults, UsageError
from producer.planning import preview_request
from producer.request import SubmitRequest, limits_for

DEFAULTS = Defaults(template=None, width=64, height=64, steps=4)


def request(rows: list[dict[str, object]], **extra: object) -> SubmitRequest:
    return SubmitRequest(rows=rows, defaults=DEFAULTS, model="m", tenant_id=1, **extra)  # type: ignore[arg-type]


def test_a_request_needs_exactly_one_source_and_bounded_ids() -> None:
    with pytest.raises(UsageError, match="exactly one"):
        SubmitRequest(defaults=DEFAULTS, model="m", tenant_id=1)
    with pytest.raises(UsageError, match="request_id"):
        request([], request_id="x" * 201)
    with pytest.raises(UsageError, match="seed"):
        request([], seed=-1)
    with pytest.raises(UsageError, match="catalogue name"):
        request([], catalogue="a\nb")


def test_caps_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, prompt_bytes=16, job_max_items=2, prompt_tokens=3)
    limits = limits_for(settings)
    assert (limits.prompt_bytes, limits.items, limits.tokens, limits.key_segment_bytes) == (16, 2, 3, 255)
    with pytest.raises(CatalogueError, match="prompt"):
        preview_request(settings, None, request([{"id": "a", "prompt": "x" * 17}]))
    s3 = limits_for(Settings(data_dir=tmp_path, storage_url="s3://bucket/some/prefix"))
    assert s3.key_segment_bytes is None and s3.key_prefix_bytes == len("some/prefix") + 1


def test_preview_skips_identical_work_once_and_filters_only_fresh_prompts(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"id": "a", "prompt": "a red mug", "seed": 1},
        {"id": "b", "prompt": "a red mug", "seed": 1},  # same work as a
        {"id": "c", "prompt": "a naked woman on a beach", "seed": 1},
    ]
    preview = preview_request(Settings(data_dir=tmp_path), None, request(rows, blocklists=("builtin",)))
    assert (preview.rows, preview.items, preview.skipped, preview.blocked) == (3, 1, 1, 1)
    assert [i.key for i in preview.first] == ["a", "b", "c"] and preview.first_blocked[0].key == "c"
    assert preview.warnings == []
