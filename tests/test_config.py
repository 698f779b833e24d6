"""Configuration: typed, validated at start, errors naming file, key and expectation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.config import load_config
from syncd.domain import Stage
from syncd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[warehouse]
url = "sqlite:///x.db"

[sync]
lookback = "10m"

[[sources]]
name = "acme"
kind = "jira"
url = "https://acme.atlassian.net/"
email = "me@acme.example"
token_env = "SYNCD_TEST_TOKEN"
jql = "project = SHOP"
value_stream = "Checkout"

[sources.stages]
"Blocked" = "waiting"
"10042" = "canceled"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_TOKEN", "tok-123456")
    config = load_config(write(tmp_path, GOOD))
    source = config.source("acme")
    assert source.url == "https://acme.atlassian.net"
    assert source.stages == {"Blocked": Stage.WAITING, "10042": Stage.CANCELED}
    assert config.sync.lookback == timedelta(minutes=10)
    assert source.stream_value == "Checkout"
    token = source.token()
    assert token is not None and token.get_secret_value() == "tok-123456"
    assert "tok-123456" not in repr(source) and "tok-123456" not in repr(token)


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (('lookback = "10m"', 'lookback = "soon"'), "sync.lookback", "duration"),
        (
            ('kind = "jira"', 'kind = "jiraa"'),
            "sources[0].kind",
            "installed connectors: github, gitlab, jira",
        ),
        (
            ('value_stream = "Checkout"', 'value_strem = "Checkout"'),
            "sources[0].value_strem",
            "unknown key",
        ),
        (
            ('"Blocked" = "waiting"', '"Blocked" = "paused"'),
            "sources[0].stages.Blocked",
            "'new', 'active', 'waiting', 'done' or 'canceled'",
        ),
        (('url = "https://acme.atlassian.net/"', 'url = "acme"'), "sources[0].url", "http(s) URL"),
        (('name = "acme"\n', ""), "sources[0].name", "required key is missing"),
    ],
)
def test_errors_name_file_key_and_expectation(
    tmp_path: Path, change: tuple[str, str], key: str, expected: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and key in message and expected in message


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[warehouse\nurl="))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_secret_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_TEST_TOKEN", raising=False)
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"SYNCD_TEST_TOKEN is not set.*|.*token_env"):
        config.source("acme").token()


def test_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n", encoding="utf-8")
    text = GOOD.replace('token_env = "SYNCD_TEST_TOKEN"', f'token_file = "{secret}"')
    token = load_config(write(tmp_path, text)).source("acme").token()
    assert token is not None and token.get_secret_value() == "from-a-file"


def test_cli_exit_code_2_on_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace('kind = "jira"', 'kind = "trello"'))
    assert main(["sync", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "trello" in err and "installed connectors: github, gitlab, jira" in err and str(path) in err
    )


def test_example_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = sorted((REPO / "config").glob("*.toml"))
    assert examples, "config/ must hold example configurations"
    for example in examples:
        config = load_config(example)
        assert config.sources, example
