"""Fixes that protect users today: untrusted text, blocklist safety (H2-H4), outages exit 3.

CLI checks run in process (``cli.main``), against a real simulator and real SQLite.
"""

from __future__ import annotations

import pytest

from analysis import cli
from analysis.devtools.simulator import Scenario, synthetic_scenario
from analysis.outputs.dashboard import run_problem
from analysis.pipeline.catalog import normalise_hub_models
from analysis.pipeline.scan import run_scan
from analysis.schema import Run
from analysis.store import open_store
from analysis.untrusted import clean_id, clean_text

from .helpers import FAST_FLAGS, csv_rows, fast_config

HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"  # shaped like an hf_ token, not a real one


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the untrusted-text boundary


def test_clean_text_replaces_surrogates_and_shows_control_characters():
    text = clean_text("model busy \udc80 try\x1b]0;pwned\x07 later\r\nFAKE\u202e")
    assert "\udc80" not in text and "\ufffd" in text
    assert "\x1b" not in text and "\\x1b" in text and "\\x07" in text and "\\x0d" in text
    assert "\u202e" not in text and "\\u202e" in text
    assert "\n" in text  # newline and tab stay: they are text, not commands
    text.encode("utf-8")  # would raise on a lone surrogate


def test_clean_text_decodes_invalid_utf8_and_caps_after_scrubbing():
    assert clean_text(b"bad \xff\xfe bytes") == "bad \ufffd\ufffd bytes"
    long = "x" * 50 + HF_TOKEN
    capped = clean_text(long, HF_TOKEN, limit=60)
    assert HF_TOKEN[:10] not in capped and len(capped) <= 60


def test_clean_text_scrubs_token_fragments():
    echoed = f"auth=Bearer {HF_TOKEN}; tail {HF_TOKEN[-20:]}; head {HF_TOKEN[:12]}"
    cleaned = clean_text(echoed, HF_TOKEN)
    for i in range(len(HF_TOKEN) - 8):
        assert HF_TOKEN[i:i + 8] not in cleaned
    assert "***" in cleaned


def test_clean_id_refuses_ids_the_boundary_would_change():
    assert clean_id("org/model-1.5B") == "org/model-1.5B"
    assert clean_id("org/bad\udc80") is None
    assert clean_id("org/\x1b[2Jclear") is None
    assert clean_id(f"org/{HF_TOKEN}", HF_TOKEN) is None


def test_catalog_skips_hostile_ids_and_cleans_fields():
    catalog = normalise_hub_models([
        {"id": "org/ok", "tags": ["\x1b[31mred", f"auth={HF_TOKEN}"], "pipeline_tag": "text-generation",
         "inferenceProviderMapping": [{"provider": "hf-inference", "status": "live", "task": "conversational",
                                       "providerId": f"x{HF_TOKEN}"}]},
        {"id": "org/bad\udc80"},
        {"id": "org/\x1b]0;title\x07"},
    ], HF_TOKEN)
    assert list(catalog["model_id"]) == ["org/ok"]
    assert catalog.attrs["skipped_ids"] == 2
    tags = catalog.loc[0, "tags"]
    assert tags[0] == "\\x1b[31mred" and HF_TOKEN not in tags[1]
    assert HF_TOKEN not in catalog.loc[0, "mapping"]["hf-inference"]["providerId"]


def _surrogate_scenario() -> Scenario:
    scenario = synthetic_scenario(4, 0)
    scenario.models[3]["routes"] = {"*": {"kind": "error", "status": 503,
                                          "message": "model busy \udc80 try later \x1b[2J"}}
    scenario.models.append({**scenario.models[0], "id": "org/surrogate\udc80"})
    return scenario


def test_a_lone_surrogate_in_a_body_or_an_id_never_stops_a_scan(make_sim, store_path):
    server = make_sim(_surrogate_scenario())
    warnings: list[str] = []

    class Observer:
        def __getattr__(self, name):
            return lambda *args: warnings.append(args[0]) if name == "warning" else None

    with open_store(store_path) as store:
        outcome = run_scan(fast_config(server, provider="hf-inference", retries=0), store, Observer())
        findings = store.findings(outcome.run_id).set_index("model_id")
        messages = store.probes(outcome.run_id)["error_message"].dropna().tolist()
    assert outcome.status == "ok"
    assert "org/surrogate\udc80" not in findings.index and len(findings) == 4
    assert any("skipped 1 catalog id" in w for w in warnings)
    assert (findings["reason"] == "upstream_error").sum() == 1
    busy = [m for m in messages if "model busy" in m]
    assert busy == ["model busy \ufffd try later \\x1b[2J"]


