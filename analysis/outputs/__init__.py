"""What users see, computed once: exports (bytes), read-side views, charts, and the dashboard's pure helpers."""
