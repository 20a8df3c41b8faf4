"""The four nodes of the assessment graph: observe → decide → tool → quantify.

Each node appends the next user turn to the conversation before handing over,
so the message list always ends with what the next model call must answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite

from tooliqa.tools import (
    BLOBS,
    ImageError,
    blob_data_url,
    clean_text,
    clean_value,
    decode_image_cached,
    env_flag,
    fetch_image_bytes,
    image_bytes,
    is_blob_ref,
    is_path_like,
    is_url,
    model_image,
    one_line,
    run_view_tool,
    tool_specs,
    url_label,
    with_pixels,
)
from tooliqa.tools.registry import ViewResult

from .assessment import Assessment, ProtocolTurn
from .context import Context
from .parsing import (
    AnswerAction,
    InvalidToolCall,
    Malformed,
    ToolCallAction,
    json_extras_as_tags,
    message_text,
    parse_action,
    parse_answer,
    parse_attribute_scores,
    parse_regions,
    parse_rubric,
    thought_first,
)
from .prompts import (
    FAILURE_PROMPT,
    FINAL_PROMPT,
    GATE_PROMPT,
    JSON_RUBRIC_HINT,
    MEASUREMENT_PROMPT,
    OBSERVATION_PROMPT,
    REPAIR_PROMPT,
    SYSTEM_PROMPT,
    answer_json_schema,
    json_answer_hint,
    rubric_attributes,
    rubric_json_schema,
    rubric_prompt,
    tools_system_prompt,
)
from .protocol import TurnKind, TurnSpec, mark
from .query import QueryPlan, plan_query, query_answer
from .regions import answer_regions
from .state import State
from .uncertainty import from_logprobs, logprob_content

__all__ = ["backend_name", "decide", "finalize", "observe", "plan", "quantify", "tool"]


def backend_name(model: BaseChatModel) -> str:
    """A short label for the model backend (``classic``, ``openai``, ``scripted``...)."""
    return str(getattr(model, "backend_name", None) or model._llm_type)


def _model_label(model: BaseChatModel) -> str | None:
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str):
            return value
    return None


#: The longest reply text kept, in characters (content and separately returned reasoning
#: each): a longer one is cut here and marked cut off (``finish_reason`` "length",
#: ``cut_from_chars``), so it parses as Malformed and only the kept part is stored or sent
#: back in later turns.
MAX_REPLY_CHARS = 32_000

#: Alternatives per token asked for when ``Context.score_logprobs`` is on.
TOP_LOGPROBS = 5

#: Image work below these sizes runs inline on the event loop: a thread hand-off
#: costs more than the work when a busy local model server holds the CPU.
_INLINE_BYTES = 2 * 1024 * 1024
_INLINE_PIXELS = 2_000_000


async def _offload(big: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker thread when the input is big, else inline."""
    if big:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _emit(runtime: Runtime[Context], event: dict[str, Any]) -> None:
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer(event)


async def _call_model(
    ctx: Context,
    messages: list[AnyMessage],
    *,
    tools: list[dict[str, Any]] | None = None,
    schema: tuple[str, dict[str, Any]] | None = None,
    logprobs: bool = False,
) -> tuple[AIMessage, dict[str, int], float]:
    """One model call with the run's tools/format/sampling bound (and, with ``logprobs``,
    OpenAI ``logprobs``/``top_logprobs``). The messages' image references become the
    images' data URLs here, for the call only. Returns (reply, usage, seconds)."""
    model = await ctx.aget_model()
    runnable: Any = model
    if tools:
        kwargs: dict[str, Any] = {}
        if ctx.tool_choice:
            kwargs["tool_choice"] = ctx.tool_choice
        if ctx.strict_tools:
            kwargs["strict"] = True
        runnable = model.bind_tools(tools, **kwargs)
    bind: dict[str, Any] = dict(ctx.sampling)
    if schema is not None:
        name, json_schema = schema
        bind["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": json_schema, "strict": True},
        }
    if logprobs:
        bind.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    if bind:
        runnable = runnable.bind(**bind)
    t0 = time.perf_counter()
    reply = await runnable.ainvoke(with_pixels(messages))
    elapsed = time.perf_counter() - t0
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=message_text(reply))
    reply = _clean_reply(reply)
    meta: dict[str, Any] = dict(reply.usage_metadata or {})
    usage = {
        "input_tokens": int(meta.get("input_tokens", 0) or 0),
        "output_tokens": int(meta.get("output_tokens", 0) or 0),
        "total_tokens": int(meta.get("total_tokens", 0) or 0),
        "model_calls": 1,
    }
    return reply, usage, elapsed


