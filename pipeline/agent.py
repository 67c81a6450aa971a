"""What one agent is: the schema of `config/agents/NAME.yaml`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.dtmf import DTMF_DIGITS
from pipeline.json_schema import check_schema
from pipeline.llm.openai import OpenAILLMConfig
from pipeline.stt.deepgram import DeepgramSTTConfig
from pipeline.stt.openai import OpenAISTTConfig
from pipeline.stt.standin import StandinSTTConfig
from pipeline.tts.cartesia import CartesiaTTSConfig
from pipeline.tts.elevenlabs import ElevenLabsTTSConfig
from pipeline.tts.openai import OpenAITTSConfig
from pipeline.tts.standin import StandinTTSConfig


class Strict(BaseModel):
    """Unknown keys are errors: a typo in an agent file must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WhisperSTTConfig(Strict):
    provider: Literal["whisper"] = "whisper"
    beam_size: int = Field(default=1, ge=1, le=10)


def _provider_or(default: str) -> Any:
    """A discriminator on `provider` that treats a section without one as `default`."""

    def provider(value: Any) -> str:
        if isinstance(value, dict):
            return value.get("provider", default)
        return getattr(value, "provider", default)

    return Discriminator(provider)


STTConfig = Annotated[
    Annotated[WhisperSTTConfig, Tag("whisper")]
    | Annotated[OpenAISTTConfig, Tag("openai")]
    | Annotated[DeepgramSTTConfig, Tag("deepgram")]
    | Annotated[StandinSTTConfig, Tag("standin")],
    _provider_or("whisper"),
]


class Intent(Strict):
    """A scripted reply: chosen when any keyword is a word of the caller's turn or regex matches.

    With `tool`, the reply is spoken, the tool runs, and `after_tool` (with `{result}`) follows.
    """

    name: str
    keywords: list[str] = Field(default_factory=list)
    regex: str | None = None
    reply: str
    tool: str | None = None
    arguments: dict[str, str] = Field(default_factory=dict)
    after_tool: str | None = None


class ScriptedLLMConfig(Strict):
    provider: Literal["scripted"] = "scripted"
    intents: list[Intent] = Field(default_factory=list)
    fallback: str = "Sorry, I did not catch that. Could you say it again?"


LLMConfig = Annotated[
    Annotated[ScriptedLLMConfig, Tag("scripted")] | Annotated[OpenAILLMConfig, Tag("openai")],
    _provider_or("scripted"),
]


class EspeakTTSConfig(Strict):
    provider: Literal["espeak"] = "espeak"
    voice: str = "en-us"
    rate_wpm: int = Field(default=175, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)


TTSConfig = Annotated[
    Annotated[EspeakTTSConfig, Tag("espeak")]
    | Annotated[OpenAITTSConfig, Tag("openai")]
    | Annotated[ElevenLabsTTSConfig, Tag("elevenlabs")]
    | Annotated[CartesiaTTSConfig, Tag("cartesia")]
    | Annotated[StandinTTSConfig, Tag("standin")],
    _provider_or("espeak"),
]


class FailuresConfig(Strict):
    """What the caller hears when a service (STT, LLM, TTS) fails mid-call. The apology is
    spoken by the offline TTS (espeak), so it works even when the cloud TTS is what failed."""

    apology: str = Field(
        default="Sorry, I'm having trouble right now. Could you say that again?", min_length=1
    )
    on_error: Literal["continue", "hang_up"] = "continue"
    answer_timeout_secs: float | None = Field(default=None, gt=0, le=30)
    """Longest wait from the end of the caller's turn to the answer's first audio before the
    apology plays. None: 1.5 s when any service is a cloud one, no limit for offline agents."""


class TurnConfig(Strict):
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_speech_secs: float = Field(default=0.1, ge=0, le=2)
    pause_secs: float = Field(default=0.12, gt=0, le=2)
    """Silence after which Smart Turn judges the turn and the turn so far is transcribed,
    speculatively."""
    smart_turn: bool = True
    smart_turn_threshold: float = Field(default=0.5, gt=0, lt=1)
    silence_secs: float = Field(default=1.5, gt=0, le=5)
    """Silence after which the turn ends regardless (without Smart Turn: the only rule)."""
    preroll_secs: float = Field(default=0.3, ge=0, le=1)
    max_turn_secs: float = Field(default=30, gt=1, le=120)


    @model_validator(mode="after")
    def _pause_before_silence(self) -> TurnConfig:
        if self.pause_secs > self.silence_secs:
            raise ValueError("pause_secs must not exceed silence_secs")
        return self


