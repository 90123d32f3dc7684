//! What every handler shares: the engine, the model, the settings, the
//! queue's slots and the counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use mistral_transformer::{Engine, Model, SchedulerOptions, Session};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::{ApiError, ServerError};
use crate::fim::Fim;
use crate::metrics::Metrics;
use crate::protocol::PromptInput;

pub struct AppState {
    pub engine: Engine,
    pub model: Model,
    pub cfg: ServerConfig,
    /// Tokens of one session's context.
    pub ctx: usize,
    /// One permit per running or waiting choice: `parallel + max_queue`.
    pub slots: std::sync::Arc<Semaphore>,
    pub metrics: Metrics,
    /// Sessions for embeddings, reused.
    pub embedders: Mutex<Vec<Session>>,
    next_id: AtomicU64,
    fim: Option<Fim>,
    pub created: u64,
}

impl AppState {
    pub fn new(model: Model, cfg: ServerConfig) -> Result<AppState, ServerError> {
        if cfg.parallel == 0 {
            return Err(ServerError::InvalidOption {
                name: "parallel",
                reason: "must be at least 1".into(),
            });
        }
        let ctx = model.config().cache.capacity();
        let engine = Engine::start(
            model.clone(),
            SchedulerOptions {
                max_sessions: cfg.parallel,
                max_batch_tokens: mistral_transformer::MAX_UBATCH.max(cfg.parallel),
                kv_budget_bytes: None,
            },
        )?;
        let fim = Fim::detect(model.tokenizer());
        let slots = cfg
            .parallel
            .saturating_add(cfg.max_queue)
            .min(Semaphore::MAX_PERMITS);
        Ok(AppState {
            engine,
            model,
            ctx,
            slots: std::sync::Arc::new(Semaphore::new(slots)),
            metrics: Metrics::default(),
            embedders: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            fim,
            created: unix_now(),
            cfg,
        })
    }

    /// A 404 unless `model` is absent or this server's model.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.cfg.model_id => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model {m:?} does not exist; this server serves {:?}",
                    self.cfg.model_id
                ),
            )
            .code("model_not_found")),
            _ => Ok(()),
        }
    }

    /// The token lists of a prompt or embeddings input (`param` names it in
    /// errors): texts tokenized as raw prompts, ids as given; at most `max`.
    pub fn input_ids(
        &self,
        input: PromptInput,
        param: &'static str,
        max: usize,
    ) -> Result<Vec<Vec<u32>>, ApiError> {
        let too_many = |n: usize| ApiError::invalid(param, format!("{n} inputs; at most {max}"));
        Ok(match input {
            PromptInput::Text(t) => vec![self.model.encode_prompt(&t)?],
            PromptInput::Texts(ts) => {
                if ts.len() > max {
                    return Err(too_many(ts.len()));
                }
                ts.iter()
                    .map(|t| self.model.encode_prompt(t))
                    .collect::<Result<_, _>>()?
            }
            PromptInput::Tokens(ids) => vec![ids],
            PromptInput::TokenLists(l) => {
                if l.len() > max {
                    return Err(too_many(l.len()));
                }
                l
            }
        })
    }

    /// Checks token lists: at least one, none empty, ids in the vocabulary,
    /// none longer than `limit` tokens (a 400 naming `param` otherwise).
    pub fn check_ids(
        &self,
        lists: &[Vec<u32>],
        param: &'static str,
        limit: usize,
    ) -> Result<(), ApiError> {
        if lists.is_empty() {
            return Err(ApiError::invalid(param, format!("{param} is empty")));
        }
        let n_vocab = self.model.tokenizer().vocab_size();
        for ids in lists {
            if ids.is_empty() {
                return Err(ApiError::invalid(param, format!("an empty {param}")));
            }
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
                return Err(ApiError::invalid(
                    param,
                    format!("token id {id} is out of range for the vocabulary of {n_vocab} tokens"),
                ));
            }
            if ids.len() > limit {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "{} tokens, more than {limit} (this server's context size is {}; raise --ctx-size)",
                        ids.len(),
                        self.ctx
                    ),
                )
                .code("context_length_exceeded"));
            }
        }
        Ok(())
    }

    /// A new response id with `prefix`.
    pub fn new_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The prompt ids of a fill-in-the-middle request.
    pub fn fim_prompt(&self, prefix: &str, suffix: &str) -> Result<Vec<u32>, ApiError> {
        let fim = self.fim.ok_or_else(|| {
            ApiError::invalid(
                "model",
                "this model's vocabulary has no fill-in-the-middle tokens \
                 (<fim_prefix>/<fim_suffix>/<fim_middle> or [PREFIX]/[SUFFIX])",
            )
            .code("fim_not_supported")
        })?;
        Ok(fim.prompt(self.model.tokenizer(), prefix, suffix)?)
    }

    /// Whether the vocabulary has fill-in-the-middle tokens.
    pub fn has_fim(&self) -> bool {
        self.fim.is_some()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
