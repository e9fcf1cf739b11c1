"""The web dashboard: server-rendered pages over the client, mounted by ``pipetrail.server``."""

from pipetrail.dashboard.pages import create_router

__all__ = ["create_router"]
