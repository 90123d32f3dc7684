//! Typed hyper-parameters of llama-architecture files (Mistral, Mixtral, SmolLM2),
//! parsed once from metadata.

use crate::error::ErrorKind;
use crate::keys::{self, ArchKey};
use crate::metadata::Metadata;

/// Architectures whose files use the llama layout and key prefix.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "mistral"];

/// Hyper-parameters of a llama-architecture model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaHparams {
    pub architecture: String,
    pub context_length: u64,
    pub embedding_length: u64,
    pub block_count: u64,
    pub feed_forward_length: u64,
    pub head_count: u64,
    pub head_count_kv: u64,
    /// Per-head dimension (`attention.key_length`, else embedding / heads).
    pub head_dim: u64,
    pub rope_freq_base: f32,
    pub rope_dimension_count: u64,
    pub rms_norm_eps: f32,
    /// Number of experts (0 for a dense model).
    pub expert_count: u64,
    /// Experts used per token (0 for a dense model).
    pub expert_used_count: u64,
    /// Sliding attention window, when the file declares one.
    pub sliding_window: Option<u64>,
}

impl LlamaHparams {
    pub fn from_metadata(md: &Metadata) -> Result<Self, ErrorKind> {
        let arch = md.get_str(keys::GENERAL_ARCHITECTURE)?.to_string();
        let k = |key: ArchKey| key.key(&arch);
        let req = |key: ArchKey| md.get_u64(&k(key));
        let opt = |key: ArchKey| md.opt(&k(key), Metadata::get_u64);

        let embedding_length = req(ArchKey::EmbeddingLength)?;
        let head_count = req(ArchKey::HeadCount)?;
        if head_count == 0 || embedding_length % head_count != 0 {
            return Err(ErrorKind::OutOfRange {
                key: k(ArchKey::HeadCount),
                value: head_count.to_string(),
                expected: "a divisor of the embedding length",
            });
        }
        let head_count_kv = opt(ArchKey::HeadCountKv)?.unwrap_or(head_count);
        if head_count_kv == 0 || head_count % head_count_kv != 0 {
            return Err(ErrorKind::OutOfRange {
                key: k(ArchKey::HeadCountKv),
                value: head_count_kv.to_string(),
                expected: "a divisor of the head count",
            });
        }
        let head_dim = opt(ArchKey::KeyLength)?.unwrap_or(embedding_length / head_count);
        let expert_count = opt(ArchKey::ExpertCount)?.unwrap_or(0);
        let expert_used_count = opt(ArchKey::ExpertUsedCount)?.unwrap_or(0);
        if expert_used_count > expert_count {
            return Err(ErrorKind::OutOfRange {
                key: k(ArchKey::ExpertUsedCount),
                value: expert_used_count.to_string(),
                expected: "at most the expert count",
            });
        }
        Ok(LlamaHparams {
            context_length: req(ArchKey::ContextLength)?,
            embedding_length,
            block_count: req(ArchKey::BlockCount)?,
            feed_forward_length: req(ArchKey::FeedForwardLength)?,
            head_count,
            head_count_kv,
            head_dim,
            rope_freq_base: md
                .opt(&k(ArchKey::RopeFreqBase), Metadata::get_f32)?
                .unwrap_or(10000.0),
            rope_dimension_count: opt(ArchKey::RopeDimensionCount)?.unwrap_or(head_dim),
            rms_norm_eps: md
                .opt(&k(ArchKey::RmsEpsilon), Metadata::get_f32)?
                .unwrap_or(1e-5),
            expert_count,
            expert_used_count,
            sliding_window: opt(ArchKey::SlidingWindow)?.filter(|&w| w > 0),
            architecture: arch,
        })
    }

    pub fn is_moe(&self) -> bool {
        self.expert_count > 0
    }
}

/// llama.cpp's `general.file_type` values (`llama_ftype`).
pub fn file_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// The `general.file_type` id for a name printed by [`file_type_name`].
pub fn file_type_id(name: &str) -> Option<u32> {
    (0..64).find(|&i| file_type_name(i).is_some_and(|n| n.eq_ignore_ascii_case(name)))
}