def _clean_reply(reply: AIMessage) -> AIMessage:
    """The reply with its text, tool calls and reasoning made safe to store, print and send
    back (lone surrogates and control characters replaced, :func:`~tooliqa.tools.clean_text`):
    everything after this point reads model text only through here."""
    calls = [
        {**c, "name": clean_text(str(c["name"])), "args": clean_value(c.get("args") or {})}
        for c in reply.tool_calls
    ]
    content: Any = reply.content
    extra = dict(reply.additional_kwargs)
    meta = dict(reply.response_metadata)
    text = message_text(reply)
    if len(text) > MAX_REPLY_CHARS:
        content = text[:MAX_REPLY_CHARS]
        meta.update(finish_reason="length", cut_from_chars=len(text))
    thinking = extra.get("reasoning_content")
    if isinstance(thinking, str) and len(thinking) > MAX_REPLY_CHARS:
        extra["reasoning_content"] = thinking[:MAX_REPLY_CHARS]
        meta.update(finish_reason="length", cut_from_chars=len(thinking))
    return reply.model_copy(
        update={
            "content": clean_value(content),
            "tool_calls": calls,
            "invalid_tool_calls": [clean_value(dict(c)) for c in reply.invalid_tool_calls],
            "additional_kwargs": clean_value(extra),
            "response_metadata": meta,
        }
    )


def _files_allowed() -> bool:
    """Whether an ``image`` input may name a file to read: only when whoever runs the graph
    says so in its environment (``TOOLIQA_ALLOW_IMAGE_FILES=1``), never a client, whose
    context of a served graph is its own to write."""
    return env_flag("TOOLIQA_ALLOW_IMAGE_FILES")


def _input_name(value: Any) -> str | None:
    """A label for an input that names its image: the path, or the URL without its
    credentials and query (a signed URL's token stays out of reports)."""
    if is_url(value):
        return url_label(value)
    return one_line(value.strip(), 300) if is_path_like(value) else None


async def _input_image(value: Any, ctx: Context) -> bytes:
    """The encoded image an input names (see :func:`~tooliqa.tools.image_bytes`); an
    ``http(s)://`` URL is fetched only when the context asks (``fetch_urls``) and the
    process allows it (``TOOLIQA_FETCH_URLS=1``). Paths and long texts are read or decoded
    off the event loop."""
    if is_url(value) and ctx.fetch_urls:
        if not env_flag("TOOLIQA_FETCH_URLS"):  # the run's context asks, the operator allows
            raise ImageError(
                "fetching image URLs is off where the graph runs (TOOLIQA_FETCH_URLS=1 turns "
                "it on): send the image itself, as base64 or a data: URL"
            )
        return await fetch_image_bytes(value, ctx.image_limits, timeout=ctx.fetch_timeout)
    if is_path_like(value) or (isinstance(value, str) and len(value) > _INLINE_BYTES):
        return await asyncio.to_thread(
            image_bytes, value, ctx.image_limits, allow_files=_files_allowed()
        )
    return image_bytes(value, ctx.image_limits, allow_files=_files_allowed())


def _fresh_run(*, keep_plan: bool) -> dict[str, Any]:
    """The state a run starts from: every key a run fills, empty, with the reducers' keys
    overwritten rather than added to. A run on a thread that already holds an earlier
    run (a checkpointer and one ``thread_id``) thus sees nothing of it: not its score,
    rubric, steps, messages or plan (``keep_plan``: this run's ``plan`` node just ran)."""
    fresh: dict[str, Any] = {
        "messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES)],
        "steps": Overwrite([]),
        "replies": Overwrite([]),
        "protocol": Overwrite([]),
        "errors": Overwrite([]),
        "usage": Overwrite({}),
        "timings": Overwrite({}),
        "pending": None,
        "score": None,
        "rationale": "",
        "answer": "",
        "uncertainty": None,
        "attribute_scores": {},
        "answer_regions": [],
        "query_answer": None,
        "assessment": {},
    }
    if not keep_plan:
        fresh["plan"] = None
    return fresh


def _specs(ctx: Context) -> list[dict[str, Any]]:
    return tool_specs(ctx.enabled_tools, ctx.bbox_convention, strict=ctx.strict_tools)


