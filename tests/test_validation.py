"""Bad input gets a one-line error and exit 2, and damages nothing; secrets never leak."""

from __future__ import annotations

import sqlite3

import pytest

from analysis import cli
from analysis.devtools.simulator import synthetic_scenario
from analysis.store import SCHEMA_VERSION, open_store

from .helpers import FAST_FLAGS, SECRET_TOKEN, run_cli


def _one_line_exit_2(result):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.parametrize("store", ["/proc/rca-test/rca.sqlite", "/etc/hostname/rca.sqlite"])
def test_unwritable_store_path(sim, store):
    result = run_cli("scan", "--hub-url", sim.url, "--router-url", sim.router_url, "--store", store, *FAST_FLAGS)
    _one_line_exit_2(result)
    assert "store" in result.stderr


def test_newer_schema_is_refused_by_every_command(tmp_path, sim):
    path = tmp_path / "future.sqlite"
    open_store(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (?, 'future', 'x')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    before = path.read_bytes()
    for args in (["scan", "--hub-url", sim.url, "--router-url", sim.router_url, *FAST_FLAGS],
                 ["export", "findings"], ["diff"], ["prune", "--keep", "0"]):
        result = run_cli(*args, "--store", str(path))
        _one_line_exit_2(result)
        assert "newer" in result.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (["scan", "--hub-url", "http://"], "--hub-url"),
    (["scan", "--router-url", "http://user:pw@host/v1"], "HF_TOKEN"),
    (["scan", "--router-url", "http://host:99999/v1"], "--router-url"),
    (["scan", "--timeout", "0"], "--timeout"),
    (["scan", "--retries", "-1"], "--retries"),
    (["export", "findings", "--run", "abc"], "--run"),
    (["export", "blocklist", "--reasons", "not_found,bogus"], "bogus"),
])
def test_malformed_flags(tmp_path, args, words):
    store = tmp_path / "s.sqlite"
    if args[0] == "export":
        open_store(store).close()
    result = run_cli(*args, "--store", str(store))
    _one_line_exit_2(result)
    assert words in result.stderr


def test_tokens_echoed_by_upstream_are_scrubbed(make_sim, tmp_path):
    scenario = synthetic_scenario(6, 0, provider="p")
    scenario.models[0]["routes"] = {"*": {"kind": "echo_auth", "status": 400}}
    server = make_sim(scenario)
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "p",
                     "--store", str(store), *FAST_FLAGS, env={"HF_TOKEN": SECRET_TOKEN})
    assert result.returncode == 0, result.stderr
    with open_store(store) as s:
        probe = s.probes(1, "bench-org/model-000000").iloc[0]
    assert "bad request from Bearer ***" in probe["error_message"]
    assert SECRET_TOKEN.encode() not in store.read_bytes()


def test_token_echoed_in_a_401_is_scrubbed(make_sim, tmp_path):
    scenario = synthetic_scenario(3, 0, provider="p")
    scenario.token = "the-real-one"
    scenario.hub["echo_auth"] = True
    server = make_sim(scenario)
    store = tmp_path / "rca.sqlite"
    result = run_cli("scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "p",
                     "--store", str(store), *FAST_FLAGS, env={"HF_TOKEN": SECRET_TOKEN})
    assert result.returncode == 3
    assert SECRET_TOKEN not in result.stderr + result.stdout
    with open_store(store) as s:
        assert "***" in s.get_run(1).failure_message
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET_TOKEN.encode() not in path.read_bytes()


def test_internal_errors_are_one_scrubbed_line(monkeypatch, capsys):
    # A crash a real server cannot provoke on demand: an unexpected exception carrying the token.
    def explode(args):
        raise RuntimeError(f"connect failed with headers {{'Authorization': 'Bearer {SECRET_TOKEN}'}}")

    monkeypatch.setenv("HF_TOKEN", SECRET_TOKEN)
    monkeypatch.setattr(cli, "cmd_prune", explode)
    monkeypatch.setenv("RCA_DEBUG", "1")
    code = cli.main(["prune", "--keep", "1"])
    err = capsys.readouterr().err
    assert code == 4
    assert SECRET_TOKEN not in err and "internal error: RuntimeError" in err
    assert "Bearer ***" in err


def test_store_path_is_never_half_created_on_bad_input(tmp_path):
    store = tmp_path / "new" / "rca.sqlite"
    result = run_cli("scan", "--hub-url", "nonsense", "--store", str(store))
    _one_line_exit_2(result)
    assert not store.exists()


def test_export_out_writes_through_a_symlink_and_is_readable(sample_store, tmp_path):
    real = tmp_path / "shared" / "blocklist.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "current.csv"
    link.symlink_to(real)
    result = run_cli("export", "blocklist", "--store", str(sample_store), "--out", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and "\nmodel_id,provider,reason" in real.read_text()
    fresh = tmp_path / "fresh.csv"
    assert run_cli("export", "blocklist", "--store", str(sample_store), "--out", str(fresh)).returncode == 0
    assert fresh.stat().st_mode & 0o044 == 0o044  # readable by the gateway's user, not mkstemp's 0600


def test_another_applications_database_is_refused_untouched(tmp_path):
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id INTEGER, note TEXT)")
    db.execute("INSERT INTO runs VALUES (1, 'theirs')")
    db.commit()
    db.close()
    before = path.read_bytes()
    for args in (["export", "findings"], ["scan", "--hub-url", "http://127.0.0.1:9"]):
        result = run_cli(*args, "--store", str(path))
        _one_line_exit_2(result)
        assert "another application" in result.stderr
    assert path.read_bytes() == before
    assert not (tmp_path / "app.db-wal").exists()


def test_parse_error_body_scrubs_before_trimming():
    from analysis.pipeline.probe import parse_error_body

    body = ('{"error": {"message": "' + "x" * 290 + f' token={SECRET_TOKEN}", "code": "{SECRET_TOKEN}"}}}}').encode()
    code, message, _ = parse_error_body(body, "application/json", (SECRET_TOKEN,))
    assert SECRET_TOKEN[:8] not in message and SECRET_TOKEN[:8] not in code
    assert len(message) <= 300 and len(code) <= 80


def test_written_scenarios_never_hold_the_token(tmp_path):
    out = tmp_path / "scenario.json"
    result = run_cli("simulate", "--require-token", "--write-scenario", str(out), env={"HF_TOKEN": SECRET_TOKEN})
    assert result.returncode == 0, result.stderr
    assert SECRET_TOKEN not in out.read_text()


def test_the_apps_own_token_goes_to_hugging_face_only():
    from analysis.outputs.dashboard import env_token_allowed

    assert env_token_allowed("https://huggingface.co", "https://router.huggingface.co/v1")
    assert not env_token_allowed("https://huggingface.co", "http://127.0.0.1:8765/v1")
    assert not env_token_allowed("https://huggingface.co.evil.example", "https://router.huggingface.co/v1")
    assert not env_token_allowed("http://huggingface.co", "https://router.huggingface.co/v1")
