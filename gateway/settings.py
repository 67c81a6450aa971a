"""The service configuration: `config/callgate.yaml`, overridden by the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.config_loader import ConfigError, read_yaml, validate
from pipeline.agent import AgentConfig

DEFAULT_CONFIG = Path("config/callgate.yaml")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

ENVIRONMENT_KEYS: dict[str, tuple[str, ...]] = {
    "CALLGATE_PUBLIC_URL": ("public_url",),
    "CALLGATE_SECRET": ("secret",),
    "CALLGATE_API_KEY": ("api_key",),
    "CALLGATE_MODELS_DIR": ("models_dir",),
    "CALLGATE_LOG_FORMAT": ("log_format",),
    "CALLGATE_REDIS_URL": ("redis_url",),
    "CALLGATE_SIP_LISTEN": ("sip", "listen"),
    "CALLGATE_SIP_ALLOW": ("sip", "allow"),
    "CALLGATE_RTP_PORTS": ("sip", "rtp_ports"),
    "CALLGATE_SIP_PUBLIC_HOST": ("sip", "public_host"),
    "CALLGATE_SIP_USERS": ("sip", "users"),
    "CALLGATE_SIP_TRUNK": ("sip", "trunk_uri"),
    "CALLGATE_SIP_USERNAME": ("sip", "username"),
    "CALLGATE_SIP_PASSWORD": ("sip", "password"),
    "TWILIO_ACCOUNT_SID": ("twilio", "account_sid"),
    "TWILIO_AUTH_TOKEN": ("twilio", "auth_token"),
    "TWILIO_API_BASE": ("twilio", "api_base"),
    "TWILIO_EDGE": ("twilio", "edge"),
    "TWILIO_REGION": ("twilio", "region"),
    "PLIVO_AUTH_ID": ("plivo", "auth_id"),
    "PLIVO_AUTH_TOKEN": ("plivo", "auth_token"),
    "PLIVO_API_BASE": ("plivo", "api_base"),
    "PLIVO_API_HOSTS": ("plivo", "api_hosts"),
    "OPENAI_API_KEY": ("cloud", "openai_api_key"),
    "OPENAI_BASE_URL": ("cloud", "openai_base_url"),
    "DEEPGRAM_API_KEY": ("cloud", "deepgram_api_key"),
    "DEEPGRAM_URL": ("cloud", "deepgram_url"),
    "ELEVENLABS_API_KEY": ("cloud", "elevenlabs_api_key"),
    "ELEVENLABS_URL": ("cloud", "elevenlabs_url"),
    "CARTESIA_API_KEY": ("cloud", "cartesia_api_key"),
    "CARTESIA_URL": ("cloud", "cartesia_url"),
}
"""Environment variable -> config key; the variable wins when both are set."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)


class TwilioSettings(Section):
    account_sid: str | None = None
    auth_token: str | None = Field(default=None, repr=False)
    api_base: str | None = None
    edge: str | None = None
    """Twilio edge location (e.g. dublin): REST requests go to api.{edge}.{region}.twilio.com."""
    region: str | None = None
    """Twilio region (e.g. ie1); us1 when only an edge is given."""


class PlivoSettings(Section):
    auth_id: str | None = None
    auth_token: str | None = Field(default=None, repr=False)
    api_base: str | None = None
    api_hosts: str | None = None
    """Comma-separated Plivo API base URLs, nearest first; a 5xx on a voice request moves on
    to the next (default: https://api.plivo.com)."""


class SipSettings(Section):
    listen: str | None = None
    """HOST:PORT of the SIP endpoint (UDP and TCP on the same port); None: SIP off."""
    allow: str | None = None
    """Comma-separated CIDRs that may call in without digest credentials."""
    rtp_ports: str = "10000-10999"
    agent: str = "default"
    """The agent of inbound SIP calls whose called number has no `routes:` entry."""
    public_host: str | None = None
    """The address peers reach us at, for Contact, Via and SDP (default: the bound address, or
    the local address that routes to the peer)."""
    users: str | None = Field(default=None, repr=False)
    """Comma-separated user:password pairs that may call in from anywhere (digest auth)."""
    realm: str = "callgate"
    trunk_uri: str | None = None
    """Where outbound SIP calls go, e.g. sip:trunk.example.com:5060; the number is the user."""
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    """Digest credentials for the trunk (answering its 401/407 challenges, REGISTER)."""
    register_to_trunk: bool = False
    register_expires_secs: int = Field(default=600, ge=60, le=86_400)
    ring_timeout_secs: float = Field(default=60, gt=0, le=600)
    """How long an outbound SIP call may ring before we give up."""
    answer_delay_secs: float = Field(default=0, ge=0, le=30)
    """How long an inbound SIP call rings (180) before the agent answers."""


