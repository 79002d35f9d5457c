"""Settings from the environment and ``.env``: the only module that reads the environment.

The names and defaults are the interface contract (the README's settings table; tests outside the repository use
them). ``load_settings`` turns every bad or missing value into one ``SettingsError`` that lists them all, without
echoing any secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from bot.domain.errors import SettingsError
from bot.domain.policy import parse_duration

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_D7_API_URL = "https://api.d7networks.com"
_DB_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg", "postgres")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class PolicySettings(BaseSettings):
    """The part of the settings that tools working on the policy alone need."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_policy: Path = Field(Path("policy.yml"), validation_alias="BOT_POLICY")


class StorageSettings(BaseSettings):
    """The part of the settings the audit tools need."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field("sqlite:///bot.db", validation_alias="DATABASE_URL")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in _DB_SCHEMES:
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value


class Settings(PolicySettings, StorageSettings):
    """Everything the running bot is configured with."""

    slack_bot_token: SecretStr = Field(validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    # After SLACK_APP_TOKEN: whether it is required depends on the mode.
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET", validate_default=True)
    slack_api_url: AnyHttpUrl = Field(AnyHttpUrl(DEFAULT_SLACK_API_URL), validation_alias="SLACK_API_URL")
    d7_api_token: SecretStr | None = Field(None, validation_alias="D7_API_TOKEN")
    d7_api_url: AnyHttpUrl = Field(AnyHttpUrl(DEFAULT_D7_API_URL), validation_alias="D7_API_URL")
    public_url: AnyHttpUrl | None = Field(None, validation_alias="PUBLIC_URL")
    host: str = Field("0.0.0.0", validation_alias="HOST")  # noqa: S104 - a server listens on all interfaces
    port: int = Field(3000, ge=1, le=65535, validation_alias="PORT")
    log_level: LogLevel = Field(LogLevel.INFO, validation_alias="LOG_LEVEL")
    log_format: LogFormat = Field(LogFormat.TEXT, validation_alias="LOG_FORMAT")
    d7_report_secret: SecretStr | None = Field(None, validation_alias="D7_REPORT_SECRET")
    # Beyond the contract: how long safe failures (D7 unavailable, nothing sent) are retried before giving up.
    send_retry_deadline: timedelta = Field(timedelta(minutes=15), validation_alias="SEND_RETRY_DEADLINE")
    # Beyond the contract: the outbox's first wait before trying D7 again after the client gave up on a safe
    # failure (doubled each time, at most 2 minutes, until SEND_RETRY_DEADLINE).
    send_retry_backoff: timedelta = Field(timedelta(seconds=5), gt=timedelta(0), validation_alias="SEND_RETRY_BACKOFF")
    # Beyond the contract: sends without a final delivery status this long after D7 accepted them are looked up.
    reconcile_after: timedelta = Field(timedelta(minutes=10), validation_alias="D7_RECONCILE_AFTER")
    # Beyond the contract: the file where D7's answers are kept while the database does not take them (``journal``).
    d7_journal: Path | None = Field(None, validation_alias="D7_JOURNAL")
    # Beyond the contract: posts a second the bot makes in one Slack channel after a burst of 10 (Slack's limit is
    # about 1). 0: not paced ahead, only Slack's 429s are waited out (a Slack-compatible API without that limit).
    slack_channel_pace: float = Field(1.0, ge=0, validation_alias="SLACK_CHANNEL_PACE")

    @field_validator("send_retry_deadline", "send_retry_backoff", "reconcile_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator(
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "d7_api_token",
        "d7_report_secret",
        "d7_journal",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `FOO=` in a .env file means "not set", not "set to nothing".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("d7_report_secret")
    @classmethod
    def _report_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters, so that nobody can guess it")
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._~-]+", value.get_secret_value()):
            raise ValueError("may hold only letters, digits and . _ ~ - (it is part of a URL path)")
        return value

    @field_validator("slack_signing_secret")
    @classmethod
    def _http_mode_needs_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("slack_app_token") is None:
            raise ValueError("is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)")
        return value

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def dry_run(self) -> bool:
        return self.d7_api_token is None

    @property
    def journal(self) -> Path:
        """``D7_JOURNAL``; by default next to the SQLite file (``bot.db.d7-journal``), or with PostgreSQL
        ``d7-journal-<PORT>`` in the working directory: one per replica (the port tells replicas on one host apart)."""
        if self.d7_journal is not None:
            return self.d7_journal
        database = make_url(self.database_url).database if self.database_url.startswith("sqlite") else None
        if database and database != ":memory:":
            return Path(f"{database}.d7-journal")
        return Path(f"d7-journal-{self.port}")


def _problems(exc: ValidationError, model: type[BaseSettings]) -> list[str]:
    aliases = {name: str(info.validation_alias) for name, info in model.model_fields.items()}
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        name = aliases.get(field, field)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        problems.append(f"{name}: {msg}" if name else msg)
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; ``SettingsError`` lists every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_problems(exc, Settings)) from None


def load_policy_settings(**overrides: Any) -> PolicySettings:
    """Read only what the policy tools need."""
    try:
        return PolicySettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_problems(exc, PolicySettings)) from None


def load_storage_settings(**overrides: Any) -> StorageSettings:
    """Read only what the audit tools need."""
    try:
        return StorageSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_problems(exc, StorageSettings)) from None
