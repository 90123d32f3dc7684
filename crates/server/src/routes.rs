//! The routes: the router, its middleware (auth, counters) and handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use mistral_transformer::{
    parse_tool_calls, Event, FinishReason, GeneratedToken, Pooling, Tokenizer, ToolCall,
};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::jobs::{plan, submit, JobSet, Plan, ToolMode};
use crate::page;
use crate::protocol::{
    parse_json, EmbeddingRequest, Endpoint, GenerateRequest, MAX_EMBEDDING_INPUTS,
};
use crate::state::{unix_now, AppState};

/// How often an open stream with nothing to say sends an SSE comment, so
/// that a client gone away during a long prompt is noticed.
const STREAM_KEEP_ALIVE: Duration = Duration::from_millis(500);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/fim/completions", post(fim))
        .route("/v1/embeddings", post(embeddings))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            declared_length,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.max_body_bytes,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.cfg.read_timeout,
        ))
        .with_state(state)
}

/// Routes that answer without a key: the liveness check and the static page
/// (a browser cannot send a bearer token when it opens a page; the page
/// asks for the key and sends it with its requests).
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/" | "/app.js" | "/style.css")
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.cfg.api_key {
        if !is_public(req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .unwrap_or(b"");
            // Constant time in the key's content (the length may show).
            let ok: bool = given.ct_eq(key.as_bytes()).into();
            if !ok {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid or missing API key: send Authorization: Bearer <key>",
                )
                .code("invalid_api_key")
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// A body declared larger than the limit gets its 413 before it is read
/// (the body limit alone would wait for bytes that may never come).
async fn declared_length(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.cfg.max_body_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is too large (at most {} bytes)",
                state.cfg.max_body_bytes
            ),
        )
        .into_response();
    }
    next.run(req).await
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |m| m.as_str())
        .to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .record_response(&route, resp.status().as_u16());
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route").code("not_found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let total = state.cfg.parallel.saturating_add(state.cfg.max_queue);
    let used = total.saturating_sub(state.slots.available_permits());
    let body = state.metrics.render(&state.engine.status(), used);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

fn model_card(state: &AppState) -> Value {
    json!({
        "id": state.cfg.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "mistral-run",
        "type": "base",
        "max_context_length": state.ctx,
        "capabilities": {
            "completion_chat": true,
            "completion_fim": state.has_fim(),
            "function_calling": false,
            "fine_tuning": false,
            "vision": false,
        },
    })
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&state)]}))
}

async fn model(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.check_model(Some(&id))?;
    Ok(Json(model_card(&state)))
}

/// The body, or the reason it could not be read (too large: 413).
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is too large".to_string()
        } else {
            format!("cannot read the request body: {e}")
        };
        ApiError::new(status, msg)
    })
}

