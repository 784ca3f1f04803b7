"""The REST API of ../shared/API.md, as one WSGI-agnostic request handler."""
