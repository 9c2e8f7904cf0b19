#!/usr/bin/env python3
"""A real MCP client for integration tests: the official MCP Python SDK (pinned in
tests/support/pyclient.rs) over Streamable HTTP, one session, a list of actions.

It only drives the SDK and reports what it saw; it must not judge results (the Rust tests do).

Usage: mcp_client.py URL ACTIONS_JSON [--header NAME:VALUE]... [--elicit accept|decline] [--sample TEXT]

ACTIONS_JSON is a JSON list, run in order in one session after `initialize`:
  {"list_tools": {}}                      -> {"action": "list_tools", "tools": [names]}
  {"call": "NAME", "args": {...}}         -> {"action": "call", "tool": NAME, "isError": bool,
                                              "structuredContent": ..., "text": [text contents]}
    (with "progress": true the call carries a progress token; each notification prints
     {"action": "progress", "progress": N, "message": ...})
  {"ping": {}}                            -> {"action": "ping", "ok": true}
  {"list_prompts": {}}                    -> {"action": "list_prompts", "prompts": [{name, title, arguments}]}
  {"get_prompt": NAME, "args": {...}}     -> {"action": "get_prompt", "name": NAME, "description": ...,
                                              "messages": [{"role": ..., "text": ...}]}
  {"list_resources": {}}                  -> {"action": "list_resources", "resources": [{uri, name, mimeType}]}
  {"read_resource": URI}                  -> {"action": "read_resource", "uri": URI,
                                              "contents": [{"uri", "mimeType", "text"}]}
  With "expect_error": true, a JSON-RPC error from get_prompt or read_resource is reported as
  {"action": ..., "error": "...", "code": CODE} and the remaining actions still run.
With --elicit the client declares the elicitation capability and answers every elicitation
request: `accept` checks every boolean field of the form, `decline` says no. Each request
it answers prints {"action": "elicitation", "message": ..., "answer": "accept"|"decline"}.
Without --elicit the client declares no elicitation capability.
With --sample TEXT the client declares the sampling capability and answers every
sampling/createMessage request with TEXT (model "test-model"), printing
{"action": "sampling", "systemPrompt": ..., "maxTokens": N, "messages": [texts]} for each request.
Without --sample the client declares no sampling capability.
Output: one JSON object per line on stdout, the first being
  {"action": "initialize", "protocolVersion": ..., "serverInfo": {...}}.
A protocol failure (HTTP error, JSON-RPC error, broken stream) prints
  {"action": ..., "error": "...", "code": JSONRPC-CODE-or-null, "httpStatus": LAST-HTTP-ERROR-or-null}
and exits 1; bad usage exits 2.
"""

import json
import sys

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


class ActionFailed(Exception):
    def __init__(self, action, error, code=None):
        super().__init__(error)
        self.action, self.error, self.code = action, error, code


async def run_action(session, action):
    if not isinstance(action, dict) or len(action) == 0:
        raise ActionFailed("usage", f"bad action {action!r}")
    if "list_tools" in action:
        names, cursor = [], None
        while True:
            params = None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
            result = await session.list_tools(params=params)
            names.extend(tool.name for tool in result.tools)
            cursor = result.next_cursor
            if cursor is None:
                break
        emit({"action": "list_tools", "tools": names})
    elif "call" in action:
        name = action["call"]
        callback = None
        if action.get("progress"):

            async def callback(progress, total, message):
                emit({"action": "progress", "progress": progress, "message": message})

        result = await session.call_tool(name, action.get("args") or {}, progress_callback=callback)
        texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
        emit(
            {
                "action": "call",
                "tool": name,
                "isError": bool(result.is_error),
                "structuredContent": result.structured_content,
                "text": texts,
            }
        )
    elif "ping" in action:
        await session.send_ping()
        emit({"action": "ping", "ok": True})
    elif "list_prompts" in action:
        result = await session.list_prompts()
        emit(
            {
                "action": "list_prompts",
                "prompts": [p.model_dump(mode="json", by_alias=True, exclude_none=True) for p in result.prompts],
            }
        )
    elif "get_prompt" in action:
        name = action["get_prompt"]
        try:
            result = await session.get_prompt(name, action.get("args") or {})
        except MCPError as e:
            if not action.get("expect_error"):
                raise
            emit({"action": "get_prompt", "name": name, "error": e.error.message, "code": e.error.code})
            return
        messages = [{"role": m.role, "text": getattr(m.content, "text", None)} for m in result.messages]
        emit({"action": "get_prompt", "name": name, "description": result.description, "messages": messages})
    elif "list_resources" in action:
        result = await session.list_resources()
        emit(
            {
                "action": "list_resources",
                "resources": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in result.resources],
            }
        )
    elif "read_resource" in action:
        uri = action["read_resource"]
        try:
            result = await session.read_resource(uri)
        except MCPError as e:
            if not action.get("expect_error"):
                raise
            emit({"action": "read_resource", "uri": uri, "error": e.error.message, "code": e.error.code})
            return
        contents = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.contents]
        emit({"action": "read_resource", "uri": uri, "contents": contents})
    else:
        raise ActionFailed("usage", f"unknown action {action!r}")