class CallSettings(Section):
    max_concurrent: int = Field(default=200, ge=1)
    max_concurrent_cluster: int | None = Field(default=None, ge=1)
    """Across every instance sharing Redis (ignored without Redis); None: no cluster limit."""
    token_ttl_secs: int = Field(default=300, ge=10, le=86_400)
    finished_ttl_secs: int = Field(default=3600, ge=0)
    playout_lead_ms: int = Field(default=100, ge=0, le=1000)
    drain_timeout_secs: float = Field(default=60, ge=0)
    drain_message: str = Field(
        default="Sorry, we have to end this call now. Please call us again. Goodbye.",
        min_length=1,
        max_length=500,
    )


class CloudSettings(Section):
    """Keys and endpoints of the cloud services; agent files read them as `${NAME}`."""

    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    deepgram_api_key: str | None = Field(default=None, repr=False)
    deepgram_url: str | None = None
    elevenlabs_api_key: str | None = Field(default=None, repr=False)
    elevenlabs_url: str | None = None
    cartesia_api_key: str | None = Field(default=None, repr=False)
    cartesia_url: str | None = None


class Settings(Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    public_url: str | None = None
    secret: str | None = Field(default=None, repr=False)
    api_key: str | None = Field(default=None, repr=False)
    models_dir: str | None = None
    log_format: Literal["json", "console"] = "console"
    redis_url: str | None = Field(default=None, repr=False)
    agents_dir: str = "agents"
    routes: dict[str, str] = Field(default_factory=dict)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    plivo: PlivoSettings = Field(default_factory=PlivoSettings)
    sip: SipSettings = Field(default_factory=SipSettings)
    calls: CallSettings = Field(default_factory=CallSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://voice.example.com")
        return value.rstrip("/") if value else value

    @field_validator("routes")
    @classmethod
    def _routes_are_e164(cls, routes: dict[str, str]) -> dict[str, str]:
        for number, agent in routes.items():
            if not E164.match(number):
                raise ValueError(f"{number!r} is not an E.164 number such as +15551234567")
            if not AGENT_NAME.match(agent):
                raise ValueError(f"{agent!r} is not a valid agent name")
        return routes


class Config:
    """The loaded service settings and every agent of the agents directory."""

    def __init__(self, path: Path, settings: Settings, agents: dict[str, AgentConfig]):
        self.path = path
        self.settings = settings
        self.agents = agents

    def agent_for(self, requested: str | None, called_number: str | None) -> str:
        """The agent's name for an inbound call: ?agent=, else the number's route, else default."""
        if requested:
            return requested
        if called_number and called_number in self.settings.routes:
            return self.settings.routes[called_number]
        return "default"


def load_config(path: Path | None = None) -> Config:
    """Read, expand, override and validate the service config and its agents."""
    path = path or Path(os.environ.get("CALLGATE_CONFIG") or DEFAULT_CONFIG)
    data = read_yaml(path)
    _apply_environment(data, path)
    settings = validate(Settings, data, path)
    agents_dir = (path.parent / settings.agents_dir).resolve()
    agents = load_agents(agents_dir, _agent_environment(settings.cloud))
    missing = {name for name in settings.routes.values() if name not in agents}
    if "default" not in agents:
        raise ConfigError(f"{agents_dir}: there is no default.yaml (the agent for unrouted calls)")
    if missing:
        raise ConfigError(f"{path}: routes: no agent file for {sorted(missing)} in {agents_dir}")
    return Config(path, settings, agents)


def load_agents(
    directory: Path, environ: dict[str, str] | None = None
) -> dict[str, AgentConfig]:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: agents directory does not exist")
    agents: dict[str, AgentConfig] = {}
    for file in sorted(directory.glob("*.yaml")):
        if not AGENT_NAME.match(file.stem):
            raise ConfigError(f"{file}: agent file names are letters, digits, - and _")
        data = read_yaml(file, environ)
        data.setdefault("name", file.stem)
        agents[file.stem] = validate(AgentConfig, data, file)
    return agents


def _agent_environment(cloud: CloudSettings) -> dict[str, str]:
    """What agent files' `${NAME}` see: the environment, over the `cloud:` keys of the file."""
    from_file = {
        variable: value
        for variable, keys in ENVIRONMENT_KEYS.items()
        if keys[0] == "cloud" and (value := getattr(cloud, keys[1]))
    }
    return {**from_file, **{k: v for k, v in os.environ.items() if v}}


def _apply_environment(data: dict[str, Any], path: Path) -> None:
    for variable, keys in ENVIRONMENT_KEYS.items():
        value = os.environ.get(variable)
        if not value:
            continue
        section = data
        for key in keys[:-1]:
            if section.get(key) is None:
                section[key] = {}
            section = section[key]
            if not isinstance(section, dict):
                raise ConfigError(f"{path}: {key}: must be a mapping of keys (for {variable})")
        section[keys[-1]] = value
