"""s3:// inputs (issue 25): photo rows' `image`/`mask` and a job's `lora` as keys under the tenant's s3 roots (the
rule of a v1 `source`, producer/source_roots.py), read at submit with the one bounded reader (contract/storage.py
`S3Reader`), their sha256 in the identity as for local files, and read again by the worker at run time, which checks
the sha256 (worker/remote_inputs.py). Everything against the moto S3 server the suite already uses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bad_inputs import state
from test_catalogue_files import entries
from test_options import write_lora
from test_photos import background_job, kept_product, many_products, outputs, product
from typer.testing import CliRunner

from conftest import Env
from contract.settings import get_settings
from contract.storage import FetchError, S3Reader, S3Storage
from pixelmill.cli import app
from producer.sheet import thumbnail

TILES = '<script id="tiles" type="application/json">'


def put(env: Env, key: str, data: bytes) -> str:
    """`data` at `key` in the installation's bucket; its s3:// location."""
    settings = env.settings()
    bucket = settings.resolved_storage_url.removeprefix("s3://").split("/")[0]
    S3Storage(bucket, "", settings).client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, test_servers: Any) -> Iterator[Env]:
    """SQLite and the embedded Redis, images on moto's S3; the tenant `default` may read s3://bucket/in/ only, where
    a product photo and a LoRA lie; beside the prefix, the same photo under out/."""
    base = tmp_path_factory.mktemp("s3inputs")
    env = Env(base / "data", tiny_model, test_servers.backend("sqlite-embedded-s3"))
    env.data_dir.mkdir()
    drawn = base / "drawn"
    drawn.mkdir()
    photo = product(drawn / "MUG-1.png", (200, 30, 30), "ellipse", (60, 52)).read_bytes()
    env.photo = put(env, "in/MUG-1.png", photo)  # type: ignore[attr-defined]
    put(env, "out/MUG-1.png", photo)
    put(env, "in/brand.safetensors", write_lora(drawn / "brand.safetensors").read_bytes())
    (base / "good.csv").write_text("sku,title,color\nA-1,mug,red\n")
    env.bucket = env.photo.removeprefix("s3://").split("/")[0]  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as monkeypatch:  # in this process: no second start-up of the CLI
        code, output = submit(
            env, monkeypatch, base / "good.csv", "--size", "64x64", "--steps", "1"
        )  # a ledger, a broker
        assert code == 0, output
        root = f"s3://{env.bucket}/in/"  # type: ignore[attr-defined]
        tenants = CliRunner().invoke(app, ["tenants", "set", "default", "--source-root", root])
        get_settings.cache_clear()
        assert tenants.exit_code == 0, tenants.output
    yield env
    env.close()


