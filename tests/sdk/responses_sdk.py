"""The official `openai` Python SDK against the gateway's `/v1/responses` (run by tests/it/sdk.rs).

Usage: responses_sdk.py BASE_URL MODEL KIND, where KIND says what answers the model's backend gives:
  echo       the echo backend ("Echo: <last user message>", no tool calls)
  chat       the mock OpenAI chat upstream, scripted by the Rust test: text, text (stream), two tool
             calls, text, two tool calls (stream), text
  anthropic  the mock Anthropic upstream, scripted the same way (its tool calls: get_weather, get_time)
Exits non-zero with a message naming the first check that failed.
"""

import sys

import openai

BASE_URL, MODEL, KIND = sys.argv[1], sys.argv[2], sys.argv[3]
TEXT = {"echo": None, "chat": "hello from mock", "anthropic": "Hello from claude"}[KIND]
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
]


def expect(condition, what):
    if not condition:
        print(f"FAILED ({KIND}): {what}", file=sys.stderr)
        sys.exit(1)


def expected_text(prompt):
    return TEXT if TEXT is not None else f"Echo: {prompt}"


client = openai.OpenAI(base_url=BASE_URL, api_key="sk-sdk-test", max_retries=0, timeout=30)

# 1. create: plain text.
first = client.responses.create(model=MODEL, instructions="Be brief.", input="Hello world")
expect(first.id.startswith("resp_"), f"response id {first.id}")
expect(first.object == "response", f"object {first.object}")
expect(first.status == "completed", f"status {first.status}")
expect(first.output_text == expected_text("Hello world"), f"output_text {first.output_text!r}")
expect(first.usage is not None and first.usage.total_tokens > 0, f"usage {first.usage}")

# 2. stream: typed events, text deltas, the final response.
with client.responses.stream(model=MODEL, input="Hello stream", previous_response_id=first.id) as stream:
    deltas = []
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    streamed = stream.get_final_response()
expect(kinds[0] == "response.created", f"first event {kinds[:2]}")
expect(kinds[-1] == "response.completed", f"last event {kinds[-2:]}")
expect("".join(deltas) == expected_text("Hello stream"), f"deltas {deltas}")
expect(streamed.output_text == expected_text("Hello stream"), f"final {streamed.output_text!r}")

# 3. retrieve a stored answer; previous_response_id continues it.
stored = client.responses.retrieve(streamed.id)
expect(stored.id == streamed.id and stored.output_text == streamed.output_text, f"retrieved {stored}")

# 4. tools: function calls, then their outputs continue the conversation.
if KIND == "echo":
    # The echo backend calls no tools; a hand-made call and its output still round-trip.
    calls = [("call_1", "get_weather", '{"city":"Paris"}')]
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
    ]
    asked = client.responses.create(model=MODEL, input=history, tools=TOOLS)
else:
    asked = client.responses.create(model=MODEL, input="Weather in Paris and the time?", tools=TOOLS)
    calls = [(item.call_id, item.name, item.arguments) for item in asked.output if item.type == "function_call"]
    expect([name for _, name, _ in calls] == ["get_weather", "get_time"], f"tool calls {asked.output}")
outputs = [
    {"type": "function_call_output", "call_id": call_id, "output": f"result of {name}"}
    for call_id, name, _ in calls
]
answered = client.responses.create(
    model=MODEL, previous_response_id=asked.id, input=outputs, tools=TOOLS
)
expect(answered.status == "completed", f"status after tool outputs {answered.status}")
if KIND == "echo":
    expect(answered.output_text == "Echo: Weather in Paris?", f"echo after tools {answered.output_text!r}")
else:
    expect(answered.output_text == TEXT, f"answer after tools {answered.output_text!r}")

# 5. a streamed tool call: argument deltas, then the calls in the final response.
if KIND != "echo":
    with client.responses.stream(model=MODEL, input="Again, please.", tools=TOOLS) as stream:
        arguments = {}
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments[event.output_index] = arguments.get(event.output_index, "") + event.delta
        final = stream.get_final_response()
    final_calls = [(index, item) for index, item in enumerate(final.output) if item.type == "function_call"]
    expect(len(final_calls) == 2, f"streamed calls {final.output}")
    for index, call in final_calls:
        expect(arguments.get(index) == call.arguments, f"argument deltas {arguments} for {call}")
    final_calls = [call for _, call in final_calls]
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=final.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "done"}
            for call in final_calls
        ],
    )
    expect(answered.output_text == TEXT, f"answer after streamed tools {answered.output_text!r}")

# 6. delete: gone for retrieve and for previous_response_id.
client.responses.delete(first.id)
try:
    client.responses.retrieve(first.id)
    expect(False, "a deleted response was retrieved")
except openai.NotFoundError:
    pass
try:
    client.responses.create(model=MODEL, previous_response_id=first.id, input="more")
    expect(False, "a deleted response was continued")
except openai.NotFoundError as error:
    expect("previous_response_id" in str(error.body), f"404 body {error.body}")

# 7. bad input: a 400 in the OpenAI error shape, raised as BadRequestError.
try:
    client.responses.create(model=MODEL, input=[{"role": "robot", "content": "beep"}])
    expect(False, "an unknown role was accepted")
except openai.BadRequestError as error:
    expect("unknown role 'robot'" in error.message, f"400 message {error.message}")

print(f"ok {KIND}")
