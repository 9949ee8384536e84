"""The property every reply must have: a well-formed success, or a 4xx in OpenAI's error shape. Never a
5xx (the fakes behind Fluido are healthy, so any 5xx was caused by the request), never plain text, never
a stream that errors, never a hang."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

VERDICTS = ("2xx", "4xx", "closed", "5xx", "malformed", "stream_error", "hang")
FAILURES = frozenset({"5xx", "malformed", "stream_error", "hang"})


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back for one case: ``status`` 0 when the server closed without answering."""

    status: int
    headers: dict[str, str]
    body: bytes
    hung: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def _json(reply: Reply) -> Any:
    if reply.content_type != "application/json":
        raise ValueError(f"content-type {reply.content_type!r}, not application/json")
    return orjson.loads(reply.body)


def openai_error(reply: Reply) -> str | None:
    try:
        body = _json(reply)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return f"error reply is not JSON: {exc}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"error reply is not OpenAI's shape: {body!r:.200}"
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["type"], str):
        return "error message or type missing"
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return "error param or code not a string"
    return None


def _choice_ok(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and isinstance(choice.get("index"), int)
        and isinstance(choice.get("message"), dict)
        and choice["message"].get("role") == "assistant"
        and isinstance(choice.get("finish_reason"), str)
    )


def chat_success(reply: Reply) -> str | None:
    if reply.content_type == "text/event-stream":
        return _stream_success(reply)
    try:
        body = _json(reply)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return f"completion is not JSON: {exc}"
    if not isinstance(body, dict) or body.get("object") != "chat.completion":
        return f"not a chat.completion: {body!r:.200}"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(_choice_ok(c) for c in choices):
        return f"bad choices: {choices!r:.200}"
    if [c["index"] for c in choices] != list(range(len(choices))):
        return "choices not indexed 0..n-1"
    return None


def _stream_success(reply: Reply) -> str | None:
    events: list[Any] = []
    for line in reply.body.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        try:
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
        except orjson.JSONDecodeError:
            return f"stream event is not JSON: {data[:120]!r}"
    if not events or events[-1] != "[DONE]":
        last = events[-1] if events else None
        return f"stream_error: ended with {last!r:.200}"
    finished = set()
    for event in events[:-1]:
        if not isinstance(event, dict) or event.get("object") != "chat.completion.chunk":
            return f"not a chunk: {event!r:.200}"
        for choice in event.get("choices") or ():
            if choice.get("finish_reason"):
                finished.add(choice["index"])
    if not finished:
        return "stream_error: [DONE] without a finish_reason"
    return None


def embeddings_success(reply: Reply) -> str | None:
    try:
        body = _json(reply)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return f"embeddings reply is not JSON: {exc}"
    data = body.get("data") if isinstance(body, dict) else None
    if body.get("object") != "list" or not isinstance(data, list):
        return f"not an embeddings list: {body!r:.200}"
    if not all(isinstance(d, dict) and isinstance(d.get("embedding"), list | str) for d in data):
        return "bad embedding entries"
    return None


def ollama_error(reply: Reply) -> str | None:
    """Ollama's error shape, ``{"error": "..."}``, which its clients read."""
    try:
        body = _json(reply)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return f"error reply is not JSON: {exc}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"error reply is not Ollama's shape: {body!r:.200}"
    return None


def ollama_success(reply: Reply) -> str | None:
    """One JSON object with ``done: true``, or NDJSON lines of which only the last is done (and no error)."""
    if reply.content_type == "application/x-ndjson":
        try:
            lines = [orjson.loads(line) for line in reply.body.split(b"\n") if line.strip()]
        except orjson.JSONDecodeError as exc:
            return f"stream line is not JSON: {exc}"
        if not lines or any("error" in line for line in lines):
            return f"stream_error: {lines[-1] if lines else None!r:.200}"
        if lines[-1].get("done") is not True or any(line.get("done") for line in lines[:-1]):
            return "stream_error: not exactly one done line, at the end"
        return None
    try:
        body = _json(reply)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return f"reply is not JSON: {exc}"
    if not isinstance(body, dict) or body.get("done") is not True:
        return f"reply is not done: {body!r:.200}"
    return None


def judge(reply: Reply, success: Any, error: Any, transport: str = "normal") -> tuple[str, str | None]:
    """(verdict, what is wrong or None). ``success`` and ``error`` check a 2xx and a 4xx reply."""
    if reply.hung:
        return "hang", "no reply within the client's timeout"
    if reply.status == 0:
        # Only a client that cut its own request short may be left without an answer.
        return ("closed", None) if transport in ("truncated", "leave") else ("malformed", "closed, no reply")
    if reply.status >= 500:
        return "5xx", f"{reply.status}: {reply.body[:200]!r}"
    if 200 <= reply.status < 300:
        problem = success(reply)
        if problem is None:
            return "2xx", None
        return ("stream_error" if problem.startswith("stream_error") else "malformed"), problem
    if 400 <= reply.status < 500:
        problem = error(reply)
        return ("4xx", None) if problem is None else ("malformed", problem)
    return "malformed", f"unexpected status {reply.status}"
