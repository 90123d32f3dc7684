//! The Mistral / Mixtral transformer: configuration from GGUF metadata,
//! weights loaded once and shared ([`Model`]), any number of conversations
//! over them ([`Session`], each with its own paged KV cache in f16, q8_0 or
//! f32), batched steps over several sessions, a continuous-batching
//! [`Scheduler`] (and [`Engine`], the same on a thread of its own), sampling,
//! plus synthetic-model writing and perplexity.
//!
//! The modules are private; this page lists the public surface.

mod api;
mod attention;
mod config;
mod constraint;
mod error;
mod ffn;
mod generate;
mod generic;
mod kv_cache;
mod matmul;
mod model;
mod moe;
mod ops;
pub mod perplexity;
mod plan;
mod rope;
mod sampling;
mod scheduler;
mod session;
pub mod synth;
mod tools;
mod weights;

pub use api::{BatchSeq, Model};
pub use config::{
    CachePolicy, CacheType, Device, KernelChoice, LoadOptions, ModelConfig, DEFAULT_CTX_SIZE,
    MAX_UBATCH,
};
pub use constraint::{Constraint, ConstraintProcessor};
pub use error::ModelError;
pub use generate::{
    CancelToken, FinishReason, GenerateOptions, GeneratedToken, Generation, GenerationStats,
    LanguageModel, LogitsProcessor, TokenLogprob,
};
pub use kv_cache::ContextShift;
pub use mistral_tokenizer::{ChatTemplate, Message, Tokenizer, ToolCall};
pub use plan::{DevicePlan, MemoryPlan};
pub use sampling::{Candidate, Sampler, SamplingParams};
pub use scheduler::{
    Engine, EngineStatus, Event, Request, RequestHandle, Scheduler, SchedulerOptions, StepReport,
};
pub use session::{Pooling, Session};
pub use tools::{parse_tool_calls, tool_call_constraint, tool_names, ToolChoice};
pub use weights::LoadProgress;
