"""The pipeline, in the order data flows: catalog -> targets -> probe (+ canaries, route and request
experiments) -> diagnose -> history, orchestrated by :mod:`analysis.pipeline.scan`.

Network code is at the edge (``catalog``'s fetchers, ``probe``, ``transport``); ``targets``, ``diagnose``,
``canaries``, ``experiments``, ``signature``, ``history`` and ``alternatives`` are pure.
"""
