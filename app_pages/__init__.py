"""The dashboard's pages (one module per page, run by ``st.navigation`` from ``app.py``) and their shared helpers."""
