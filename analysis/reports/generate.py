"""Papermill reports (issue 4): ``python -m analysis report model|fleet``, and the same for the dashboard.

A report validates its input against the store first (an unknown model or run
is a one-line :class:`~analysis.errors.UsageError`, before any kernel starts),
then executes ``notebooks/model_rca.ipynb`` or ``notebooks/catalog_rca.ipynb``
(:mod:`analysis.reports.runner`) and writes the executed notebook, a
self-contained HTML page and, for a model, a Markdown rendering into the output
folder.  File names come from :func:`safe_stem`, so no model id can write
outside that folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from analysis import config
from analysis.errors import UsageError

# report_sections and report_runner (pandas, plotly, jupyter_client, nbconvert) are
# imported where used: the CLI imports this module only to run a report.

__all__ = ["ReportFiles", "NOTEBOOKS", "safe_stem", "render_model_report", "render_fleet_report"]

NOTEBOOKS = config.NOTEBOOKS
STEM_LIMIT = 80  # characters of a model id kept in a file name
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote: the executed notebook, the HTML page and (model reports) the Markdown."""

    notebook: Path
    html: Path
    markdown: Path | None = None


def safe_stem(text: str, limit: int = STEM_LIMIT) -> str:
    """A file name stem for ``text`` made only of ``[A-Za-z0-9._-]``, never hidden, never empty.

    ``/`` becomes ``__`` (``katanemo/Arch-Router-1.5B`` -> ``katanemo__Arch-Router-1.5B``).
    When anything else had to change, the id was cut to ``limit``, or it already
    held ``__`` (so ``a__b`` is not taken for ``a/b``), a hash of the whole id is
    appended so two different ids never share a file.
    """
    readable = text.replace("/", "__")
    stem = _UNSAFE.sub("_", readable).strip("._-")[:limit].strip("._-") or "model"
    if stem != readable or "__" in text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem = f"{stem}-{digest}"
    return stem


def _out_dir(out_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(out_dir) if out_dir else config.reports_dir()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out_dir}: {exc.strerror}") from None
    return path.resolve()


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any name that is not a plain file name inside ``folder``."""
    target = folder / name
    if Path(name).name != name or name in (".", "..") or target.parent != folder:
        raise UsageError(f"refusing to write {name!r} outside {folder}")
    return target


def _render(notebook: str, parameters: dict, out_dir: Path, stem: str, title: str,
            markdown: bool, timeout: float) -> ReportFiles:
    names = {"notebook": f"{stem}.ipynb", "html": f"{stem}.html", "markdown": f"{stem}.md" if markdown else None}
    targets = {key: _inside(out_dir, name) for key, name in names.items() if name}
    # Build everything in a scratch folder inside out_dir, then move it in: a failed
    # report never leaves a half-written HTML page next to a previous good one.
    from analysis.reports.runner import export_html, export_markdown, run_notebook

    with tempfile.TemporaryDirectory(prefix=".report-", dir=out_dir) as tmp:
        scratch = {key: Path(tmp) / target.name for key, target in targets.items()}
        try:
            nb = run_notebook(NOTEBOOKS / notebook, scratch["notebook"], parameters, timeout=timeout)
        except Exception:
            if scratch["notebook"].exists():  # keep the failing notebook: it shows the traceback
                os.replace(scratch["notebook"], targets["notebook"])
            raise
        export_html(nb, scratch["html"], title)
        if markdown:
            export_markdown(nb, scratch["markdown"])
        for key, target in targets.items():
            os.replace(scratch[key], target)
    return ReportFiles(targets["notebook"], targets["html"], targets.get("markdown"))


def _store_parameter(location: str) -> str:
    """The notebook's ``store`` parameter: a file's absolute path, or a database URL, which must hold no password
    (the executed notebook records its parameters)."""
    from urllib.parse import urlsplit

    from analysis.store import store_backend

    if store_backend(location) == "sqlite":
        return str(Path(location).resolve())
    if urlsplit(location).password:
        raise UsageError("a report records its store in the notebook it writes: give the database URL without a "
                         "password (set PGPASSWORD or use ~/.pgpass)")
    return location


def render_model_report(store_path: str | os.PathLike[str] | None, model_id: str, run_id: int | str | None = None,
                        out_dir: str | os.PathLike[str] | None = None, *, timeout: float = 600) -> ReportFiles:
    """Execute the model RCA notebook for ``model_id`` and write ``model_rca-<id>.{ipynb,html,md}``.

    ``store_path=None`` is the default store; ``run_id=None`` the latest successful run.
    Raises :class:`UsageError` for an unknown store, run or model.
    """
    from analysis.reports import sections as report_sections

    rca = report_sections.model_rca(store_path, run_id, model_id)  # validates before any kernel starts
    parameters = {"store": _store_parameter(rca.store_path), "run_id": rca.run_id, "model_id": model_id}
    return _render("model_rca.ipynb", parameters, _out_dir(out_dir), f"model_rca-{safe_stem(model_id)}",
                   f"Model RCA: {model_id} (run {rca.run_id})", True, timeout)


def render_fleet_report(store_path: str | os.PathLike[str] | None, run_id: int | str | None = None,
                        compare_run_id: int | str | None = None, out_dir: str | os.PathLike[str] | None = None,
                        *, timeout: float = 600) -> ReportFiles:
    """Execute the catalog RCA notebook and write ``catalog_rca-run<N>.{ipynb,html}``.

    ``compare_run_id=None`` compares with the previous successful run of the same scope.
    Raises :class:`UsageError` for an unknown store or run.
    """
    from analysis.reports import sections as report_sections

    fleet = report_sections.fleet_rca(store_path, run_id, compare_run_id)
    compare = fleet.compare_run.id if fleet.compare_run else ""
    parameters = {"store": _store_parameter(fleet.store_path), "run_id": int(fleet.run.id),
                  "compare_run_id": compare}
    stem = f"catalog_rca-run{fleet.run.id}" + (f"-vs{compare}" if compare_run_id not in (None, "") else "")
    return _render("catalog_rca.ipynb", parameters, _out_dir(out_dir), stem, f"Catalog RCA: run {fleet.run.id}",
                   False, timeout)
