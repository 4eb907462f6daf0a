"""The REST API (FastAPI): ``create_app(settings, store=..., log_source=...)``; see docs/api.md."""

from gpuplane.api.app import create_app

__all__ = ["create_app"]
