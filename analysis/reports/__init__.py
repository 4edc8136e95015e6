"""Papermill RCA reports: the runner, the report sections the notebooks in ``notebooks/`` call, and their
rendering as escaped Markdown and HTML."""