async fn chat(State(s): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Response {
    generate(s, Endpoint::Chat, b).await
}

async fn completions(State(s): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Response {
    generate(s, Endpoint::Completion, b).await
}

async fn fim(State(s): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Response {
    generate(s, Endpoint::Fim, b).await
}

async fn generate(
    state: Arc<AppState>,
    endpoint: Endpoint,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let run = async {
        let req: GenerateRequest = parse_json(&body(b)?)?;
        let mut plan = plan(&state, endpoint, req)?;
        let jobs = submit(&state, &mut plan)?;
        let out = Output::new(&state, &plan, arrived);
        if plan.stream {
            Ok(stream(out, jobs))
        } else {
            whole(out, jobs).await
        }
    };
    match run.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// One choice's text, token log-probabilities and end.
#[derive(Default, Clone)]
struct Choice {
    text: String,
    logprobs: Vec<Value>,
    /// Completions' `text_offset`s.
    offsets: Vec<usize>,
    finish: Option<&'static str>,
    completion_tokens: usize,
    prompt_tokens: usize,
    started: bool,
    /// Generated ids (read back as tool calls).
    ids: Vec<u32>,
    /// Whether the text is held back from the stream (a tool call in the making).
    held: bool,
    /// The calls the answer makes.
    calls: Option<Vec<ToolCall>>,
}

/// Builds a request's response objects (whole or chunked).
struct Output {
    state: Arc<AppState>,
    endpoint: Endpoint,
    id: String,
    created: u64,
    n: usize,
    logprobs: bool,
    include_usage: bool,
    arrived: Instant,
    first_token: bool,
    choices: Vec<Choice>,
    tool_mode: ToolMode,
    /// `[TOOL_CALLS]`, where the vocabulary has it.
    tool_calls_token: Option<u32>,
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfGeneration | FinishReason::StopString | FinishReason::Cancelled => {
            "stop"
        }
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
    }
}

fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let b = tok.token_bytes(id).unwrap_or_default().to_vec();
    (String::from_utf8_lossy(&b).into_owned(), b)
}

impl Output {
    fn new(state: &Arc<AppState>, plan: &Plan, arrived: Instant) -> Output {
        let prefix = match plan.endpoint {
            Endpoint::Completion => "cmpl",
            _ => "chatcmpl",
        };
        Output {
            state: state.clone(),
            endpoint: plan.endpoint,
            id: state.new_id(prefix),
            created: unix_now(),
            n: plan.n,
            logprobs: plan.logprobs.is_some(),
            include_usage: plan.include_usage,
            arrived,
            first_token: false,
            choices: vec![Choice::default(); plan.choices()],
            tool_mode: plan.tool_mode.clone(),
            tool_calls_token: state.model.tokenizer().token_id("[TOOL_CALLS]"),
        }
    }

    fn chat_shaped(&self) -> bool {
        self.endpoint != Endpoint::Completion
    }

    /// Adds a token to choice `i`; returns its log-probability entry.
    fn token(&mut self, i: usize, t: &GeneratedToken) -> Option<Value> {
        if !self.first_token {
            self.first_token = true;
            self.state.metrics.record_ttft(self.arrived.elapsed());
        }
        let tok = self.state.model.tokenizer();
        let chat = self.chat_shaped();
        let c = &mut self.choices[i];
        let lp = match (&t.logprob, self.logprobs && !tok.is_eog(t.id)) {
            (Some(lp), true) => {
                let (text, bytes) = token_text(tok, t.id);
                Some(if chat {
                    let top: Vec<Value> = lp
                        .top
                        .iter()
                        .map(|&(id, l)| {
                            let (t, b) = token_text(tok, id);
                            json!({"token": t, "logprob": l, "bytes": b})
                        })
                        .collect();
                    json!({"token": text, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
                } else {
                    let mut top = serde_json::Map::new();
                    for &(id, l) in &lp.top {
                        top.insert(token_text(tok, id).0, json!(l));
                    }
                    c.offsets.push(c.text.len());
                    json!({"token": text, "logprob": lp.logprob, "top": top})
                })
            }
            _ => None,
        };
        if let Some(v) = &lp {
            c.logprobs.push(v.clone());
        }
        if c.ids.is_empty() {
            c.held = match &self.tool_mode {
                ToolMode::Off => false,
                ToolMode::Forced(_) => true,
                ToolMode::Auto => self.tool_calls_token == Some(t.id),
            };
        }
        c.ids.push(t.id);
        c.text.push_str(&t.text);
        lp
    }

    fn done(
        &mut self,
        i: usize,
        reason: FinishReason,
        stats: &mistral_transformer::GenerationStats,
    ) {
        let tok = self.state.model.tokenizer();
        let c = &mut self.choices[i];
        c.finish = Some(finish_reason(reason));
        c.completion_tokens = stats.generated_tokens;
        c.prompt_tokens = stats.prompt_tokens;
        if self.tool_mode != ToolMode::Off {
            // Generated ids include a final end-of-generation token.
            let ids: Vec<u32> = c
                .ids
                .iter()
                .copied()
                .filter(|&id| !tok.is_eog(id))
                .collect();
            c.calls = parse_tool_calls(tok, &ids, &c.text);
            if c.calls.is_some() {
                c.finish = Some("tool_calls");
            }
        }
    }

    /// OpenAI's `tool_calls` list of a choice.
    fn calls_value(c: &Choice, streamed: bool) -> Option<Value> {
        let calls = c.calls.as_ref()?;
        Some(Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(k, call)| {
                    let mut v = json!({
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    });
                    if streamed {
                        v["index"] = json!(k);
                    }
                    v
                })
                .collect(),
        ))
    }

    fn usage(&self) -> Value {
        // Each prompt once, however many choices it has.
        let prompt: usize = self
            .choices
            .iter()
            .step_by(self.n.max(1))
            .map(|c| c.prompt_tokens)
            .sum();
        let completion: usize = self.choices.iter().map(|c| c.completion_tokens).sum();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    fn record_usage(&self) {
        let u = self.usage();
        let get = |k: &str| u[k].as_u64().unwrap_or(0) as usize;
        self.state
            .metrics
            .record_usage(get("prompt_tokens"), get("completion_tokens"));
    }

    fn logprobs_value(&self, entries: &[Value], offsets: &[usize]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        if self.chat_shaped() {
            json!({"content": entries})
        } else {
            json!({
                "tokens": entries.iter().map(|e| e["token"].clone()).collect::<Vec<_>>(),
                "token_logprobs": entries.iter().map(|e| e["logprob"].clone()).collect::<Vec<_>>(),
                "top_logprobs": entries.iter().map(|e| e["top"].clone()).collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }

    fn whole_body(&self) -> Value {
        let chat = self.chat_shaped();
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = self.logprobs_value(&c.logprobs, &c.offsets);
                if chat {
                    let message = match Output::calls_value(c, false) {
                        Some(calls) => {
                            json!({"role": "assistant", "content": null, "tool_calls": calls})
                        }
                        None => json!({"role": "assistant", "content": c.text}),
                    };
                    json!({
                        "index": i,
                        "message": message,
                        "logprobs": lp,
                        "finish_reason": c.finish,
                    })
                } else {
                    json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": c.finish})
                }
            })
            .collect();
        json!({
            "id": self.id,
            "object": if chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.state.cfg.model_id,
            "choices": choices,
            "usage": self.usage(),
        })
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat_shaped() { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.state.cfg.model_id,
            "choices": choices,
        })
    }

    /// The chunks an event adds to a stream.
    fn event_chunks(&mut self, i: usize, event: Event) -> Result<Vec<Value>, ApiError> {
        let chat = self.chat_shaped();
        let mut out = Vec::new();
        if chat && !self.choices[i].started {
            self.choices[i].started = true;
            out.push(self.chunk(vec![json!({
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            })]));
        }
        match event {
            Event::Token(t) => {
                let offset = self.choices[i].text.len();
                let lp = self.token(i, &t);
                if (t.text.is_empty() && lp.is_none()) || self.choices[i].held {
                    return Ok(out);
                }
                let lp = lp.map_or(Value::Null, |v| {
                    self.logprobs_value(std::slice::from_ref(&v), &[offset])
                });
                out.push(self.chunk(vec![if chat {
                    json!({"index": i, "delta": {"content": t.text}, "logprobs": lp, "finish_reason": null})
                } else {
                    json!({"index": i, "text": t.text, "logprobs": lp, "finish_reason": null})
                }]));
            }
            Event::ContextShift(_) => {}
            Event::Done { reason, stats } => {
                self.done(i, reason, &stats);
                let c = &self.choices[i];
                if chat {
                    if let Some(calls) = Output::calls_value(c, true) {
                        out.push(self.chunk(vec![json!({
                            "index": i, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null,
                        })]));
                    } else if c.held && !c.text.is_empty() {
                        // Held back for a call that did not come: the text after all.
                        out.push(self.chunk(vec![json!({
                            "index": i, "delta": {"content": c.text}, "logprobs": null, "finish_reason": null,
                        })]));
                    }
                }
                let f = self.choices[i].finish;
                out.push(self.chunk(vec![if chat {
                    json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": f})
                } else {
                    json!({"index": i, "text": "", "logprobs": null, "finish_reason": f})
                }]));
            }
            Event::Error(e) => return Err(e.into()),
        }
        Ok(out)
    }
}

/// Waits for every choice, then answers once.
async fn whole(mut out: Output, mut jobs: JobSet) -> Result<Response, ApiError> {
    let mut left = out.choices.len();
    while left > 0 {
        let Some((i, event)) = jobs.events.recv().await else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine stopped before the answer was complete",
            ));
        };
        match event {
            Event::Token(t) => {
                out.token(i, &t);
            }
            Event::ContextShift(_) => {}
            Event::Done { reason, stats } => {
                out.done(i, reason, &stats);
                left -= 1;
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    out.record_usage();
    Ok(Json(out.whole_body()).into_response())
}

/// Streams chunks as server-sent events, ending with `data: [DONE]`. A task
/// moves the engine's events to the response; when the client goes away the
/// response (and with it the channel's receiver) is dropped, the task ends
/// and the [`JobSet`] it holds cancels the choices.
fn stream(mut out: Output, mut jobs: JobSet) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let send = |v: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(SseEvent::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        let mut left = out.choices.len();
        while left > 0 {
            let next = tokio::select! {
                e = jobs.events.recv() => e,
                _ = tx.closed() => return,
            };
            let Some((i, event)) = next else {
                let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine stopped");
                send(e.body()).await;
                break;
            };
            let done = matches!(event, Event::Done { .. });
            match out.event_chunks(i, event) {
                Ok(chunks) => {
                    for c in chunks {
                        if !send(c).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    send(e.body()).await;
                    let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
                    return;
                }
            }
            if done {
                left -= 1;
            }
        }
        out.record_usage();
        if out.include_usage {
            let mut u = out.chunk(Vec::new());
            u["usage"] = out.usage();
            send(u).await;
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
        drop(jobs);
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(STREAM_KEEP_ALIVE))
        .into_response()
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_json(&body(b)?)?;
    state.check_model(req.model.as_deref())?;
    let n_embd = state.model.config().n_embd;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format {f:?} is not supported (float or base64)"),
            ))
        }
    };
    if let Some(t) = req.output_dtype.as_deref().filter(|&t| t != "float") {
        return Err(ApiError::invalid(
            "output_dtype",
            format!("output_dtype {t:?} is not supported (float)"),
        ));
    }
    for (name, d) in [
        ("dimensions", req.dimensions),
        ("output_dimension", req.output_dimension),
    ] {
        if d.is_some_and(|d| d != n_embd as i64) {
            return Err(ApiError::invalid(
                name,
                format!("this model's embeddings have {n_embd} dimensions"),
            ));
        }
    }
    let inputs = state.input_ids(req.input, "input", MAX_EMBEDDING_INPUTS)?;
    state.check_ids(&inputs, "input", state.ctx)?;
    let _slot = state
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::busy())?;
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    let st = state.clone();
    let vectors = tokio::task::spawn_blocking(move || {
        let mut session = st
            .embedders
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| st.model.new_session());
        let r: Result<Vec<Vec<f32>>, _> = inputs
            .iter()
            .map(|ids| session.embed(ids, Pooling::Mean))
            .collect();
        if let Ok(mut v) = st.embedders.lock() {
            v.push(session);
        }
        r
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    state.metrics.record_usage(tokens, 0);
    Ok(Json(json!({
        "id": state.new_id("embd"),
        "object": "list",
        "data": data,
        "model": state.cfg.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}
