//! From a checked request to engine requests and back: [`plan`] turns a
//! request body into a [`Plan`] (prompt ids, sampling, choices), [`submit`]
//! hands its choices to the engine and [`JobSet`] receives their events
//! (cancelling them all when dropped: a client that goes away frees its
//! sessions at the next step, also in the middle of a prompt).

use std::collections::HashMap;
use std::sync::Arc;

use mistral_transformer::{
    tool_call_constraint, tool_names, CancelToken, Constraint, ConstraintProcessor, Event,
    GenerateOptions, LogitsProcessor, Message, Request, SamplingParams, ToolCall, ToolChoice,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::protocol::{
    foreign_field, is_empty_value, positive, ranged, stops, Content, Endpoint, GenerateRequest,
    Logprobs, PromptInput, MAX_CHOICES, MAX_LOGIT_BIAS, MAX_TOP_LOGPROBS,
};
use crate::state::AppState;

/// What a valid generation request asks for.
pub struct Plan {
    pub endpoint: Endpoint,
    /// Prompt ids, one list per prompt.
    pub prompts: Vec<Vec<u32>>,
    /// Choices per prompt.
    pub n: usize,
    pub params: SamplingParams,
    /// Top alternatives per token when log-probabilities are asked for.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    /// Run the prompt in an empty context (`cache_prompt: false`).
    pub fresh_context: bool,
    /// One matcher per choice of what the output must match
    /// (`response_format`, or a forced tool call); empty without one.
    pub constraints: Vec<ConstraintProcessor>,
    /// Whether answers are read back as tool calls.
    pub tool_mode: ToolMode,
    adjust: Adjust,
}

impl Plan {
    /// Choices in all: `n` per prompt.
    pub fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }
}

/// Logit changes the sampler does not make itself: OpenAI's presence and
/// frequency penalties, `logit_bias`, and Mistral's `min_tokens`.
#[derive(Clone, Default)]
struct Adjust {
    presence: f32,
    frequency: f32,
    bias: Vec<(u32, f32)>,
    min_tokens: usize,
    eog: Vec<u32>,
}

impl Adjust {
    fn is_noop(&self) -> bool {
        self.presence == 0.0
            && self.frequency == 0.0
            && self.bias.is_empty()
            && self.min_tokens == 0
    }
}

/// [`Adjust`] over one generation.
struct AdjustState {
    adjust: Adjust,
    counts: HashMap<u32, u32>,
    seen: usize,
}

