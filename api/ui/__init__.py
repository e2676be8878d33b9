"""The purchasing and audit dashboard: server-rendered pages under ``/ui`` (see routes.py)."""

from api.ui.routes import router

__all__ = ["router"]
