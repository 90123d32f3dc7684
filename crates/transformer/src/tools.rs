//! Function calling: tools rendered into the prompt, a model's answer read
//! back as calls, and a constraint that makes the answer a call.
//!
//! Mistral's formats (v3 and later vocabularies) mark calls with the
//! `[TOOL_CALLS]` control token followed by a JSON list,
//! `[{"name": ..., "arguments": {...}}]`. Templates that render `tools`
//! themselves get them; for one that does not (SmolLM2's ChatML, say), the
//! tools and the format of a call are described in a system message.

use mistral_tokenizer::{Message, ModelKind, Tokenizer, ToolCall};
use serde_json::{json, Value};

use crate::constraint::Constraint;
use crate::error::ModelError;

/// The control token that opens a list of calls in Mistral's formats.
const TOOL_CALLS_TOKEN: &str = "[TOOL_CALLS]";

/// Which calls a constraint allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// A call to any of the tools.
    Required,
    /// A call to this tool.
    Named(String),
}

/// Checks OpenAI's tool list (`[{"type": "function", "function": {"name",
/// "description"?, "parameters"?}}]`) and returns the function names.
pub fn tool_names(tools: &Value) -> Result<Vec<String>, ModelError> {
    let bad = |m: String| ModelError::InvalidInput(format!("tools: {m}"));
    let list = tools
        .as_array()
        .ok_or_else(|| bad("must be a list".into()))?;
    let mut names = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(format!("tool {i} is not of type \"function\"")));
        }
        let f = &t["function"];
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .ok_or_else(|| {
                bad(format!(
                    "tool {i} needs a name of letters, digits, _ and - (at most 64)"
                ))
            })?;
        if let Some(p) = f.get("parameters") {
            if !p.is_object() {
                return Err(bad(format!(
                    "the parameters of {name} must be a JSON Schema object"
                )));
            }
        }
        if names.iter().any(|n| n == name) {
            return Err(bad(format!("{name} is listed twice")));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The messages a template that does not render tools needs: the tools
/// and the format of a call, in a system message (merged into the first
/// one when there is one), or with `in_user` before the first user message.
pub(crate) fn describe_tools(messages: &[Message], tools: &Value, in_user: bool) -> Vec<Message> {
    let text = format!(
        "You can call these functions:\n{}\n\nTo call functions, answer with only a JSON list \
         of calls, [{{\"name\": \"function name\", \"arguments\": {{...}}}}], and nothing else.",
        mistral_tokenizer::py_json_dumps(tools)
    );
    // Calls and results as text, for a template that knows neither.
    let mut out: Vec<Message> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if !m.tool_calls.is_empty() && m.content.is_empty() {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let args = serde_json::from_str(&c.arguments)
                            .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                        json!({"name": c.name, "arguments": args})
                    })
                    .collect();
                m.content = mistral_tokenizer::py_json_dumps(&Value::Array(calls));
                m.tool_calls.clear();
            }
            m
        })
        .collect();
    if in_user {
        if let Some(m) = out.iter_mut().find(|m| m.role == "user") {
            m.content = format!("{text}\n\n{}", m.content);
        }
        return out;
    }
    match out.first_mut() {
        Some(m) if m.role == "system" => m.content = format!("{}\n\n{text}", m.content),
        _ => out.insert(0, Message::system(text)),
    }
    out
}

/// The `[TOOL_CALLS]` token's id, where the vocabulary has it.
pub(crate) fn tool_calls_token(tok: &Tokenizer) -> Option<u32> {
    tok.token_id(TOOL_CALLS_TOKEN)
}

/// A constraint that makes the answer a list of calls (`choice`; one call
/// unless `parallel`): in Mistral's format, `[TOOL_CALLS]` and the list;
/// else the list alone. Each call's arguments conform to its tool's
/// `parameters` schema.
pub fn tool_call_constraint(
    tok: &Tokenizer,
    tools: &Value,
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Constraint, ModelError> {
    let names = tool_names(tools)?;
    if let ToolChoice::Named(n) = choice {
        if !names.contains(n) {
            return Err(ModelError::InvalidInput(format!(
                "tool_choice names {n:?}, which is not among the tools"
            )));
        }
    }
    let calls: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| &t["function"])
        .filter(|f| match choice {
            ToolChoice::Required => true,
            ToolChoice::Named(n) => f["name"].as_str() == Some(n),
        })
        .map(|f| {
            let params = f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            json!({
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = json!({
        "type": "array",
        "items": {"anyOf": calls},
        "minItems": 1,
        "x-guidance": crate::constraint::compact_json(),
    });
    if !parallel {
        schema["maxItems"] = json!(1);
    }
    let list = format!("%json {schema}");
    let grammar = match tool_calls_token(tok) {
        // mistral-common writes "[TOOL_CALLS] [...]" (v3: a space after
        // the token; tekken, byte-level: none).
        Some(id) if tok.model_kind() == ModelKind::SentencePiece => {
            format!("start: <[{id}]> \" \" calls\ncalls: {list}\n")
        }
        Some(id) => format!("start: <[{id}]> calls\ncalls: {list}\n"),
        None => format!("start: calls\ncalls: {list}\n"),
    };
    Ok(Constraint::Lark(grammar))
}

/// The calls an answer makes, if it is one: `generated` the answer's ids,
/// `text` its text. In Mistral's format the answer starts with
/// `[TOOL_CALLS]`; otherwise the whole text (maybe in a fenced block or
/// `<tool_call>` tags) must be a JSON list of `{"name", "arguments"}`
/// objects (or one such object). Calls without an id get `call_<n>` ids.
pub fn parse_tool_calls(tok: &Tokenizer, generated: &[u32], text: &str) -> Option<Vec<ToolCall>> {
    if let Some(tc) = tool_calls_token(tok) {
        if generated.first() != Some(&tc) && !generated.is_empty() {
            // Mistral's format: a call starts with the token.
            return None;
        }
    }
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    let t = t
        .strip_prefix("<tool_call>")
        .and_then(|r| r.strip_suffix("</tool_call>"))
        .unwrap_or(t)
        .trim();
    let v: Value = serde_json::from_str(t).ok()?;
    let list = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return None,
    };
    if list.is_empty() {
        return None;
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c.get("name")?.as_str()?.to_string();
            let args = c.get("arguments")?;
            let arguments = match args {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call{i:05}"), str::to_string);
            Some(ToolCall {
                id,
                name,
                arguments,
            })
        })
        .collect()
}