# --------------------------------------------------------------------------- blocklist safety (H2-H4)


@pytest.fixture
def healthy_store(make_sim, tmp_path):
    """A store with one successful run that blocks nothing, then one failed run (a retired endpoint)."""
    server = make_sim(synthetic_scenario(3, 0))
    path = tmp_path / "rca.sqlite"
    with open_store(path) as store:
        assert run_scan(fast_config(server), store).status == "ok"
        failed = run_scan(fast_config(server, router_url=f"{server.url}/retired/v1"), store)
        assert failed.status == "failed"
    return path


def test_blocklist_of_a_run_that_blocks_nothing_is_a_header_only_file(healthy_store, tmp_path, capsys):
    out = tmp_path / "blocklist.csv"
    code, _, err = run(capsys, "export", "blocklist", "--store", str(healthy_store), "--out", str(out))
    assert code == 0, err
    lines = [line for line in out.read_text().splitlines() if not line.startswith("# ")]
    assert lines[0].startswith("model_id,provider,reason") and len(lines) == 1


@pytest.mark.parametrize("extra, words", [(["--run", "2"], "run 2 is failed"),
                                          (["--max-age", "0s"], "older than --max-age")])
def test_blocklist_from_a_failed_or_stale_run_exits_3_and_writes_nothing(healthy_store, tmp_path, capsys, extra,
                                                                         words):
    out = tmp_path / "blocklist.csv"
    out.write_text("previous blocklist\n")
    code, stdout, err = run(capsys, "export", "blocklist", "--store", str(healthy_store), "--out", str(out), *extra)
    assert code == 3 and words in err and stdout == ""
    assert out.read_text() == "previous blocklist\n"


def test_blocklist_with_no_successful_run_exits_3(make_sim, tmp_path, capsys):
    server = make_sim(synthetic_scenario(3, 0))
    path = tmp_path / "rca.sqlite"
    with open_store(path) as store:
        run_scan(fast_config(server, router_url=f"{server.url}/retired/v1"), store)
    code, stdout, err = run(capsys, "export", "blocklist", "--store", str(path), "--format", "python")
    assert code == 3 and stdout == "" and "no successful probing run" in err


def test_run_level_reasons_cannot_be_blocked(healthy_store, capsys):
    code, stdout, err = run(capsys, "export", "blocklist", "--store", str(healthy_store), "--reasons",
                            "not_found,auth_error")
    assert code == 2 and "auth_error" in err and stdout == ""


def test_resume_of_a_missing_store_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "rca.sqlite"
    code, _, err = run(capsys, "scan", "--resume", "--store", str(missing))
    assert code == 2 and "no store" in err
    assert not missing.exists() and not missing.parent.exists()


def test_resume_hint_names_the_store():
    title, detail = run_problem(_run(id=7, status="incomplete"), "/tmp/my store/rca.sqlite")
    assert "incomplete" in title
    assert detail.endswith("python -m analysis scan --resume 7 --store '/tmp/my store/rca.sqlite'")


def test_unreachable_hub_is_run_level_not_bad_usage(tmp_path, capsys):
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    code, _, err = run(capsys, "scan", "--hub-url", "http://127.0.0.1:9", "--router-url", "http://127.0.0.1:9/v1",
                       "--store", str(tmp_path / "s.sqlite"), "--retries", "0", *FAST_FLAGS)
    assert code == 3, err
    assert "Could not read page 1 of the Hub catalog" in err


# --------------------------------------------------------------------------- every failure has its exit code


def test_a_full_disk_mid_scan_is_exit_3_and_the_run_resumes(make_sim, store_path):
    from analysis.errors import StoreFullError
    from analysis.pipeline.scan import resume_scan

    server = make_sim(synthetic_scenario(400, 0))

    class FillUpAfterTheCatalog:
        """Once the catalog is stored, let the store grow by a few pages only (this connection only)."""

        def __getattr__(self, name):
            if name == "catalog_done":
                return lambda *args: store.db.execute(f"PRAGMA max_page_count = "
                                                      f"{store.db.execute('PRAGMA page_count').fetchone()[0] + 3}")
            return lambda *args: None

    with open_store(store_path) as store:
        with pytest.raises(StoreFullError) as caught:
            run_scan(fast_config(server, batch_size=10), store, FillUpAfterTheCatalog())
        assert caught.value.exit_code == 3 and "full" in str(caught.value)
        assert store.get_run(1).status == "incomplete"
    with open_store(store_path) as store:  # space again
        outcome = resume_scan(store, 1, None)
        assert outcome.status == "ok" and len(store.findings(1)) == 400