impl LogitsProcessor for AdjustState {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        for &id in &generated[self.seen.min(generated.len())..] {
            *self.counts.entry(id).or_default() += 1;
        }
        self.seen = generated.len();
        let a = &self.adjust;
        if a.presence != 0.0 || a.frequency != 0.0 {
            for (&id, &c) in &self.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= a.presence + a.frequency * c as f32;
                }
            }
        }
        for &(id, b) in &a.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        if generated.len() < a.min_tokens {
            for &id in &a.eog {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// Checks `req` for `endpoint` and tokenizes its prompts.
pub fn plan(state: &AppState, endpoint: Endpoint, req: GenerateRequest) -> Result<Plan, ApiError> {
    state.check_model(req.model.as_deref())?;
    if let Some(f) = foreign_field(&req, endpoint) {
        return Err(ApiError::invalid(
            f,
            format!("{f} is not supported by {}", endpoint.path()),
        ));
    }
    let mut constraint = match &req.response_format {
        Some(rf) => response_format(rf)?,
        None => None,
    };
    let tools = match &req.tools {
        Some(t) if !is_empty_value(t) => {
            tool_names(t).map_err(|e| ApiError::invalid("tools", e.to_string()))?;
            Some(t.clone())
        }
        _ => None,
    };
    // What the answer may be: text, calls the model chooses, or calls it must make.
    let tool_mode = match (&tools, req.tool_choice.as_ref()) {
        (None, None) => ToolMode::Off,
        (None, Some(tc)) if is_empty_value(tc) || tc.as_str() == Some("none") => ToolMode::Off,
        (None, Some(_)) => {
            return Err(ApiError::invalid("tool_choice", "tool_choice needs tools"));
        }
        (Some(_), None) => ToolMode::Auto,
        (Some(_), Some(tc)) => match tc {
            serde_json::Value::Null => ToolMode::Auto,
            serde_json::Value::String(s) if s == "auto" => ToolMode::Auto,
            serde_json::Value::String(s) if s == "none" => ToolMode::Off,
            serde_json::Value::String(s) if s == "required" || s == "any" => {
                ToolMode::Forced(ToolChoice::Required)
            }
            _ => match tc["function"]["name"].as_str() {
                Some(n) => ToolMode::Forced(ToolChoice::Named(n.to_string())),
                None => {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ))
                }
            },
        },
    };
    if let (ToolMode::Forced(choice), Some(t)) = (&tool_mode, &tools) {
        if constraint.is_some() {
            return Err(ApiError::invalid(
                "response_format",
                "a response_format schema and a required tool call cannot be combined",
            ));
        }
        let parallel = req.parallel_tool_calls.unwrap_or(true);
        let c = tool_call_constraint(state.model.tokenizer(), t, choice, parallel)
            .map_err(|e| ApiError::invalid("tool_choice", e.to_string()))?;
        constraint = Some(c);
    }
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    let tok = state.model.tokenizer();
    let ctx = state.ctx;
    let prompts: Vec<Vec<u32>> = match endpoint {
        Endpoint::Chat => {
            let messages = req
                .messages
                .ok_or_else(|| ApiError::invalid("messages", "messages is required"))?;
            let messages = chat_messages(messages)?;
            match (&tools, &tool_mode) {
                (Some(t), ToolMode::Auto | ToolMode::Forced(_)) => {
                    vec![state.model.encode_chat_with_tools(&messages, t)?]
                }
                _ => vec![state.model.encode_chat(&messages)?],
            }
        }
        Endpoint::Completion => {
            let prompt = req
                .prompt
                .ok_or_else(|| ApiError::invalid("prompt", "prompt is required"))?;
            state.input_ids(prompt, "prompt", MAX_CHOICES)?
        }
        Endpoint::Fim => {
            let prompt = match req.prompt {
                Some(PromptInput::Text(t)) => t,
                Some(_) => return Err(ApiError::invalid("prompt", "prompt must be a string")),
                None => return Err(ApiError::invalid("prompt", "prompt is required")),
            };
            vec![state.fim_prompt(&prompt, req.suffix.as_deref().unwrap_or(""))?]
        }
    };
    // A prompt leaves room for at least one generated token.
    let param = if endpoint == Endpoint::Chat {
        "messages"
    } else {
        "prompt"
    };
    state.check_ids(&prompts, param, ctx - 1)?;
    let n_vocab = tok.vocab_size();

    let mut params = SamplingParams::default();
    let max = req.max_completion_tokens.or(req.max_tokens);
    let max_name = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    // Generation ends where the context does (no context shift mid-answer).
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = ctx - longest;
    params.max_tokens = Some(match max {
        Some(v) => positive(max_name, v, ctx)?.min(room),
        None => room,
    });
    if let Some(t) = ranged("temperature", req.temperature, 0.0, 2.0)? {
        params.temperature = t;
    }
    if let Some(p) = req.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], got {p}"),
            ));
        }
        params.top_p = p as f32;
    }
    if let Some(k) = req.top_k {
        if k < 0 || k as u64 > n_vocab as u64 {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k must be in [0, {n_vocab}], got {k}"),
            ));
        }
        params.top_k = k as usize;
    }
    if let Some(m) = ranged("min_p", req.min_p, 0.0, 1.0)? {
        params.min_p = m;
    }
    if let Some(r) = ranged("repeat_penalty", req.repeat_penalty, 0.01, 10.0)? {
        params.repeat_penalty = r;
    }
    params.seed = req.seed.or(req.random_seed);
    params.stop = stops(req.stop)?;
    params.ignore_eos = req.ignore_eos.unwrap_or(false);

    let n = match req.n {
        Some(v) => positive("n", v, MAX_CHOICES)?,
        None => 1,
    };
    if let Some(b) = req.best_of {
        if b != n as i64 {
            return Err(ApiError::invalid("best_of", "best_of must equal n"));
        }
    }
    let choices = prompts.len() * n;
    if choices > MAX_CHOICES.min(state.cfg.parallel) {
        return Err(ApiError::invalid(
            "n",
            format!(
                "{choices} choices asked for; this server runs at most {} at once (--parallel)",
                MAX_CHOICES.min(state.cfg.parallel)
            ),
        ));
    }
    // Compiled here, one matcher per choice, so that a bad schema is a 400
    // before anything runs.
    let constraints = match &constraint {
        Some(c) => (0..choices)
            .map(|_| state.model.constraint(c))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };

    let adjust = Adjust {
        presence: ranged("presence_penalty", req.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0),
        frequency: ranged("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0),
        bias: logit_bias(req.logit_bias, n_vocab)?,
        min_tokens: match req.min_tokens {
            Some(v) => positive("min_tokens", v, ctx)?,
            None => 0,
        },
        eog: tok.eog_ids().to_vec(),
    };

    let logprobs = match (endpoint, req.logprobs) {
        (_, None) | (_, Some(Logprobs::Flag(false))) => {
            if req.top_logprobs.is_some_and(|k| k > 0) {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                ));
            }
            None
        }
        (Endpoint::Completion, Some(Logprobs::Count(k))) => Some(bounded("logprobs", k, 5)?),
        (Endpoint::Completion, Some(Logprobs::Flag(true))) => {
            return Err(ApiError::invalid(
                "logprobs",
                "logprobs must be an integer in [0, 5]",
            ))
        }
        (_, Some(Logprobs::Flag(true))) => Some(match req.top_logprobs {
            Some(k) => bounded("top_logprobs", k, MAX_TOP_LOGPROBS)?,
            None => 0,
        }),
        (_, Some(Logprobs::Count(_))) => {
            return Err(ApiError::invalid(
                "logprobs",
                "logprobs must be true or false",
            ))
        }
    };
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok(Plan {
        endpoint,
        prompts,
        n,
        params,
        logprobs,
        stream,
        include_usage,
        fresh_context: !req.cache_prompt.unwrap_or(state.cfg.cache_prompt),
        constraints,
        tool_mode,
        adjust,
    })
}

