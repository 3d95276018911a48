//! Responses request encoding: a canonical request as a `POST /v1/responses` body, for backends that
//! speak the Responses API natively.

use serde_json::Value;

use crate::protocol::{ChatRequest, Image, Part, ResponseFormat, Role, ToolChoice};

/// Render a canonical request as a Responses request body: `system` becomes `instructions`, messages
/// become input items (tool calls `function_call`, tool results `function_call_output`); thinking is
/// not sent (a Responses backend accepts only its own reasoning items), and the backend is asked not
/// to store the answer (the gateway keeps conversations itself).
pub fn encode_request(req: &ChatRequest, model: Option<&str>) -> Value {
    use serde_json::json;
    let mut input: Vec<Value> = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        let mut content: Vec<Value> = Vec::new();
        let mut calls: Vec<Value> = Vec::new();
        for part in &message.parts {
            match part {
                Part::Text(text) if message.role == Role::Assistant => {
                    content.push(json!({"type": "output_text", "text": text, "annotations": []}));
                }
                Part::Text(text) => content.push(json!({"type": "input_text", "text": text})),
                Part::Image(image) => content.push(json!({
                    "type": "input_image",
                    "image_url": match image {
                        Image::Url(url) => url.clone(),
                        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                    },
                    "detail": "auto",
                })),
                Part::ToolCall(call) => calls.push(json!({
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                })),
                Part::ToolResult(result) => input.push(json!({
                    "type": "function_call_output",
                    "call_id": result.tool_call_id,
                    "output": result.content,
                })),
                Part::Thinking { .. } | Part::RedactedThinking { .. } => {}
            }
        }
        if !content.is_empty() {
            let role = match message.role {
                Role::System => "system",
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
            };
            input.push(json!({"type": "message", "role": role, "content": content}));
        }
        input.extend(calls);
    }
    let mut body = serde_json::Map::new();
    if let Some(model) = model.or(req.model.as_deref()) {
        body.insert("model".into(), json!(model));
    }
    if !req.system.is_empty() {
        body.insert("instructions".into(), json!(req.system.join("\n")));
    }
    body.insert("input".into(), Value::Array(input));
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(max) = req.params.max_tokens {
        body.insert("max_output_tokens".into(), json!(max));
    }
    if let Some(temperature) = req.params.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = req.params.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|tool| {
                let mut out = serde_json::Map::new();
                out.insert("type".into(), json!("function"));
                out.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    out.insert("description".into(), json!(description));
                }
                out.insert("parameters".into(), tool.parameters.to_value());
                Value::Object(out)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = &req.tool_choice {
            body.insert(
                "tool_choice".into(),
                match choice {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Required => json!("required"),
                    ToolChoice::Named(name) => json!({"type": "function", "name": name}),
                },
            );
        }
        if let Some(parallel) = req.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    if let Some(effort) = &req.reasoning_effort {
        body.insert("reasoning".into(), json!({"effort": effort}));
    }
    if let Some(format) = &req.response_format {
        body.insert(
            "text".into(),
            json!({"format": match &**format {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema { name, description, schema, strict } => {
                    let mut out = serde_json::Map::new();
                    out.insert("type".into(), json!("json_schema"));
                    out.insert("name".into(), json!(name));
                    if let Some(description) = description {
                        out.insert("description".into(), json!(description));
                    }
                    out.insert("schema".into(), schema.clone());
                    if let Some(strict) = strict {
                        out.insert("strict".into(), json!(strict));
                    }
                    Value::Object(out)
                }
            }}),
        );
    }
    if let Some(user) = &req.user {
        body.insert("user".into(), json!(user));
    }
    body.insert("store".into(), json!(false));
    Value::Object(body)
}