def test_a_read_only_store_refuses_writers_with_exit_2_and_serves_readers(healthy_store, capsys):
    from analysis.errors import StoreError

    with open_store(healthy_store, readonly=True) as store:
        with pytest.raises(StoreError, match="read-only") as caught:
            store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        assert caught.value.exit_code == 2
    code, out, _ = run(capsys, "export", "findings", "--store", str(healthy_store))
    assert code == 0 and out.startswith("# tool: catalog-rca") and "\nmodel_id," in out


def test_a_corrupt_store_is_exit_2_and_left_as_it_is(healthy_store, capsys):
    data = bytearray(healthy_store.read_bytes())
    data[4096:8192] = b"\xde\xad" * 2048  # overwrite a page past the header
    healthy_store.write_bytes(bytes(data))
    for argv in (["export", "findings"], ["diff"], ["scan", "--resume"]):
        code, _, err = run(capsys, *argv, "--store", str(healthy_store))
        assert code == 2, (argv, err)
        assert "corrupt" in err or "malformed" in err or "cannot use store" in err, err
    assert healthy_store.read_bytes() == bytes(data)


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8 JSON/CSV"),
    ("caf\xe9,model".encode("latin-1"), "not UTF-8 JSON/CSV"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_bad_catalog_files_are_exit_2(tmp_path, capsys, content, words):
    path = tmp_path / "catalog.bin"
    path.write_bytes(content)
    code, _, err = run(capsys, "scan", "--source", "file", "--catalog-file", str(path), "--store",
                       str(tmp_path / "s.sqlite"), "--router-url", "http://127.0.0.1:9/v1")
    assert code == 2 and words in err, err


def test_a_bom_does_not_become_part_of_the_first_id(tmp_path):
    from analysis.pipeline.catalog import read_catalog_file

    path = tmp_path / "ids.csv"
    path.write_bytes("\ufeffmodel_id\norg/a\norg/b\n".encode("utf-8"))
    assert list(read_catalog_file(str(path))["model_id"]) == ["org/a", "org/b"]


@pytest.mark.parametrize("argv", [["scan", "--timeout", "inf"], ["scan", "--retry-after-cap", "nan"],
                                  ["scan", "--backoff", "-1"], ["simulate", "--port", "-1"],
                                  ["report", "fleet", "--timeout", "inf"]])
def test_non_finite_or_negative_numbers_are_refused_at_parse(tmp_path, capsys, argv):
    code = cli.main([*argv, "--store", str(tmp_path / "s.sqlite")] if argv[0] != "simulate" else argv)
    assert code == 2
    assert not (tmp_path / "s.sqlite").exists()


def test_a_second_resume_of_a_running_run_exits_3_and_names_the_holder(healthy_store, capsys):
    import os
    import sqlite3

    db = sqlite3.connect(healthy_store)
    db.execute("UPDATE runs SET status = 'running', pid = ? WHERE id = 1", (os.getpid(),))  # a live holder
    db.commit()
    db.close()
    code, _, err = run(capsys, "scan", "--resume", "1", "--store", str(healthy_store))
    assert code == 3 and f"is running in process {os.getpid()}" in err


def test_only_one_resume_claims_an_incomplete_run(healthy_store):
    import sqlite3

    db = sqlite3.connect(healthy_store)
    db.execute("UPDATE runs SET status = 'incomplete' WHERE id = 1")
    db.commit()
    db.close()
    with open_store(healthy_store) as first, open_store(healthy_store) as second:
        assert first.claim_run(1) is True
        assert second.claim_run(1) is False
        assert second.get_run(1).status == "running"


@pytest.mark.parametrize("argv, words", [(["scan", "--bogus"], "No such option '--bogus'"),
                                         (["export", "blocklist", "--format", "xml"], "'xml' is not one of"),
                                         (["export"], "Missing argument 'WHAT'"),
                                         (["nosuch"], "No such command 'nosuch'")])
def test_usage_errors_are_one_line_pointing_at_help(capsys, argv, words):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err and "--help)" in err


def test_diff_prints_no_nan_and_warns_about_failed_or_other_scope_runs(sample_store, capsys):
    code, out, err = run(capsys, "diff", "--store", str(sample_store), "--from", "2", "--to", "4")
    assert code == 0 and "nan" not in out
    assert "(new) -> " in out  # targets run 2 did not have
    assert "scanned different scopes" in err  # run 2 was hf-inference with bare ids, run 4 every provider
    code, out, err = run(capsys, "diff", "--store", str(sample_store), "--from", "1", "--to", "4")
    assert code == 0 and "run 1 is failed" in err


# --------------------------------------------------------------------------- operator overrides


def test_overrides_apply_to_every_export_and_expire(sample_store, tmp_path, capsys):
    import shutil
    import sqlite3

    store = tmp_path / "rca.sqlite"
    shutil.copy(sample_store, store)
    with open_store(store, readonly=True) as s:
        findings = s.findings(s.latest_run_id(mode="probe"))
    blocked = findings[findings["blocked"]].iloc[0]
    working = findings[findings["reason"] == "ok"].iloc[0]
    assert run(capsys, "override", "add", blocked["model_id"], "--allow", "--reason", "vendor says it is fixed",
               "--store", str(store))[0] == 0
    assert run(capsys, "override", "add", f"{working['model_id']}:{working['provider']}", "--block", "--reason",
               "=HYPERLINK(legal hold)", "--expires", "2099-01-01", "--store", str(store))[0] == 0
    code, out, _ = run(capsys, "export", "blocklist", "--store", str(store), "--format", "csv")
    assert code == 0
    rows = {(r["model_id"], r["provider"]): r for r in csv_rows(out)}
    assert not any(m == blocked["model_id"] for m, _ in rows)  # allowed on every provider
    held = rows[(working["model_id"], working["provider"])]
    assert held["override"].startswith("block: =HYPERLINK(legal hold) (by ")
    assert "until 2099-01-01" in held["override"]
    code, out, _ = run(capsys, "override", "list", "--store", str(store))
    assert code == 0 and out.count("\n") == 2 and "EXPIRED" not in out
    # an expired override stops applying, and the export says so
    db = sqlite3.connect(store)
    db.execute("UPDATE overrides SET expires_at = '2000-01-01T00:00:00Z' WHERE action = 'block'")
    db.commit()
    db.close()
    code, out, err = run(capsys, "export", "blocklist", "--store", str(store), "--format", "csv")
    assert code == 0 and "has expired and no longer applies" in err
    assert (working["model_id"], working["provider"]) not in {(r["model_id"], r["provider"])
                                                              for r in csv_rows(out)}
    assert "EXPIRED" in run(capsys, "override", "list", "--store", str(store))[1]
    assert run(capsys, "override", "remove", "2", "--store", str(store))[0] == 0
    assert run(capsys, "override", "remove", "2", "--store", str(store))[0] == 2


@pytest.mark.parametrize("argv, words", [
    (["override", "add", "org/m", "--reason", "x"], "exactly one of --allow or --block"),
    (["override", "add", "org/m", "--allow"], "--reason"),
    (["override", "add", "org/m", "--allow", "--reason", "x", "--expires", "2001-01-01"], "in the past"),
    (["override", "add", "org/m", "--allow", "--reason", "x", "--expires", "soon"], "--expires takes a date"),
])
def test_bad_overrides_are_exit_2(healthy_store, capsys, argv, words):
    code, _, err = run(capsys, *argv, "--store", str(healthy_store))
    assert code == 2 and words in err


@pytest.mark.parametrize("url", ["sqlite:///x.db", "mysql://user:s3cretpw@127.0.0.1/db"])
def test_a_store_url_of_another_scheme_is_refused_and_creates_nothing(tmp_path, capsys, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "scan", "--store", url, "--router-url", "http://127.0.0.1:9/v1")
    assert code == 2 and "is not supported" in err and "s3cretpw" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_postgresql_store_exits_2_without_its_password(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "postgresql://rca:s3cretpw@127.0.0.1:9/rca"  # port 9: nothing listens, refused at once
    code, _, err = run(capsys, "export", "blocklist", "--store", url)
    assert code == 2 and "s3cretpw" not in err and "127.0.0.1" in err
    assert list(tmp_path.iterdir()) == []


def _run(**values: object) -> Run:
    """A stored run as the dashboard gets it, with the fields a test does not care about filled in."""
    return Run(**{"started_at": "2025-07-15T12:00:00Z", "source": "hub", "provider": "hf-inference", **values})
