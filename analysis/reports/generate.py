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

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis import config
from analysis.errors import EXIT_OK, UsageError

# report_sections and report_runner (pandas, plotly, jupyter_client, nbconvert) are
# imported where used: every `python -m analysis` command builds this parser.

__all__ = ["ReportFiles", "NOTEBOOKS", "safe_stem", "render_model_report", "render_fleet_report",
           "add_report_parser"]

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


def render_model_report(store_path: str | os.PathLike[str] | None, model_id: str, run_id: int | str | None = None,
                        out_dir: str | os.PathLike[str] | None = None, *, timeout: float = 600) -> ReportFiles:
    """Execute the model RCA notebook for ``model_id`` and write ``model_rca-<id>.{ipynb,html,md}``.

    ``store_path=None`` is the default store; ``run_id=None`` the latest successful run.
    Raises :class:`UsageError` for an unknown store, run or model.
    """
    from analysis.reports import sections as report_sections

    rca = report_sections.model_rca(store_path, run_id, model_id)  # validates before any kernel starts
    parameters = {"store": str(rca.store_path.resolve()), "run_id": rca.run_id, "model_id": model_id}
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
    compare = fleet.compare_run["id"] if fleet.compare_run else ""
    parameters = {"store": str(fleet.store_path.resolve()), "run_id": int(fleet.run["id"]),
                  "compare_run_id": compare}
    stem = f"catalog_rca-run{fleet.run['id']}" + (f"-vs{compare}" if compare_run_id not in (None, "") else "")
    return _render("catalog_rca.ipynb", parameters, _out_dir(out_dir), stem, f"Catalog RCA: run {fleet.run['id']}",
                   False, timeout)


# --------------------------------------------------------------------------- CLI


def _done(files: ReportFiles, started: float) -> int:
    for path in (files.html, files.markdown, files.notebook):
        if path is not None:
            print(path)
    print(f"report written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return EXIT_OK


def cmd_report_model(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    files = render_model_report(args.store, args.model, args.run, args.out, timeout=args.timeout)
    return _done(files, started)


def cmd_report_fleet(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    files = render_fleet_report(args.store, args.run, args.compare, args.out, timeout=args.timeout)
    return _done(files, started)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def add_report_parser(sub: "argparse._SubParsersAction[Any]") -> None:
    """Register ``report model`` and ``report fleet`` on the CLI's subparsers."""
    formatter = argparse.ArgumentDefaultsHelpFormatter
    report = sub.add_parser("report", formatter_class=formatter, help="write an RCA report (notebook, HTML, Markdown)",
                            description="Execute a parameterised RCA notebook with papermill on this interpreter "
                                        "and write the executed notebook and a self-contained HTML page (and, for a "
                                        "model, a Markdown rendering). Reports read the store only; no token is "
                                        "needed or passed on.")
    kinds = report.add_subparsers(dest="report_kind", metavar="KIND")
    kinds.required = True

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--store", help="SQLite store (default: rca.sqlite in the data dir; reports never "
                                            "fall back to the sample: pass --store data/sample.sqlite after demo)")
        parser.add_argument("--run", help="run id (default: the latest successful run)")
        parser.add_argument("--out", help="folder to write the report files into (default: reports/, or "
                                          "$RCA_HOME/reports)")
        parser.add_argument("--timeout", type=_timeout, default=600, help="seconds a notebook cell may run")

    model = kinds.add_parser("model", formatter_class=formatter, help="root cause of one model's verdict",
                             description="Summary, evidence (catalog entry, router list, every probe attempt, "
                                         "history), why, recommendations and conclusion for one model. Writes "
                                         "model_rca-<id>.ipynb, .html and .md.")
    model.add_argument("--model", required=True, help="model id, e.g. katanemo/Arch-Router-1.5B")
    common(model)
    model.set_defaults(func=cmd_report_model)

    fleet = kinds.add_parser("fleet", formatter_class=formatter, help="state of a whole run",
                             description="Totals per reason and pipeline tag with charts, most-failing authors, "
                                         "changes against a compared run, the blocklist and conflicting evidence. "
                                         "Writes catalog_rca-run<N>.ipynb and .html.")
    common(fleet)
    fleet.add_argument("--compare", help="run id to compare with (default: the previous successful run of the "
                                         "same scope)")
    fleet.set_defaults(func=cmd_report_fleet)
