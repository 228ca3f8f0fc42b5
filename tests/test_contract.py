"""The shared contract: settings, message format, chunk planning, storage, encoding, schema, planning."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngImageFile
from sqlalchemy import create_engine

from conftest import write_catalogue
from contract.ledger import make_engine, upgrade
from contract.params import GenerationParams
from contract.queue import Chunk, QueuedItem, plan_chunks
from contract.schema import Base
from contract.settings import Settings, SettingsError, load_settings
from contract.storage import LocalStorage, open_storage
from contract.tenants import DEFAULT_TENANT_ID
from producer.catalogue import Defaults
from producer.planning import plan
from worker.encode import encode

ROOT = Path(__file__).resolve().parent.parent


# --- settings -----------------------------------------------------------------------------------------


def test_defaults_are_the_embedded_ones(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/pixelmill.db"
    assert s.resolved_storage_url == (tmp_path.resolve() / "images").as_uri()
    assert s.embedded_broker and s.default_model == str(tmp_path.resolve() / "models" / "tiny")


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELMILL_BATCH_SIZE", "lots")
    with pytest.raises(SettingsError, match="PIXELMILL_BATCH_SIZE"):
        load_settings()
    monkeypatch.delenv("PIXELMILL_BATCH_SIZE")
    monkeypatch.setenv("PIXELMILL_LEASE_SECONDS", "100")
    with pytest.raises(SettingsError, match="PIXELMILL_LEASE_SECONDS must exceed PIXELMILL_TASK_TIME_LIMIT"):
        load_settings()


def test_cli_reports_a_bad_setting_by_name(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pixelmill", "jobs"],
        capture_output=True,
        text=True,
        env={"PIXELMILL_IMAGE_FORMAT": "gif", "PIXELMILL_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "PIXELMILL_IMAGE_FORMAT" in proc.stderr and "Traceback" not in proc.stderr


# --- messages and chunks ------------------------------------------------------------------------------


def test_chunk_message_round_trip_is_plain_json() -> None:
    chunk = Chunk(job=7, items=(1, 2, 3))
    body = json.loads(json.dumps(chunk.to_message()))
    assert body == {"v": 1, "job": 7, "items": [1, 2, 3]}
    assert Chunk.from_message(body) == chunk


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"v": 2, "job": 1, "items": [1]},
        {"v": 1, "job": "1", "items": [1]},
        {"v": 1, "job": 1, "items": []},
        {"v": 1, "job": 1, "items": ["x"]},
    ],
)
def test_malformed_messages_are_rejected(body: object) -> None:
    with pytest.raises(ValueError):
        Chunk.from_message(body)


def test_chunks_share_job_and_pipeline_params() -> None:
    a = GenerationParams(width=512, height=512, steps=30, guidance=7.5)
    b = GenerationParams(width=768, height=512, steps=30, guidance=7.5)
    items = [QueuedItem(i, 1, a) for i in range(5)] + [QueuedItem(10, 1, b), QueuedItem(11, 2, a)]
    chunks = plan_chunks(items, 2)
    assert chunks == [Chunk(1, (0, 1)), Chunk(1, (2, 3)), Chunk(1, (4,)), Chunk(1, (10,)), Chunk(2, (11,))]


# --- planning (seeds, variants, hashes) ---------------------------------------------------------------


def test_plan_is_deterministic_and_per_row_seeds_win(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("sku,title,seed,images_per_item\nA,mug,,2\nB,cup,42,2\n")
    defaults = Defaults(template="photo of {title}", key_column="sku")
    one = plan(path, defaults, seed=0, model="m")
    assert [(i.key, i.variant) for i in one.items] == [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
    assert [i.seed for i in one.items][2:] == [42, 43]
    assert one.items[0].seed != one.items[1].seed
    two = plan(path, defaults, seed=0, model="m")
    assert [i.content_hash for i in one.items] == [i.content_hash for i in two.items]
    other_seed = plan(path, defaults, seed=1, model="m")
    assert other_seed.items[0].seed != one.items[0].seed and other_seed.items[2].seed == 42
    top = tmp_path / "top.csv"
    top.write_text(f"sku,title,seed,images_per_item\nT,mug,{2**63 - 1},2\n")
    assert [i.seed for i in plan(top, defaults, seed=0, model="m").items] == [2**63 - 1, 0]  # wraps, fits BIGINT
    other_model = plan(path, defaults, seed=0, model="n")
    assert all(a.content_hash != b.content_hash for a, b in zip(one.items, other_model.items))


def test_seeds_do_not_depend_on_row_order(tmp_path: Path) -> None:
    forward = write_catalogue(tmp_path / "f.csv", 6)
    lines = forward.read_text().splitlines()
    backward = tmp_path / "b.csv"
    backward.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    defaults = Defaults(template="{title}", key_column="sku")
    seeds_f = {i.key: i.seed for i in plan(forward, defaults, seed=3, model="m").items}
    seeds_b = {i.key: i.seed for i in plan(backward, defaults, seed=3, model="m").items}
    assert seeds_f == seeds_b and len(set(seeds_f.values())) == 6


# --- storage ------------------------------------------------------------------------------------------


def test_local_storage_creates_each_object_once_and_stays_inside_its_root(tmp_path: Path) -> None:
    store = open_storage(Settings(data_dir=tmp_path, storage_url=(tmp_path / "images").as_uri()))
    assert isinstance(store, LocalStorage)
    assert store.create("jobs/1/A/0.png", b"first", "image/png") is True
    assert store.create("jobs/1/A/0.png", b"second", "image/png") is False  # the first complete write wins
    assert store.get("jobs/1/A/0.png") == b"first" and store.exists("jobs/1/A/0.png")
    assert [p.name for p in (tmp_path / "images" / "jobs" / "1" / "A").iterdir()] == ["0.png"]  # no temp files
    with pytest.raises(ValueError, match="escapes"):
        store.create("../outside.png", b"x", "image/png")
    with pytest.raises(ValueError, match="PIXELMILL_STORAGE_URL"):
        open_storage(Settings(data_dir=tmp_path, storage_url="ftp://example/images"))


# --- encoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_images_carry_their_generation_params(fmt: str) -> None:
    image = PILImage.new("RGB", (16, 24), (200, 30, 30))
    meta = {"prompt": "studio photo of a Café mug", "seed": "12345", "model": "/models/tiny", "steps": "30"}
    data = encode(image, fmt, meta)
    loaded = PILImage.open(io.BytesIO(data))
    assert loaded.format == {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt] and loaded.size == (16, 24)
    if fmt == "png":
        assert isinstance(loaded, PngImageFile)
        assert {k: loaded.text[k] for k in meta} == meta
    else:
        assert json.loads(loaded.getexif()[0x010E]) == meta
    assert encode(image, fmt, meta) == data  # deterministic bytes: a re-run writes the same object


# --- schema -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migrations_build_exactly_the_orm_schema(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An empty database of each kind, upgraded to head, has exactly the ORM's tables, columns, types,
    indexes and named constraints (no drift between models and migrations)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = None
    if database == "postgresql":
        test_servers = request.getfixturevalue("test_servers")
        url = test_servers.get("postgres").create_database(test_servers.next_name("schema"))
    engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
    upgrade(engine)
    with engine.connect() as conn:
        assert engine.dialect.name == database
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_migration_0010_copies_the_numeric_scores_of_succeeded_images(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy import text

    url = None
    if database == "postgresql":
        test_servers = request.getfixturevalue("test_servers")
        url = test_servers.get("postgres").create_database(test_servers.next_name("scores"))
    engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
    upgrade(engine, "0009")
    scores = {"clip_score": 31.5, "sharpness": 400, "nsfw_flag": True, "label": "x", "none": None}
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO jobs (id, name, model, params, counts, created) VALUES (1, 'j', 'm', '{}', '{}', :t)"),
            {"t": "2026-11-30 00:00:00"},
        )
        for item_id, state in ((1, "succeeded"), (2, "blocked")):
            conn.execute(
                text(
                    "INSERT INTO items (id, job_id, item_key, variant, prompt, negative, params, seed, content_hash, "
                    "state, attempts, created) VALUES (:i, 1, :k, 0, 'p', '', '{}', 1, :k, :s, 1, :t)"
                ),
                {"i": item_id, "k": f"K{item_id}", "s": state, "t": "2026-11-30 00:00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO images (item_id, storage_key, sha256, width, height, bytes, format, engine_id, "
                    "timings, scores, candidate, visibility, created) VALUES (:i, :k, :h, 1, 1, 1, 'png', 'e', '{}', "
                    ":scores, 0, 'public', :t)"
                ),
                {"i": item_id, "k": f"k{item_id}", "h": "0" * 64, "scores": json.dumps(scores), "t": "2026-11-30"},
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT item_id, name, job_id, value FROM image_scores ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [
        (1, "clip_score", 1, 31.5),
        (1, "nsfw_flag", 1, 1.0),
        (1, "sharpness", 1, 400.0),
    ]
    engine.dispose()


def test_head_constant_is_the_newest_migration(tmp_path: Path) -> None:
    """`ledger.HEAD` (read without Alembic on every start) names the one head of migrations/, and a ledger at
    an older revision is not current."""
    from contract.ledger import HEAD, migration_heads, schema_is_current

    assert migration_heads() == {HEAD}
    engine = make_engine(Settings(data_dir=tmp_path))
    assert not schema_is_current(engine)  # empty: no alembic_version table
    upgrade(engine, "0007")
    assert not schema_is_current(engine)
    upgrade(engine)
    assert schema_is_current(engine)
    engine.dispose()


def test_ledger_migrates_itself_on_first_use(tmp_path: Path) -> None:
    from contract.ledger import Ledger, table_names

    ledger = Ledger(Settings(data_dir=tmp_path))
    assert {"jobs", "items", "images", "alembic_version"} <= table_names(ledger.engine)
    mode = (
        create_engine(f"sqlite:///{tmp_path / 'pixelmill.db'}")
        .connect()
        .exec_driver_sql("PRAGMA journal_mode")
        .scalar()
    )
    assert mode == "wal"


def test_a_deferred_checkpoint_lasts_one_commit(tmp_path: Path) -> None:
    """`defer_checkpoint` turns SQLite's WAL auto-checkpoint off for one commit (the submit's big one); the
    connection's next write transaction turns it on again, and write transactions without it are left alone."""
    from sqlalchemy.orm import Session

    from contract.ledger import Ledger, defer_checkpoint

    ledger = Ledger(Settings(data_dir=tmp_path))
    with ledger.engine.connect() as conn:

        def pages() -> int:
            return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

        with Session(bind=conn) as session:
            defer_checkpoint(session)
            assert pages() == 0
            session.commit()
        with conn.begin():
            assert pages() == 1000  # the connection's next write transaction reset it
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=500")
        with conn.begin():
            assert pages() == 500  # no deferral pending: the setting is not touched
    ledger.close()


