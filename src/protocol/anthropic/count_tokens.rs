//! The text `/v1/messages/count_tokens` counts for a decoded request.

use crate::protocol::ChatRequest;

/// The text `/v1/messages/count_tokens` counts: system, messages (tool calls and results included) and
/// the tool definitions, which Anthropic also bills as input.
pub(crate) fn count_tokens_input(req: &ChatRequest) -> String {
    let mut out = req.all_text();
    out.push_str(&tools_text(req));
    out
}

/// The tool definitions as [`count_tokens_input`] counts them (each after a newline).
pub(crate) fn tools_text(req: &ChatRequest) -> String {
    let mut out = String::new();
    for tool in &req.tools {
        out.push('\n');
        out.push_str(&tool.name);
        if let Some(description) = &tool.description {
            out.push('\n');
            out.push_str(description);
        }
        out.push('\n');
        out.push_str(tool.parameters.get());
    }
    out
}
