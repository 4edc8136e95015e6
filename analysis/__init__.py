"""Catalog RCA Explorer: does every model in a provider's catalog really work through our route, and if not, why?

The pipeline flows one way::

    catalog (Hub API / router list) -> probe -> diagnose -> store -> export | report | app

Modules: :mod:`analysis.catalog`, :mod:`analysis.probe`, :mod:`analysis.diagnose`,
:mod:`analysis.store`, :mod:`analysis.export`, :mod:`analysis.scan`,
:mod:`analysis.simulator`; :mod:`analysis.cli` is the command line.
"""

__version__ = "0.1.0"
