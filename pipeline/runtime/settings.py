"""The one place where dropship is configured.

Every setting is an environment variable prefixed ``DROPSHIP_`` (for example
``DROPSHIP_KAFKA_BOOTSTRAP_SERVERS``). Values are read, in order of precedence:

1. the process environment;
2. ``.env`` in the working directory;
3. ``<state dir>/dev.env`` (default ``.dropship/dev.env``), written by
   ``dropship dev up`` so that every command run from the project folder reaches
   the embedded stack without further setup.

Nothing here connects to anything: :func:`load_settings` only parses and
validates. Callers (the CLI, the worker wiring, tests) build clients from the
returned object. Invalid values raise :class:`SettingsError`, whose message is
one line naming the variable and the rule it broke.

Two database URLs: ``DROPSHIP_DATABASE_URL`` is the application role the worker
and the ops commands connect as; ``DROPSHIP_DATABASE_ADMIN_URL`` (optional) is
the owner of the schema, for migrations and DDL (:attr:`Settings.admin_database_url`).
Secrets never reach output through this module: passwords are ``SecretStr``,
``database_url`` is left out of ``repr``, and :func:`masked` / :func:`describe_error`
replace passwords and the password part of URLs by ``***``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DROPSHIP_"
DEFAULT_STATE_DIR = Path(".dropship")
DEV_ENV_FILE = "dev.env"
ASYNCPG_PREFIX = "postgresql+asyncpg://"


#: the agents that may each have a database of their own (``database_url_<agent>``)
AGENT_DATABASES = ("allocation", "orders", "projector")


class SettingsError(Exception):
    """A setting is invalid; ``str(err)`` is one line naming the variable."""


class Settings(BaseSettings):
    """All runtime settings. Field ``foo_bar`` is variable ``DROPSHIP_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        env_file=(str(DEFAULT_STATE_DIR / DEV_ENV_FILE), ".env"),
        env_file_encoding="utf-8",
    )

    # --- Kafka ---------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", pattern=r"^[^\s,]+:\d+(,[^\s,]+:\d+)*$",
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_enable_idempotence: bool = Field(
        False, description="Idempotent producer: on for real Kafka, off for the embedded broker."
    )
    kafka_topic_partitions: int = Field(4, ge=1, le=1024)
    kafka_replication_factor: int = Field(1, ge=1, le=16)
    kafka_session_timeout_s: float = Field(6.0, ge=1.0, le=300.0)
    kafka_heartbeat_interval_s: float = Field(1.0, gt=0.0, le=100.0)
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_fetch_max_wait_ms: int = Field(
        20, ge=0, le=60_000,
        description="Longest the broker may hold a consumer's fetch when it has no new "
                    "records (Kafka's fetch.max.wait.ms; Faust's own is 1,500). Real Kafka "
                    "answers as soon as a record arrives, so a low value only means more "
                    "empty fetches when idle; the embedded broker holds every fetch this "
                    "long, so it bounds the latency of each hop there.",
    )
    app_id: str = Field(
        "dropship", pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Faust app id, also the prefix of consumer group ids.",
    )

    # --- Postgres ------------------------------------------------------------
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:15432/dropship",
        pattern=r"^postgresql\+asyncpg://", repr=False,  # may hold a password
        description="SQLAlchemy URL of the application role (the worker's); the driver "
                    "must be asyncpg.",
    )
    database_admin_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the schema owner, for migrations and admin "
                          "commands (DDL). Unset: DROPSHIP_DATABASE_URL. Must name the "
                          "same database.",
    )
    database_pool_size: int = Field(5, ge=1, le=100)
    #: One database per agent (docs/scaling.md): each agent's transactions touch only
    #: its own state, ids, outbox and checkpoints, so its tables can live elsewhere.
    database_url_allocation: str | None = Field(
        None, pattern=r"^postgresql\+asyncpg://", repr=False,
        description="The allocation agent's database (as the application role). "
                    "Unset: DROPSHIP_DATABASE_URL.")
    database_url_orders: str | None = Field(
        None, pattern=r"^postgresql\+asyncpg://", repr=False,
        description="The order agent's database. Unset: DROPSHIP_DATABASE_URL.")
    database_url_projector: str | None = Field(
        None, pattern=r"^postgresql\+asyncpg://", repr=False,
        description="The projector's database: read models and event_log, which ops "
                    "commands read. Unset: DROPSHIP_DATABASE_URL.")
    database_admin_url_allocation: SecretStr | None = Field(
        None, description="The owner's URL of the allocation agent's database (db "
                          "upgrade). Unset: DROPSHIP_DATABASE_URL_ALLOCATION.")
    database_admin_url_orders: SecretStr | None = Field(
        None, description="The owner's URL of the order agent's database. Unset: "
                          "DROPSHIP_DATABASE_URL_ORDERS.")
    database_admin_url_projector: SecretStr | None = Field(
        None, description="The owner's URL of the projector's database. Unset: "
                          "DROPSHIP_DATABASE_URL_PROJECTOR.")

    # --- Business defaults (SLAs, windows) ----------------------------------
    sla_acknowledge_hours: float = Field(24.0, gt=0)
    sla_dispatch_hours: float = Field(72.0, gt=0)
    sla_grace_minutes: float = Field(
        15.0, ge=0, description="How long after a supplier's deadline its answer may still "
                                "be in transit before the order fails over.")
    payment_window_minutes: float = Field(60.0, gt=0)
    held_payment_window_minutes: float = Field(
        1440.0, gt=0, description="How long a short payment waits for the balance.")
    backorder_window_days: float = Field(
        14.0, gt=0, description="Units backordered this long are cancelled and refunded.")
    return_window_days: float = Field(30.0, gt=0)
    max_reroutes_per_line: int = Field(3, ge=0, le=100)
    fx_rates: str = Field(
        "USD=1,EUR=1.08,GBP=1.27,CAD=0.73,AUD=0.66,JPY=0.0067,CHF=1.13,SEK=0.095",
        pattern=r"^[A-Z]{3}=[0-9]+(\.[0-9]+)?(,[A-Z]{3}=[0-9]+(\.[0-9]+)?)*$",
        description="The rate table that makes landed costs in different currencies "
                    "comparable: CODE=value of one unit in a common base, comma-separated. "
                    "An offer in a currency not listed ranks after those that are "
                    "(docs/allocation.md, \"Ranking\").")
    backorder_overtakes: int = Field(
        3, ge=0, le=1000,
        description="How many times later lines may be served before a waiting backorder "
                    "of the same sku; then the stock it can use is kept for it "
                    "(docs/allocation.md, \"Backorders\").")
    default_transit_days: int = Field(
        7, ge=0, le=365,
        description="Transit days assumed for a shipment whose offer names none for the "
                    "destination.")
    late_delivery_grace_days: float = Field(
        2.0, ge=0, description="How long past its expected delivery a shipment may take "
                               "before it is late (shops and ops are told).")
    max_reships_per_line: int = Field(
        1, ge=0, le=100,
        description="Times a line's units lost, damaged or returned to sender in transit "
                    "are sent again; past it they are refunded.")
    held_event_timeout_minutes: float = Field(
        60.0, gt=0, description="How long an early event may wait for its predecessor.")
    max_held_events_per_order: int = Field(50, ge=1, le=10_000)

    # --- Worker --------------------------------------------------------------
    agent_batch_size: int = Field(500, ge=1, le=100_000,
                                  description="Most records an agent applies in one transaction.")
    agent_batch_within_s: float = Field(
        0.02, gt=0, le=60, description="Longest wait to fill a batch: under a backlog batches "
        "fill at once; when traffic is light this is added to every hop's latency.")
    web_bind: str = Field("127.0.0.1", description="Address the worker's web server binds.")
    web_port: int = Field(6066, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    data_dir: Path | None = Field(
        None, description="Folder the worker keeps Faust's data folder in (one "
                          "<group>-data inside it per consumer group); made if missing. "
                          "Unset: <DROPSHIP_STATE_DIR>/worker-data. Must be writable by "
                          "the worker's user (the image sets /var/lib/dropship).")
    ready_max_lag: int = Field(
        1000, ge=0, description="A worker answers /health as ready once it holds its "
                                "partitions and every one is at most this many records "
                                "behind.")
    clock_file: Path | None = Field(
        None, description="Read the current time from this file (RFC 3339): tests and "
                          "demos move time for deadlines with it. Unset: the system clock.")
    deadline_check_s: float = Field(1.0, gt=0, le=3600,
                                    description="How often a worker fires due deadlines.")
    stop_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Longest a worker takes to stop (SIGTERM, Ctrl-C); "
        "past it, it logs what was still running and exits.")

    # --- Retention (dropship retention run) ------------------------------------
    retention_processed_events_hours: float = Field(
        336.0, gt=0, description="Keep the ids of applied events this long (14 days). "
        "Must exceed the broker's retention (Kafka's default: 7 days) so a redelivered "
        "record is still recognised; a shop re-sending an event id later than this "
        "would be applied again.")
    retention_outbox_hours: float = Field(
        24.0, gt=0, description="Keep outbox rows this long after they were published "
        "(unpublished rows are never pruned).")
    retention_event_log_hours: float = Field(
        0.0, ge=0, description="Keep event_log rows this long; 0 keeps them for ever. "
        "A rebuild replays only what is kept, so rows of orders older than this "
        "drop out of rebuilt read models (docs/reliability.md, \"Retention\").")
    retention_batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="Rows deleted per retention transaction.")

    # --- Embedded development stack ------------------------------------------
    state_dir: Path = DEFAULT_STATE_DIR
    dev_kafka_port: int = Field(19092, ge=0, le=65535)
    dev_pg_port: int = Field(15432, ge=0, le=65535)

    @field_validator("database_admin_url", "database_admin_url_allocation",
                     "database_admin_url_orders", "database_admin_url_projector", mode="before")
    @classmethod
    def _check_admin_url(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str) or not raw.startswith(ASYNCPG_PREFIX):
            raise ValueError(f"must start with {ASYNCPG_PREFIX}")
        return raw

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.kafka_heartbeat_interval_s * 3 > self.kafka_session_timeout_s:
            raise ValueError(
                "DROPSHIP_KAFKA_HEARTBEAT_INTERVAL_S: must be at most a third of "
                "DROPSHIP_KAFKA_SESSION_TIMEOUT_S"
            )
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "DROPSHIP_KAFKA_SASL_USERNAME: SASL protocols need a username and "
                "DROPSHIP_KAFKA_SASL_PASSWORD"
            )
        return self

    def of_agent(self, agent: str) -> Settings:
        """These settings with ``agent``'s own database (``database_url_<agent>``, its
        owner's URL as the admin URL) if it has one, else unchanged."""
        url = getattr(self, f"database_url_{agent}", None)
        if url is None:
            return self
        admin = getattr(self, f"database_admin_url_{agent}", None)
        return self.model_copy(update={"database_url": url, "database_admin_url": admin})

    def databases(self) -> list[Settings]:
        """One settings per distinct database (``database_url`` first, then each
        agent's own): what ``db upgrade`` migrates."""
        seen: dict[str, Settings] = {}
        for agent in ("", *AGENT_DATABASES):
            s = self.of_agent(agent) if agent else self
            seen.setdefault(s.admin_database_url, s)
        return list(seen.values())

    @property
    def worker_data_dir(self) -> Path:
        """Where the worker keeps Faust's data folders: ``data_dir``, else a folder of
        the state dir (never the working directory, which an image may not let
        its user write)."""
        return self.data_dir if self.data_dir is not None else self.state_dir / "worker-data"

    @property
    def admin_database_url(self) -> str:
        """The schema owner's URL, for migrations and DDL: ``database_admin_url`` if
        set, else ``database_url``. Raises :class:`SettingsError` if the two name
        different databases (migrating one while the worker uses another)."""
        if self.database_admin_url is None:
            return self.database_url
        admin = self.database_admin_url.get_secret_value()
        if database_name(admin) != database_name(self.database_url):
            raise SettingsError(
                f"DROPSHIP_DATABASE_ADMIN_URL: names database {database_name(admin)!r} but "
                f"DROPSHIP_DATABASE_URL names {database_name(self.database_url)!r}; "
                "set both for the same database")
        return admin

    @property
    def kafka_broker_url(self) -> str:
        """Bootstrap servers in Faust's ``kafka://host:port;host:port`` form."""
        return ";".join(f"kafka://{h}" for h in self.kafka_bootstrap_servers.split(","))

    def group_id(self, consumer: str) -> str:
        """Consumer group id of one of our consumers (``<app_id>.<consumer>``)."""
        return f"{self.app_id}.{consumer}"


