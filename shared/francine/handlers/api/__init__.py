"""The REST API (docs/api.md), as one WSGI-agnostic request handler."""
