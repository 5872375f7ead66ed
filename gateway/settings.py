"""The gateway's one settings object, read once from the environment (``SG_*``) or ``.env``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, AnyUrl, BeforeValidator, Field, SecretStr, field_validator
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.settings_file import env_file_for
from gateway.webhook_secret import webhook_signer
from worker_sdk import UrlPolicy
from worker_sdk.wire import DEFAULT_NAMESPACE
from worker_sdk.wire.topology import DEFAULT_WEBHOOK_DELAYS


def _split(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# A list setting written as "a,b,c" (or a JSON list) in the environment.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_split)]
IntList = Annotated[tuple[int, ...], NoDecode, BeforeValidator(_split)]


class Settings(BaseSettings):
    """Every knob of the gateway and of the workers the CLI starts.

    Build it once (:func:`load_settings` reads ``SG_*`` variables and the settings file) and
    pass it on; nothing else reads the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix="SG_", env_file=".env", extra="ignore", frozen=True
    )

    env_file: Path | None = Field(
        default=None,
        description="The settings file (`KEY=value` lines) to read beside the environment; "
        "unset, `.env` beside the catalogue, else in the working directory.",
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
        description="Where jobs are kept: sqlite:///<path> (embedded, one host) or "
        "mongodb://host/<database> (production).",
    )
    publish_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for the broker to confirm a task."
    )
    broker_connect_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the gateway retries an unreachable broker at start-up.",
    )
    broker_reconnect_after: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a broker channel may stay closed before the gateway rebuilds "
        "its connection (a watchdog beside aio-pika's own recovery).",
    )
    recovery_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between passes that queue accepted jobs whose task never "
        "reached the broker (a gateway died mid-submit).",
    )
    recovery_grace: float = Field(
        default=2.0,
        gt=0,
        description="Seconds the gateway gives the events delivered before a point to be "
        "applied: the recovery pass's, once its barrier is through a queue; a dead letter's, "
        "once the events queue holds nothing ready, before it ends its job.",
    )
    sweep_interval: float = Field(
        default=60.0, gt=0, description="Seconds between retention and reaper sweeps."
    )
    reaper_grace: float = Field(
        default=300.0,
        ge=0,
        description="Seconds past a job's queue TTL (accepted) or time limit (running) before "
        "the reaper fails it.",
    )
    heartbeat_silence: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker counts as gone (not "
        "listed by GET /workers; its running jobs are reaped). A clean stop's goodbye "
        "removes it at once.",
    )
    capacity_refresh: float = Field(
        default=2.0,
        ge=0,
        description="Seconds a process reuses a service's measured load (run times, jobs "
        "running) when it shows an accepted job's queue position and estimated start.",
    )
    max_body_size: int = Field(
        default=1_048_576, ge=1024, description="Largest request body in bytes (413 past it)."
    )
    max_wait: float = Field(
        default=60.0, ge=0, description="Upper bound of the Prefer: wait=N synchronous wait."
    )
    max_input_depth: int = Field(
        default=32,
        ge=2,
        le=100,
        description="Deepest nesting of arrays and objects accepted in job inputs.",
    )
    max_urls_per_request: int = Field(
        default=16, ge=1, le=1000, description="URLs checked (resolved) in one submission at most."
    )
    url_check_deadline: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the URL checks of one submission may take in all (DNS lookups).",
    )
    broker_max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        description="The broker's max_message_size (RabbitMQ 4 defaults to 16 MiB, 3.x to 128 "
        "MiB); every service's max_result_bytes must fit under it.",
    )
    events_prefetch: int = Field(default=128, ge=1, description="Events applied concurrently.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the gateway and of workers started by `sgw`."
    )
    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="The gateway's public root (e.g. https://jobs.example.org/gw), used in "
        "links and Location headers instead of the request's Host; the dashboard and the API "
        "docs name their pages, scripts and cookies under its path.",
    )
    forwarded_allow_ips: CommaList = Field(
        default=("127.0.0.1",),
        description="Proxies whose X-Forwarded-For/-Proto headers `sgw serve` trusts ('*' for "
        "any: only behind a proxy that sets them).",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry (traces, metrics and logs to the providers "
        "configured globally, e.g. under `opentelemetry-instrument`). Off, no request looks "
        "for providers: that look cost a tenth of a status read.",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="prometheus-client's multiprocess directory; `sgw serve --workers N` "
        "(N > 1) sets it, so that every process's metrics add up in each scrape.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's headers (408 and close past it).",
    )
    max_header_size: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Bytes a request's line and headers may take in all (431 and close past "
        "it): the server holds them in memory until they end.",
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a client has to send a request's body once its headers are in.",
    )
    host: str = Field(default="127.0.0.1", description="Address `sgw serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `sgw serve` listens on.")
    workers: int = Field(default=1, ge=1, description="Gateway processes started by `sgw serve`.")
    shutdown_grace: int = Field(
        default=65,
        ge=1,
        description="Seconds `sgw serve` lets open requests (Prefer: wait, event streams) run "
        "after SIGTERM before it cancels them and closes; keep it above SG_MAX_WAIT.",
    )

    # Authentication (PyJWT)
    auth_disabled: bool = Field(
        default=False,
        description="Accept every request as the anonymous admin. For development only; the "
        "gateway says so loudly at start and in /readyz.",
    )
    jwt_algorithms: CommaList = Field(
        default=("HS256",),
        description="Accepted signature algorithms, one family: HS*, RS*/PS*, ES* or EdDSA.",
    )
    jwt_secret: SecretStr | None = Field(default=None, description="HMAC secret (HS*).")
    jwt_secret_base64: bool = Field(
        default=False,
        description="The secret is base64, as the old gateway kept its HS512 key.",
    )
    jwt_public_key: str | None = Field(
        default=None, description="PEM public key (RS*/PS*/ES*/EdDSA), or the path of a PEM file."
    )
    jwks_url: str | None = Field(
        default=None, description="JWKS endpoint for RS*/PS*/ES*/EdDSA keys."
    )
    jwt_audience: str | None = Field(default=None, description="Required `aud` when set.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` when set.")
    jwt_leeway: float = Field(
        default=10.0, ge=0, le=300, description="Clock skew allowed, seconds."
    )
    jwt_max_bytes: int = Field(default=8192, ge=256, description="Longer tokens are refused.")
    scope_claim: str = Field(
        default="scope", description="Claim holding the scopes (space-separated string or list)."
    )
    admin_scope: str = Field(
        default="sg:admin", description="Scope that sees and cancels every user's jobs."
    )
    legacy_tokens: bool = Field(
        default=False,
        description="Accept tokens without `sub` (as the old gateway minted them); their jobs "
        "belong to `SG_LEGACY_OWNER`.",
    )
    legacy_owner: str = Field(default="legacy", min_length=1, description="Owner of legacy jobs.")
    legacy_open_status: bool | None = Field(
        default=None,
        description="Answer the old `GET /{service}/status?uuid=` without a token for jobs "
        "submitted on the old routes, as the old gateway did (the uuid is the capability). "
        "Defaults to SG_LEGACY_TOKENS.",
    )

    @property
    def store_max_bytes(self) -> int:
        """The largest record the configured store keeps (a MongoDB document: 16 MiB)."""
        if self.store_url.startswith("mongodb"):
            return 16 * 1024 * 1024
        return 1_000_000_000  # SQLite's default SQLITE_MAX_LENGTH

    @property
    def open_legacy_status(self) -> bool:
        """Whether old status polls need no token (see ``legacy_open_status``)."""
        if self.legacy_open_status is None:
            return self.legacy_tokens
        return self.legacy_open_status

    # Limits per owner
    submit_rate: float | None = Field(
        default=None, gt=0, description="Submissions per second per owner (token bucket)."
    )
    submit_burst: int = Field(default=20, ge=1, description="Bucket size of `SG_SUBMIT_RATE`.")
    idempotency_window: float = Field(
        default=86400,
        gt=0,
        description="Seconds an Idempotency-Key keeps answering with its first job.",
    )
    max_active_jobs: int | None = Field(
        default=None, ge=1, description="Accepted plus running jobs an owner may have at once."
    )

    version_mismatch: Literal["report", "reject"] = Field(
        default="report",
        description="A worker announcing another version than the catalogue's: report it on "
        "the job, or fail the job (code 204) and stop its run.",
    )

    # The old ServiceGateway routes
    legacy_storage_url: str = Field(
        default="http://localhost:5002/get/{storage_doc_id}",
        description="Where a storage_doc_id (and storage_<t>_id) is fetched from (MSS).",
    )
    legacy_annotations_url: str = Field(
        default="http://localhost:5001/document/{ann_doc_id}/annotations?storageType=2",
        description="Where workers post the annotations of an ann_doc_id (JASS).",
    )
    legacy_upload_url: str = Field(
        default="http://localhost:5002/add",
        description="Where workers upload derived files (sent as misc.upload_url).",
    )

    canarie_templates: Path | None = Field(
        default=None,
        description="Directory of the CANARIE page templates: a page value such as `doc.html` "
        "names a file in it, rendered in a Jinja2 sandbox.",
    )

    # URL inputs (SSRF policy)
    url_schemes: CommaList = Field(
        default=("http", "https"), description="Schemes allowed in URL inputs."
    )
    url_allow_hosts: CommaList = Field(
        default=(), description="Host names allowed even when they resolve to private addresses."
    )
    url_allow_networks: CommaList = Field(
        default=(),
        description="CIDRs allowed although private, loopback or link-local (e.g. 10.1.0.0/16).",
    )

    def url_policy(self) -> UrlPolicy:
        """The URL policy, shared by the gateway's input checks and the workers' fetches."""
        return UrlPolicy(
            schemes=self.url_schemes,
            allow_hosts=self.url_allow_hosts,
            allow_networks=self.url_allow_networks,
        )

    # Webhooks (OGC `subscriber`, signed per Standard Webhooks)
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The deployment's webhook signing secret, `whsec_` then base64 of 24 to 64 "
        "random bytes (`make run` writes one to .env). Unset, a `subscriber` is refused.",
    )
    webhook_old_secrets: SecretList = Field(
        default=(),
        description="Secrets being retired: every webhook is signed with them too (one "
        "signature each in `webhook-signature`), so receivers can move to the new one.",
    )
    webhook_retry_delays: IntList = Field(
        default=DEFAULT_WEBHOOK_DELAYS,
        description="Seconds before each attempt after the first: one attempt more than "
        "delays. Each delay is a holding queue of its own.",
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds one delivery attempt may take."
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=1000, description="Deliveries one gateway process makes at once."
    )
    webhook_host_concurrency: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Attempts one gateway process makes at once to one receiver (scheme, host "
        "and port); see `webhook_host_wait`.",
    )
    webhook_host_wait: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds a delivery to a receiver at its limit waits for a free slot. A "
        "receiver that made one wait in vain, or whose last attempt took longer, is slow: while "
        "it is at its limit its further deliveries are deferred instead of waiting, each a step "
        "of the retry schedule not counted as an attempt, so that it holds back no other's.",
    )
    webhook_schemes: CommaList = Field(
        default=("https", "http"), description="Schemes allowed in `subscriber` URIs."
    )
    webhook_allow_hosts: CommaList = Field(
        default=(),
        description="Host names webhooks may reach although they resolve to private addresses.",
    )
    webhook_allow_networks: CommaList = Field(
        default=(),
        description="CIDRs webhooks may reach although private, loopback or link-local.",
    )

    @property
    def webhooks_enabled(self) -> bool:
        return self.webhook_secret is not None

    def webhook_policy(self) -> UrlPolicy:
        """The URL policy of `subscriber` URIs: the gateway itself connects to them, so it is
        its own (a private network open to workers' documents is not open to webhooks)."""
        return UrlPolicy(
            schemes=self.webhook_schemes,
            allow_hosts=self.webhook_allow_hosts,
            allow_networks=self.webhook_allow_networks,
        )

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """``SG_X=`` (empty) leaves unset a setting that may be unset (a limit, a key)."""
        field = cls.model_fields[info.field_name or ""]
        return None if value == "" and field.default is None else value

    @field_validator("webhook_secret", "webhook_old_secrets")
    @classmethod
    def _webhook_secrets(cls, value: SecretStr | tuple[SecretStr, ...] | None) -> object:
        for secret in value if isinstance(value, tuple) else (value,):
            if secret is not None:
                webhook_signer(secret.get_secret_value())
        return value

    @field_validator("webhook_retry_delays")
    @classmethod
    def _webhook_delays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= delay <= 7 * 86400 for delay in value):
            raise ValueError("each delay is 1 to 604800 seconds")
        return value

    @field_validator("url_allow_networks", "webhook_allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

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
        if value.startswith("sqlite:///"):
            return value
        if value.startswith(("mongodb://", "mongodb+srv://")):
            # PyMongo is loaded only for a MongoDB store (a tenth of a second on every start).
            from gateway.store._mongo_codec import check_url

            return check_url(value)
        raise ValueError("must be sqlite:///<path> or mongodb://host[:port]/<database>")


def load_settings(env_file: Path | None = None) -> Settings:
    """The settings, from the environment and the file :func:`env_file_for` finds."""
    path = env_file_for(env_file)
    return Settings(_env_file=path, env_file=path)
