"""What one agent is: the schema of `config/agents/NAME.yaml`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Unknown keys are errors: a typo in an agent file must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WhisperSTTConfig(Strict):
    provider: Literal["whisper"] = "whisper"
    beam_size: int = Field(default=1, ge=1, le=10)


STTConfig = WhisperSTTConfig  # becomes a discriminated union as providers are added


class Intent(Strict):
    """A scripted reply: chosen when any keyword is a word of the caller's turn or regex matches."""

    name: str
    keywords: list[str] = Field(default_factory=list)
    regex: str | None = None
    reply: str
    tool: str | None = None
    arguments: dict[str, str] = Field(default_factory=dict)


class ScriptedLLMConfig(Strict):
    provider: Literal["scripted"] = "scripted"
    intents: list[Intent] = Field(default_factory=list)
    fallback: str = "Sorry, I did not catch that. Could you say it again?"


LLMConfig = ScriptedLLMConfig


class EspeakTTSConfig(Strict):
    provider: Literal["espeak"] = "espeak"
    voice: str = "en-us"
    rate_wpm: int = Field(default=175, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)


TTSConfig = EspeakTTSConfig


class TurnConfig(Strict):
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_speech_secs: float = Field(default=0.1, ge=0, le=2)
    pause_secs: float = Field(default=0.2, gt=0, le=2)
    """Silence after which the turn so far is transcribed, speculatively."""
    silence_secs: float = Field(default=0.5, gt=0, le=5)
    """Silence after which the turn ends regardless."""
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


class DenoiseConfig(Strict):
    provider: Literal["none"] = "none"


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
    tools: list[Literal["end_call"]] = Field(default_factory=lambda: ["end_call"])
    max_call_secs: float = Field(default=3600, gt=0)
