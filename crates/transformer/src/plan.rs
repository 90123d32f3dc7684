//! What loading a model will take, from the file's header alone: the weights
//! as the engine holds them, the KV cache of the sessions, and the scratch
//! of one step.

use mistral_gguf::{GgmlType, GgufFile};

use crate::config::{KernelChoice, LoadOptions, ModelConfig, MAX_UBATCH};
use crate::error::ModelError;
use crate::kv_cache::KvLayout;

/// Memory a model will need, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The weights as the engine holds them (Q4_K regrouped by 16 rows
    /// takes 2368 bytes per 16 blocks of 144).
    pub weights: u64,
    /// Sessions planned for.
    pub sessions: usize,
    /// Positions each session's cache may hold.
    pub positions: usize,
    /// One session's KV cache at `positions`.
    pub kv_per_session: u64,
    /// All sessions' caches.
    pub kv_cache: u64,
    /// Activations of one step of [`MAX_UBATCH`] tokens.
    pub scratch: u64,
}

impl MemoryPlan {
    /// Plans `sessions` sessions of `opts`' context (the rolling window's
    /// capacity with a sliding window) over `file`, loading nothing.
    pub fn for_file(
        file: &GgufFile,
        opts: &LoadOptions,
        sessions: usize,
    ) -> Result<MemoryPlan, ModelError> {
        let cfg = ModelConfig::from_file(file, opts)?;
        let weights = file
            .tensors()
            .iter()
            .map(|t| match (t.ggml_type, cfg.kernels) {
                (GgmlType::Q4_K, KernelChoice::Native) => t.n_bytes() / 2304 * 2368,
                _ => t.n_bytes(),
            })
            .sum();
        let positions = cfg.cache.capacity();
        let kv_per_session = KvLayout::new(&cfg).bytes_for(positions) as u64;
        let kv_cache = kv_per_session.saturating_mul(sessions as u64);
        // Per token of a step: the residual, the norm, q/k/v, attention out
        // and its projection (about 6 model widths), the FFN's gate and up
        // (2 feed-forward widths, top-k of them for an MoE), and one row of
        // logits for the last token of each sequence.
        let ff = cfg.n_ff * cfg.n_expert_used.max(1);
        let per_token = 6 * cfg.n_embd + 2 * ff;
        let scratch = 4 * (MAX_UBATCH * per_token + sessions.max(1) * cfg.n_vocab) as u64;
        Ok(MemoryPlan {
            weights,
            sessions,
            positions,
            kv_per_session,
            kv_cache,
            scratch,
        })
    }

    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.scratch)
    }
}
