//! Encoding a canonical chat request as an OpenAI chat completions body: the direct byte writer and,
//! under test, the `Value` form it is held to.

use serde_json::Value;

use crate::protocol::{ChatRequest, Image, Part, ResponseFormat, Role, Text, ToolCall, ToolChoice};

/// Render a canonical request as an OpenAI chat completions body, written straight to bytes.
///
/// Thinking is not sent (OpenAI-compatible servers reject or ignore reasoning in input messages), tool
/// results inside a user turn become `tool` messages ahead of the turn's remaining content, and a
/// streamed request always asks for usage so accounting works whatever the client asked. The body is
/// the one [`encode_request`] (the `Value` form, kept as the tests' oracle) serializes to, member for
/// member and in the same order; a tool's parameter schema is written as its text came.
pub(crate) fn encode_request_bytes(req: &ChatRequest, model: Option<&str>) -> Vec<u8> {
    use crate::protocol::json_text::{write_i64, write_str, write_u64};
    let mut out = Vec::with_capacity(req.encoded_len_hint());
    out.push(b'{');
    if let Some(model) = model.or(req.model.as_deref()) {
        out.extend_from_slice(br#""model":"#);
        write_str(&mut out, model);
        out.push(b',');
    }
    out.extend_from_slice(br#""messages":["#);
    let mut first = true;
    let mut next = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for system in &req.system {
        next(&mut out);
        out.extend_from_slice(br#"{"role":"system","content":"#);
        write_str(&mut out, system);
        out.push(b'}');
    }
    let mut content: Vec<&Part> = Vec::new();
    let mut tool_calls: Vec<&ToolCall> = Vec::new();
    // An assistant turn's text parts, written as one text (most often there is one: a body's text is
    // then written as the body wrote it).
    let mut texts: Vec<&Text> = Vec::new();
    for message in &req.messages {
        content.clear();
        tool_calls.clear();
        texts.clear();
        for part in &message.parts {
            match part {
                Part::ToolResult(result) => {
                    next(&mut out);
                    out.extend_from_slice(br#"{"role":"tool","tool_call_id":"#);
                    write_str(&mut out, &result.tool_call_id);
                    out.extend_from_slice(br#","content":"#);
                    result.content.write_json(&mut out);
                    out.push(b'}');
                }
                Part::ToolCall(call) => tool_calls.push(call),
                Part::Text(piece) if message.role == Role::Assistant => {
                    if !piece.is_empty() {
                        texts.push(piece);
                    }
                }
                Part::Text(_) | Part::Image(_) => content.push(part),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        match message.role {
            Role::Tool => continue,
            Role::Assistant => {
                if texts.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                next(&mut out);
                out.extend_from_slice(br#"{"role":"assistant","content":"#);
                match texts.as_slice() {
                    [] => out.extend_from_slice(b"null"),
                    [only] => only.write_json(&mut out),
                    many => {
                        let joined: Vec<&str> = many.iter().map(|text| text.as_str()).collect();
                        write_str(&mut out, &joined.join("\n"));
                    }
                }
                if !tool_calls.is_empty() {
                    out.extend_from_slice(br#","tool_calls":["#);
                    for (index, call) in tool_calls.iter().enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(br#"{"id":"#);
                        write_str(&mut out, &call.id);
                        out.extend_from_slice(br#","type":"function","function":{"name":"#);
                        write_str(&mut out, &call.name);
                        out.extend_from_slice(br#","arguments":"#);
                        call.arguments.write_json(&mut out);
                        out.extend_from_slice(b"}}");
                    }
                    out.push(b']');
                }
            }
            Role::System | Role::User => {
                if content.is_empty() {
                    continue;
                }
                next(&mut out);
                out.extend_from_slice(br#"{"role":""#);
                out.extend_from_slice(message.role.as_str().as_bytes());
                out.extend_from_slice(br#"","content":"#);
                match content.as_slice() {
                    [Part::Text(only)] => only.write_json(&mut out),
                    parts => {
                        out.push(b'[');
                        let mut first_part = true;
                        for part in parts {
                            let start = |out: &mut Vec<u8>, first_part: &mut bool| {
                                if !std::mem::take(first_part) {
                                    out.push(b',');
                                }
                            };
                            match part {
                                Part::Text(text) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(br#"{"type":"text","text":"#);
                                    text.write_json(&mut out);
                                    out.push(b'}');
                                }
                                Part::Image(Image::Url(url)) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(
                                        br#"{"type":"image_url","image_url":{"url":"#,
                                    );
                                    write_str(&mut out, url);
                                    out.extend_from_slice(b"}}");
                                }
                                Part::Image(Image::Base64 { media_type, data }) => {
                                    start(&mut out, &mut first_part);
                                    out.extend_from_slice(
                                        br#"{"type":"image_url","image_url":{"url":"#,
                                    );
                                    write_str(
                                        &mut out,
                                        &format!("data:{media_type};base64,{data}"),
                                    );
                                    out.extend_from_slice(b"}}");
                                }
                                _ => {}
                            }
                        }
                        out.push(b']');
                    }
                }
            }
        }
        if let Some(name) = &message.name {
            out.extend_from_slice(br#","name":"#);
            write_str(&mut out, name);
        }
        out.push(b'}');
    }
    out.push(b']');
    let params = &req.params;
    let key = |out: &mut Vec<u8>, key: &str| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    };
    // Floats as `serde_json` writes them (non-finite ones as `null`, as a `Value` holds them).
    let float = |out: &mut Vec<u8>, name: &str, value: Option<f64>| {
        if let Some(value) = value {
            key(out, name);
            if serde_json::to_writer(&mut *out, &value).is_err() {
                out.extend_from_slice(b"null");
            }
        }
    };
    let count = |out: &mut Vec<u8>, name: &str, value: Option<u64>| {
        if let Some(value) = value {
            key(out, name);
            write_u64(out, value);
        }
    };
    count(&mut out, "max_tokens", params.max_tokens);
    float(&mut out, "temperature", params.temperature);
    float(&mut out, "top_p", params.top_p);
    count(&mut out, "top_k", params.top_k);
    if !params.stop.is_empty() {
        key(&mut out, "stop");
        out.push(b'[');
        for (index, stop) in params.stop.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_str(&mut out, stop);
        }
        out.push(b']');
    }
    if let Some(seed) = params.seed {
        key(&mut out, "seed");
        write_i64(&mut out, seed);
    }
    float(&mut out, "presence_penalty", params.presence_penalty);
    float(&mut out, "frequency_penalty", params.frequency_penalty);
    count(&mut out, "n", params.n);
    if req.stream {
        out.extend_from_slice(br#","stream":true,"stream_options":{"include_usage":true}"#);
    }
    if !req.tools.is_empty() {
        key(&mut out, "tools");
        out.push(b'[');
        for (index, tool) in req.tools.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"type":"function","function":{"name":"#);
            write_str(&mut out, &tool.name);
            if let Some(description) = &tool.description {
                out.extend_from_slice(br#","description":"#);
                write_str(&mut out, description);
            }
            out.extend_from_slice(br#","parameters":"#);
            out.extend_from_slice(tool.parameters.get().as_bytes());
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
        if let Some(choice) = &req.tool_choice {
            key(&mut out, "tool_choice");
            match choice {
                ToolChoice::Auto => out.extend_from_slice(br#""auto""#),
                ToolChoice::None => out.extend_from_slice(br#""none""#),
                ToolChoice::Required => out.extend_from_slice(br#""required""#),
                ToolChoice::Named(name) => {
                    out.extend_from_slice(br#"{"type":"function","function":{"name":"#);
                    write_str(&mut out, name);
                    out.extend_from_slice(b"}}");
                }
            }
        }
        if let Some(parallel) = req.parallel_tool_calls {
            key(&mut out, "parallel_tool_calls");
            out.extend_from_slice(if parallel { b"true" } else { b"false" });
        }
    }
    if let Some(user) = &req.user {
        key(&mut out, "user");
        write_str(&mut out, user);
    }
    if let Some(effort) = &req.reasoning_effort {
        key(&mut out, "reasoning_effort");
        write_str(&mut out, effort);
    }
    if let Some(format) = &req.response_format {
        key(&mut out, "response_format");
        // Rare and small: through its `Value`, which always serializes.
        if serde_json::to_writer(&mut out, &response_format_json(format)).is_err() {
            out.extend_from_slice(b"null");
        }
    }
    out.push(b'}');
    out
}

/// Render a canonical request as an OpenAI chat completions body, as a JSON tree: the definition
/// [`encode_request_bytes`] is held to.
///
/// Thinking is not sent (OpenAI-compatible servers reject or ignore reasoning in input messages), tool
/// results inside a user turn become `tool` messages ahead of the turn's remaining content, and a
/// streamed request always asks for usage so accounting works whatever the client asked.
#[cfg(test)]
pub fn encode_request(req: &ChatRequest, model: Option<&str>) -> Value {
    use serde_json::json;
    let mut messages: Vec<Value> = Vec::with_capacity(req.system.len() + req.messages.len());
    for system in &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &req.messages {
        let mut content: Vec<&Part> = Vec::with_capacity(message.parts.len());
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in &message.parts {
            match part {
                Part::ToolResult(result) => messages.push(json!({
                    "role": "tool",
                    "tool_call_id": result.tool_call_id,
                    "content": result.content,
                })),
                Part::ToolCall(call) => tool_calls.push(json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })),
                Part::Text(piece) if message.role == Role::Assistant => {
                    if !text.is_empty() && !piece.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(piece);
                }
                Part::Text(_) | Part::Image(_) => content.push(part),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        let mut object = serde_json::Map::new();
        match message.role {
            Role::Tool => continue,
            Role::Assistant => {
                if text.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                object.insert("role".into(), json!("assistant"));
                object.insert(
                    "content".into(),
                    if text.is_empty() {
                        Value::Null
                    } else {
                        json!(text)
                    },
                );
                if !tool_calls.is_empty() {
                    object.insert("tool_calls".into(), Value::Array(tool_calls));
                }
            }
            Role::System | Role::User => {
                let rendered = match content.as_slice() {
                    [] => continue,
                    [Part::Text(only)] => json!(only),
                    parts => Value::Array(
                        parts
                            .iter()
                            .filter_map(|part| match part {
                                Part::Text(text) => Some(json!({"type": "text", "text": text})),
                                Part::Image(Image::Url(url)) => {
                                    Some(json!({"type": "image_url", "image_url": {"url": url}}))
                                }
                                Part::Image(Image::Base64 { media_type, data }) => Some(json!({
                                    "type": "image_url",
                                    "image_url": {"url": format!("data:{media_type};base64,{data}")},
                                })),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                object.insert("role".into(), json!(message.role.as_str()));
                object.insert("content".into(), rendered);
            }
        }
        if let Some(name) = &message.name {
            object.insert("name".into(), json!(name));
        }
        messages.push(Value::Object(object));
    }
    let mut body = serde_json::Map::new();
    if let Some(model) = model.or(req.model.as_deref()) {
        body.insert("model".into(), json!(model));
    }
    body.insert("messages".into(), Value::Array(messages));
    let params = &req.params;
    let mut put = |key: &str, value: Value| {
        body.insert(key.into(), value);
    };
    let sampling = [
        ("max_tokens", params.max_tokens.map(|n| json!(n))),
        ("temperature", params.temperature.map(|t| json!(t))),
        ("top_p", params.top_p.map(|p| json!(p))),
        ("top_k", params.top_k.map(|k| json!(k))),
        (
            "stop",
            (!params.stop.is_empty()).then(|| json!(params.stop)),
        ),
        ("seed", params.seed.map(|seed| json!(seed))),
        (
            "presence_penalty",
            params.presence_penalty.map(|p| json!(p)),
        ),
        (
            "frequency_penalty",
            params.frequency_penalty.map(|p| json!(p)),
        ),
        ("n", params.n.map(|n| json!(n))),
    ];
    for (key, value) in sampling {
        if let Some(value) = value {
            put(key, value);
        }
    }
    if req.stream {
        put("stream", json!(true));
        put("stream_options", json!({"include_usage": true}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut function = serde_json::Map::new();
                function.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    function.insert("description".into(), json!(description));
                }
                function.insert("parameters".into(), tool.parameters.to_value());
                json!({"type": "function", "function": function})
            })
            .collect();
        put("tools", Value::Array(tools));
        if let Some(choice) = &req.tool_choice {
            put(
                "tool_choice",
                match choice {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Named(name) => {
                        json!({"type": "function", "function": {"name": name}})
                    }
                },
            );
        }
        if let Some(parallel) = req.parallel_tool_calls {
            put("parallel_tool_calls", json!(parallel));
        }
    }
    if let Some(user) = &req.user {
        put("user", json!(user));
    }
    if let Some(effort) = &req.reasoning_effort {
        put("reasoning_effort", json!(effort));
    }
    if let Some(format) = &req.response_format {
        put("response_format", response_format_json(format));
    }
    Value::Object(body)
}

/// OpenAI chat `response_format` for a canonical structured-output request.
fn response_format_json(format: &ResponseFormat) -> Value {
    use serde_json::json;
    match format {
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut inner = serde_json::Map::new();
            inner.insert("name".into(), json!(name));
            if let Some(description) = description {
                inner.insert("description".into(), json!(description));
            }
            inner.insert("schema".into(), schema.clone());
            if let Some(strict) = strict {
                inner.insert("strict".into(), json!(strict));
            }
            json!({"type": "json_schema", "json_schema": inner})
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{Message, RawJson, SamplingParams, Tool, ToolResult};
    use proptest::prelude::*;

    /// Texts short and long: past `blank_strings::LONG` the readings that keep no conversation
    /// check them by the blanking scan.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "(\\PC|[\"\\\\\n\\x01\\x7f]){0,12}",
            1 => "(\\PC|[\"\\\\\n\\x01\\x7f]){12,40}",
        ]
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            4 => text().prop_map(|text| Part::Text(text.into())),
            1 => text().prop_map(|url| Part::Image(Image::Url(url))),
            1 => (text(), text()).prop_map(|(media_type, data)| Part::Image(Image::Base64 { media_type, data })),
            2 => (text(), text(), text()).prop_map(|(id, name, arguments)| Part::ToolCall(ToolCall { id, name, arguments: arguments.into() })),
            2 => (text(), text()).prop_map(|(tool_call_id, content)| Part::ToolResult(ToolResult { tool_call_id, content: content.into(), is_error: false })),
            1 => text().prop_map(|text| Part::Thinking { text, signature: None }),
            1 => text().prop_map(|data| Part::RedactedThinking { data }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![
                Just(Role::System),
                Just(Role::User),
                Just(Role::Assistant),
                Just(Role::Tool)
            ],
            proptest::collection::vec(part(), 0..4),
            proptest::option::of(text()),
        )
            .prop_map(|(role, parts, name)| Message { role, parts, name })
    }

    fn tool() -> impl Strategy<Value = Tool> {
        (text(), proptest::option::of(text()), text()).prop_map(|(name, description, property)| {
            Tool {
                name,
                description,
                parameters: RawJson::from_value(&serde_json::json!({
                    "type": "object",
                    "properties": {property: {"type": "string"}},
                })),
            }
        })
    }

    fn float() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(0.7),
            Just(1.0),
            Just(-0.0)
        ])
    }

    prop_compose! {
        /// Any canonical chat request (the Anthropic writer's property test takes it too).
        pub(crate) fn request()(
            model in proptest::option::of(text()),
            system in proptest::collection::vec(text(), 0..2),
            messages in proptest::collection::vec(message(), 0..5),
            stream in any::<bool>(),
            numbers in (proptest::option::of(any::<u64>()), float(), float(), proptest::option::of(any::<u64>()),
                proptest::option::of(any::<i64>()), float(), float(), proptest::option::of(any::<u64>())),
            stop in proptest::collection::vec(text(), 0..2),
            tools in proptest::collection::vec(tool(), 0..3),
            tool_choice in proptest::option::of(prop_oneof![
                Just(ToolChoice::Auto), Just(ToolChoice::None), Just(ToolChoice::Required), text().prop_map(ToolChoice::Named),
            ]),
            parallel_tool_calls in proptest::option::of(any::<bool>()),
            user in proptest::option::of(text()),
            reasoning_effort in proptest::option::of(text()),
            json_object in any::<bool>(),
        ) -> ChatRequest {
            let (max_tokens, temperature, top_p, top_k, seed, presence_penalty, frequency_penalty, n) = numbers;
            ChatRequest {
                model,
                system: system.into_iter().map(Text::from).collect(),
                messages,
                stream,
                params: SamplingParams { max_tokens, temperature, top_p, top_k, stop, seed, presence_penalty, frequency_penalty, n },
                tools,
                tool_choice,
                parallel_tool_calls,
                user,
                reasoning_effort,
                response_format: json_object.then(|| Box::new(ResponseFormat::JsonObject)),
                ..ChatRequest::default()
            }
        }
    }

    proptest! {
        /// The written body is byte for byte the serialized `Value` form.
        #[test]
        fn bytes_are_the_value_form(request in request(), model in proptest::option::of(text())) {
            let written = encode_request_bytes(&request, model.as_deref());
            let oracle = serde_json::to_vec(&encode_request(&request, model.as_deref())).unwrap();
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(oracle).unwrap());
        }
    }

    #[test]
    fn a_schema_is_written_as_it_came_and_reads_as_the_value_form() {
        let request = ChatRequest {
            messages: vec![Message { role: Role::User, parts: vec![Part::Text("hi".into())], name: None }],
            tools: vec![Tool {
                name: "f".into(),
                description: None,
                parameters: serde_json::from_str(r#"{ "type" : "object", "properties": {"a": {"type": "number", "default": 1e2}} }"#).unwrap(),
            }],
            response_format: Some(Box::new(ResponseFormat::JsonSchema {
                name: "s".into(),
                description: Some("d".into()),
                schema: serde_json::json!({"type": "object"}),
                strict: Some(true),
            })),
            ..ChatRequest::default()
        };
        let written = encode_request_bytes(&request, Some("m"));
        assert!(String::from_utf8_lossy(&written).contains(r#""parameters":{ "type" : "object""#));
        let parsed: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(parsed, encode_request(&request, Some("m")));
    }
}
