"""Settings: the contract's names and defaults, .env, and one message listing every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import LogFormat, Settings, load_settings
from bot.domain.errors import SettingsError

CONTRACT = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "D7_API_TOKEN",
    "D7_API_URL",
    "BOT_POLICY",
    "DATABASE_URL",
    "PUBLIC_URL",
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "D7_REPORT_SECRET",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [*CONTRACT, *EXTENSIONS]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


EXTENSIONS = [  # ours, beyond the original contract
    "SEND_RETRY_DEADLINE",
    "SEND_RETRY_BACKOFF",
    "D7_RECONCILE_AFTER",
    "D7_JOURNAL",
    "SLACK_CHANNEL_PACE",
]


def test_contract_names_are_exactly_the_settings_fields() -> None:
    assert sorted(str(f.validation_alias) for f in Settings.model_fields.values()) == sorted(CONTRACT + EXTENSIONS)


def test_the_journal_is_next_to_the_sqlite_file_or_one_per_port_with_postgresql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    assert load_settings().journal == Path("bot.db.d7-journal")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////var/lib/relay/sends.db")
    assert load_settings().journal == Path("/var/lib/relay/sends.db.d7-journal")
    monkeypatch.setenv("DATABASE_URL", "postgresql://relay@db/relay")
    monkeypatch.setenv("PORT", "3001")
    assert load_settings().journal == Path("d7-journal-3001")
    monkeypatch.setenv("D7_JOURNAL", "/data/relay-1/d7-journal")
    assert load_settings().journal == Path("/data/relay-1/d7-journal")
    monkeypatch.setenv("D7_JOURNAL", "")  # blank: unset
    assert load_settings().journal == Path("d7-journal-3001")


def test_send_retry_deadline_is_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    assert load_settings().send_retry_deadline.total_seconds() == 900
    monkeypatch.setenv("SEND_RETRY_DEADLINE", "2h")
    assert load_settings().send_retry_deadline.total_seconds() == 7200
    monkeypatch.setenv("SEND_RETRY_DEADLINE", "soon")
    with pytest.raises(SettingsError, match="SEND_RETRY_DEADLINE: 'soon' is not a duration"):
        load_settings()


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "sig")

    s = load_settings()

    assert str(s.slack_api_url) == "https://slack.com/api/"
    assert str(s.d7_api_url) == "https://api.d7networks.com/"
    assert str(s.bot_policy) == "policy.yml"
    assert s.database_url == "sqlite:///bot.db"
    assert (s.host, s.port, s.log_level.value, s.log_format) == ("0.0.0.0", 3000, "INFO", LogFormat.TEXT)
    assert s.public_url is None
    assert s.d7_report_secret is None
    assert s.slack_app_token is None
    assert s.dry_run
    assert not s.socket_mode


def test_dotenv_is_read_and_blank_means_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SLACK_BOT_TOKEN=xoxb-from-dotenv\nSLACK_APP_TOKEN=xapp-1\nD7_API_TOKEN=\nPORT=8080\nLOG_LEVEL=debug\n"
    )

    s = load_settings()

    assert s.slack_bot_token.get_secret_value() == "xoxb-from-dotenv"
    assert s.socket_mode
    assert s.slack_signing_secret is None
    assert s.dry_run
    assert s.port == 8080
    assert s.log_level.value == "DEBUG"


def test_every_problem_is_listed_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "http")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-not-an-app-token")
    monkeypatch.setenv("D7_REPORT_SECRET", "short")

    with pytest.raises(SettingsError) as info:
        load_settings()

    assert info.value.problems == [
        "DATABASE_URL: must start with sqlite:/// or postgresql://",
        "SLACK_BOT_TOKEN: is required",
        "SLACK_APP_TOKEN: must be an app-level token starting with xapp-",
        "SLACK_SIGNING_SECRET: is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)",
        "PORT: Input should be a valid integer, unable to parse string as an integer",
        "LOG_FORMAT: Input should be 'text' or 'json'",
        "D7_REPORT_SECRET: must be at least 16 characters, so that nobody can guess it",
    ]
    assert str(info.value).startswith("configuration error (7 problem(s)):\n  - DATABASE_URL: must start with")


def test_secrets_never_appear_in_reprs_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-super-secret-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-super-secret")
    monkeypatch.setenv("D7_API_TOKEN", "d7-super-secret")
    monkeypatch.setenv("D7_REPORT_SECRET", "report-super-secret-123")
    s = load_settings()
    assert "super-secret" not in repr(s)
    assert "super-secret" not in str(s.model_dump())

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-user-token-super-secret")
    monkeypatch.setenv("SLACK_APP_TOKEN", "bad-super-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "super-secret" not in str(info.value)
