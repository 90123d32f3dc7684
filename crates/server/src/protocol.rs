//! The request bodies of the OpenAI and Mistral APIs, and their checks.
//!
//! One struct takes every field the generation endpoints know
//! (`deny_unknown_fields`: a field we do not know is a 400 naming it); each
//! endpoint then refuses the fields that are not its own, and [`Plan`] holds
//! what a valid request asks the engine for.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::ApiError;

/// The most choices (`n` × prompts) one request may ask for.
pub const MAX_CHOICES: usize = 16;
/// Stop strings per request, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_BYTES: usize = 1024;
/// `logit_bias` entries per request.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Alternatives per token (`top_logprobs`; OpenAI allows 20).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Inputs of one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

/// A string or a list of strings (`stop`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A prompt: text, texts, token ids, or lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `logprobs`: a flag for chat, a count for completions.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Logprobs {
    Flag(bool),
    Count(i64),
}

/// A chat message's content: text, or a list of parts of which only text is supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
    /// A participant's name: accepted, not used.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub prefix: Option<bool>,
    pub tool_calls: Option<serde_json::Value>,
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Every field of `/v1/chat/completions`, `/v1/completions` and
/// `/v1/fim/completions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<PromptInput>,
    pub suffix: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub min_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub stop: Option<OneOrMany>,
    pub seed: Option<u64>,
    pub random_seed: Option<u64>,
    pub n: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<HashMap<String, f64>>,
    pub logprobs: Option<Logprobs>,
    pub top_logprobs: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub safe_prompt: Option<bool>,
    /// The end user's id: accepted, not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub cache_prompt: Option<bool>,
    pub response_format: Option<serde_json::Value>,
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub prompt_mode: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: PromptInput,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    /// The end user's id: accepted, not used.
    #[allow(dead_code)]
    pub user: Option<String>,
    pub output_dtype: Option<String>,
    pub output_dimension: Option<i64>,
}

/// Which endpoint a request came to: decides its fields and its response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
    Fim,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
            Endpoint::Fim => "/v1/fim/completions",
        }
    }
}

/// Parses a JSON body into `T`, as a 400 naming what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "the request body is empty (expected JSON)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "invalid request",
            _ => "malformed JSON",
        };
        ApiError::invalid("body", format!("{what}: {e}"))
    })
}

/// A valid `max_tokens`-like count.
pub fn positive(name: &str, v: i64, max: usize) -> Result<usize, ApiError> {
    if v < 1 {
        return Err(ApiError::invalid(
            name,
            format!("{name} must be at least 1, got {v}"),
        ));
    }
    let v = v as u64;
    if v > max as u64 {
        return Err(ApiError::invalid(
            name,
            format!("{name} = {v} is more than this server allows ({max})"),
        ));
    }
    Ok(v as usize)
}

/// `Some(x)` for a finite float within `[lo, hi]`.
pub fn ranged(name: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::invalid(
            name,
            format!("{name} must be a number in [{lo}, {hi}], got {x}"),
        )),
    }
}

/// The stop strings, checked.
pub fn stops(stop: Option<OneOrMany>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOPS} stop strings, got {}", list.len()),
        ));
    }
    for s in &list {
        if s.is_empty() {
            return Err(ApiError::invalid("stop", "stop strings must not be empty"));
        }
        if s.len() > MAX_STOP_BYTES {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "a stop string is {} bytes; at most {MAX_STOP_BYTES}",
                    s.len()
                ),
            ));
        }
    }
    Ok(list)
}

/// The fields present in `req` that `endpoint` does not take.
pub fn foreign_field(req: &GenerateRequest, endpoint: Endpoint) -> Option<&'static str> {
    let chat = endpoint == Endpoint::Chat;
    let completion = endpoint == Endpoint::Completion;
    let fim = endpoint == Endpoint::Fim;
    let checks: [(&'static str, bool, bool); 14] = [
        ("messages", req.messages.is_some(), chat),
        ("prompt", req.prompt.is_some(), !chat),
        ("suffix", req.suffix.is_some(), fim),
        ("echo", req.echo.is_some(), completion),
        ("best_of", req.best_of.is_some(), completion),
        ("top_logprobs", req.top_logprobs.is_some(), chat),
        (
            "max_completion_tokens",
            req.max_completion_tokens.is_some(),
            chat,
        ),
        ("min_tokens", req.min_tokens.is_some(), fim),
        ("safe_prompt", req.safe_prompt.is_some(), chat),
        ("response_format", req.response_format.is_some(), chat),
        ("tools", req.tools.is_some(), chat),
        ("tool_choice", req.tool_choice.is_some(), chat),
        (
            "parallel_tool_calls",
            req.parallel_tool_calls.is_some(),
            chat,
        ),
        ("prompt_mode", req.prompt_mode.is_some(), chat),
    ];
    checks
        .into_iter()
        .find(|&(_, present, allowed)| present && !allowed)
        .map(|(name, _, _)| name)
}

/// A JSON value that is absent in effect: `null`, `[]`, `{}`.
pub fn is_empty_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        _ => false,
    }
}
