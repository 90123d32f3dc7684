//! The Mistral / Mixtral transformer on candle: configuration from GGUF metadata,
//! weights loaded from the file's bytes, the forward pass with a preallocated
//! (optionally rolling, sliding-window) KV cache and top-k mixture of experts,
//! plus synthetic-model writing and perplexity.

// Model side.
pub mod attention;
pub mod config;
pub mod error;
pub mod ffn;
pub mod kv_cache;
pub mod matmul;
pub mod model;
pub mod moe;
pub mod perplexity;
pub mod rope;
pub mod synth;
pub mod threads;
pub mod weights;

pub use config::{KernelChoice, LoadOptions, ModelConfig, DEFAULT_CTX_SIZE};
pub use error::ModelError;
pub use model::Transformer;

// Generation side: sampling, generation loop, public Model API.
pub mod api;
pub mod generate;
pub mod sampling;
pub use api::{Device, Message, Model};
pub use generate::{FinishReason, GeneratedToken, Generation, GenerationStats, LanguageModel};
pub use sampling::{Sampler, SamplingParams};