class InterruptionsConfig(Strict):
    enabled: bool = True
    min_speech_secs: float = Field(default=0.3, ge=0, le=5)
    min_words: int = Field(default=0, ge=0, le=10)
    """If set, the interrupting speech must also hold this many words (backchannels excluded)."""
    false_interruption_secs: float = Field(default=1.5, gt=0, le=10)
    """An interruption that yields no words within this time was false: the agent resumes."""


class DenoiseConfig(Strict):
    """Noise suppression before VAD and STT; `pipeline.denoise.make_denoiser` builds it."""

    provider: Literal["none", "speex", "rnnoise"] = "none"
    suppress_db: int = Field(default=30, ge=1, le=60)
    """speex only: the most that noise is attenuated."""


BuiltinTool = Literal["end_call", "transfer_call", "send_dtmf"]
BUILTIN_TOOLS: tuple[str, ...] = BuiltinTool.__args__
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""The function names OpenAI-compatible APIs accept."""
TRANSFER_TARGET = re.compile(r"\+[1-9][0-9]{6,14}|sip:[^\s@<>\"]+@[^\s<>\"]{1,250}")
"""An E.164 phone number or a `sip:user@host` URI (what Twilio's `<Dial>` can reach)."""


class HttpToolConfig(Strict):
    """A tool the LLM may call that POSTs its arguments as JSON to `url`; the response body
    goes back to the LLM. Header values (tokens) may come from the environment: `${NAME}`."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    url: str
    timeout_secs: float = Field(default=5, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not TOOL_NAME.fullmatch(name):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        if name in BUILTIN_TOOLS:
            raise ValueError(f"{name!r} is a built-in tool: list it by name instead")
        return name

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters.get("type") != "object":
            raise ValueError("must be a JSON schema with type: object")
        check_schema(parameters)
        return parameters

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return url


def _tool_kind(value: Any) -> str:
    return "builtin" if isinstance(value, str) else "http"


ToolConfig = Annotated[
    Annotated[BuiltinTool, Tag("builtin")] | Annotated[HttpToolConfig, Tag("http")],
    Discriminator(_tool_kind),
]


class DtmfConfig(Strict):
    """How the caller's keys become entries, and how `send_dtmf` sounds."""

    inter_digit_timeout_secs: float = Field(default=3.0, gt=0, le=30)
    terminator: str | None = "#"
    max_digits: int = Field(default=32, ge=1, le=128)
    tone_ms: int = Field(default=100, ge=40, le=1000)
    gap_ms: int = Field(default=60, ge=40, le=1000)
    level_dbfs: float = Field(default=-10.0, ge=-40, le=-6.1)

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, terminator: str | None) -> str | None:
        if terminator is not None and (len(terminator) != 1 or terminator not in DTMF_DIGITS):
            raise ValueError(f"must be one of the keys {DTMF_DIGITS!r}, or null")
        return terminator


class RecordingConfig(Strict):
    """Per call, a stereo WAV (caller left, agent right) and the transcript as JSON, written
    into `directory` (relative paths: to the gateway's working directory)."""

    enabled: bool = False
    directory: str = Field(default="recordings", min_length=1)


class AgentConfig(Strict):
    name: str = "default"
    greeting: str = ""
    system_prompt: str = ""
    stt: STTConfig = Field(default_factory=WhisperSTTConfig)
    llm: LLMConfig = Field(default_factory=ScriptedLLMConfig)
    tts: TTSConfig = Field(default_factory=EspeakTTSConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    interruptions: InterruptionsConfig = Field(default_factory=InterruptionsConfig)
    denoise: DenoiseConfig = Field(default_factory=DenoiseConfig)
    tools: list[ToolConfig] = Field(default_factory=lambda: ["end_call"])
    transfer_targets: list[str] = Field(default_factory=list)
    """Where `transfer_call` may dial (E.164 or sip: URIs); empty means any valid target."""
    dtmf: DtmfConfig = Field(default_factory=DtmfConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    max_call_secs: float = Field(default=3600, gt=0)

    @field_validator("transfer_targets")
    @classmethod
    def _transfer_targets(cls, targets: list[str]) -> list[str]:
        for target in targets:
            if not TRANSFER_TARGET.fullmatch(target):
                raise ValueError(f"{target!r} is not an E.164 number or a sip:user@host URI")
        return targets

    @model_validator(mode="after")
    def _unique_tool_names(self) -> AgentConfig:
        names = [tool if isinstance(tool, str) else tool.name for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tools: duplicate tool name(s) {duplicates}")
        return self
