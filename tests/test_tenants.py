"""contract/tenants.py: names, tokens stored as digests, rotation and revocation, and migration 0011's default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from contract.ledger import Ledger
from contract.schema import TenantToken
from contract.settings import Settings
from contract.tenants import (
    DEFAULT_TENANT,
    DEFAULT_TENANT_ID,
    TenantError,
    add_tenant,
    check_name,
    configure_tenant,
    ensure_tenant,
    find_tenant,
    list_tenants,
    revoke_tenant,
    rotate_token,
    tenant_for_token,
    token_digest,
)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))


def test_the_migration_makes_the_default_tenant_with_its_fixed_id(ledger: Ledger) -> None:
    with ledger.session() as session:
        found = find_tenant(session, DEFAULT_TENANT)
    assert found is not None and found.id == DEFAULT_TENANT_ID
    assert found.reply_prefix == "pixelmill.reply.default."


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 41, "ä", "a b", "x\n"])
def test_a_bad_tenant_name_is_refused(name: str) -> None:
    with pytest.raises(TenantError, match="lower-case"):
        check_name(name)


def test_a_token_is_shown_once_and_stored_only_as_its_digest(ledger: Ledger) -> None:
    with ledger.session() as session:
        acme, token = add_tenant(session, "acme")
    assert token is not None and token.startswith("pm_") and len(token) > 40
    with ledger.session() as session:
        stored = session.scalars(select(TenantToken.digest)).all()
        assert stored == [token_digest(token)]
        assert token not in stored
        assert tenant_for_token(session, token) == acme
        assert tenant_for_token(session, token + "x") is None
        assert tenant_for_token(session, "") is None


def test_rotation_revokes_the_old_token_unless_kept(ledger: Ledger) -> None:
    with ledger.session() as session:
        _, first = add_tenant(session, "acme")
        second = rotate_token(session, "acme", keep_old=True)
    with ledger.session() as session:
        assert first is not None and tenant_for_token(session, first) is not None
        assert tenant_for_token(session, second) is not None
        third = rotate_token(session, "acme")
    with ledger.session() as session:
        assert tenant_for_token(session, first) is None
        assert tenant_for_token(session, second) is None
        assert tenant_for_token(session, third) is not None


def test_a_revoked_tenant_loses_every_token_and_its_name(ledger: Ledger) -> None:
    with ledger.session() as session:
        _, token = add_tenant(session, "acme")
        revoke_tenant(session, "acme")
    with ledger.session() as session:
        assert token is not None and tenant_for_token(session, token) is None
        assert find_tenant(session, "acme") is None
        with pytest.raises(TenantError, match="revoked"):
            ensure_tenant(session, "acme")
        with pytest.raises(TenantError, match="exists"):
            add_tenant(session, "acme")
        [summary] = [t for t in list_tenants(session) if t.name == "acme"]
        assert summary.revoked is not None and summary.tokens == 0


def test_ensure_tenant_makes_a_missing_tenant_once(ledger: Ledger) -> None:
    with ledger.session() as session:
        first = ensure_tenant(session, "team-b")
    with ledger.session() as session:
        assert ensure_tenant(session, "team-b") == first
        assert [t.name for t in list_tenants(session)] == ["default", "team-b"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"reply_prefix": "unacked"}, "the broker, Celery or pixelmill uses"),
        ({"reply_prefix": "celery."}, "the broker, Celery or pixelmill uses"),
        ({"reply_prefix": "pixelmill.reply."}, "overlaps tenant default"),  # would read every tenant's replies
        ({"reply_prefix": "pixelmill.reply.default.b."}, "overlaps tenant default"),
        ({"reply_prefix": "bad name "}, "letters, digits"),
        ({"source_roots": ["relative/dir"]}, "absolute directory or s3://"),
        ({"source_roots": ["s3:///key"]}, "absolute directory or s3://"),
        ({"webhook_hosts": ["not a host!"]}, "--webhook-host"),
    ],
)
def test_what_a_tenant_may_point_at_is_checked_when_added_or_changed(
    ledger: Ledger, change: dict[str, object], problem: str
) -> None:
    with ledger.session() as session:
        with pytest.raises(TenantError, match=problem):
            add_tenant(session, "acme", **change)  # type: ignore[arg-type]
        add_tenant(session, "acme")
        with pytest.raises(TenantError, match=problem):
            configure_tenant(session, "acme", **change)  # type: ignore[arg-type]
        assert find_tenant(session, "acme") == configure_tenant(session, "acme")  # nothing changed


def test_the_operator_gives_the_default_tenant_source_roots_and_clears_them(ledger: Ledger, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from contract.settings import get_settings
    from pixelmill.cli import app

    get_settings.cache_clear()  # the CLI reads the settings once per process: these, not an earlier test's

    environ = {"PIXELMILL_DATA_DIR": str(tmp_path), "PIXELMILL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    runner = CliRunner()
    given = runner.invoke(
        app, ["tenants", "set", "default", "--source-root", "/srv/exports", "--source-root", "s3://b/in/"], env=environ
    )
    assert given.exit_code == 0, given.output
    with ledger.session() as session:
        found = find_tenant(session, DEFAULT_TENANT)
        assert found is not None and found.source_roots == ("/srv/exports", "s3://b/in/")
        assert found.reply_prefix == "pixelmill.reply.default."  # not named: kept
    refused = runner.invoke(app, ["tenants", "set", "default", "--reply-prefix", "unacked"], env=environ)
    assert refused.exit_code == 2 and "uses itself" in refused.output
    cleared = runner.invoke(app, ["tenants", "set", "default", "--clear-source-roots"], env=environ)
    assert cleared.exit_code == 0, cleared.output
    with ledger.session() as session:
        found = find_tenant(session, DEFAULT_TENANT)
        assert found is not None and found.source_roots == ()
    missing = runner.invoke(app, ["tenants", "set", "nobody", "--clear-source-roots"], env=environ)
    assert missing.exit_code == 2 and "no such tenant" in missing.output
    get_settings.cache_clear()


def test_a_tenants_fair_share_set_on_the_cli_reads_back_from_tenants_list(ledger: Ledger, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from contract.settings import get_settings
    from pixelmill.cli import app

    get_settings.cache_clear()
    environ = {"PIXELMILL_DATA_DIR": str(tmp_path), "PIXELMILL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    runner = CliRunner()
    try:
        assert runner.invoke(app, ["tenants", "add", "acme"], env=environ).exit_code == 0
        given = runner.invoke(app, ["tenants", "set", "acme", "--weight", "3", "--max-in-flight", "5000"], env=environ)
        assert given.exit_code == 0, given.output
        listed = runner.invoke(app, ["tenants", "list", "--json"], env=environ)
        shares = {t["name"]: (t["weight"], t["max_in_flight"], t["paused"]) for t in json.loads(listed.stdout)}
        assert shares == {"default": (1, None, False), "acme": (3, 5000, False)}
        table = runner.invoke(app, ["tenants", "list"], env={**environ, "COLUMNS": "250"}).output
        assert "≤ 5000" in table and "no limit" in table
    finally:
        get_settings.cache_clear()


def test_a_rejection_that_made_no_job_is_listed_only_to_its_tenant(ledger: Ledger, tmp_path: Path) -> None:
    """`job.rejected` of a request that wrote nothing carries the tenant that sent it (migration 0012)."""
    import json

    from typer.testing import CliRunner

    from contract import events
    from contract.settings import get_settings
    from pixelmill.cli import app

    with ledger.session() as session:
        shop, _ = add_tenant(session, "shop", with_token=False)
        for tenant_id, request_id in ((DEFAULT_TENANT_ID, "default-bad"), (shop.id, "shop-bad")):
            events.emit(
                session,
                type_=events.JOB_REJECTED,
                scope=f"tenant:{tenant_id}:request:{request_id}",
                request_id=request_id,
                data={"problems": ["x"]},
                notify=events.Notify(reply_to=f"pixelmill.reply.{'default' if tenant_id == 1 else 'shop'}.r"),
                tenant_id=tenant_id,
            )
    get_settings.cache_clear()
    environ = {"PIXELMILL_DATA_DIR": str(tmp_path), "PIXELMILL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    seen = {}
    for tenant in ("default", "shop"):
        listed = CliRunner().invoke(app, ["--tenant", tenant, "events", "--json"], env=environ)
        assert listed.exit_code == 0, listed.output
        seen[tenant] = {row["request_id"] for row in json.loads(listed.stdout)}
    get_settings.cache_clear()
    assert seen == {"default": {"default-bad"}, "shop": {"shop-bad"}}