def _plan(state: State) -> QueryPlan | None:
    data = state.get("plan")
    return QueryPlan.from_dict(data) if data else None


def _with_extras(ctx: Context, text: str, plan: QueryPlan | None) -> str:
    """``text`` plus the attribute-score / region / query-answer requests the options and
    the query ask for, as tagged blocks (JSON answers name them in their hint instead)."""
    extras = [ctx.answer_extras(), plan.answer_request() if plan else ""]
    tail = "\n".join(e for e in extras if e)
    return text + "\n" + tail if tail else text


def _json_parts(ctx: Context, plan: QueryPlan | None) -> dict[str, Any]:
    """What a JSON answer carries besides the score: one settings set for its schema
    and for the hint that names it."""
    return {
        "attributes": rubric_attributes(ctx.prompt_style) if ctx.attribute_scores else (),
        "regions": ctx.report_regions,
        "query_answer": plan is not None,
    }


def _json_hint(ctx: Context, plan: QueryPlan | None) -> str:
    return json_answer_hint(**_json_parts(ctx, plan), convention=ctx.bbox_convention)


def _answer_schema(ctx: Context, plan: QueryPlan | None) -> tuple[str, dict[str, Any]] | None:
    if not ctx.structured_output:
        return None
    return ("final_answer", answer_json_schema(**_json_parts(ctx, plan)))


def _spec(ctx: Context, kind: TurnKind, plan: QueryPlan | None) -> TurnSpec:
    """What a user turn of ``kind`` asks, for :func:`~tooliqa.graph.protocol.mark`."""
    return TurnSpec(
        kind=kind,
        plan=plan.as_dict() if plan is not None else None,
        prompt_style=ctx.prompt_style,
        attribute_scores=ctx.attribute_scores,
        report_regions=ctx.report_regions,
    )


def _next_turn(ctx: Context, rounds_used: int, plan: QueryPlan | None) -> tuple[str, TurnSpec]:
    """The gate while tool rounds remain, else the demand for a final answer: its text and
    what it asks (:class:`~tooliqa.graph.protocol.TurnSpec`)."""
    if ctx.tools_available and rounds_used < ctx.max_tool_rounds:
        return _with_extras(ctx, GATE_PROMPT, plan), _spec(ctx, "gate", plan)
    if ctx.structured_output:
        text = FINAL_PROMPT + "\n" + _json_hint(ctx, plan)
    else:
        text = _with_extras(ctx, FINAL_PROMPT, plan)
    return text, _spec(ctx, "final", plan)


