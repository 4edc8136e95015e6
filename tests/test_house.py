"""The house: the import graph keeps the roles apart, and the cheap paths stay cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "analysis"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), as absolute names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("role", ["pipeline", "store", "outputs"])
def test_pipeline_store_and_outputs_never_import_devtools(role):
    for path in sorted((PACKAGE / role).glob("*.py")):
        leaks = {name for name in _imports(path) if name.startswith("analysis.devtools")}
        assert not leaks, f"{path.relative_to(PACKAGE)} imports {leaks}"


def test_the_pure_pipeline_modules_import_no_network_code():
    for name in ("targets", "diagnose", "canaries", "signature", "history", "alternatives", "observer"):
        imported = _imports(PACKAGE / "pipeline" / f"{name}.py")
        assert not imported & {"httpx", "h11", "socket", "analysis.pipeline.catalog", "analysis.pipeline.probe",
                               "analysis.pipeline.transport"}, name


def _modules_after(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
                            capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_importing_diagnose_imports_neither_httpx_nor_the_simulator():
    loaded = _modules_after("import analysis.pipeline.diagnose")
    assert "httpx" not in loaded and "analysis.devtools.simulator" not in loaded


def test_help_imports_neither_pandas_nor_httpx():
    loaded = _modules_after("from analysis import cli\ncli.main(['--help'])\ncli.main(['scan', '--help'])")
    assert "analysis.cli" in loaded
    assert not loaded & {"pandas", "httpx", "numpy", "streamlit"}


def test_the_finding_columns_are_defined_once():
    definitions = [path for path in PACKAGE.rglob("*.py")
                   if "\nFINDING_COLUMNS = " in path.read_text(encoding="utf-8")]
    assert [p.relative_to(PACKAGE).as_posix() for p in definitions] == ["schema.py"]


def test_the_store_holds_every_finding_column(tmp_path):
    from analysis.schema import FINDING_COLUMNS, HISTORY_COLUMNS
    from analysis.store import open_store

    with open_store(tmp_path / "s.sqlite") as store:
        stored = {row[1] for row in store.db.execute("PRAGMA table_info(findings)")}
    assert set(FINDING_COLUMNS) | set(HISTORY_COLUMNS) <= stored


def test_the_console_script_is_installed():
    script = Path(sys.executable).with_name("catalog-rca")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "scan" in result.stdout


def test_a_scan_collects_garbage_less_often_and_puts_the_thresholds_back(make_sim, store_path):
    import gc

    from analysis.devtools.simulator import synthetic_scenario
    from analysis.errors import RcaError
    from analysis.pipeline.observer import ScanObserver
    from analysis.pipeline.scan import run_scan
    from analysis.store import open_store

    from .helpers import fast_config

    class Watch(ScanObserver):
        during: tuple[int, int, int] | None = None

        def probes_started(self, total: int, already_done: int) -> None:
            Watch.during = gc.get_threshold()

    before = gc.get_threshold()
    server = make_sim(synthetic_scenario(3, 0))
    with open_store(store_path) as store:
        assert run_scan(fast_config(server), store, Watch()).status == "ok"
        with pytest.raises(RcaError):  # the Hub unreachable: the thresholds still come back
            run_scan(fast_config(server, hub_url="http://127.0.0.1:9", retries=0, timeout=0.5), store)
    assert Watch.during is not None and Watch.during[0] > before[0]
    assert gc.get_threshold() == before
