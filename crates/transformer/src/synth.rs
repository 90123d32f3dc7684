//! Synthetic models: random-weight GGUF files with the tensor names, shapes and
//! metadata of real Mistral 7B / Mixtral 8x7B files (or small presets for tests).
//!
//! Files are streamed tensor by tensor through [`GgufWriter`]'s callback: nothing
//! larger than a few chunks is ever in memory, and chunks are generated in parallel
//! (rayon), so an 8x7B-shaped file (~26 GB at Q4_K_M) is bound by disk speed.
//!
//! Values: weights are uniform with standard deviation [`WEIGHT_STD`] (0.02),
//! norm weights `1 ± 0.1` (F32), the MoE router F32 like the weights. Quantized
//! tensors are made of random blocks generated directly (random quants with scales
//! chosen so that the dequantized values are centred with standard deviation
//! ≈ 0.02), not by quantizing f32 data.
//!
//! Per-tensor types follow llama.cpp's `llama_tensor_get_type` for the llama
//! architecture:
//! - `Q4_K_M`: Q4_K, with Q6_K for `output` and for `attn_v` / `ffn_down` on the
//!   layers `use_more_bits` picks (the first and last eighth, and every third in
//!   between); for 8-expert models `attn_k` / `attn_v` are Q8_0 and `attn_output` Q5_K.
//! - `Q2_K`: Q2_K, with Q6_K `output`, Q3_K `ffn_down` and `attn_output`, `attn_v`
//!   Q4_K when there are at least 4 query heads per KV head (else Q3_K); for
//!   8-expert models `attn_k` / `attn_v` Q8_0 and `attn_output` Q5_K.
//! - Rows not a multiple of 256 cannot hold K-quants: like llama.cpp we fall back
//!   (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0) except that Q2_K / Q3_K fall back to
//!   Q4_0 instead of IQ4_NL, which the candle backend cannot run.
//!
//! The tokenizer metadata (`tokenizer.*` keys) is copied from a vocab GGUF; by
//! default a generated SentencePiece-style vocabulary of Mistral v1's size and
//! layout ([`default_vocab`]).

use std::io::{self, Write};

use half::f16;
use mistral_gguf::keys::{self, ArchKey, TensorName};
use mistral_gguf::{Array, GgmlType, GgufFile, GgufWriter, Metadata, TensorSpec, Value};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

use crate::error::ModelError;

/// Standard deviation of synthetic weights.
pub const WEIGHT_STD: f32 = 0.02;

/// Mistral's instruct chat template (as in its v1 tokenizer's GGUF files).
pub const MISTRAL_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// Tokens in the default vocabulary (Mistral v1's count).
pub const DEFAULT_VOCAB_SIZE: usize = 32000;

