#!/usr/bin/env python3
"""bench/agent_body.py: realistic coding-agent request bodies for the benchmark (issue 25).

A coding agent's turn is a long system prompt, a few dozen tool definitions and a history of hundreds of
messages: the assistant's tool calls and the tool results (source files, logs, search hits, non-ASCII
text), resent whole every turn. This writes such a body, deterministically (same arguments, same bytes),
in the OpenAI chat-completions, the Anthropic messages or the OpenAI Responses shape, close to a target size.

"__N__" placeholders are what bench/post.lua (BENCH_UNIQUE=1) and bench/profile.sh (UNIQUE=1) replace
per request: with --marker last only the final user message changes between requests (a session's later
turns: the history was sent before), with --marker all every message changes (first turns: nothing seen).

    python3 bench/agent_body.py --size 250000 --shape openai --out bench/out/bodies/agent-250k.json
    python3 bench/agent_body.py --size 250000 --shape anthropic --stream --out ...
"""

import argparse
import json
import random
import sys

WORDS = (
    "the a function returns value error request response handler config buffer stream token cache key "
    "limit upstream client server retry timeout connection parse encode decode field message tool call "
    "result file path line module test assert build release debug trace span metric label route backend "
    "instance pool breaker fallback session prefix batch queue worker thread async await future task"
).split()

NON_ASCII = [
    "Grüße aus Zürich: die Änderung ist übernommen.",
    "日志显示连接在 30 秒后超时，请检查上游服务。",
    "Ошибка: файл конфигурации не найден, используется значение по умолчанию.",
    "✅ 12 tests passed, ❌ 1 failed — see the trace below 🔍",
    "Le délai d'attente a expiré après trois tentatives; réessayez plus tard.",
    "テストは成功しました。次のステップに進みます。",
]

TOOL_NAMES = [
    "read_file", "write_file", "edit_file", "list_dir", "glob", "grep", "bash", "run_tests",
    "git_status", "git_diff", "git_log", "git_commit", "web_fetch", "search_docs", "create_dir",
    "delete_file", "move_file", "format_code", "lint", "type_check", "open_pr", "comment_pr",
    "todo_write", "ask_user", "find_symbol", "rename_symbol", "apply_patch", "start_server",
    "stop_server", "http_request",
]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def source_file(rng, lines):
    out = []
    for i in range(lines):
        kind = rng.random()
        ident = rng.choice(WORDS) + "_" + rng.choice(WORDS)
        if kind < 0.15:
            out.append(f"fn {ident}(input: &str, limit: usize) -> Result<{rng.choice(['String', 'Vec<u8>', 'u64'])}, Error> {{")
        elif kind < 0.3:
            out.append(f"    let {ident} = {rng.choice(WORDS)}.{rng.choice(WORDS)}({rng.randint(0, 999)})?;")
        elif kind < 0.4:
            out.append(f"    // {words(rng, rng.randint(4, 12))}")
        elif kind < 0.5:
            out.append(f"    if {ident} > {rng.randint(1, 4096)} {{ return Err(Error::new(\"{words(rng, 3)}\")); }}")
        elif kind < 0.55:
            out.append("}")
        elif kind < 0.6:
            out.append(f"    println!(\"{{}}\\t{{:?}}\", {ident}, \"{rng.choice(NON_ASCII)}\");")
        else:
            out.append(f"    {ident}.push_str(\"{words(rng, rng.randint(2, 6))}\");")
    return "\n".join(out)


def log_output(rng, lines):
    levels = ["INFO", "WARN", "DEBUG", "ERROR"]
    out = []
    for i in range(lines):
        ts = f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
        msg = rng.choice(NON_ASCII) if rng.random() < 0.1 else words(rng, rng.randint(5, 14))
        out.append(f"{ts} {rng.choice(levels):5} {rng.choice(WORDS)}::{rng.choice(WORDS)}: {msg} id={rng.getrandbits(48):012x}")
    return "\n".join(out)


def grep_hits(rng, n):
    return "\n".join(
        f"src/{rng.choice(WORDS)}/{rng.choice(WORDS)}.rs:{rng.randint(1, 900)}:    {words(rng, rng.randint(3, 9))}"
        for _ in range(n)
    )


def tool_result(rng, name):
    if name in ("read_file", "git_diff", "apply_patch"):
        return source_file(rng, rng.randint(15, 90))
    if name in ("bash", "run_tests", "git_log", "start_server"):
        return log_output(rng, rng.randint(8, 50))
    if name in ("grep", "glob", "find_symbol", "list_dir"):
        return grep_hits(rng, rng.randint(10, 60))
    return rng.choice(NON_ASCII) + " " + words(rng, rng.randint(10, 60))


def tool_arguments(rng, name):
    path = f"src/{rng.choice(WORDS)}/{rng.choice(WORDS)}.rs"
    if name in ("read_file", "list_dir", "delete_file"):
        return {"path": path}
    if name in ("edit_file", "apply_patch", "write_file"):
        return {"path": path, "old": words(rng, 8), "new": words(rng, 10)}
    if name in ("bash", "run_tests"):
        return {"command": f"cargo test {rng.choice(WORDS)} -- --nocapture", "timeout_s": 120}
    if name in ("grep", "glob", "find_symbol"):
        return {"pattern": rng.choice(WORDS) + ".*" + rng.choice(WORDS), "path": "src"}
    return {"query": words(rng, 6)}


