"""The backend-facing HTTP API: ``/v1/*``, ``/healthz`` and ``/metrics``."""

from .routes import Api

__all__ = ["Api"]
