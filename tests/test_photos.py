"""Product photos (issue 25): per-row `image`/`mask` inputs checked at submit, all or nothing; background mode keeps
the product's pixels byte for byte; restyle differs from its photo and is the same for the same seed; the photo's
sha256 is part of the item's identity in catalogue runs.

The photos are drawn here: simple products (a mug, a bottle, a box) on white, with alpha.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw
from test_bad_inputs import state
from test_catalogue_files import entries
from typer.testing import CliRunner

from conftest import Env, finished, installation_on
from contract.settings import get_settings
from pixelmill.cli import app
from producer.sheet import thumbnail

PRODUCTS = {  # key: (colour, shape, size): sides not multiples of 8 on purpose (the canvas rounds them up)
    "MUG-1": ((200, 30, 30), "ellipse", (60, 52)),
    "BOTTLE-2": ((30, 90, 200), "rectangle", (44, 70)),
    "BOX-3": ((40, 160, 60), "rectangle", (64, 64)),
    "BALL-4": ((220, 180, 20), "ellipse", (72, 58)),
}


def product(path: Path, colour: tuple[int, int, int], shape: str, size: tuple[int, int], *, alpha: bool = True) -> Path:
    """A product on white: opaque where the product is, transparent elsewhere (or opaque white: `alpha=False`)."""
    width, height = size
    image = Image.new("RGBA", size, (255, 255, 255, 0 if alpha else 255))
    draw = ImageDraw.Draw(image)
    box = (width // 5, height // 6, width - width // 5, height - height // 6)
    getattr(draw, shape)(box, fill=(*colour, 255))
    draw.line((box[0], box[1], box[2], box[3]), fill=(255, 255, 255, 255), width=2)  # a highlight: not a flat blob
    (image if alpha else image.convert("RGB")).save(path)
    return path


def bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid PNG header declaring `width` x `height` with a tiny IDAT: a few hundred bytes, gigabytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    """A ledger with one job, the tenant `default` given an input root holding good and bad inputs, and a place
    outside the root."""
    base = tmp_path_factory.mktemp("photos")
    env = Env(base / "data", tiny_model)
    env.data_dir.mkdir()
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    for key, (colour, shape, size) in PRODUCTS.items():
        product(root / f"{key}.png", colour, shape, size)
    product(root / "plain.png", (90, 60, 160), "ellipse", (64, 48), alpha=False)
    Image.new("L", (60, 52), 255).save(root / "mask-small.png")
    Image.new("L", (64, 64), 0).save(root / "mask-wrong.png")
    data = (root / "MUG-1.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.effect_noise((64, 64), 60).convert("RGB").save(root / "photo.jpg", quality=90)
    jpeg = (root / "photo.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) - 200])  # the header whole, the scan cut short
    (root / "text.png").write_text("not an image at all\n")
    (root / "empty.png").write_bytes(b"")
    Image.new("RGB", (64, 64), "red").save(root / "photo.gif")
    Image.new("RGB", (64, 64), "red").save(root / "photo.bmp")
    Image.new("RGB", (64, 64), "red").save(root / "photo.tiff")
    Image.new("RGB", (3000, 8), "red").save(root / "wide.png")
    bomb_png(root / "bomb.png")
    (root / "a-directory.png").mkdir()
    os.mkfifo(root / "fifo.png")
    product(outside / "elsewhere.png", (10, 10, 10), "ellipse", (64, 64))
    (root / "link-out.png").symlink_to(outside / "elsewhere.png")
    (root / "link-in.png").symlink_to(root / "MUG-1.png")
    (base / "good.csv").write_text("sku,title,color\nA-1,mug,red\n")
    env.submit(base / "good.csv")  # the ledger exists, with one job's items in it
    env.cli("tenants", "set", "default", "--source-root", str(root))
    env.root, env.outside, env.base = root, outside, base  # type: ignore[attr-defined]
    yield env
    env.close()


# (id, image cell, mask cell, extra CSV columns, submit arguments, extra environment, field, words)
BadCase = tuple[str, str, str, str, list[str], dict[str, str], str, str]
BG = ["--mode", "background"]
BAD: list[BadCase] = [
    ("missing", "{root}/nope.png", "", "", BG, {}, "image", "does not exist"),
    ("missing-relative", "nope.png", "", "", BG, {}, "image", "does not exist"),
    ("truncated-png", "truncated.png", "", "", BG, {}, "image", "truncated"),
    ("truncated-jpeg", "truncated.jpg", "", "", BG, {}, "image", "truncated"),
    ("not-an-image", "text.png", "", "", BG, {}, "image", "not a PNG, JPEG or WebP"),
    ("empty-file", "empty.png", "", "", BG, {}, "image", "empty"),
    ("gif", "photo.gif", "", "", BG, {}, "image", "not a PNG, JPEG or WebP"),
    ("bmp", "photo.bmp", "", "", BG, {}, "image", "not a PNG, JPEG or WebP"),
    ("tiff", "photo.tiff", "", "", BG, {}, "image", "not a PNG, JPEG or WebP"),
    ("bomb-50000x50000", "bomb.png", "", "", BG, {}, "image", "bomb"),
    (
        "over-pixel-limit",
        "MUG-1.png",
        "",
        "",
        BG,
        {"PIXELMILL_INPUT_MAX_PIXELS": "1000"},
        "image",
        "PIXELMILL_INPUT_MAX_PIXELS",
    ),
    (
        "over-byte-limit",
        "MUG-1.png",
        "",
        "",
        BG,
        {"PIXELMILL_INPUT_MAX_BYTES": "100"},
        "image",
        "PIXELMILL_INPUT_MAX_BYTES",
    ),
    ("side-over-2048", "wide.png", "", "", BG, {}, "image", "2048"),
    ("directory", "a-directory.png", "", "", BG, {}, "image", "not a regular file"),
    ("fifo", "fifo.png", "", "", BG, {}, "image", "not a regular file"),
    ("outside-root", "{outside}/elsewhere.png", "", "", BG, {}, "image", "not under an input root"),
    ("dotdot-out", "../outside/elsewhere.png", "", "", BG, {}, "image", "not under an input root"),
    ("etc-passwd", "/etc/passwd", "", "", BG, {}, "image", "not under an input root"),
    ("symlink-out", "link-out.png", "", "", BG, {}, "image", "not under an input root"),
    ("http-url", "http://example.com/mug.png", "", "", BG, {}, "image", "URL"),
    ("https-url", "https://example.com/mug.png", "", "", BG, {}, "image", "URL"),
    ("file-url", "file:///etc/passwd", "", "", BG, {}, "image", "URL"),
    ("s3-no-s3-root", "s3://bucket/mug.png", "", "", BG, {}, "image", "not under an input root"),
    ("no-photo", "", "", "", BG, {}, "image", "needs a photo"),
    ("mask-wrong-size", "MUG-1.png", "mask-wrong.png", "", BG, {}, "mask", "same size"),
    ("mask-missing", "MUG-1.png", "nope-mask.png", "", BG, {}, "mask", "does not exist"),
    ("mask-not-an-image", "MUG-1.png", "text.png", "", BG, {}, "mask", "not a PNG"),
    ("mask-symlink-out", "MUG-1.png", "link-out.png", "", BG, {}, "mask", "not under an input root"),
    ("mask-url", "MUG-1.png", "http://example.com/m.png", "", BG, {}, "mask", "URL"),
    ("mask-with-restyle", "MUG-1.png", "mask-small.png", "", ["--mode", "restyle"], {}, "mask", "background only"),
    ("bad-mode-column", "MUG-1.png", "", ",mode", [], {}, "mode", "must be one of"),
    ("size-under-photo", "BOTTLE-2.png", "", ",size", BG, {}, "size", "smaller than the row's photo"),
    ("bad-strength-column", "MUG-1.png", "", ",strength", ["--mode", "restyle"], {}, "strength", "from 0.05 to 1"),
]
EXTRA_VALUE = {",mode": ",inpaint", ",strength": ",2", ",size": ",64x64"}  # BOTTLE-2 is 44x70


def fill(text: str, env: Env) -> str:
    return text.replace("{root}", str(env.root)).replace("{outside}", str(env.outside))  # type: ignore[attr-defined]


def test_the_table_holds_at_least_25_bad_inputs() -> None:
    assert len(BAD) >= 25 and len({c[0] for c in BAD}) == len(BAD)


@pytest.mark.parametrize(
    ("image", "mask", "extra", "args", "env_vars", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_a_bad_input_exits_2_with_file_line_field_and_writes_nothing(
    installation: Env,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    image: str,
    mask: str,
    extra: str,
    args: list[str],
    env_vars: dict[str, str],
    field: str,
    words: str,
) -> None:
    env = installation
    for key in [k for k in os.environ if k.startswith("PIXELMILL_")]:
        monkeypatch.delenv(key)
    for key, value in {**env.vars, **env_vars}.items():
        if key.startswith(("PIXELMILL_", "OMP_")):
            monkeypatch.setenv(key, value)
    catalogue = tmp_path / "photos.csv"  # a good row first: the bad one (line 3) stops the whole job
    good = {",mode": ",background", ",strength": ",0.5", ",size": ",64x64"}.get(extra, "")
    catalogue.write_text(
        f"sku,title,image,mask{extra}\nGOOD-1,mug,MUG-1.png,{good}\n"
        f"BAD-2,mug,{fill(image, env)},{fill(mask, env)}{EXTRA_VALUE.get(extra, '')}\n"
    )
    get_settings.cache_clear()
    try:
        before, listed = state(env), entries(env)
        result = CliRunner().invoke(
            app, ["submit", str(catalogue), "--key", "sku", "--template", "{title}", "--catalogue", "photos", *args]
        )
    finally:
        get_settings.cache_clear()
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert "Traceback" not in output
    where = f"{catalogue}:3: field {field!r}: "
    lines = [line for line in output.splitlines() if line.startswith(where)]
    assert lines and any(words in line for line in lines), f"no {where!r} ... {words!r} in:\n{output}"
    if not env_vars:  # the good row is good (under a lowered limit it is over it too)
        assert not [line for line in output.splitlines() if line.startswith(f"{catalogue}:2:")], output
    assert state(env) == before and entries(env) == listed


SIZES = [(60, 52), (44, 70), (64, 64), (72, 58)]
COLOURS = [(200, 30, 30), (30, 90, 200), (40, 160, 60), (220, 180, 20), (120, 40, 140), (20, 20, 20)]


PRODUCT_COUNT = int(os.environ.get("PHOTOS_TEST_PRODUCTS", "8"))  # 40: the 40-product job


def many_products(root: Path, count: int = PRODUCT_COUNT) -> dict[str, tuple[str, str]]:
    """`count` products drawn into `root`: key -> (photo, mask or ""). Most have alpha; every 7th is opaque on plain
    white (the automatic mask); every 5th brings a mask file (a box around the product)."""
    rows: dict[str, tuple[str, str]] = {}
    for i in range(count):
        size, colour = SIZES[i % len(SIZES)], COLOURS[i % len(COLOURS)]
        key, plain = f"P-{i:02d}", i % 7 == 3
        product(root / f"{key}.png", colour, ("ellipse", "rectangle")[i % 2], size, alpha=not plain)
        mask = ""
        if i % 5 == 1 and not plain:
            mask = f"{key}-mask.png"
            shape = Image.new("L", size, 0)
            ImageDraw.Draw(shape).rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=255)
            shape.save(root / mask)
        rows[key] = (f"{key}.png", mask)
    return rows


def expected_product(photo: Image.Image, mask: Path | None) -> Image.Image:
    """The product mask the test knows without the worker's code: the mask file's >= 128, alpha >= 128, or (plain
    photos) every pixel not near white, which the automatic mask must keep whatever else it keeps."""
    if mask is not None:
        return Image.open(mask).convert("L").point(lambda v: 255 if v >= 128 else 0)
    if photo.mode != "RGBA":
        return photo.convert("L").point(lambda v: 255 if v < 255 - 24 else 0)
    return photo.getchannel("A").point(lambda v: 255 if v >= 128 else 0)


def kept_product(
    key: str, photo: Image.Image, output: Image.Image, mask_file: Path | None
) -> tuple[Image.Image, Image.Image]:
    """Asserts the product's pixels in `output` (the photo centred on it) are the photo's, byte for byte; returns
    the placed crop and the product mask it was compared under."""
    left, top = (output.width - photo.width) // 2, (output.height - photo.height) // 2
    placed = output.crop((left, top, left + photo.width, top + photo.height))
    mask = expected_product(photo, mask_file)
    inside, kept = Image.new("RGB", photo.size), Image.new("RGB", photo.size)
    inside.paste(photo.convert("RGB"), (0, 0), mask)
    kept.paste(placed, (0, 0), mask)
    assert kept.tobytes() == inside.tobytes(), f"{key}: a product pixel changed"
    assert mask.histogram()[255] > 100, key  # the check compared a real product
    return placed, mask


def background_job(env: Env, catalogue: Path, count: int, *, timeout: float) -> int:
    """Submits `catalogue` in background mode at one step, starts a worker and waits until all `count` succeeded."""
    args = ("--mode", "background", "--steps", "1", "--json")
    job = int(json.loads(env.cli_submit(catalogue, *args, template="{title} on marble").stdout)["job"])
    env.start_worker()
    counts = env.wait_for(job, finished, timeout=timeout)
    assert counts["succeeded"] == count, counts
    return job


def outputs(
    env: Env, job: int, root: Path, photos: Mapping[str, tuple[str, str | None]]
) -> Iterator[tuple[str, Image.Image, Image.Image, Path | None]]:
    """Each product's key, photo, stored output and mask file."""
    storage = env.storage()
    for key, (name, mask_name) in photos.items():
        output = Image.open(io.BytesIO(storage.get(f"jobs/{job}/{key}/0.png"))).convert("RGB")
        yield key, Image.open(root / name), output, root / mask_name if mask_name else None