/// A generated vocabulary with Mistral v1's layout, as a vocab-only GGUF:
/// SentencePiece (`llama`) model, `<unk>` `<s>` `</s>`, the 256 byte-fallback
/// tokens, then pieces any text can be built from (`▁`, the printable ASCII
/// characters, lower-case pairs and triples, each with and without a leading
/// `▁`),
/// scored so that longer pieces win; Mistral's chat template. Synthetic
/// models have random weights, so only the layout and size matter; the
/// real Mistral vocabularies are test data (models/fetch-vocab.sh).
pub fn default_vocab() -> Result<GgufFile, ModelError> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let chars: Vec<char> = (0x21u8..0x7f).map(char::from).collect();
    let lower: Vec<char> = ('a'..='z').collect();
    let mut pieces: Vec<String> = vec!["▁".into()];
    pieces.extend(chars.iter().map(|c| c.to_string()));
    pieces.extend(chars.iter().map(|c| format!("▁{c}")));
    for a in &lower {
        for b in &lower {
            pieces.push(format!("{a}{b}"));
            pieces.push(format!("▁{a}{b}"));
        }
    }
    let want = DEFAULT_VOCAB_SIZE - tokens.len();
    'fill: for a in &lower {
        for b in &lower {
            for c in &lower {
                if pieces.len() + 2 > want {
                    break 'fill;
                }
                pieces.push(format!("{a}{b}{c}"));
                pieces.push(format!("▁{a}{b}{c}"));
            }
        }
    }
    debug_assert_eq!(pieces.len(), want);
    // Longer pieces score higher, so merges prefer them.
    let mut scores = vec![0f32; tokens.len()];
    for p in pieces {
        scores.push(p.chars().count() as f32 - scores.len() as f32 * 1e-5);
        tokens.push(p);
        types.push(1);
    }
    let mut md = Metadata::new();
    md.set(keys::GENERAL_ARCHITECTURE, Value::String("llama".into()));
    md.set(keys::GENERAL_NAME, Value::String("synthetic-vocab".into()));
    md.set(keys::TOKENIZER_MODEL, Value::String("llama".into()));
    md.set(keys::TOKENIZER_TOKENS, Value::Array(Array::String(tokens)));
    md.set(keys::TOKENIZER_SCORES, Value::Array(Array::F32(scores)));
    md.set(keys::TOKENIZER_TOKEN_TYPE, Value::Array(Array::I32(types)));
    md.set(keys::TOKENIZER_BOS_ID, Value::U32(1));
    md.set(keys::TOKENIZER_EOS_ID, Value::U32(2));
    md.set(keys::TOKENIZER_UNK_ID, Value::U32(0));
    md.set(keys::TOKENIZER_ADD_BOS, Value::Bool(true));
    md.set(keys::TOKENIZER_ADD_EOS, Value::Bool(false));
    md.set(
        keys::TOKENIZER_CHAT_TEMPLATE,
        Value::String(MISTRAL_CHAT_TEMPLATE.into()),
    );
    let bytes = GgufWriter::new(md)
        .to_bytes(&[])
        .map_err(|k| ModelError::InvalidInput(format!("generated vocabulary: {k}")))?;
    Ok(GgufFile::from_bytes(bytes, "generated vocabulary")?)
}

/// Dense Mistral or Mixtral MoE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthArch {
    Mistral,
    Mixtral,
}

/// Shape presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthPreset {
    /// 2 layers, 256 wide: for tests.
    Tiny,
    /// 2048 / 5632 / 16 layers (the REFERENCE.md `synth-1b` shape).
    OneB,
    /// Mistral 7B (or, with Mixtral, the same shape with 8 experts = Mixtral 8x7B).
    SevenB,
    /// Mixtral 8x7B.
    EightX7B,
}

/// llama.cpp file types the writer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum SynthType {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_K_M,
    Q2_K,
}

impl SynthType {
    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            SynthType::F32 => 0,
            SynthType::F16 => 1,
            SynthType::Q4_0 => 2,
            SynthType::Q8_0 => 7,
            SynthType::Q2_K => 10,
            SynthType::Q4_K_M => 15,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SynthType::F32 => "F32",
            SynthType::F16 => "F16",
            SynthType::Q8_0 => "Q8_0",
            SynthType::Q4_0 => "Q4_0",
            SynthType::Q4_K_M => "Q4_K_M",
            SynthType::Q2_K => "Q2_K",
        }
    }
}

/// How MoE expert weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertLayout {
    /// `blk.N.ffn_{gate,up,down}_exps` 3-D tensors (current llama.cpp).
    Stacked,
    /// `blk.N.ffn_{gate,up,down}.E` per expert (older files).
    PerExpert,
}

/// Everything that defines a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub arch: SynthArch,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ctx: usize,
    pub sliding_window: Option<usize>,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f32,
    pub ftype: SynthType,
    pub seed: u64,
    /// Keep only the first `n` tokens of the vocabulary (small test models).
    pub vocab_size: Option<usize>,
    pub expert_layout: ExpertLayout,
    /// Omit `output.weight` (the embedding table is reused).
    pub tied_embeddings: bool,
}