def describe(exc):
    """The innermost meaningful error of an exception (anyio wraps task failures in groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e)[0] for e in exc.exceptions), None
    if isinstance(exc, MCPError):
        return f"{type(exc).__name__}: {exc.error.message}", exc.error.code
    return f"{type(exc).__name__}: {exc}", None


def elicitation_callback(answer):
    async def callback(context, params):
        emit({"action": "elicitation", "message": params.message, "answer": answer})
        if answer != "accept":
            return types.ElicitResult(action="decline")
        schema = getattr(params, "requested_schema", None) or {}
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        content = {name: True for name, p in props.items() if p.get("type") == "boolean"}
        return types.ElicitResult(action="accept", content=content)

    return callback


def sampling_callback(text):
    async def callback(context, params):
        messages = [getattr(m.content, "text", None) for m in params.messages]
        emit(
            {
                "action": "sampling",
                "systemPrompt": params.system_prompt,
                "maxTokens": params.max_tokens,
                "messages": messages,
            }
        )
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=text),
            model="test-model",
            stop_reason="endTurn",
        )

    return callback


async def main(url, actions, headers, elicit=None, sample=None):
    current = "connect"
    http_errors = []  # the SDK folds most HTTP errors into one JSON-RPC code; keep the status

    async def on_response(response):
        if response.status_code >= 400:
            http_errors.append(response.status_code)

    # trust_env=False: never route test traffic through a proxy from the environment.
    http = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(30.0, read=300.0),
        trust_env=False,
        event_hooks={"response": [on_response]},
    )
    try:
        async with http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                callback = elicitation_callback(elicit) if elicit else None
                sampler = sampling_callback(sample) if sample is not None else None
                async with ClientSession(
                    read, write, elicitation_callback=callback, sampling_callback=sampler
                ) as session:
                    current = "initialize"
                    init = await session.initialize()
                    emit(
                        {
                            "action": "initialize",
                            "protocolVersion": init.protocol_version,
                            "serverInfo": init.server_info.model_dump(mode="json", exclude_none=True),
                        }
                    )
                    for action in actions:
                        current = next(iter(action)) if isinstance(action, dict) and action else "usage"
                        await run_action(session, action)
    except ActionFailed as e:
        emit({"action": e.action, "error": e.error, "code": e.code, "httpStatus": None})
        return 2 if e.action == "usage" else 1
    except BaseException as e:  # noqa: BLE001 - report every failure as one line, then fail
        if isinstance(e, KeyboardInterrupt):
            raise
        error, code = describe(e)
        status = http_errors[-1] if http_errors else None
        emit({"action": current, "error": error, "code": code, "httpStatus": status})
        return 1
    return 0


def parse_args(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    url, actions = argv[1], json.loads(argv[2])
    if not isinstance(actions, list):
        raise SystemExit("ACTIONS_JSON must be a JSON list")
    headers, elicit, sample, rest = {}, None, None, argv[3:]
    while rest:
        if rest[0] == "--sample" and len(rest) >= 2:
            sample = rest[1]
            rest = rest[2:]
            continue
        if rest[0] == "--elicit" and len(rest) >= 2 and rest[1] in ("accept", "decline"):
            elicit = rest[1]
            rest = rest[2:]
            continue
        if rest[0] != "--header" or len(rest) < 2 or ":" not in rest[1]:
            raise SystemExit(__doc__)
        name, value = rest[1].split(":", 1)
        headers[name.strip()] = value.strip()
        rest = rest[2:]
    return url, actions, headers, elicit, sample


if __name__ == "__main__":
    try:
        url, actions, headers, elicit, sample = parse_args(sys.argv)
    except SystemExit as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    sys.exit(anyio.run(main, url, actions, headers, elicit, sample))
