//! Grouped-query self-attention of one layer over the batch of a step: the
//! projections run once over every token of every sequence (the weights are
//! read once per step), RoPE at each token's own position, the new keys and
//! values go into each sequence's cache, and the fused kernel
//! ([`mistral_kernels::attention`]) attends each sequence's queries to its
//! own cache.

use mistral_gguf::keys::TensorName;
use mistral_kernels::attention::{attention, AttnSeq, AttnShape};
use mistral_kernels::Isa;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::kv_cache::{KvCache, Placement};
use crate::matmul::{Linear, Stack};
use crate::rope::{Rope, RopeTables};
use crate::weights::WeightLoader;

/// One layer's attention weights.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    /// wq `[n_head * head_dim, n_embd]`, wk and wv `[n_head_kv * head_dim, n_embd]`.
    qkv: Stack,
    wo: Linear, // [n_embd, n_head * head_dim]
    shape: AttnShape,
}

/// One sequence of a step as attention sees it: its cache, where its new
/// tokens went, and its rows in the batch.
pub(crate) struct SeqSlice<'a> {
    pub cache: &'a mut KvCache,
    pub place: &'a Placement,
    /// First row of the sequence in the batch.
    pub row: usize,
}

impl Attention {
    pub fn load(
        w: &mut WeightLoader,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<Attention, ModelError> {
        let (d, hd, k) = (cfg.n_embd, cfg.head_dim, cfg.kernels);
        let qkv = [
            (TensorName::AttnQ.layer(layer), cfg.n_head * hd),
            (TensorName::AttnK.layer(layer), cfg.n_head_kv * hd),
            (TensorName::AttnV.layer(layer), cfg.n_head_kv * hd),
        ];
        Ok(Attention {
            qkv: Stack::load(w, &qkv, d, k)?,
            wo: Linear::load(
                w,
                &TensorName::AttnOutput.layer(layer),
                cfg.n_head * hd,
                d,
                k,
            )?,
            shape: AttnShape {
                n_head: cfg.n_head,
                n_head_kv: cfg.n_head_kv,
                head_dim: hd,
                k_type: cfg.cache_type_k,
                v_type: cfg.cache_type_v,
                scale: 1.0 / (hd as f32).sqrt(),
                window: cfg
                    .cache
                    .window()
                    .map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
            },
        })
    }

    /// `h [n, n_embd]` (every token of the step, sequence after sequence)
    /// through layer `layer`'s attention: `out [n, n_embd]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        h: &[f32],
        layer: usize,
        rope: &Rope,
        tables: &RopeTables,
        seqs: &mut [SeqSlice<'_>],
        scratch: &mut AttnScratch,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let s = &self.shape;
        let AttnScratch { tmp, q, k, v, y } = scratch;
        self.qkv.forward_into(h, tmp, &mut [q, k, v])?;
        rope.apply(q, s.n_head, tables);
        rope.apply(k, s.n_head_kv, tables);
        let kv_width = s.n_head_kv * s.head_dim;
        for seq in seqs.iter_mut() {
            let rows = seq.row * kv_width..(seq.row + seq.place.slots.len()) * kv_width;
            seq.cache
                .write(layer, &seq.place.slots, &k[rows.clone()], &v[rows])?;
        }
        let pages: Vec<_> = seqs.iter().map(|seq| seq.cache.pages(layer)).collect();
        let attn_seqs: Vec<AttnSeq<'_>> = seqs
            .iter()
            .zip(&pages)
            .map(|(seq, pages)| AttnSeq {
                row: seq.row,
                qpos: &seq.place.positions,
                pages,
            })
            .collect();
        y.clear();
        y.resize(q.len(), 0.0);
        attention(Isa::best(), s, q, &attn_seqs, y)?;
        self.wo.forward_into(y, out)
    }
}

/// Buffers of an attention pass, reused from layer to layer.
#[derive(Debug, Default)]
pub(crate) struct AttnScratch {
    tmp: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
}
