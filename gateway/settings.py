"""The gateway's one settings object, read once from the environment (``SG_*``) or ``.env``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyUrl, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker_sdk import DEFAULT_NAMESPACE


class Settings(BaseSettings):
    """Every knob of the gateway and of the workers the CLI starts.

    Build it once (``Settings()`` reads ``SG_*`` variables and ``.env``) and pass it on;
    nothing else reads the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix="SG_", env_file=".env", extra="ignore", frozen=True
    )

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="RabbitMQ URL (aio-pika syntax; query options such as heartbeat apply).",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Prefix of every exchange and queue, so that deployments can share a broker.",
    )
    catalogue: Path = Field(default=Path("services.yaml"), description="The services catalogue.")
    store_url: str = Field(
        default="sqlite:///./servicegateway.db",
        description="Where jobs are kept: sqlite:///<path> (embedded default).",
    )
    publish_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for the broker to confirm a task."
    )
    broker_connect_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the gateway retries an unreachable broker at start-up.",
    )
    max_body_size: int = Field(
        default=1_048_576, ge=1024, description="Largest request body in bytes (413 past it)."
    )
    max_wait: float = Field(
        default=60.0, ge=0, description="Upper bound of the Prefer: wait=N synchronous wait."
    )
    events_prefetch: int = Field(default=128, ge=1, description="Events applied concurrently.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the gateway and of workers started by `sgw`."
    )
    host: str = Field(default="127.0.0.1", description="Address `sgw serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `sgw serve` listens on.")
    workers: int = Field(default=1, ge=1, description="Gateway processes started by `sgw serve`.")

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        url = AnyUrl(value)
        if url.scheme not in {"amqp", "amqps"}:
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("must be sqlite:///<path> (sqlite:///./servicegateway.db by default)")
        return value
