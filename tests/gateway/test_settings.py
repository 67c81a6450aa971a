"""The service config and agent files: shipped files, ${ENV}, overrides, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config_loader import ConfigError
from gateway.settings import ENVIRONMENT_KEYS, load_agents, load_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "callgate.yaml"
ENV_VALUES = {"CALLGATE_PUBLIC_URL": "https://env.example.com", "CALLGATE_LOG_FORMAT": "json"}
FILE_VALUES = {"CALLGATE_PUBLIC_URL": "https://file.example.com", "CALLGATE_LOG_FORMAT": "console"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (*ENVIRONMENT_KEYS, "CALLGATE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)


def write(
    directory: Path, settings: dict | str, agents: dict[str, dict | str] | None = None
) -> Path:
    """A config directory: callgate.yaml and agents/NAME.yaml (default.yaml unless told)."""
    (directory / "agents").mkdir(exist_ok=True)
    for name, agent in ({"default": {}} if agents is None else agents).items():
        text = agent if isinstance(agent, str) else yaml.safe_dump(agent)
        (directory / "agents" / f"{name}.yaml").write_text(text)
    path = directory / "callgate.yaml"
    path.write_text(settings if isinstance(settings, str) else yaml.safe_dump(settings))
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_shipped_config_and_agents_load():
    config = load_config(SHIPPED)
    assert config.settings.server.port == 8080
    assert config.settings.log_format == "console"
    assert config.settings.secret is None  # empty in the file: defaults, not ""
    files = sorted(p.stem for p in (REPO / "config" / "agents").glob("*.yaml"))
    assert sorted(config.agents) == files
    assert "default" in files
    default = config.agents["default"]
    assert default.name == "default"
    assert default.llm.provider == "scripted" and default.llm.intents
    assert default.turn.pause_secs <= default.turn.silence_secs


def test_shipped_config_names_every_environment_key():
    raw = yaml.safe_load(SHIPPED.read_text())
    for variable, keys in ENVIRONMENT_KEYS.items():
        section = raw
        for key in keys[:-1]:
            section = section[key]
        assert keys[-1] in section, f"{'.'.join(keys)} ({variable}) missing from {SHIPPED}"
        assert variable in SHIPPED.read_text(), f"{variable} not documented in {SHIPPED}"


def test_env_references_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CG_TEST_HOST", "voice.example.com")
    monkeypatch.setenv("CG_TEST_SECRET", "hunter2")
    monkeypatch.setenv("CG_TEST_COMPANY", "Acme")
    monkeypatch.delenv("CG_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        "public_url: https://${CG_TEST_HOST}/\n"
        "secret: ${CG_TEST_SECRET}\n"
        "api_key: ${CG_TEST_UNSET}\n"
        "twilio: {edge: 'x-${CG_TEST_UNSET}-y'}\n",
        {"default": "greeting: Welcome to ${CG_TEST_COMPANY}!\n"},
    )
    config = load_config(path)
    assert config.settings.public_url == "https://voice.example.com"
    assert config.settings.secret == "hunter2"
    assert config.settings.api_key is None  # an unset variable leaves the key unset
    assert config.settings.twilio.edge == "x--y"
    assert config.agents["default"].greeting == "Welcome to Acme!"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path, {"server": {"port": 9099}})
    monkeypatch.setenv("CALLGATE_CONFIG", str(path))
    assert load_config().settings.server.port == 9099


def nested(data: dict, keys: tuple[str, ...], value: str) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return data | value


def setting(config, keys: tuple[str, ...]):
    value = config.settings
    for key in keys:
        value = getattr(value, key)
    return value


@pytest.mark.parametrize("in_file", [True, False], ids=["file-has-key", "file-lacks-key"])
@pytest.mark.parametrize("variable", sorted(ENVIRONMENT_KEYS))
def test_environment_overrides_its_key(
    variable: str, in_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    keys = ENVIRONMENT_KEYS[variable]
    from_file = FILE_VALUES.get(variable, "from-file")
    from_env = ENV_VALUES.get(variable, f"from-env-{variable.lower()}")
    path = write(tmp_path, nested({}, keys, from_file) if in_file else {})
    if in_file:
        assert setting(load_config(path), keys) == from_file
    monkeypatch.setenv(variable, from_env)
    assert setting(load_config(path), keys) == from_env


@pytest.mark.parametrize(
    ("settings", "agents", "expected"),
    [
        ("server:\n  port: 8080\n    host: x\n", None, ["callgate.yaml", "line 3", "YAML"]),
        ({"server": {"port": "eighty"}}, None, ["callgate.yaml", "server.port"]),
        ({"calls": {"playout_lead_ms": 5000}}, None, ["callgate.yaml", "calls.playout_lead_ms"]),
        ({"sever": {"port": 80}}, None, ["callgate.yaml", "sever", "not permitted"]),
        ({"log_format": "xml"}, None, ["callgate.yaml", "log_format", "xml"]),
        ({"public_url": "voice.example.com"}, None, ["callgate.yaml", "public_url"]),
        ({"routes": {"5551234567": "default"}}, None, ["callgate.yaml", "routes", "E.164"]),
        ({"routes": {"+15551234567": "sales"}}, None, ["callgate.yaml", "routes", "sales"]),
        ({}, {"sales": {}}, ["agents", "default.yaml"]),
        ({}, {"default": {"llm": {"intentz": []}}}, ["default.yaml", "llm.intentz"]),
        ({}, {"default": {"stt": {"beam_size": "wide"}}}, ["default.yaml", "stt.beam_size"]),
        (
            {},
            {"default": {"turn": {"pause_secs": 0.6, "silence_secs": 0.5}}},
            ["default.yaml", "turn", "pause_secs"],
        ),
        ({}, {"default": "- a list\n"}, ["default.yaml", "mapping"]),
        ({}, {"default": "greeting: [unclosed\n"}, ["default.yaml", "line 2", "YAML"]),
    ],
    ids=[
        "bad-yaml", "wrong-type", "out-of-range", "unknown-key", "bad-literal", "bad-url",
        "bad-e164", "route-to-missing-agent", "no-default-agent", "agent-unknown-key",
        "agent-wrong-type", "pause-after-silence", "agent-not-mapping", "agent-bad-yaml",
    ],
)  # fmt: skip
def test_invalid_files_name_file_and_key(
    tmp_path: Path, settings, agents, expected: list[str]
):
    message = config_error(write(tmp_path, settings, agents))
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message


def test_missing_config_file(tmp_path: Path):
    assert str(tmp_path / "nope.yaml") in config_error(tmp_path / "nope.yaml")


def test_environment_into_a_non_mapping_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path, {"sip": "on"})
    monkeypatch.setenv("CALLGATE_SIP_LISTEN", "0.0.0.0:5060")
    message = config_error(path)
    assert "callgate.yaml" in message and "sip" in message


def test_agent_name_comes_from_file(tmp_path: Path):
    write(tmp_path, {}, {"default": {}, "sales-uk_2": {"greeting": "Hi"}})
    agents = load_agents(tmp_path / "agents")
    assert agents["sales-uk_2"].name == "sales-uk_2"
    assert agents["sales-uk_2"].greeting == "Hi"


@pytest.mark.parametrize(
    ("text", "key"),
    [("server:\n  port: [80\n", "line 3"), ("server:\n  port: eighty\n", "server.port")],
)
def test_cli_serve_with_invalid_config_exits_2_with_one_line(tmp_path: Path, text: str, key: str):
    callgate = Path(sys.executable).with_name("callgate")
    assert callgate.exists(), f"console script missing: {callgate} (pip install -e .)"
    path = write(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_KEYS}
    result = subprocess.run(
        [str(callgate), "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and key in lines[0]
    assert result.stdout == ""


def test_cloud_keys_in_the_file_reach_agent_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    agent = {
        "llm": {"provider": "openai", "model": "m", "api_key": "${OPENAI_API_KEY}"},
    }
    path = write(tmp_path, {"cloud": {"openai_api_key": "sk-file"}}, {"default": {}, "a": agent})
    key = load_config(path).agents["a"].llm.api_key
    assert key is not None and key.get_secret_value() == "sk-file"
    assert "OPENAI_API_KEY" not in os.environ  # nothing leaks into the process environment
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert load_config(path).agents["a"].llm.api_key.get_secret_value() == "sk-env"