def tool_definitions(rng, count):
    tools = []
    for name in TOOL_NAMES[:count]:
        properties = {}
        for p in range(rng.randint(2, 6)):
            pname = rng.choice(WORDS) + ("_" + rng.choice(WORDS) if p else "")
            properties[pname] = {
                "type": rng.choice(["string", "integer", "boolean"]),
                "description": words(rng, rng.randint(8, 20)),
            }
        tools.append({
            "name": name,
            "description": words(rng, rng.randint(30, 80)),
            "parameters": {"type": "object", "properties": properties, "required": list(properties)[:1]},
        })
    return tools


def system_prompt(rng, size):
    parts = ["You are a coding agent working in a Rust repository. Follow the project's conventions.\n"]
    while sum(map(len, parts)) < size:
        parts.append(f"## {words(rng, 3).title()}\n{words(rng, rng.randint(40, 120))}.\n")
        if rng.random() < 0.2:
            parts.append("```rust\n" + source_file(rng, 8) + "\n```\n")
    return "".join(parts)


def history(rng, target, marker_all, tool_count):
    """(role, text, calls, answers) turns, alternating tool calls and results, up to `target` bytes."""
    turns = []
    size = 0
    call_id = 0
    tag = " __N__" if marker_all else ""
    turns.append(("user", "Please fix the failing test in the limits module and explain the change." + tag, [], None))
    while size < target:
        calls = []
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 3)):
            name = rng.choice(TOOL_NAMES[:tool_count])
            call_id += 1
            calls.append((f"call_{call_id:05d}", name, tool_arguments(rng, name)))
        thought = words(rng, rng.randint(5, 40)) + tag if rng.random() < 0.6 else ""
        turns.append(("assistant", thought, calls, None))
        for cid, name, _ in calls:
            result = tool_result(rng, name) + tag
            turns.append(("tool", result, [], cid))
            size += len(result) + 200
        size += len(thought) + 150
        if rng.random() < 0.05:
            turns.append(("user", rng.choice(NON_ASCII) + " " + words(rng, 12) + tag, [], None))
    return turns


def openai_body(system, tools, turns, final, stream):
    messages = [{"role": "system", "content": system}]
    for role, text, calls, answers in turns:
        if role == "assistant":
            message = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                    for cid, name, args in calls
                ]
            messages.append(message)
        elif role == "tool":
            messages.append({"role": "tool", "tool_call_id": answers, "content": text})
        else:
            messages.append({"role": "user", "content": text})
    messages.append({"role": "user", "content": final})
    body = {
        "model": "mock-model",
        "messages": messages,
        "tools": [{"type": "function", "function": t} for t in tools],
        "tool_choice": "auto",
        "max_tokens": 1024,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return body


def anthropic_body(system, tools, turns, final, stream):
    messages = []

    def push(role, block):
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": role, "content": [block]})

    for role, text, calls, answers in turns:
        if role == "assistant":
            if text:
                push("assistant", {"type": "text", "text": text})
            for cid, name, args in calls:
                push("assistant", {"type": "tool_use", "id": cid, "name": name, "input": args})
        elif role == "tool":
            push("user", {"type": "tool_result", "tool_use_id": answers, "content": text})
        else:
            push("user", {"type": "text", "text": text})
    push("user", {"type": "text", "text": final})
    body = {
        "model": "mock-model",
        "system": system,
        "messages": messages,
        "tools": [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in tools],
        "max_tokens": 1024,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return body


def responses_body(system, tools, turns, final, stream, store=False):
    """The Responses API shape a coding agent (Codex, the Agents SDK) sends: the history as input items,
    resent every turn; nothing stored (`store: false`, as Codex sends it), or with `store` the answer
    stored too (the API's default, which the Agents SDK keeps while resending its history)."""
    items = []
    for role, text, calls, answers in turns:
        if role == "assistant":
            if text:
                items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
            for cid, name, args in calls:
                items.append({"type": "function_call", "call_id": cid, "name": name, "arguments": json.dumps(args)})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": answers, "output": text})
        else:
            items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": final}]})
    body = {
        "model": "mock-model",
        "instructions": system,
        "input": items,
        "tools": [{"type": "function", **t} for t in tools],
        "tool_choice": "auto",
        "max_output_tokens": 1024,
        "temperature": 0,
        "store": store,
    }
    if stream:
        body["stream"] = True
    return body


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, required=True, help="target body size in bytes")
    parser.add_argument("--shape", choices=["openai", "anthropic", "responses", "responses-stored"], default="openai")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--marker", choices=["last", "all"], default="last")
    parser.add_argument("--tools", type=int, default=24, help="tool definitions (at most 30)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    system = system_prompt(rng, min(12_000, args.size // 10))
    tools = tool_definitions(rng, min(args.tools, len(TOOL_NAMES)))
    fixed = len(system) + len(json.dumps(tools)) + 500
    turns = history(rng, max(0, args.size - fixed), args.marker == "all", min(args.tools, len(TOOL_NAMES)))
    final = "Benchmark turn __N__: now run the tests again and summarize what changed."
    build = {
        "openai": openai_body,
        "anthropic": anthropic_body,
        "responses": responses_body,
        "responses-stored": lambda *a: responses_body(*a, store=True),
    }[args.shape]
    text = json.dumps(build(system, tools, turns, final, args.stream), ensure_ascii=False, separators=(",", ":"))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{args.out}: {len(text.encode())} bytes, {len(turns) + 2} messages, {len(tools)} tools", file=sys.stderr)


if __name__ == "__main__":
    main()
