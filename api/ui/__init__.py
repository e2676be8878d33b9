"""The purchasing and audit dashboard: server-rendered pages under ``/ui`` (see routes.py)."""

from api.ui.guard import SECURITY_HEADERS, UiGuard
from api.ui.routes import router

__all__ = ["SECURITY_HEADERS", "UiGuard", "router"]