async def plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Read the user's question and plan around it (see :mod:`tooliqa.graph.query`):
    what it asks, which attributes and region, which tools gather the evidence."""
    ctx = runtime.context
    enabled = ctx.enabled_tools if ctx.tools_available else ()
    query_plan = plan_query(str(state.get("image_question") or ""), enabled)
    _emit(runtime, {"type": "plan", "plan": query_plan.as_dict()})
    return {"plan": query_plan.as_dict()}


def route_start(state: State) -> Literal["plan", "observe"]:
    """Questions are planned first; plain assessments go straight to ``observe``."""
    return "plan" if (state.get("image_question") or "").strip() else "observe"


async def observe(
    state: State, runtime: Runtime[Context]
) -> Command[Literal["decide", "quantify"]]:
    """Show the image with the rubric prompt; record the rubric note."""
    ctx = runtime.context
    t0 = time.perf_counter()
    if state.get("image") is None:
        raise ImageError(
            "the input has no image: give 'image' (bytes, base64, a data: URL, a reference, "
            "or a path or URL where allowed)"
        )
    data = await _input_image(state["image"], ctx)
    decoded = await _offload(len(data) > _INLINE_BYTES, decode_image_cached, data, ctx.image_limits)
    payload, _mime, info = model_image(data, decoded, ctx.max_pixels)
    system = SYSTEM_PROMPT
    if ctx.tool_protocol == "text" and ctx.tools_available:
        system += "\n\n" + tools_system_prompt(_specs(ctx))
    asked = bool((state.get("image_question") or "").strip())
    text = rubric_prompt(ctx.prompt_style, state.get("image_question"))
    query_plan = _plan(state) if asked else None
    if query_plan is not None:
        text += "\n" + query_plan.instructions()
    if ctx.structured_output:
        text += "\n" + JSON_RUBRIC_HINT
    first = mark(
        HumanMessage(
            content=[
                {"type": "image_url", "image_url": {"url": BLOBS.put(payload)}},
                {"type": "text", "text": text},
            ]
        ),
        _spec(ctx, "rubric", query_plan),
    )
    messages: list[AnyMessage] = [SystemMessage(content=system), first]
    schema = ("rubric_note", rubric_json_schema()) if ctx.structured_output else None
    reply, usage, model_s = await _call_model(ctx, messages, schema=schema)
    note = message_text(reply)
    rubric = parse_rubric(note)
    errors = [] if rubric else ["rubric note could not be parsed"]
    rubric_turn = ProtocolTurn(
        turn="rubric",
        action="rubric",
        thinking=None if ctx.structured_output else thought_first(reply),
        rubric_parsed=bool(rubric),
    )
    _emit(runtime, {"type": "rubric", "rubric": rubric, "note": note})
    gate_text, gate_spec = _next_turn(ctx, 0, query_plan)
    gate = mark(HumanMessage(content=gate_text), gate_spec)
    update = {
        **_fresh_run(keep_plan=asked),
        "image": state["image"]  # state holds references, not pixels
        if is_blob_ref(state["image"])
        else await _offload(len(data) > _INLINE_BYTES, BLOBS.put, data),
        "image_name": state.get("image_name") or _input_name(state["image"]),
        "messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *messages, reply, gate],
        "image_info": {
            "width": decoded.width,
            "height": decoded.height,
            "format": decoded.format,
            "decoded_scale": decoded.scale,
            **info,
        },
        "rubric": rubric,
        "rubric_note": note,
        "protocol": Overwrite([rubric_turn.model_dump()]),
        "rounds": 0,
        "usage": Overwrite(usage),
        "errors": Overwrite(errors),
        "forced_answer": not ctx.tools_available,
        "timings": Overwrite({"observe_s": time.perf_counter() - t0, "model_s": model_s}),
    }
    return Command(update=update, goto="decide" if ctx.tools_available else "quantify")


def _answer_extras(
    reply: AIMessage, ctx: Context, state: State, score: float | None
) -> dict[str, Any]:
    """Attribute scores, answer regions (pixels) and the query answer from a reply, as
    the options and the query ask."""
    text = message_text(reply)
    text += "\n" + json_extras_as_tags(text)
    update: dict[str, Any] = {"errors": []}
    if ctx.attribute_scores:
        scores, notes = parse_attribute_scores(text)
        if not scores:
            notes = [*notes, "the answer gave no attribute scores"]
        update["attribute_scores"] = scores
        update["errors"] += notes
    if ctx.report_regions:
        raw, notes = parse_regions(text)
        info = state.get("image_info") or {}
        regions, dropped = answer_regions(
            raw, int(info.get("width", 0)), int(info.get("height", 0)), ctx.bbox_convention
        )
        update["answer_regions"] = regions
        update["errors"] += notes + dropped
    query_plan = _plan(state)
    if query_plan is not None:
        answered, notes = query_answer(
            query_plan,
            text,
            score=score,
            rubric=state.get("rubric") or {},
            steps=state.get("steps") or [],
            attribute_scores=update.get("attribute_scores") or {},
        )
        update["query_answer"] = answered
        update["errors"] += notes
    return update


def _answer_update(
    action: AnswerAction, reply: AIMessage, ctx: Context, state: State
) -> dict[str, Any]:
    """State update for an answer; with ``score_logprobs`` also the score distribution
    from the reply's token logprobs (the gate and the answer calls both ask for them);
    with ``attribute_scores``/``report_regions``/a query what the reply gave for them."""
    notes = ["score read leniently (no <answer> tag)"] if action.lenient else []
    update: dict[str, Any] = {
        "score": action.score,
        "rationale": action.rationale,
        "answer": action.answer_text,
        **_answer_extras(reply, ctx, state, action.score),
    }
    update["errors"] = notes + update["errors"]
    if ctx.score_logprobs:
        content = logprob_content(reply.response_metadata)
        update["uncertainty"] = from_logprobs(content, action.score).as_dict()
    return update


async def decide(state: State, runtime: Runtime[Context]) -> Command[Literal["tool", "quantify"]]:
    """Action gate: one tool call, or the final answer."""
    ctx = runtime.context
    t0 = time.perf_counter()
    tools = _specs(ctx) if ctx.tool_protocol == "native" else None
    reply, usage, model_s = await _call_model(
        ctx, state["messages"], tools=tools, logprobs=ctx.score_logprobs
    )
    action = parse_action(reply)
    turn = ProtocolTurn.of("gate", int(state.get("rounds", 0)), action).model_dump()
    update: dict[str, Any] = {"messages": [reply], "usage": usage}
    if state.get("rounds"):
        update["replies"] = [{"round": state["rounds"], "text": message_text(reply)}]
    if isinstance(action, ToolCallAction | InvalidToolCall):
        # The tool node records the turn once it knows whether the call could be carried out.
        update["pending"] = {
            "kind": "tool" if isinstance(action, ToolCallAction) else "invalid",
            **{k: v for k, v in vars(action).items() if k != "form"},
            "protocol": turn,
        }
        goto: Literal["tool", "quantify"] = "tool"
    elif isinstance(action, AnswerAction):
        update.update(_answer_update(action, reply, ctx, state))
        update["pending"] = None
        update["protocol"] = [turn]
        goto = "quantify"
    else:
        update["pending"] = {"kind": "malformed", "reason": action.reason}
        update["errors"] = [f"gate reply unusable: {action.reason}"]
        update["protocol"] = [turn]
        goto = "quantify"
    _emit(
        runtime, {"type": "decision", "action": type(action).__name__, "text": message_text(reply)}
    )
    update["timings"] = {"decide_s": time.perf_counter() - t0, "model_s": model_s}
    return Command(update=update, goto=goto)


async def _run_pending(pending: dict[str, Any], state: State, ctx: Context) -> ViewResult:
    if pending["kind"] == "invalid":
        return ViewResult(
            tool=str(pending.get("name") or "unknown"),
            args={"_raw": pending.get("raw", "")},
            ok=False,
            message=f"Tool call failed: {pending['reason']}",
            valid_call=False,
        )
    data = image_bytes(state["image"], ctx.image_limits)  # bytes since observe
    decoded = decode_image_cached(data, ctx.image_limits)
    big = decoded.width * decoded.height > _INLINE_PIXELS
    return await _offload(
        big,
        run_view_tool,
        pending["name"],
        pending["args"],
        decoded,
        ctx.view_settings(),
        enabled=ctx.enabled_tools,
    )


def _tool_messages(
    pending: dict[str, Any],
    result: ViewResult,
    view_ref: str | None,
    follow_up: tuple[str, TurnSpec],
    rounds_left: int,
) -> list[AnyMessage]:
    """Tool result turn(s): a tool message when the call had an id, then a user turn
    with the view image (vLLM rejects images in tool messages for some models); a
    measurement tool's turn has its numbers and no image."""
    if not result.ok:
        prompt = FAILURE_PROMPT
    else:
        prompt = OBSERVATION_PROMPT if result.view is not None else MEASUREMENT_PROMPT
    text = prompt.format(result=result.message, rounds_left=rounds_left) + "\n\n" + follow_up[0]
    out: list[AnyMessage] = []
    call_id = pending.get("call_id")
    if call_id:
        out.append(ToolMessage(content=result.message, tool_call_id=call_id, name=result.tool))
    else:
        text = f"<tool_response>\n{result.message}\n</tool_response>\n{text}"
    content: list[str | dict[str, Any]] = [{"type": "text", "text": text}]
    if result.ok and view_ref is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": view_ref}})
    out.append(mark(HumanMessage(content=content), follow_up[1]))
    return out


