//! Every GGUF metadata key and tensor name the project uses, in one table
//! (llama.cpp's `llama-arch.cpp` names).

/// Keys under `general.`.
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

/// Keys under `tokenizer.`.
pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Architecture-prefixed hyper-parameter keys (`{arch}.context_length`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchKey {
    ContextLength,
    EmbeddingLength,
    BlockCount,
    FeedForwardLength,
    HeadCount,
    HeadCountKv,
    KeyLength,
    ValueLength,
    RmsEpsilon,
    RopeFreqBase,
    RopeDimensionCount,
    ExpertCount,
    ExpertUsedCount,
    SlidingWindow,
    VocabSize,
}

impl ArchKey {
    /// The key's suffix after `{arch}.`.
    pub fn suffix(self) -> &'static str {
        match self {
            ArchKey::ContextLength => "context_length",
            ArchKey::EmbeddingLength => "embedding_length",
            ArchKey::BlockCount => "block_count",
            ArchKey::FeedForwardLength => "feed_forward_length",
            ArchKey::HeadCount => "attention.head_count",
            ArchKey::HeadCountKv => "attention.head_count_kv",
            ArchKey::KeyLength => "attention.key_length",
            ArchKey::ValueLength => "attention.value_length",
            ArchKey::RmsEpsilon => "attention.layer_norm_rms_epsilon",
            ArchKey::RopeFreqBase => "rope.freq_base",
            ArchKey::RopeDimensionCount => "rope.dimension_count",
            ArchKey::ExpertCount => "expert_count",
            ArchKey::ExpertUsedCount => "expert_used_count",
            ArchKey::SlidingWindow => "attention.sliding_window",
            ArchKey::VocabSize => "vocab_size",
        }
    }

    /// The full key for an architecture, e.g. `llama.block_count`.
    pub fn key(self, arch: &str) -> String {
        format!("{arch}.{}", self.suffix())
    }
}

/// Tensor names as llama.cpp writes them for the llama architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorName {
    TokenEmbd,
    OutputNorm,
    Output,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// MoE router.
    FfnGateInp,
    /// Stacked experts (3-D tensors).
    FfnGateExps,
    FfnUpExps,
    FfnDownExps,
}

impl TensorName {
    fn base(self) -> &'static str {
        match self {
            TensorName::TokenEmbd => "token_embd",
            TensorName::OutputNorm => "output_norm",
            TensorName::Output => "output",
            TensorName::AttnNorm => "attn_norm",
            TensorName::AttnQ => "attn_q",
            TensorName::AttnK => "attn_k",
            TensorName::AttnV => "attn_v",
            TensorName::AttnOutput => "attn_output",
            TensorName::FfnNorm => "ffn_norm",
            TensorName::FfnGate => "ffn_gate",
            TensorName::FfnUp => "ffn_up",
            TensorName::FfnDown => "ffn_down",
            TensorName::FfnGateInp => "ffn_gate_inp",
            TensorName::FfnGateExps => "ffn_gate_exps",
            TensorName::FfnUpExps => "ffn_up_exps",
            TensorName::FfnDownExps => "ffn_down_exps",
        }
    }

    /// A model-level tensor's weight name (`token_embd.weight`).
    pub fn global(self) -> String {
        format!("{}.weight", self.base())
    }

    /// A layer tensor's weight name (`blk.3.attn_q.weight`).
    pub fn layer(self, layer: usize) -> String {
        format!("blk.{layer}.{}.weight", self.base())
    }

    /// An old-style per-expert tensor (`blk.3.ffn_gate.5.weight`); only for
    /// `FfnGate`, `FfnUp`, `FfnDown`.
    pub fn expert(self, layer: usize, expert: usize) -> String {
        format!("blk.{layer}.{}.{expert}.weight", self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(
            ArchKey::HeadCountKv.key("llama"),
            "llama.attention.head_count_kv"
        );
        assert_eq!(TensorName::AttnQ.layer(3), "blk.3.attn_q.weight");
        assert_eq!(TensorName::FfnUp.expert(1, 7), "blk.1.ffn_up.7.weight");
        assert_eq!(
            TensorName::FfnDownExps.layer(0),
            "blk.0.ffn_down_exps.weight"
        );
        assert_eq!(TensorName::TokenEmbd.global(), "token_embd.weight");
    }
}
