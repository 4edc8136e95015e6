"""Development tools: the simulator of the Hub API and the router, and the sample builder.

Never imported by the pipeline, the store or the outputs: only entry points (the app's first start, ``demo``,
``simulate``, reports' sample fallback) reach it.
"""