/// What a chat answer may be when the request has tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolMode {
    /// Text only (no tools, or `tool_choice: "none"`).
    Off,
    /// Text or calls, as the model chooses.
    Auto,
    /// Calls, held to the tools' schemas by a constraint.
    Forced(ToolChoice),
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}`
/// (a JSON object) or `{"type": "json_schema", "json_schema": {"schema": ...}}`.
fn response_format(rf: &serde_json::Value) -> Result<Option<Constraint>, ApiError> {
    if is_empty_value(rf) {
        return Ok(None);
    }
    let bad = |m: &str| ApiError::invalid("response_format", m.to_string());
    match rf.get("type").and_then(|t| t.as_str()) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonSchema(
            serde_json::json!({"type": "object"}),
        ))),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| bad("response_format json_schema needs json_schema.schema"))?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err(bad("json_schema.schema must be a JSON Schema object"));
            }
            Ok(Some(Constraint::JsonSchema(schema.clone())))
        }
        Some(t) => Err(bad(&format!(
            "response_format type {t:?} is not supported (text, json_object or json_schema)"
        ))),
        None => Err(bad("response_format needs a type")),
    }
}

/// Runs several processors in turn (the constraint last, so that what it
/// masks stays masked).
struct Chain(Vec<Box<dyn LogitsProcessor>>);

impl LogitsProcessor for Chain {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        for p in &mut self.0 {
            p.process(generated, logits);
        }
    }
}

fn bounded(name: &str, v: i64, max: usize) -> Result<usize, ApiError> {
    if v < 0 || v as u64 > max as u64 {
        return Err(ApiError::invalid(
            name,
            format!("{name} must be in [0, {max}], got {v}"),
        ));
    }
    Ok(v as usize)
}

fn logit_bias(
    bias: Option<HashMap<String, f64>>,
    n_vocab: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(Vec::new());
    };
    if bias.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            "logit_bias",
            format!("{} entries; at most {MAX_LOGIT_BIAS}", bias.len()),
        ));
    }
    let mut out = Vec::with_capacity(bias.len());
    for (k, v) in bias {
        let id: u32 = k
            .parse()
            .ok()
            .filter(|&id: &u32| (id as usize) < n_vocab)
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias key {k:?} is not a token id below {n_vocab}"),
                )
            })?;
        if !(v.is_finite() && (-100.0..=100.0).contains(&v)) {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("logit_bias values must be in [-100, 100], got {v}"),
            ));
        }
        out.push((id, v as f32));
    }
    out.sort_by_key(|&(id, _)| id);
    Ok(out)
}

/// OpenAI / Mistral messages as the chat template's.
fn chat_messages(messages: Vec<crate::protocol::ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    messages
        .into_iter()
        .map(|m| {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "role {:?} is not supported (system, user, assistant or tool)",
                        m.role
                    ),
                ));
            }
            let calls: Vec<ToolCall> = match &m.tool_calls {
                Some(t) if !is_empty_value(t) => {
                    if m.role != "assistant" {
                        return Err(ApiError::invalid(
                            "messages",
                            "only assistant messages make tool calls",
                        ));
                    }
                    serde_json::from_value(t.clone()).map_err(|e| {
                        ApiError::invalid("messages", format!("invalid tool_calls: {e}"))
                    })?
                }
                _ => Vec::new(),
            };
            if m.role == "tool" && m.tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    "messages",
                    "a tool message needs tool_call_id",
                ));
            }
            if m.prefix == Some(true) {
                return Err(ApiError::invalid(
                    "messages",
                    "prefix messages are not supported",
                ));
            }
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => s.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    "messages",
                                    format!(
                                    "content parts of type {kind:?} are not supported (text only)"
                                ),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            let mut msg = Message::new(m.role, content);
            msg.tool_calls = calls;
            msg.tool_call_id = m.tool_call_id;
            Ok(msg)
        })
        .collect()
}

/// The events of one request's choices; dropping it cancels them all.
pub struct JobSet {
    pub events: mpsc::UnboundedReceiver<(usize, Event)>,
    cancels: Vec<CancelToken>,
    _slots: OwnedSemaphorePermit,
    _in_flight: crate::metrics::InFlight,
}

impl Drop for JobSet {
    fn drop(&mut self) {
        for c in &self.cancels {
            c.cancel();
        }
    }
}

/// Takes one queue slot per choice (503 when the queue is full) and submits them.
pub fn submit(state: &Arc<AppState>, plan: &mut Plan) -> Result<JobSet, ApiError> {
    let slots = state
        .slots
        .clone()
        .try_acquire_many_owned(plan.choices() as u32)
        .map_err(|_| ApiError::busy())?;
    let mut constraints = std::mem::take(&mut plan.constraints);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut cancels = Vec::with_capacity(plan.choices());
    for (p, prompt) in plan.prompts.iter().enumerate() {
        for i in 0..plan.n {
            let index = p * plan.n + i;
            let mut params = plan.params.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
            let mut chain: Vec<Box<dyn LogitsProcessor>> = Vec::new();
            if !plan.adjust.is_noop() {
                chain.push(Box::new(AdjustState {
                    adjust: plan.adjust.clone(),
                    counts: HashMap::new(),
                    seen: 0,
                }));
            }
            if let Some(c) = constraints.pop() {
                chain.push(Box::new(c));
            }
            let processor: Option<Box<dyn LogitsProcessor>> = match chain.len() {
                0 => None,
                1 => chain.pop(),
                _ => Some(Box::new(Chain(chain))),
            };
            let request = Request {
                prompt: prompt.clone(),
                params,
                options: GenerateOptions {
                    logprobs: plan.logprobs,
                    processor,
                    cancel: None,
                    fresh_context: plan.fresh_context,
                },
            };
            let cancel = CancelToken::new();
            let tx = tx.clone();
            state.engine.submit_with(request, cancel.clone(), move |e| {
                tx.send((index, e)).is_ok()
            });
            cancels.push(cancel);
        }
    }
    Ok(JobSet {
        events: rx,
        cancels,
        _slots: slots,
        _in_flight: state.metrics.in_flight(),
    })
}
