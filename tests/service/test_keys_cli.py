"""`sparseqd keys list` and `sparseqd keys revoke`, against the database an API app serves from."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.cli import main
from service.settings import get_settings
from tests.helpers.api import new_key


@pytest.fixture
def cli(tmp_path, monkeypatch, make_app):
    """main(...) on the test app's database (the CLI reads SPARSEQ_* like the service)."""
    app = make_app()
    monkeypatch.setenv("SPARSEQ_DATABASE_URL", app.state.settings.resolved_database_url)
    monkeypatch.setenv("SPARSEQ_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield app
    get_settings.cache_clear()


def test_keys_list_shows_every_key_without_the_key_itself(cli, capsys):
    alice, bob = new_key(cli, "alice", name="laptop"), new_key(cli, "bob", name="ci")
    main(["keys", "list"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "owner", "name", "prefix"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"][2:4] == ["laptop", alice[:10]] and rows["bob"][2:4] == ["ci", bob[:10]]
    assert rows["alice"][-1] == "-"  # not revoked
    assert alice not in "\n".join(lines) and bob not in "\n".join(lines)


def test_a_revoked_key_is_refused_within_the_5_s_cache_window(cli, capsys):
    key = new_key(cli, "alice")
    other = new_key(cli, "bob")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(cli) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 200  # valid, and now cached
        main(["keys", "revoke", key[:10]])
        revoked_at = time.monotonic()
        assert "refuse it within 5 s" in capsys.readouterr().out
        while client.get("/v1/jobs", headers=headers).status_code == 200:
            assert time.monotonic() - revoked_at < 5.5, "still accepted after the cache window"
            time.sleep(0.1)
        refused = client.get("/v1/jobs", headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    main(["keys", "list"])
    revoked = [line for line in capsys.readouterr().out.splitlines() if line.split()[1] == "alice"]
    assert revoked[0].split()[-1] != "-"
    main(["keys", "revoke", revoked[0].split()[0]])  # by id, and again: idempotent
    assert "revoked key_" in capsys.readouterr().out


def test_revoking_an_unknown_key_exits_with_a_message(cli):
    with pytest.raises(SystemExit, match="no key 'sk_nothing'"):
        main(["keys", "revoke", "sk_nothing"])