# --- README and CI agree ------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block, "README must open with a bash block holding the two commands"
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and commands[0].endswith("pixelmill demo")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_readers_do_not_take_the_write_lock(tmp_path: Path) -> None:
    """A read-only session runs while a writer holds the SQLite lock; a second writer has to wait."""
    import sqlalchemy.exc
    from sqlalchemy import select

    from contract.ledger import Ledger
    from contract.schema import Job

    settings = Settings(data_dir=tmp_path, sqlite_busy_timeout=0.2)
    writer, other = Ledger(settings), Ledger(settings)
    with writer.session() as held:
        held.add(Job(tenant_id=DEFAULT_TENANT_ID, name="j", model="m"))
        held.flush()  # the write lock is now held until this block ends
        with other.session(readonly=True) as reader:
            assert reader.scalars(select(Job)).all() == []  # committed state only
        with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
            with other.session() as second:
                second.add(Job(tenant_id=DEFAULT_TENANT_ID, name="k", model="m"))


def test_content_hash_is_the_sha256_of_the_json_modules_canonical_form() -> None:
    """The hand-written payload equals json.dumps' (quotes, escapes, non-ASCII, floats), so hashes of items
    submitted before and after it was introduced still match and resubmission skips them."""
    import hashlib
    import random

    from contract.identity import canonical_json, content_hash
    from contract.params import GenerationParams

    rnd = random.Random(0)
    chars = 'ab "\\\n\t\x01é€😀\u2028/'
    for _ in range(2000):
        values = {
            "prompt": "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 20))),
            "negative": "".join(rnd.choice(chars) for _ in range(3)),
            "params": GenerationParams(
                width=rnd.choice([64, 512]),
                height=512,
                steps=rnd.randint(1, 200),
                guidance=rnd.choice([7.5, 0, 1e-7, 12.345678901234, 3]),
            ),
            "seed": rnd.randint(0, 2**63 - 1),
            "model": rnd.choice(["/m", 'hub/id"x']),
        }
        assert content_hash(**values) == hashlib.sha256(canonical_json(**values).encode()).hexdigest()  # type: ignore[arg-type]
