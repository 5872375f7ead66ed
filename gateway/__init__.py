"""Service Gateway: an asyncio FastAPI job gateway in front of RabbitMQ workers."""

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
