"""A scripted chat model for driving the graph in tests, with a working ``bind_tools``.

Each call takes the next scripted reply: an ``AIMessage``, a string, or a
callable ``(messages, kwargs) -> AIMessage | str`` that can look at what it was
sent. Every call is recorded (messages and bound kwargs such as ``tools``,
``tool_choice`` and ``response_format``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

__all__ = ["ScriptedChatModel", "tool_call_message"]

Reply = AIMessage | str | Callable[[list[BaseMessage], dict[str, Any]], AIMessage | str]


def tool_call_message(
    name: str, args: dict[str, Any], call_id: str = "call_1", text: str = ""
) -> AIMessage:
    """An AIMessage carrying one native (OpenAI-style) tool call."""
    return AIMessage(
        content=text, tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


class ScriptedChatModel(GenericFakeChatModel):
    """Replays scripted replies in order and records every call."""

    messages: Iterator[Any]  # AIMessage, str or a callable (see the module docstring)
    calls: list[dict[str, Any]] = Field(default_factory=list)
    backend_name: str = "scripted"
    disable_streaming: bool = True

    @classmethod
    def from_replies(cls, replies: Iterable[Reply], **kwargs: Any) -> ScriptedChatModel:
        return cls(messages=iter(list(replies)), **kwargs)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append({"messages": list(messages), "kwargs": dict(kwargs)})
        try:
            reply = next(self.messages)
        except StopIteration:
            raise RuntimeError(
                f"scripted model ran out of replies after {len(self.calls) - 1} calls"
            ) from None
        if callable(reply):
            reply = reply(list(messages), dict(kwargs))
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        return ChatResult(generations=[ChatGeneration(message=message)])