async def tool(state: State, runtime: Runtime[Context]) -> Command[Literal["decide", "quantify"]]:
    """Run the chosen view on the ORIGINAL image; a bad call becomes a failure observation."""
    ctx = runtime.context
    t0 = time.perf_counter()
    pending = state.get("pending") or {"kind": "invalid", "reason": "no tool call pending"}
    result = await _run_pending(pending, state, ctx)
    rounds = int(state.get("rounds", 0)) + 1
    view_ref = BLOBS.put(result.view) if result.view is not None else None
    errors = [] if result.ok else [f"round {rounds}: {result.message}"]
    if pending.get("extra_calls"):
        result.message += f" (only one tool call per turn: {pending['extra_calls']} more ignored)"
        errors.append(f"round {rounds}: {pending['extra_calls']} extra tool call(s) ignored")
    step = {
        "round": rounds,
        "tool": result.tool,
        "args": result.args,
        "ok": result.ok,
        "message": result.message,
        "source": pending.get("source", "text"),
        "box": result.box,
        "gamma": result.gamma,
        "elapsed_ms": round(result.elapsed_ms, 3),
        "mime": result.mime,
        "view": view_ref,
        "raw": result.extra.get("raw"),
        "score_1_5": result.extra.get("score_1_5"),
    }
    _emit(runtime, {"type": "tool", "step": step})
    turn = dict(pending.get("protocol") or {"turn": "gate", "round": rounds - 1})
    turn.setdefault("action", "tool_call" if pending.get("kind") == "tool" else "invalid_tool_call")
    turn["tool_call_valid"] = result.valid_call
    at_limit = rounds >= ctx.max_tool_rounds
    follow_up = _next_turn(ctx, rounds, _plan(state))
    update = {
        "messages": _tool_messages(
            pending, result, view_ref, follow_up, ctx.max_tool_rounds - rounds
        ),
        "steps": [step],
        "protocol": [ProtocolTurn(**turn).model_dump()],
        "rounds": rounds,
        "pending": None,
        "errors": errors,
        "forced_answer": at_limit,
        "timings": {"tool_s": time.perf_counter() - t0},
    }
    return Command(update=update, goto="quantify" if at_limit else "decide")