@pytest.mark.parametrize("combo", ["embedded", "pg-redis-s3"])
def test_background_mode_keeps_every_product_pixel_of_every_product(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, combo: str
) -> None:
    env = installation_on(request, tmp_path, tiny_model, combo)
    try:
        env.vars |= {"PIXELMILL_IMAGE_CHECKER": "none", "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true"}
        root = tmp_path / "photos"
        root.mkdir()
        photos = many_products(root)
        env.cli("tenants", "set", "default", "--source-root", str(root))
        catalogue = tmp_path / "background.csv"
        sizes = {"P-00": "96x80"}  # a row's own size: the photo centred on it, unscaled
        catalogue.write_text(
            "sku,title,image,mask,size\n"
            + "".join(f"{k},thing,{p},{m},{sizes.get(k, '')}\n" for k, (p, m) in photos.items())
        )
        job = background_job(env, catalogue, len(photos), timeout=150)
        for key, photo, output, mask_file in outputs(env, job, root, photos):
            rounded = (max(64, -(-photo.width // 8) * 8), max(64, -(-photo.height // 8) * 8))
            assert output.size == (tuple(map(int, sizes[key].split("x"))) if key in sizes else rounded)
            placed, mask = kept_product(key, photo, output, mask_file)
            background = ImageChops.invert(mask)  # generated, not copied: most of it differs from the photo
            differs = ImageChops.difference(placed, photo.convert("RGB")).convert("L").point(lambda v: 255 if v else 0)
            changed = ImageChops.multiply(differs, background).histogram()[255]
            assert changed > background.histogram()[255] // 2, key
        sheet = tmp_path / "sheet.html"  # the contact sheet shows each photo beside its output
        env.cli("sheet", "--job", str(job), "-o", str(sheet))
        page = sheet.read_text()
        start = page.index('<script id="tiles" type="application/json">') + len(
            '<script id="tiles" type="application/json">'
        )
        tiles = {t["k"]: t for t in json.loads(page[start : page.index("</script>", start)])}
        for key, (name, _) in photos.items():
            assert tiles[key]["src"] and tiles[key]["in"] == thumbnail((root / name).read_bytes()), key
    finally:
        env.close()


def test_restyle_differs_from_its_photo_and_repeats_for_its_seed(tiny_model: Path) -> None:
    from worker.engine.interface import Request
    from worker.engine.torch_engine import TorchEngine

    engine = TorchEngine(str(tiny_model), device="cpu")
    photo = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(photo).ellipse((16, 12, 48, 52), fill=(200, 30, 30))

    def restyle(seed: int, strength: float = 0.6) -> bytes:
        request = Request(
            ["a red mug"], [""], [seed], 64, 64, 3, 5.0, mode="restyle", strength=strength, images=[photo]
        )
        return engine.generate(request).images[0].tobytes()

    first = restyle(7)
    assert first != photo.tobytes()
    assert restyle(7) == first
    assert restyle(8) != first


def test_a_new_photo_is_changed_and_the_same_photo_unchanged(installation: Env, tmp_path: Path) -> None:
    env = installation
    root: Path = env.root  # type: ignore[attr-defined]
    product(root / "night-a.png", (200, 30, 30), "ellipse", (64, 64))
    product(root / "night-b.png", (30, 90, 200), "rectangle", (64, 64))
    catalogue = tmp_path / "nightly.csv"
    catalogue.write_text("sku,title,image\nN-A,mug,night-a.png\nN-B,box,night-b.png\n")

    def night() -> dict[str, int]:
        args = ("--mode", "background", "--catalogue", "shop-photos", "--json")
        changes: dict[str, int] = json.loads(env.cli_submit(catalogue, *args, template="{title}").stdout)["changes"]
        return changes

    assert night()["new"] == 2
    product(root / "night-b.png", (30, 200, 90), "rectangle", (64, 64))  # a new photo under the same path and key
    second = night()
    assert (second["changed"], second["unchanged"], second.get("new", 0)) == (1, 1, 0), second


def test_the_manifest_records_each_photo_and_its_sha256(installation: Env, tmp_path: Path) -> None:
    import hashlib

    env = installation
    root: Path = env.root  # type: ignore[attr-defined]
    catalogue = tmp_path / "manifest.csv"
    catalogue.write_text("sku,title,image\nM-1,mug,MUG-1.png\nM-2,box,link-in.png\n")
    job = json.loads(env.cli_submit(catalogue, "--mode", "restyle", "--json", template="{title}").stdout)["job"]
    out = tmp_path / "manifest.jsonl"
    env.cli("manifest", "--job", str(job), "--format", "jsonl", "--output", str(out))
    rows = {row["key"]: row for row in map(json.loads, out.read_text().splitlines())}
    want = hashlib.sha256((root / "MUG-1.png").read_bytes()).hexdigest()
    for key in ("M-1", "M-2"):  # the link inside the root is recorded as what it resolves to
        assert (rows[key]["input"], rows[key]["input_sha256"]) == (str((root / "MUG-1.png").resolve()), want)


def test_the_tiny_inpainting_model_makes_background_items_and_keeps_the_product(tmp_path: Path) -> None:
    from worker import photos
    from worker.engine.interface import Request
    from worker.engine.tiny import build_tiny_inpaint_pipeline
    from worker.engine.torch_engine import TorchEngine

    path = product(tmp_path / "mug.png", (200, 30, 30), "ellipse", (60, 52))
    model = build_tiny_inpaint_pipeline(tmp_path / "tiny-inpaint")
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    engine = TorchEngine(str(model), device="cpu")  # from_pretrained, as a real inpainting checkpoint
    assert engine.pipe.unet.config.in_channels == 9
    import hashlib

    inputs = {"image": str(path), "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    placed = photos.place(inputs, 64, 56, mode="background")
    request = Request(
        ["mug on a table"],
        [""],
        [3],
        64,
        56,
        2,
        5.0,
        mode="background",
        images=[placed.canvas],
        masks=[placed.inpaint_mask()],
    )
    made = photos.composite(engine.generate(request).images[0], placed)
    assert made.size == (64, 56)
    photo, mask = Image.open(path), Image.open(path).getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    crop = made.crop((2, 2, 62, 54))
    kept, want = Image.new("RGB", photo.size), Image.new("RGB", photo.size)
    kept.paste(crop, (0, 0), mask)
    want.paste(photo.convert("RGB"), (0, 0), mask)
    assert kept.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="inpainting model"):
        engine.generate(Request(["mug"], [""], [3], 64, 64, 2, 5.0))


def test_the_automatic_mask_takes_the_plain_background_connected_to_the_border() -> None:
    from worker.photos import auto_mask

    photo = Image.new("RGB", (64, 48), (250, 250, 250))  # near-white studio background
    draw = ImageDraw.Draw(photo)
    draw.rectangle((16, 8, 47, 39), fill=(30, 90, 200))
    draw.rectangle((28, 20, 35, 27), fill=(255, 255, 255))  # a white hole closed in by the product: product
    mask = auto_mask(photo)
    assert mask.getpixel((0, 0)) == 0 and mask.getpixel((63, 47)) == 0 and mask.getpixel((8, 24)) == 0
    assert mask.getpixel((20, 10)) == 255 and mask.getpixel((31, 23)) == 255
    assert mask.histogram()[255] == 32 * 32  # exactly the product's box, its hole included


def test_v1_rows_name_photos_under_their_own_tenants_roots_only(env: Env, tmp_path: Path) -> None:
    from sqlalchemy import select
    from test_intake_tenants import tenants

    from contract.schema import Event, Item
    from producer import request_v1

    alice_root, bob_root = tmp_path / "alice", tmp_path / "bob"
    alice_root.mkdir()
    bob_root.mkdir()
    product(alice_root / "mug.png", (200, 30, 30), "ellipse", (60, 52))
    owners = {
        name: tenants(env, name, source_roots=(str(root),))[name]
        for name, root in (("alice", alice_root), ("bob", bob_root))
    }
    settings, ledger = env.settings(), env.ledger()

    def intake(tenant: str, image: str, rid: str) -> list[str]:
        message = {
            "v": 1,
            "request_id": rid,
            "rows": [{"sku": "M-1", "title": "mug", "image": image}],
            "key": "sku",
            "template": "{title} on marble",
            "options": {"mode": "background", "steps": 2},
            "events": ["item.succeeded"],
        }
        return request_v1.intake(settings, ledger, message, tenant=owners[tenant]).problems

    try:
        refused = intake("bob", str(alice_root / "mug.png"), "bob-1")  # another tenant's photo
        assert len(refused) == 1 and "field 'image'" in refused[0] and "not under an input root" in refused[0]
        assert intake("alice", "http://example.com/mug.png", "alice-0")[0].endswith(
            "is a URL; give a path under the tenant's input root or an s3:// key under its s3 root (other URLs are "
            "never read)"
        )
        assert intake("alice", "mug.png", "alice-1") == []  # relative: under alice's first root
        with ledger.session(readonly=True) as session:
            (inputs,) = session.scalars(select(Item.inputs)).all()
            (job,) = session.scalars(select(Item.job_id)).all()
        assert inputs is not None and inputs["image"] == str((alice_root / "mug.png").resolve())
        env.vars |= {"PIXELMILL_IMAGE_CHECKER": "none", "PIXELMILL_POLICY_ALLOW_CHECKER_OFF": "true"}
        env.start_worker()
        deadline = time.monotonic() + 120
        while True:  # alice's job: the status helpers read the tenant `default`'s
            with ledger.session(readonly=True) as session:
                bodies = session.scalars(select(Event.body).where(Event.type == "item.succeeded")).all()
            if bodies or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert len(bodies) == 1, env.worker_logs()[-3000:]
        data = bodies[0]["data"]  # the event names the photo the item was made from
        assert (data["key"], data["input"], data["input_sha256"]) == ("M-1", inputs["image"], inputs["image_sha256"])
    finally:
        ledger.close()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_photos_are_read_and_hashed_as_stored(tmp_path: Path, fmt: str) -> None:
    import hashlib

    from producer.catalogue.inputs import check_input

    path = tmp_path / f"photo.{fmt.lower()}"
    Image.effect_noise((70, 50), 40).convert("RGB").save(path, fmt)
    checked = check_input(path.name, [str(tmp_path)], max_bytes=10**6, max_pixels=10**6)
    assert (checked.path, checked.width, checked.height) == (str(path.resolve()), 70, 50)
    assert checked.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- brand LoRAs -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different tiny LoRAs, as `pixelmill model tiny-lora` writes them."""
    from worker.engine.tiny import build_tiny_lora

    base = tmp_path_factory.mktemp("loras")
    return build_tiny_lora(base / "brand-a.safetensors", seed=1), build_tiny_lora(base / "brand-b.safetensors", seed=2)


def test_lora_at_scale_0_is_the_base_model_exactly_and_at_scale_1_another_image(
    tiny_model: Path, loras: tuple[Path, Path]
) -> None:
    from worker.engine.interface import Request
    from worker.engine.lora import LoraChanged, file_sha256
    from worker.engine.torch_engine import TorchEngine

    engine = TorchEngine(str(tiny_model), device="cpu")

    def make(lora: Path | None = None, scale: float = 1.0) -> bytes:
        sha = file_sha256(str(lora)) if lora else None
        request = Request(
            ["a red mug"],
            [""],
            [7],
            64,
            64,
            2,
            5.0,
            lora=str(lora) if lora else None,
            lora_sha256=sha,
            lora_scale=scale,
        )
        return engine.generate(request).images[0].tobytes()

    base = make()
    brand_a, brand_b = loras
    assert make(brand_a, 0.0) == base
    at_one = make(brand_a, 1.0)
    assert at_one != base
    assert make(brand_b, 1.0) not in (base, at_one)
    assert make(brand_a, 0.5) not in (base, at_one)
    assert make() == base  # adapters loaded but off (and the fused attention back): the base model's bytes
    assert make(brand_a, 1.0) == at_one  # switching back reads nothing again
    assert engine.loras.loads == 2
    changed = Request(["a red mug"], [""], [7], 64, 64, 2, 5.0, lora=str(brand_b), lora_sha256="0" * 64)
    with pytest.raises(LoraChanged, match="changed since it was checked at submit"):
        engine.generate(changed)  # a file that is not the one checked at submit is never loaded
    assert engine.loras.loads == 2


def test_two_jobs_with_two_loras_on_one_worker_load_the_base_model_once(
    installation: Env, tmp_path: Path, loras: tuple[Path, Path]
) -> None:
    env = installation
    root: Path = env.root  # type: ignore[attr-defined]
    catalogue = tmp_path / "brand.csv"
    catalogue.write_text("sku,title,color\nL-1,mug,red\nL-2,box,blue\n")
    jobs = []
    for lora in loras:
        (root / lora.name).write_bytes(lora.read_bytes())
        args = ("--lora", lora.name, "--size", "64x64", "--steps", "2", "--json")
        jobs.append(json.loads(env.cli_submit(catalogue, *args).stdout)["job"])
    env.start_worker()
    try:
        for job in jobs:
            assert env.wait_for(job, finished, timeout=120)["succeeded"] == 2
        logs = env.worker_logs()
        assert logs.count("base model loaded") == 1, logs[-4000:]
        assert logs.count("lora loaded") == 2, logs[-4000:]
        db = sqlite3.connect(f"file:{env.data_dir / 'pixelmill.db'}?mode=ro", uri=True)
        try:  # another LoRA: another item identity
            digests = [
                {h for (h,) in db.execute("SELECT content_hash FROM items WHERE job_id = ?", (j,))} for j in jobs
            ]
        finally:
            db.close()
        assert len(digests[0]) == 2 and not digests[0] & digests[1]
    finally:
        for proc in env.workers:
            env.kill(proc)
        env.workers.clear()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--lora", "http://example.com/brand.safetensors"], "URL", id="url"),
        pytest.param(["--lora", "{outside}/brand.safetensors"], "not under PIXELMILL_LORA_DIR", id="outside"),
        pytest.param(["--lora", "MUG-1.png"], "not a .safetensors file", id="not-safetensors"),
        pytest.param(["--lora", "not-lora.safetensors"], "holds no LoRA weights", id="not-a-lora"),
        pytest.param(["--lora", "nope.safetensors"], "does not exist", id="missing"),
        pytest.param(["--lora-scale", "0.5"], "applies with a LoRA only", id="scale-without-lora"),
        pytest.param(["--lora", "brand-a.safetensors", "--lora-scale", "3"], "from 0 to 2", id="scale-over-2"),
    ],
)
def test_a_bad_lora_exits_2_naming_it_and_writes_nothing(
    installation: Env, tmp_path: Path, loras: tuple[Path, Path], args: list[str], words: str
) -> None:
    import torch
    from safetensors.torch import save_file

    env = installation
    root: Path = env.root  # type: ignore[attr-defined]
    (root / "brand-a.safetensors").write_bytes(loras[0].read_bytes())
    (env.outside / "brand.safetensors").write_bytes(loras[0].read_bytes())  # type: ignore[attr-defined]
    save_file({"unet.conv_in.weight": torch.zeros(2)}, str(root / "not-lora.safetensors"))
    catalogue = tmp_path / "brand.csv"
    catalogue.write_text("sku,title,color\nB-1,mug,red\n")
    before = state(env)
    result = env.cli_submit(catalogue, *[fill(a, env) for a in args], check=False)
    assert result.returncode == 2, result.stderr
    assert "lora" in result.stderr and words in result.stderr, result.stderr
    assert state(env) == before


def test_the_demos_product_photos_pass_the_submit_checks_with_their_alpha_as_mask(tmp_path: Path) -> None:
    from pixelmill.cli.demo_photos import PRODUCTS, photo_rows
    from producer.catalogue.inputs import check_input

    rows = photo_rows(tmp_path)
    assert [r["sku"] for r in rows] == [p[0] for p in PRODUCTS]
    for row, (_, _, _, _, size) in zip(rows, PRODUCTS, strict=True):
        checked = check_input(str(row["image"]), [str(tmp_path)], max_bytes=1 << 20, max_pixels=1 << 20)
        assert checked.alpha and (checked.width, checked.height) == size
        alpha = Image.open(str(row["image"])).getchannel("A")
        product = alpha.histogram()[255]
        assert 0.3 * size[0] * size[1] < product < 0.95 * size[0] * size[1], row  # a product, with background
