"""The demo's product photos (issue 25): a few simple products the demo draws itself (on transparent white, with
alpha, as a shop's cut-out photos come), submitted in background mode, and a contact sheet showing each photo beside
its output. Small on purpose: four items beside the 40 text items keep the demo about as fast as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from contract.settings import Settings
from producer.options import Options

if TYPE_CHECKING:
    from producer.status import JobStatus

PRODUCTS = (  # sku, title, body colour, shape, photo size (sides not multiples of 8: the canvas rounds them up)
    ("PHOTO-MUG", "red mug", (200, 40, 40), "mug", (60, 52)),
    ("PHOTO-BOTTLE", "blue bottle", (40, 90, 200), "bottle", (40, 76)),
    ("PHOTO-BOX", "green box", (40, 150, 70), "box", (64, 60)),
    ("PHOTO-BALL", "yellow ball", (225, 185, 30), "ball", (58, 58)),
)
# In the trained scene model's words (models/scenes64), so that it draws the background it is asked for.
TEMPLATE = "a {title} on a teal marble background"


def draw_product(path: Path, colour: tuple[int, int, int], shape: str, size: tuple[int, int]) -> Path:
    """One product photo: the product opaque, everything else fully transparent white (the alpha is the mask)."""
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGBA", size, (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    fill, dark = (*colour, 255), (*(c // 2 for c in colour), 255)
    if shape == "mug":
        draw.rectangle((4, 6, w - 18, h - 4), fill=fill)
        draw.ellipse((w - 26, h // 4, w - 4, h * 3 // 4), outline=dark, width=5)
    elif shape == "bottle":
        draw.rectangle((w // 3, 2, w * 2 // 3, 14), fill=dark)
        draw.rounded_rectangle((4, 12, w - 5, h - 3), radius=8, fill=fill)
    elif shape == "box":
        draw.rectangle((4, 10, w - 5, h - 4), fill=fill)
        draw.rectangle((w // 2 - 4, 10, w // 2 + 4, h - 4), fill=dark)
        draw.rectangle((4, 2, w - 5, 12), fill=dark)
    else:
        draw.ellipse((3, 3, w - 4, h - 4), fill=fill)
        draw.arc((3, 3, w - 4, h - 4), 200, 340, fill=(255, 255, 255, 255), width=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def photo_rows(directory: Path) -> list[dict[str, object]]:
    """The demo's photo rows, their photos drawn into `directory`."""
    return [
        {"sku": sku, "title": title, "image": str(draw_product(directory / f"{sku.lower()}.png", colour, shape, size))}
        for sku, title, colour, shape, size in PRODUCTS
    ]


def allow_photos(ledger: Any, tenant_id: int, directory: Path, console: Console) -> tuple[str, ...]:
    """Add `directory` to the demo tenant's input roots (an operator's `pixelmill tenants set default
    --source-root DIR`, done for the demo); returns the tenant's roots."""
    from contract.tenants import configure_tenant, tenant_by_id

    with ledger.session() as session:
        tenant = tenant_by_id(session, tenant_id)
        if tenant is None:  # the installation's `default` tenant is made by the ledger's migrations
            raise RuntimeError(f"tenant {tenant_id} is missing from the ledger; run `pixelmill db upgrade`")
        roots = tuple(tenant.source_roots)
        if str(directory) not in roots:
            roots = (*roots, str(directory))
            configure_tenant(session, tenant.name, source_roots=roots)
            console.print(f"input root {directory} added to tenant {tenant.name!r} (the demo's product photos)")
    return roots


def submit_photos(settings: Settings, ledger: Any, text: Options, console: Console) -> int:
    """The demo's product photos in background mode, as their own small job beside the text job `text` asked for;
    returns its id."""
    from dataclasses import replace

    from contract.tenants import DEFAULT_TENANT_ID
    from producer.request import make_request
    from producer.submit import submit_request

    directory = settings.data_path / "demo-photos"
    rows = photo_rows(directory)
    roots = allow_photos(ledger, DEFAULT_TENANT_ID, directory, console)
    options = replace(text, template=TEMPLATE, negative="", mode="background", name="demo-photos")
    asked = make_request(settings, options, rows=rows, tenant_id=DEFAULT_TENANT_ID, input_roots=roots)
    result = submit_request(settings, ledger, asked)
    console.print(f"job {result.job}: {result.items} product photos submitted in background mode")
    return result.job


SHEET = "demo-photos-sheet.html"  # in PIXELMILL_DATA_DIR


def write_photo_sheet(settings: Settings, ledger: Any, tenant_id: int, job: int) -> Path:
    """The photo job's contact sheet: each product photo beside its output."""
    from contract.storage import open_storage
    from pixelmill.cli.common import photo_reader
    from producer.sheet import write_sheet

    path = settings.data_path / SHEET
    with ledger.session(readonly=True) as session, open(path, "w", encoding="utf-8") as stream:
        write_sheet(
            session,
            stream,
            title=f"job {job} · demo product photos",
            tenant_id=tenant_id,
            job=job,
            storage=open_storage(settings),
            read_input=photo_reader(settings),
        )
    return path


def report(settings: Settings, ledger: Any, photos: JobStatus, console: Console) -> None:
    """The photo job's line in the demo's summary, and its contact sheet (kept as it is on a re-run in which
    every photo was already done: the new job has none to show)."""
    from contract.tenants import DEFAULT_TENANT_ID

    sheet = settings.data_path / SHEET
    if photos.total == 0 and sheet.exists():
        console.print(f"product photos: job {photos.job}, every photo already done; their outputs are in {sheet}")
        return
    sheet = write_photo_sheet(settings, ledger, DEFAULT_TENANT_ID, photos.job)
    console.print(
        f"product photos: job {photos.job}, {photos.succeeded} of {photos.total} in background mode; "
        f"each photo beside its output in {sheet}"
    )
