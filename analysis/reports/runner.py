"""Run a notebook with papermill on this interpreter, and export it as HTML and Markdown.

The kernel is pinned to ``sys.executable``: a kernel spec is written at run
time into a private temporary folder, and the kernel manager searches only
that folder.  Kernel specs are otherwise looked up by name along
``JUPYTER_PATH``, then the user's and the environment's ``share/jupyter/kernels``
(jupyter_core's ``jupyter_path``), so a ``python3`` spec from another
installation (or one whose ``argv`` is a bare ``python`` resolved on ``PATH``)
would run the notebook in the wrong environment.  Nothing is installed, and no
environment variable of this process is changed, so concurrent reports (the
dashboard) cannot disturb each other.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from analysis.errors import RcaError, UsageError

__all__ = ["KERNEL_NAME", "NotebookFailed", "kernel_spec_overrides", "run_notebook", "export_html",
           "export_markdown"]

KERNEL_NAME = "catalog-rca"
# Errors raised inside a notebook that mean bad input, not a broken report.
_USAGE_ERRORS = {"UsageError", "StoreError"}


class NotebookFailed(RcaError):
    """A report notebook raised an error while it ran: exit 4, like any internal error."""

    exit_code = 4


def kernel_spec_overrides() -> dict[str, Any]:
    """Kernel spec fields on top of ipykernel's own: no token.

    The kernel runs this interpreter, where the package is installed (``bin/setup``
    installs it in editable mode), so it needs no path tweak.  The notebooks never
    need the token, so the kernel does not even see it.
    """
    return {"display_name": "Catalog RCA (this environment)",
            "env": {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "",
                    "PYDEVD_DISABLE_FILE_VALIDATION": "1"}}


def _write_kernel_spec(kernels_dir: Path) -> None:
    from ipykernel.kernelspec import write_kernel_spec

    # argv[0] is sys.executable (ipykernel's make_ipkernel_cmd), never a bare "python".
    write_kernel_spec(kernels_dir / KERNEL_NAME, overrides=kernel_spec_overrides(),
                      python_arguments=["-Xfrozen_modules=off"])


def _pinned_manager_class(kernels_dir: Path) -> type[AsyncKernelManager]:
    class PinnedKernelManager(AsyncKernelManager):
        """A kernel manager that knows only the kernel spec written for this run."""

        @default("kernel_spec_manager")
        def _pinned_spec_manager(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)

        @default("transport_encryption")
        def _encrypt_when_possible(self) -> str:
            # The kernel talks to us over loopback TCP; encrypt it where libzmq can (CurveZMQ).
            import zmq

            return "auto" if zmq.has("curve") else "disabled"

    return PinnedKernelManager


def run_notebook(source: Path, target: Path, parameters: dict[str, Any], *, timeout: float = 600) -> Any:
    """Execute ``source`` with ``parameters`` into ``target``; return the executed notebook.

    Raises :class:`UsageError` when the notebook rejected its input, and
    :class:`NotebookFailed` for any other error in a cell (``target`` then holds
    the notebook up to the failing cell).
    """
    import papermill

    with tempfile.TemporaryDirectory(prefix="rca-kernel-") as tmp:
        kernels_dir = Path(tmp) / "kernels"
        _write_kernel_spec(kernels_dir)
        try:
            papermill.execute_notebook(
                str(source), str(target), parameters=parameters, kernel_name=KERNEL_NAME, progress_bar=False,
                log_output=False, start_timeout=60, execution_timeout=timeout,
                kernel_manager_class=_pinned_manager_class(kernels_dir))
        except papermill.PapermillExecutionError as exc:
            if exc.ename in _USAGE_ERRORS:
                raise UsageError(exc.evalue) from None
            raise NotebookFailed(f"{source.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}") from None
    nb = nbformat.read(target, as_version=4)
    # Keep the source's kernel spec, so the executed notebook opens anywhere (ours was temporary).
    nb.metadata["kernelspec"] = nbformat.read(source, as_version=4).metadata.get("kernelspec", {})
    nbformat.write(nb, target)
    return nb


# The lab template, minus its CDN scripts (require.js, MathJax, mermaid): the report is offline.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style>
  .jp-RenderedHTMLCommon table.rca-table td, .jp-RenderedHTMLCommon table.rca-table th {
    text-align: left; vertical-align: top; }
  .jp-OutputArea-output { overflow-x: auto; }
  .jp-RenderedHTMLCommon pre code { white-space: pre-wrap; }
</style>
{%- endblock extra_css -%}
"""


def export_html(nb: Any, target: Path, title: str) -> None:
    """Write ``nb`` as one self-contained HTML page with the code hidden.

    Plotly figures carry plotly.js inline (see :class:`~analysis.reports.render.FigureBlock`).
    """
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="rca_offline.html.j2",
                            extra_loaders=[DictLoader({"rca_offline.html.j2": _OFFLINE_TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            embed_images=True)
    nb = nbformat.from_dict(nb)
    nb.metadata["title"] = title  # the template escapes it
    body, _ = exporter.from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def export_markdown(nb: Any, target: Path) -> None:
    """Write ``nb`` as Markdown with the code hidden, preferring each output's Markdown form."""
    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    # nbconvert's default puts text/html first, which would paste HTML tables into the Markdown.
    config = Config({"NbConvertBase": {"display_data_priority": ["text/markdown", "text/html", "text/plain"]}})
    exporter = MarkdownExporter(config=config, exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.from_dict(nb))
    target.write_text(body, encoding="utf-8")