def run(env: Env, monkeypatch: pytest.MonkeyPatch, args: list[str], **variables: str) -> tuple[int, str]:
    """`pixelmill ARGS` in this process (exit code, output), with the installation's environment."""
    for key in [k for k in os.environ if k.startswith("PIXELMILL_")]:
        monkeypatch.delenv(key)
    for key, value in {**env.vars, **variables}.items():
        if key.startswith(("PIXELMILL_", "OMP_", "AWS_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def submit(env: Env, monkeypatch: pytest.MonkeyPatch, catalogue: Path, *args: str, **variables: str) -> tuple[int, str]:
    """`pixelmill submit` in this process, with the installation's environment."""
    return run(
        env, monkeypatch, ["submit", str(catalogue), "--key", "sku", "--template", "{title}", *args], **variables
    )


BAD = [  # (id, the image and mask cells, lora, extra environment, field, words)
    ("image-outside-prefix", "s3://{bucket}/out/MUG-1.png,", None, {}, "image", "not under an input root"),
    ("image-other-bucket", "s3://elsewhere/in/MUG-1.png,", None, {}, "image", "not under an input root"),
    ("image-dotdot", "s3://{bucket}/in/../out/MUG-1.png,", None, {}, "image", "not under an input root"),
    ("image-missing-key", "s3://{bucket}/in/nope.png,", None, {}, "image", "does not exist"),
    ("image-oversized", "{photo},", None, {"PIXELMILL_INPUT_MAX_BYTES": "100"}, "image", "PIXELMILL_INPUT_MAX_BYTES"),
    ("lora-outside-prefix", "{photo},", "s3://{bucket}/out/brand.safetensors", {}, "lora", "not under"),
    ("lora-missing-key", "{photo},", "s3://{bucket}/in/nope.safetensors", {}, "lora", "does not exist"),
    (
        "lora-oversized",
        "{photo},",
        "s3://{bucket}/in/brand.safetensors:0.5",
        {"PIXELMILL_LORA_MAX_BYTES": "10"},
        "lora",
        "PIXELMILL_LORA_MAX_BYTES",
    ),
    ("mask-outside-prefix", "{photo},s3://{bucket}/out/MUG-1.png", None, {}, "mask", "not under an input root"),
    ("mask-missing-key", "{photo},s3://{bucket}/in/nope-mask.png", None, {}, "mask", "does not exist"),
]


@pytest.mark.parametrize(
    ("cells", "lora", "variables", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_s3_input_exits_2_naming_its_field_and_writes_nothing(
    installation: Env,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    cells: str,
    lora: str | None,
    variables: dict[str, str],
    field: str,
    words: str,
) -> None:
    env = installation

    def fill(text: str) -> str:
        return text.replace("{bucket}", env.bucket).replace("{photo}", env.photo)  # type: ignore[attr-defined]

    catalogue = tmp_path / "photos.csv"  # a good row first: the bad one (line 3) stops the whole job
    catalogue.write_text(f"sku,title,image,mask\nGOOD-1,mug,{env.photo},\nBAD-2,mug,{fill(cells)}\n")  # type: ignore[attr-defined]
    before, listed = state(env), entries(env)
    args = ["--mode", "background", "--catalogue", "s3photos", *(["--lora", fill(lora)] if lora else [])]
    code, output = submit(env, monkeypatch, catalogue, *args, **variables)
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line.removeprefix("error: ") for line in output.splitlines()]
    if field == "lora":
        assert any(line.startswith("--lora: ") and words in line for line in lines), output
    else:
        where = f"{catalogue}:3: field {field!r}: "
        assert any(line.startswith(where) and words in line for line in lines), output
        if not variables:
            assert f"{catalogue}:2:" not in output, output  # the good row is good
    assert state(env) == before and entries(env) == listed


def test_an_s3_lora_and_photo_are_checked_and_hashed_at_submit(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The good case of the table: the items carry the s3 keys and the sha256 of the objects' bytes."""
    import hashlib
    import sqlite3

    env = installation
    lora = env.photo.replace("MUG-1.png", "brand.safetensors")  # type: ignore[attr-defined]
    catalogue = tmp_path / "photos.csv"
    catalogue.write_text(f"sku,title,image\nS3-OK-1,mug,{env.photo}\n")  # type: ignore[attr-defined]
    code, output = submit(env, monkeypatch, catalogue, "--mode", "background", "--lora", f"{lora}:0.5", "--json")
    assert code == 0, output
    job = json.loads(next(line for line in output.splitlines() if line.startswith("{")))["job"]  # not a warning
    reader = S3Reader(env.settings())
    db = sqlite3.connect(f"file:{env.data_dir / 'pixelmill.db'}?mode=ro", uri=True)
    try:
        params, inputs = db.execute("SELECT params, inputs FROM items WHERE job_id = ?", (job,)).fetchone()
    finally:
        db.close()
    params, inputs = json.loads(params), json.loads(inputs)
    assert inputs["image"] == env.photo  # type: ignore[attr-defined]
    assert inputs["image_sha256"] == hashlib.sha256(reader.read(env.photo, 10**6)).hexdigest()  # type: ignore[attr-defined]
    assert (params["lora"], params["lora_scale"]) == (lora, 0.5)
    assert params["lora_sha256"] == hashlib.sha256(reader.read(lora, 10**6)).hexdigest()


def test_the_reader_is_bounded_and_says_why() -> None:
    """Without a server: a location that is no s3://bucket/key is refused before any request."""
    from contract.settings import Settings

    with pytest.raises(FetchError) as refused:
        S3Reader(Settings()).read("s3://bucket-only", 10)
    assert refused.value.why == "unreadable"


def test_the_worker_reads_s3_inputs_again_and_refuses_a_changed_object(installation: Env) -> None:
    """worker/remote_inputs.py: a local copy only of the bytes checked at submit; a changed object fails its item
    finally, a missing one too; a LoRA is read from the store once for all the chunks that use it."""
    import hashlib

    from contract.params import GenerationParams
    from contract.transitions import ClaimedItem
    from worker.remote_inputs import RemoteInputs

    env = installation
    photo: str = env.photo  # type: ignore[attr-defined]
    reader = S3Reader(env.settings())
    sha = hashlib.sha256(reader.read(photo, 10**6)).hexdigest()
    lora = photo.replace("MUG-1.png", "brand.safetensors")
    lora_sha = hashlib.sha256(reader.read(lora, 10**6)).hexdigest()
    params = GenerationParams(64, 64, 1, 5.0, mode="background", lora=lora, lora_sha256=lora_sha, lora_scale=1.0)

    def item(number: int, image: str, image_sha: str) -> ClaimedItem:
        inputs = {"image": image, "image_sha256": image_sha}
        return ClaimedItem(number, 1, f"K-{number}", 0, "p", "", 1, params, inputs=inputs)

    remote = RemoteInputs(env.settings())
    try:
        good, changed, gone = item(1, photo, sha), item(2, photo, "0" * 64), item(3, photo + ".gone", "1" * 64)
        with remote.for_chunk([good, changed, gone]) as (ready, failures):
            assert [i.id for i in ready] == [1]
            local = ready[0].inputs["image"]  # type: ignore[index]
            assert Path(local).read_bytes() == reader.read(photo, 10**6)
            assert ready[0].params.lora is not None and Path(ready[0].params.lora).is_file()
        assert not Path(local).exists()  # the chunk's photo copies go with it; the LoRA stays
        assert failures[2].final and "changed since it was checked at submit" in failures[2].error
        assert failures[3].final and "gone" in failures[3].error
        with remote.for_chunk([item(4, photo, sha)]) as (ready, failures):
            assert not failures and ready[0].params.lora == remote.loras[lora_sha]
        assert remote.fetched == 3  # the photo twice (one per chunk), the LoRA once
    finally:
        remote.close()


def test_a_background_job_with_s3_photos_keeps_every_product_pixel(
    installation: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Photos only on S3 (under the tenant's s3 root): the worker reads them from the store and the product
    pixels of every output are the photo's, byte for byte; the contact sheet shows each photo beside its output."""
    env = installation
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    photos = many_products(drawn, 3)
    for name in {n for pair in photos.values() for n in pair if n}:
        put(env, f"in/bg/{name}", (drawn / name).read_bytes())
    prefix = f"s3://{env.bucket}/in/bg/"  # type: ignore[attr-defined]
    catalogue = tmp_path / "background.csv"
    catalogue.write_text(
        "sku,title,image,mask\n"
        + "".join(f"{k},thing,{prefix}{p},{prefix + m if m else ''}\n" for k, (p, m) in photos.items())
    )
    env.vars |= {"PIXELMILL_IMAGE_CHECKER": "none", "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true"}
    try:
        job = background_job(env, catalogue, len(photos), timeout=120)
        for key, photo, output, mask_file in outputs(env, job, drawn, photos):
            kept_product(key, photo, output, mask_file)
        sheet = tmp_path / "sheet.html"
        code, said = run(env, monkeypatch, ["sheet", "--job", str(job), "-o", str(sheet)])
        assert code == 0, said
        page = sheet.read_text()
        start = page.index(TILES) + len(TILES)
        tiles = {t["k"]: t for t in json.loads(page[start : page.index("</script>", start)])}
        for key, (name, _) in photos.items():
            assert tiles[key]["src"] and tiles[key]["in"] == thumbnail((drawn / name).read_bytes()), key
    finally:
        for proc in env.workers:
            env.kill(proc)
        env.workers.clear()
