"""The web page and JSON API (FastAPI)."""