async def _final_answer(state: State, ctx: Context) -> tuple[dict[str, Any], list[AnyMessage]]:
    """Ask for the answer, with at most ``answer_retries`` repair prompts in all
    (an unusable gate reply already spends one)."""
    messages = list(state["messages"])
    new: list[AnyMessage] = []
    update: dict[str, Any] = {
        "usage": {},
        "timings": {},
        "errors": [],
        "score": None,
        "protocol": [],
    }
    repairs_left = ctx.answer_retries
    pending = state.get("pending") or {}
    reason = pending.get("reason") if pending.get("kind") == "malformed" else None
    query_plan = _plan(state)
    schema = _answer_schema(ctx, query_plan)
    while True:
        if reason is not None:
            if repairs_left == 0:
                update["errors"].append("no valid score after the repair prompt(s)")
                return update, new
            repairs_left -= 1
            if ctx.structured_output:  # the schema decides the form: ask for JSON only
                text = REPAIR_PROMPT.format(reason=reason).splitlines()[0]
                text += "\n" + _json_hint(ctx, query_plan)
            else:
                text = _with_extras(ctx, REPAIR_PROMPT.format(reason=reason), query_plan)
            repair = mark(HumanMessage(content=text), _spec(ctx, "repair", query_plan))
            messages.append(repair)
            new.append(repair)
        reply, usage, model_s = await _call_model(
            ctx, messages, schema=schema, logprobs=ctx.score_logprobs
        )
        for key, value in usage.items():
            update["usage"][key] = update["usage"].get(key, 0) + value
        update["timings"]["model_s"] = update["timings"].get("model_s", 0.0) + model_s
        messages.append(reply)
        new.append(reply)
        if state.get("rounds"):
            update.setdefault("replies", []).append(
                {"round": state["rounds"], "text": message_text(reply)}
            )
        parsed = parse_answer(reply)
        kind: Literal["final", "repair"] = "repair" if reason is not None else "final"
        update["protocol"].append(
            ProtocolTurn.of(kind, int(state.get("rounds", 0)), parsed).model_dump()
        )
        if isinstance(parsed, AnswerAction):
            answered = _answer_update(parsed, reply, ctx, state)
            update["errors"] += answered.pop("errors")
            update.update(answered)
            return update, new
        assert isinstance(parsed, Malformed)
        update["errors"].append(f"final answer unusable: {parsed.reason}")
        reason = parsed.reason


async def quantify(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Final score and rationale; asks the model when the gate gave no usable answer."""
    if state.get("score") is not None:
        return {}
    t0 = time.perf_counter()
    update, new_messages = await _final_answer(state, runtime.context)
    update["messages"] = new_messages
    update["timings"]["quantify_s"] = time.perf_counter() - t0
    return update


async def finalize(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Package the run as an :class:`Assessment` (JSON-ready, in ``state["assessment"]``)."""
    model = await runtime.context.aget_model()
    assessment = Assessment.from_state(
        state, backend=backend_name(model), model=_model_label(model)
    )
    _emit(runtime, {"type": "final", "score": assessment.score, "rationale": assessment.rationale})
    out = assessment.model_dump(mode="json")
    if runtime.context.include_views:
        for step in out["steps"]:
            if step.get("view_ref") in BLOBS:
                step["view"] = blob_data_url(step["view_ref"])
    # the inputs a next run on the same thread may leave out start empty, not as this run's
    return {
        "assessment": out,
        "image_question": None,
        "image_name": None,
    }