impl SynthSpec {
    /// A preset's shape and metadata.
    pub fn preset(arch: SynthArch, preset: SynthPreset) -> SynthSpec {
        let (n_embd, n_ff, n_layer, n_head, n_head_kv) = match preset {
            SynthPreset::Tiny => (256, 512, 2, 8, 4),
            SynthPreset::OneB => (2048, 5632, 16, 16, 4),
            SynthPreset::SevenB | SynthPreset::EightX7B => (4096, 14336, 32, 32, 8),
        };
        let moe = arch == SynthArch::Mixtral || preset == SynthPreset::EightX7B;
        let (n_expert, n_expert_used) = match (moe, preset) {
            (false, _) => (0, 0),
            (true, SynthPreset::Tiny) => (4, 2),
            (true, _) => (8, 2),
        };
        SynthSpec {
            arch: if moe {
                SynthArch::Mixtral
            } else {
                SynthArch::Mistral
            },
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            n_expert_used,
            n_ctx: if preset == SynthPreset::Tiny {
                2048
            } else {
                32768
            },
            // Mistral 7B v0.1 attends over a 4096 window (real v0.1 GGUFs do not
            // state it; the synthetic file does so that the window is exercised).
            sliding_window: (!moe && preset != SynthPreset::Tiny).then_some(4096),
            // Mistral v0.1: 10000; Mixtral: 1e6.
            rope_freq_base: if moe { 1_000_000.0 } else { 10_000.0 },
            rms_norm_eps: 1e-5,
            ftype: SynthType::F16,
            seed: 0,
            vocab_size: None,
            expert_layout: ExpertLayout::Stacked,
            tied_embeddings: false,
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |what: String| ModelError::InvalidInput(format!("synthetic model: {what}"));
        if self.n_embd == 0
            || self.n_ff == 0
            || self.n_layer == 0
            || self.n_head == 0
            || self.n_head_kv == 0
        {
            return Err(bad("sizes must be positive".into()));
        }
        if !self.n_embd.is_multiple_of(self.n_head)
            || !(self.n_embd / self.n_head).is_multiple_of(2)
        {
            return Err(bad(format!(
                "n_embd {} must be an even multiple of n_head {}",
                self.n_embd, self.n_head
            )));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(bad(format!(
                "n_head {} is not a multiple of n_head_kv {}",
                self.n_head, self.n_head_kv
            )));
        }
        if !self.n_embd.is_multiple_of(32) || !self.n_ff.is_multiple_of(32) {
            return Err(bad("n_embd and n_ff must be multiples of 32".into()));
        }
        if self.arch == SynthArch::Mixtral
            && (self.n_expert == 0 || self.n_expert_used == 0 || self.n_expert_used > self.n_expert)
        {
            return Err(bad(format!(
                "need 0 < n_expert_used ({}) <= n_expert ({})",
                self.n_expert_used, self.n_expert
            )));
        }
        if self.vocab_size == Some(0) {
            return Err(bad("vocab size must be positive".into()));
        }
        Ok(())
    }

    fn is_moe(&self) -> bool {
        self.arch == SynthArch::Mixtral
    }

    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// What a tensor holds, which decides its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Weight,
    Norm,
}

/// A tensor to write: spec plus value kind.
#[derive(Debug, Clone)]
struct Planned {
    spec: TensorSpec,
    fill: Fill,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    !(i >= n / 8 && i < 7 * n / 8 && (i - n / 8) % 3 != 2)
}

/// llama.cpp's fallback for rows that are not a multiple of 256.
fn fallback(t: GgmlType, row: usize) -> GgmlType {
    if row.is_multiple_of(256) {
        return t;
    }
    match t {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        t => t,
    }
}

/// The GGML type of a weight matrix in a file of type `ftype` (see the module doc).
fn weight_type(spec: &SynthSpec, name: TensorName, layer: usize) -> GgmlType {
    use GgmlType as G;
    use TensorName as T;
    let eight_experts = spec.n_expert == 8;
    let n_gqa = spec.n_head / spec.n_head_kv;
    match spec.ftype {
        SynthType::F32 => G::F32,
        SynthType::F16 => G::F16,
        SynthType::Q8_0 => G::Q8_0,
        SynthType::Q4_0 => match name {
            T::Output => G::Q6_K,
            T::AttnK | T::AttnV if eight_experts => G::Q8_0,
            _ => G::Q4_0,
        },
        SynthType::Q4_K_M => match name {
            T::Output => G::Q6_K,
            T::AttnK if eight_experts => G::Q8_0,
            T::AttnV if eight_experts => G::Q8_0,
            T::AttnV | T::FfnDown | T::FfnDownExps if use_more_bits(layer, spec.n_layer) => G::Q6_K,
            T::AttnOutput if eight_experts => G::Q5_K,
            _ => G::Q4_K,
        },
        SynthType::Q2_K => match name {
            T::Output => G::Q6_K,
            T::AttnK | T::AttnV if eight_experts => G::Q8_0,
            T::AttnV if n_gqa >= 4 => G::Q4_K,
            T::AttnV => G::Q3_K,
            T::AttnOutput if eight_experts => G::Q5_K,
            T::AttnOutput | T::FfnDown | T::FfnDownExps => G::Q3_K,
            _ => G::Q2_K,
        },
    }
}

fn plan(spec: &SynthSpec, n_vocab: usize) -> Vec<Planned> {
    let (d, ff, hd) = (spec.n_embd, spec.n_ff, spec.head_dim());
    let mut out = Vec::new();
    let mut push = |name: String, ty: GgmlType, dims: &[usize], fill: Fill| {
        let ty = fallback(ty, dims[0]);
        let dims: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
        out.push(Planned {
            spec: TensorSpec::new(name, ty, &dims),
            fill,
        });
    };
    let wt = |name: TensorName, layer: usize| weight_type(spec, name, layer);
    push(
        TensorName::TokenEmbd.global(),
        wt(TensorName::TokenEmbd, 0),
        &[d, n_vocab],
        Fill::Weight,
    );
    for l in 0..spec.n_layer {
        push(
            TensorName::AttnNorm.layer(l),
            GgmlType::F32,
            &[d],
            Fill::Norm,
        );
        push(
            TensorName::AttnQ.layer(l),
            wt(TensorName::AttnQ, l),
            &[d, spec.n_head * hd],
            Fill::Weight,
        );
        push(
            TensorName::AttnK.layer(l),
            wt(TensorName::AttnK, l),
            &[d, spec.n_head_kv * hd],
            Fill::Weight,
        );
        push(
            TensorName::AttnV.layer(l),
            wt(TensorName::AttnV, l),
            &[d, spec.n_head_kv * hd],
            Fill::Weight,
        );
        push(
            TensorName::AttnOutput.layer(l),
            wt(TensorName::AttnOutput, l),
            &[spec.n_head * hd, d],
            Fill::Weight,
        );
        push(
            TensorName::FfnNorm.layer(l),
            GgmlType::F32,
            &[d],
            Fill::Norm,
        );
        if spec.is_moe() {
            let e = spec.n_expert;
            push(
                TensorName::FfnGateInp.layer(l),
                GgmlType::F32,
                &[d, e],
                Fill::Weight,
            );
            match spec.expert_layout {
                ExpertLayout::Stacked => {
                    push(
                        TensorName::FfnGateExps.layer(l),
                        wt(TensorName::FfnGateExps, l),
                        &[d, ff, e],
                        Fill::Weight,
                    );
                    push(
                        TensorName::FfnDownExps.layer(l),
                        wt(TensorName::FfnDownExps, l),
                        &[ff, d, e],
                        Fill::Weight,
                    );
                    push(
                        TensorName::FfnUpExps.layer(l),
                        wt(TensorName::FfnUpExps, l),
                        &[d, ff, e],
                        Fill::Weight,
                    );
                }
                ExpertLayout::PerExpert => {
                    for x in 0..e {
                        push(
                            TensorName::FfnGate.expert(l, x),
                            wt(TensorName::FfnGate, l),
                            &[d, ff],
                            Fill::Weight,
                        );
                        push(
                            TensorName::FfnDown.expert(l, x),
                            wt(TensorName::FfnDown, l),
                            &[ff, d],
                            Fill::Weight,
                        );
                        push(
                            TensorName::FfnUp.expert(l, x),
                            wt(TensorName::FfnUp, l),
                            &[d, ff],
                            Fill::Weight,
                        );
                    }
                }
            }
        } else {
            push(
                TensorName::FfnGate.layer(l),
                wt(TensorName::FfnGate, l),
                &[d, ff],
                Fill::Weight,
            );
            push(
                TensorName::FfnDown.layer(l),
                wt(TensorName::FfnDown, l),
                &[ff, d],
                Fill::Weight,
            );
            push(
                TensorName::FfnUp.layer(l),
                wt(TensorName::FfnUp, l),
                &[d, ff],
                Fill::Weight,
            );
        }
    }
    push(
        TensorName::OutputNorm.global(),
        GgmlType::F32,
        &[d],
        Fill::Norm,
    );
    if !spec.tied_embeddings {
        push(
            TensorName::Output.global(),
            wt(TensorName::Output, 0),
            &[d, n_vocab],
            Fill::Weight,
        );
    }
    out
}

/// Tokenizer keys copied from the vocab file.
const TOKENIZER_KEYS: &[&str] = &[
    keys::TOKENIZER_MODEL,
    keys::TOKENIZER_PRE,
    keys::TOKENIZER_TOKENS,
    keys::TOKENIZER_SCORES,
    keys::TOKENIZER_TOKEN_TYPE,
    keys::TOKENIZER_MERGES,
    keys::TOKENIZER_BOS_ID,
    keys::TOKENIZER_EOS_ID,
    keys::TOKENIZER_UNK_ID,
    keys::TOKENIZER_PAD_ID,
    keys::TOKENIZER_ADD_BOS,
    keys::TOKENIZER_ADD_EOS,
    keys::TOKENIZER_ADD_SPACE_PREFIX,
    keys::TOKENIZER_CHAT_TEMPLATE,
];

fn truncate_array(a: &Array, n: usize) -> Array {
    match a {
        Array::String(v) => Array::String(v[..n.min(v.len())].to_vec()),
        Array::F32(v) => Array::F32(v[..n.min(v.len())].to_vec()),
        Array::I32(v) => Array::I32(v[..n.min(v.len())].to_vec()),
        a => a.clone(),
    }
}

/// Metadata of the synthetic model, with the tokenizer of `vocab`; returns it and the vocabulary size.
fn metadata(spec: &SynthSpec, vocab: &Metadata) -> Result<(Metadata, usize), ModelError> {
    let tokens = vocab
        .get_string_array(keys::TOKENIZER_TOKENS)
        .map_err(|k| ModelError::InvalidInput(format!("vocab file: {k}")))?
        .len();
    let n_vocab = spec.vocab_size.map_or(tokens, |n| n.min(tokens));
    if n_vocab == 0 {
        return Err(ModelError::InvalidInput("vocab file: no tokens".into()));
    }
    let arch = "llama";
    let mut md = Metadata::new();
    let u32v = |x: usize| Value::U32(x.min(u32::MAX as usize) as u32);
    md.set(keys::GENERAL_ARCHITECTURE, Value::String(arch.into()));
    let name = match spec.arch {
        SynthArch::Mistral => "synthetic mistral",
        SynthArch::Mixtral => "synthetic mixtral",
    };
    md.set(
        keys::GENERAL_NAME,
        Value::String(format!("{name} {}", spec.ftype.name())),
    );
    md.set(keys::GENERAL_FILE_TYPE, Value::U32(spec.ftype.file_type()));
    md.set(keys::GENERAL_QUANTIZATION_VERSION, Value::U32(2));
    md.set(ArchKey::ContextLength.key(arch), u32v(spec.n_ctx));
    md.set(ArchKey::EmbeddingLength.key(arch), u32v(spec.n_embd));
    md.set(ArchKey::BlockCount.key(arch), u32v(spec.n_layer));
    md.set(ArchKey::FeedForwardLength.key(arch), u32v(spec.n_ff));
    md.set(ArchKey::RopeDimensionCount.key(arch), u32v(spec.head_dim()));
    md.set(ArchKey::HeadCount.key(arch), u32v(spec.n_head));
    md.set(ArchKey::HeadCountKv.key(arch), u32v(spec.n_head_kv));
    md.set(ArchKey::RmsEpsilon.key(arch), Value::F32(spec.rms_norm_eps));
    md.set(
        ArchKey::RopeFreqBase.key(arch),
        Value::F32(spec.rope_freq_base),
    );
    if spec.is_moe() {
        md.set(ArchKey::ExpertCount.key(arch), u32v(spec.n_expert));
        md.set(ArchKey::ExpertUsedCount.key(arch), u32v(spec.n_expert_used));
    }
    if let Some(w) = spec.sliding_window {
        md.set(ArchKey::SlidingWindow.key(arch), u32v(w));
    }
    md.set(ArchKey::VocabSize.key(arch), u32v(n_vocab));
    for &k in TOKENIZER_KEYS {
        if let Some(v) = vocab.get(k) {
            let v = match v {
                Value::Array(a) if n_vocab < tokens && k != keys::TOKENIZER_MERGES => {
                    Value::Array(truncate_array(a, n_vocab))
                }
                v => v.clone(),
            };
            md.set(k, v);
        }
    }
    Ok((md, n_vocab))
}

/// The writer (metadata and tensor specs) of a synthetic model.
pub fn synth_writer(spec: &SynthSpec, vocab: &Metadata) -> Result<GgufWriter, ModelError> {
    spec.validate()?;
    let (md, n_vocab) = metadata(spec, vocab)?;
    let mut w = GgufWriter::new(md);
    for p in plan(spec, n_vocab) {
        w.add_tensor(p.spec);
    }
    Ok(w)
}

/// Total bytes the file will have (for a progress bar).
pub fn synth_size(spec: &SynthSpec, vocab: &Metadata) -> Result<u64, ModelError> {
    let w = synth_writer(spec, vocab)?;
    let layout = w
        .layout()
        .map_err(|k| ModelError::InvalidInput(k.to_string()))?;
    Ok(layout.last().map_or(0, |t| t.offset + t.n_bytes()))
}

/// Writes the model to `out`; `progress(bytes)` is called as tensor data is written.
/// Returns the file size.
pub fn write_synth<W: Write>(
    spec: &SynthSpec,
    vocab: &Metadata,
    out: &mut W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ModelError> {
    spec.validate()?;
    let (md, n_vocab) = metadata(spec, vocab)?;
    let planned = plan(spec, n_vocab);
    let mut w = GgufWriter::new(md);
    for p in &planned {
        w.add_tensor(p.spec.clone());
    }
    let n = w
        .write(out, |i, tspec, sink| {
            let fill = planned.get(i).map_or(Fill::Weight, |p| p.fill);
            write_tensor(
                tspec,
                fill,
                spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                sink,
                progress,
            )
        })
        .map_err(|k| match k {
            mistral_gguf::ErrorKind::Io(e) => ModelError::Io(e),
            k => ModelError::InvalidInput(k.to_string()),
        })?;
    Ok(n)
}

/// Elements per generated chunk.
const CHUNK_ELEMS: u64 = 1 << 20;

fn write_tensor(
    spec: &TensorSpec,
    fill: Fill,
    seed: u64,
    out: &mut dyn Write,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<()> {
    let ty = spec.ggml_type;
    let n_elems: u64 = spec.dims.iter().product();
    let bs = ty.block_size();
    let n_blocks = n_elems / bs;
    let chunk_blocks = (CHUNK_ELEMS / bs).max(1);
    let n_chunks = n_blocks.div_ceil(chunk_blocks);
    let par = (rayon::current_num_threads() * 2) as u64;
    let mut c = 0;
    while c < n_chunks {
        let end = (c + par).min(n_chunks);
        let bufs: Vec<Vec<u8>> = (c..end)
            .into_par_iter()
            .map(|k| {
                let blocks = chunk_blocks.min(n_blocks - k * chunk_blocks);
                let mut rng = StdRng::seed_from_u64(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03));
                gen_blocks(ty, fill, blocks as usize, &mut rng)
            })
            .collect();
        for b in bufs {
            out.write_all(&b)?;
            progress(b.len() as u64);
        }
        c = end;
    }
    Ok(())
}

fn uniform(rng: &mut StdRng, std: f32) -> f32 {
    // Uniform on [-a, a] has standard deviation a / sqrt(3).
    let a = std * 3f32.sqrt();
    rng.random_range(-a..a)
}

fn put_f16(b: &mut [u8], at: usize, x: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(x).to_le_bytes());
}

fn rms(xs: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = xs.fold((0f32, 0f32), |(s, n), x| (s + x * x, n + 1.0));
    (s / n.max(1.0)).sqrt().max(1e-6)
}

/// `blocks` random blocks of `ty`.
fn gen_blocks(ty: GgmlType, fill: Fill, blocks: usize, rng: &mut StdRng) -> Vec<u8> {
    let ts = ty.type_size() as usize;
    let mut out = vec![0u8; blocks * ts];
    let s = WEIGHT_STD;
    match ty {
        GgmlType::F32 | GgmlType::F16 => {
            for chunk in out.chunks_exact_mut(ts) {
                let x = match fill {
                    Fill::Norm => 1.0 + uniform(rng, 0.1 / 3f32.sqrt()),
                    Fill::Weight => uniform(rng, s),
                };
                if ty == GgmlType::F32 {
                    chunk.copy_from_slice(&x.to_le_bytes());
                } else {
                    chunk.copy_from_slice(&f16::from_f32(x).to_le_bytes());
                }
            }
            return out;
        }
        _ => rng.fill_bytes(&mut out),
    }
    // Quantized: the quant bytes are random already; set scales (see each layout).
    for b in out.chunks_exact_mut(ts) {
        match ty {
            // d, qs[16]: d * (q - 8), q uniform on 0..15 (std 4.61).
            GgmlType::Q4_0 => put_f16(b, 0, s / 4.61),
            // d, m, qs[16]: d * q + m.
            GgmlType::Q4_1 => {
                put_f16(b, 0, s / 4.61);
                put_f16(b, 2, -7.5 * s / 4.61);
            }
            // d, qh[4], qs[16]: d * (q - 16), q on 0..31 (std 9.23).
            GgmlType::Q5_0 => put_f16(b, 0, s / 9.23),
            GgmlType::Q5_1 => {
                put_f16(b, 0, s / 9.23);
                put_f16(b, 2, -15.5 * s / 9.23);
            }
            // d, qs[32] (i8): d * q (std 73.9).
            GgmlType::Q8_0 => put_f16(b, 0, s / 73.9),
            // scales[16] (scale | min << 4), qs[64], d, dmin: d*sc*q - dmin*m, q on 0..3.
            // sc = m and dmin = 1.5 d give d*sc*(q - 1.5) (std 1.118 d sc).
            GgmlType::Q2_K => {
                for x in &mut b[..16] {
                    *x = rng.random_range(4u8..16) * 0x11;
                }
                let r = rms(b[..16].iter().map(|&x| (x & 15) as f32));
                let d = s / (1.118 * r);
                put_f16(b, 80, d);
                put_f16(b, 82, 1.5 * d);
            }
            // hmask[32], qs[64], scales[12], d: d * (sc - 32) * q3, random 6-bit scales
            // (rms of sc - 32 ≈ 18.5), q3 on -4..3 (std 2.29).
            GgmlType::Q3_K => put_f16(b, 108, s / (18.5 * 2.29)),
            // d, dmin, scales[12], qs[128]: all 12 scale bytes n * 0x11 make every
            // sub-block's 6-bit scale equal its min; dmin = 7.5 d centres q on 0..15.
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let byte = rng.random_range(4u8..16) * 0x11;
                b[4..16].fill(byte);
                let lo = (byte & 63) as f32;
                let hi = ((byte & 15) | ((byte >> 6) << 4)) as f32;
                let r = ((lo * lo + hi * hi) / 2.0).sqrt();
                let (qstd, mid) = if ty == GgmlType::Q4_K {
                    (4.61, 7.5)
                } else {
                    (9.23, 15.5)
                };
                let d = s / (qstd * r);
                put_f16(b, 0, d);
                put_f16(b, 2, mid * d);
            }
            // ql[128], qh[64], scales[16] (i8), d: d * sc * (q - 32), q on 0..63 (std 18.5).
            GgmlType::Q6_K => {
                for x in &mut b[192..208] {
                    *x = rng.random_range(8u8..64);
                }
                let r = rms(b[192..208].iter().map(|&x| x as f32));
                put_f16(b, 208, s / (18.5 * r));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::candle_dtype;
    use candle_core::quantized::{QStorage, QTensor};
    use candle_core::Device;
    use std::borrow::Cow;

    #[test]
    fn default_vocab_is_a_complete_sentencepiece_vocabulary() {
        let file = default_vocab().unwrap();
        let md = file.metadata();
        let tokens = md.get_string_array(keys::TOKENIZER_TOKENS).unwrap();
        assert_eq!(tokens.len(), DEFAULT_VOCAB_SIZE);
        let unique: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), tokens.len(), "duplicate pieces");
        // Any text round-trips (byte fallback), and common words use merged pieces.
        let tok = mistral_tokenizer::Tokenizer::from_gguf(&file).unwrap();
        let text = "The cat sat on the mat. Ünïcödé 🐈 {x: 1}";
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert!(tok.encode("the cat", false, false).unwrap().len() <= 3);
    }

    #[test]
    fn random_blocks_dequantize_to_centred_small_values() {
        for ty in [
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let blocks = (4096 / ty.block_size()) as usize;
            let mut rng = StdRng::seed_from_u64(1);
            let bytes = gen_blocks(ty, Fill::Weight, blocks, &mut rng);
            let dt = candle_dtype(ty).unwrap();
            let q = QTensor::new(
                QStorage::from_data(Cow::Borrowed(&bytes), &Device::Cpu, dt).unwrap(),
                4096,
            )
            .unwrap();
            let v = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let n = v.len() as f32;
            let mean = v.iter().sum::<f32>() / n;
            let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt();
            assert!(mean.abs() < 0.2 * WEIGHT_STD, "{ty}: mean {mean}");
            assert!(
                std > 0.7 * WEIGHT_STD && std < 1.4 * WEIGHT_STD,
                "{ty}: std {std}"
            );
        }
    }

    #[test]
    fn q4_k_m_mix_follows_llama_cpp() {
        let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::SevenB);
        spec.ftype = SynthType::Q4_K_M;
        // 32 layers: more bits for layers 0-3, 28-31 and 6, 9, 12, ...
        let more: Vec<usize> = (0..32).filter(|&l| use_more_bits(l, 32)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        assert_eq!(weight_type(&spec, TensorName::AttnV, 0), GgmlType::Q6_K);
        assert_eq!(weight_type(&spec, TensorName::AttnV, 4), GgmlType::Q4_K);
        assert_eq!(weight_type(&spec, TensorName::Output, 0), GgmlType::Q6_K);
        assert_eq!(weight_type(&spec, TensorName::FfnGate, 0), GgmlType::Q4_K);
        assert_eq!(fallback(GgmlType::Q4_K, 576), GgmlType::Q5_0);
    }

    #[test]
    fn q4_0_mix_follows_llama_cpp() {
        let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::SevenB);
        spec.ftype = SynthType::Q4_0;
        assert_eq!(weight_type(&spec, TensorName::Output, 0), GgmlType::Q6_K);
        for name in [
            TensorName::TokenEmbd,
            TensorName::AttnV,
            TensorName::FfnDown,
        ] {
            assert_eq!(weight_type(&spec, name, 0), GgmlType::Q4_0, "{name:?}");
        }
        let moe = SynthSpec::preset(SynthArch::Mixtral, SynthPreset::EightX7B);
        let moe = SynthSpec {
            ftype: SynthType::Q4_0,
            ..moe
        };
        assert_eq!(weight_type(&moe, TensorName::AttnV, 0), GgmlType::Q8_0);
        assert_eq!(
            weight_type(&moe, TensorName::FfnGateExps, 0),
            GgmlType::Q4_0
        );
    }
}
