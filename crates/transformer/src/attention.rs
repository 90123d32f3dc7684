//! Grouped-query self-attention over the preallocated KV cache.
//!
//! K/V are never copied per query head: the `n_head` query heads are reshaped to
//! `[n_head_kv, group * n, head_dim]` (head `h` uses KV head `h / group`, as in
//! llama.cpp) and multiplied against each KV head's keys in one batched matmul.

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::matmul::Linear;
use crate::rope;
use crate::weights::WeightLoader;
use mistral_gguf::keys::TensorName;

/// Per-forward inputs shared by every layer: RoPE tables and the mask.
pub struct AttentionInputs {
    /// Position of the first token of the batch.
    pub start: usize,
    pub cos: Tensor,
    pub sin: Tensor,
    /// `[n, slots]` additive mask, `None` when every slot is visible.
    pub mask: Option<Tensor>,
}

/// One layer's attention weights.
#[derive(Debug, Clone)]
pub struct Attention {
    wq: Linear, // [n_head * head_dim, n_embd]
    wk: Linear, // [n_head_kv * head_dim, n_embd]
    wv: Linear, // [n_head_kv * head_dim, n_embd]
    wo: Linear, // [n_embd, n_head * head_dim]
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(
        w: &mut WeightLoader,
        cfg: &ModelConfig,
        layer: usize,
    ) -> Result<Attention, ModelError> {
        let (d, hd, k) = (cfg.n_embd, cfg.head_dim, cfg.kernels);
        Ok(Attention {
            wq: Linear::load(w, &TensorName::AttnQ.layer(layer), d, cfg.n_head * hd, k)?,
            wk: Linear::load(w, &TensorName::AttnK.layer(layer), d, cfg.n_head_kv * hd, k)?,
            wv: Linear::load(w, &TensorName::AttnV.layer(layer), d, cfg.n_head_kv * hd, k)?,
            wo: Linear::load(
                w,
                &TensorName::AttnOutput.layer(layer),
                cfg.n_head * hd,
                d,
                k,
            )?,
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: hd,
        })
    }

    /// `[n, heads * head_dim]` -> `[heads, n, head_dim]` (contiguous).
    fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor, ModelError> {
        let n = x.dim(0)?;
        Ok(x.reshape((n, heads, head_dim))?
            .transpose(0, 1)?
            .contiguous()?)
    }

    /// `x [n, n_embd]` at positions `inp.start..`; appends K/V to `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        inp: &AttentionInputs,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let n = x.dim(0)?;
        let (h, hkv, hd) = (self.n_head, self.n_head_kv, self.head_dim);
        let group = h / hkv;
        let q = rope::apply(
            &Self::split_heads(&self.wq.forward(x)?, h, hd)?,
            &inp.cos,
            &inp.sin,
        )?; // [h, n, hd]
        let k = rope::apply(
            &Self::split_heads(&self.wk.forward(x)?, hkv, hd)?,
            &inp.cos,
            &inp.sin,
        )?; // [hkv, n, hd]
        let v = Self::split_heads(&self.wv.forward(x)?, hkv, hd)?; // [hkv, n, hd]
        cache.write(&k, &v, inp.start)?;
        let (kc, vc) = cache.view(inp.start + n)?; // [hkv, L, hd]
        let slots = kc.dim(1)?;

        let q = q.reshape((hkv, group * n, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&kc.t()?)? * scale)?; // [hkv, group * n, L]
        let att = match &inp.mask {
            Some(m) => att
                .reshape((hkv, group, n, slots))?
                .broadcast_add(m)?
                .reshape((hkv, group * n, slots))?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&vc)?; // [hkv, group * n, hd]
        let y = y
            .reshape((h, n, hd))?
            .transpose(0, 1)?
            .reshape((n, h * hd))?;
        self.wo.forward(&y)
    }

    /// Allocates this layer's cache.
    pub fn new_cache(
        &self,
        capacity: usize,
        rolling: bool,
        device: &Device,
    ) -> Result<KvCache, ModelError> {
        KvCache::new(self.n_head_kv, capacity, self.head_dim, rolling, device)
    }
}
