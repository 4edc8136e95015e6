"""Catalog RCA Explorer: does every model in a provider's catalog really work through our route, and if not, why?

The pipeline flows one way (the folders show the roles)::

    source -> catalog -> targets -> probe (+ canaries, route and request experiments) -> diagnose
           -> store -> export | report | app

- :mod:`analysis.pipeline`: catalog, targets, probe, canaries, experiments, diagnose, signature, history,
  alternatives, and ``scan``, which runs the phases;
- :mod:`analysis.store`: the store behind one interface;
- :mod:`analysis.outputs`: exports, read-side views, charts, the dashboard's helpers;
- :mod:`analysis.reports`: the papermill reports;
- :mod:`analysis.devtools`: the simulator and the sample (never imported by the pipeline, the store or the
  outputs);
- :mod:`analysis.taxonomy`, :mod:`analysis.errors`, :mod:`analysis.config`, :mod:`analysis.untrusted` at the
  root; :mod:`analysis.cli` is the command line.

The names below are the curated public surface.  They resolve lazily, so importing one module (say
``analysis.pipeline.diagnose``) does not import the network code or pandas-heavy modules it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_PUBLIC = {
    "ScanConfig": "analysis.pipeline.scan",
    "ScanOutcome": "analysis.pipeline.scan",
    "run_scan": "analysis.pipeline.scan",
    "resume_scan": "analysis.pipeline.scan",
    "classify": "analysis.pipeline.diagnose",
    "diagnose": "analysis.pipeline.diagnose",
    "Store": "analysis.store",
    "open_store": "analysis.store",
    "export_bytes": "analysis.outputs.export",
    "REASONS": "analysis.taxonomy",
    "TAXONOMY_VERSION": "analysis.taxonomy",
    "RcaError": "analysis.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