def _authority_and_rest(url: str) -> tuple[str, str, str]:
    """(``scheme://``, userinfo or "", the rest from host on) of a URL; the userinfo
    ends at the last ``@`` so that a password holding ``@`` or ``/`` stays whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url
    userinfo, at, hostpart = rest.rpartition("@")
    return scheme + sep, (userinfo if at else ""), (hostpart if at else rest)


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for output and errors)."""
    prefix, userinfo, rest = _authority_and_rest(url)
    if not userinfo:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{prefix}{user}{':***' if colon else ''}@{rest}"


def database_name(url: str) -> str:
    """The database a SQLAlchemy URL names (the path, without the query)."""
    return _authority_and_rest(url)[2].partition("/")[2].partition("?")[0]


def _shown(name: str, value: object) -> object:
    """A setting's value as it may appear in output: secrets masked, URLs redacted."""
    if value is None:
        return None
    if isinstance(value, SecretStr) or "password" in name.lower():
        return "***"
    if "url" in name.lower() and isinstance(value, str):
        return redact_url(value)
    return value


def masked(settings: Settings) -> dict[str, object]:
    """Every setting (field name -> value) safe to print: what ``dropship settings`` shows."""
    return {name: _shown(name, getattr(settings, name)) for name in type(settings).model_fields}


def describe_error(err: ValidationError) -> str:
    """Turn pydantic's multi-line report into one line naming the variable."""
    first = err.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "__root__"]
    msg = str(first.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    if loc:
        var = ENV_PREFIX + loc[0].upper()
        shown = _shown(var, first.get("input"))
        return f"{var}: {msg} (got {shown!r})"
    return msg


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings (see module docstring for precedence).

    The env file under the state dir is found from ``DROPSHIP_STATE_DIR`` when set.
    Raises :class:`SettingsError` with a one-line message on any invalid value.
    """
    state_dir = Path(os.environ.get(ENV_PREFIX + "STATE_DIR", str(DEFAULT_STATE_DIR)))
    env_files = (str(state_dir / DEV_ENV_FILE), ".env")
    try:
        return Settings(_env_file=env_files, **overrides)
    except ValidationError as err:
        raise SettingsError(describe_error(err)) from None
