//! The transformer: token embedding, `n_layer` pre-norm residual blocks
//! (RMSNorm → GQA attention → residual, RMSNorm → SwiGLU FFN or MoE → residual),
//! final RMSNorm and the output projection. One type serves Mistral (dense),
//! Mixtral (MoE) and other llama-architecture files (e.g. SmolLM2).

use candle_core::{Device, IndexOp, Tensor};
use mistral_gguf::keys::TensorName;
use mistral_gguf::GgufFile;

use crate::attention::{Attention, AttentionInputs};
use crate::config::{LoadOptions, ModelConfig, MAX_UBATCH};
use crate::error::ModelError;
use crate::ffn::FeedForward;
use crate::kv_cache::{attention_mask, slot_positions, KvCache};
use crate::matmul::Linear;
use crate::moe::Moe;
use crate::rope::Rope;
use crate::weights::WeightLoader;

/// A layer's feed-forward part.
#[derive(Debug, Clone)]
enum Ffn {
    Dense(FeedForward),
    Moe(Moe),
}

impl Ffn {
    fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        match self {
            Ffn::Dense(f) => f.forward(x),
            Ffn::Moe(m) => m.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Tensor, // [n_embd] f32
    attn: Attention,
    ffn_norm: Tensor, // [n_embd] f32
    ffn: Ffn,
}

/// A loaded model with its KV cache.
pub struct Transformer {
    config: ModelConfig,
    device: Device,
    tok_embd: Linear, // [n_vocab, n_embd], rows dequantized on lookup
    layers: Vec<Layer>,
    output_norm: Tensor, // [n_embd] f32
    output: Linear,      // [n_vocab, n_embd] (token_embd when tied)
    rope: Rope,
    caches: Vec<KvCache>,
    pos: usize,
    weight_bytes: usize,
}

impl Transformer {
    /// Loads every tensor of `file` onto `device` and allocates the KV cache.
    pub fn load(
        file: &GgufFile,
        device: &Device,
        opts: &LoadOptions,
    ) -> Result<Transformer, ModelError> {
        let config = ModelConfig::from_file(file, opts)?;
        let cfg = &config;
        let d = cfg.n_embd;
        let mut w = WeightLoader::new(file, device);
        let tok_embd = Linear::load(
            &mut w,
            &TensorName::TokenEmbd.global(),
            d,
            cfg.n_vocab,
            cfg.kernels,
        )?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let ffn = if cfg.is_moe() {
                Ffn::Moe(Moe::load(&mut w, cfg, l)?)
            } else {
                Ffn::Dense(FeedForward::new(
                    Linear::load(
                        &mut w,
                        &TensorName::FfnGate.layer(l),
                        d,
                        cfg.n_ff,
                        cfg.kernels,
                    )?,
                    Linear::load(
                        &mut w,
                        &TensorName::FfnUp.layer(l),
                        d,
                        cfg.n_ff,
                        cfg.kernels,
                    )?,
                    Linear::load(
                        &mut w,
                        &TensorName::FfnDown.layer(l),
                        cfg.n_ff,
                        d,
                        cfg.kernels,
                    )?,
                ))
            };
            layers.push(Layer {
                attn_norm: w.f32_tensor(&TensorName::AttnNorm.layer(l), &[d])?,
                attn: Attention::load(&mut w, cfg, l)?,
                ffn_norm: w.f32_tensor(&TensorName::FfnNorm.layer(l), &[d])?,
                ffn,
            });
        }
        let output_norm = w.f32_tensor(&TensorName::OutputNorm.global(), &[d])?;
        let output = if cfg.tied_embeddings {
            tok_embd.clone() // shares the weights
        } else {
            Linear::load(
                &mut w,
                &TensorName::Output.global(),
                d,
                cfg.n_vocab,
                cfg.kernels,
            )?
        };
        let rolling = cfg.rolling_window().is_some();
        let caches = layers
            .iter()
            .map(|l| l.attn.new_cache(cfg.kv_capacity(), rolling, device))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(
            layers = cfg.n_layer,
            moe = cfg.is_moe(),
            window = ?cfg.sliding_window,
            kv_capacity = cfg.kv_capacity(),
            "model loaded"
        );
        Ok(Transformer {
            rope: Rope::new(cfg.head_dim, cfg.rope_freq_base),
            weight_bytes: w.bytes_loaded(),
            device: device.clone(),
            config,
            tok_embd,
            layers,
            output_norm,
            output,
            caches,
            pos: 0,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Empties the KV cache (stale slots are masked by position, so nothing is cleared).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Tokens processed since the last reset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes of the preallocated KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.caches.iter().map(KvCache::bytes).sum()
    }

    /// Bytes of weight data loaded from the file.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Runs `tokens` at positions `position()..` and returns logits `[n, n_vocab]`.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        self.forward_tail(tokens, tokens.len())
    }

    /// Like [`forward`](Self::forward) but only the last position's logits `[n_vocab]`.
    pub fn forward_last(&mut self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        Ok(self.forward_tail(tokens, 1)?.i(0)?)
    }

    /// Like [`forward`](Self::forward) but only the logits of the last `n_last`
    /// positions, `[n_last, n_vocab]` (the output projection runs on those rows only).
    pub fn forward_tail(&mut self, tokens: &[u32], n_last: usize) -> Result<Tensor, ModelError> {
        // The kernels split every matrix product over the rayon pool. Called
        // from outside the pool, each product would hand its work to the pool
        // and sleep until it is done (tens of µs a product, hundreds of
        // products a token); run the whole pass on a pool thread instead, so
        // the products fork and join from inside it.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_tail(tokens, n_last));
        }
        self.check(tokens)?;
        let n_last = n_last.clamp(1, tokens.len());
        let skip = tokens.len() - n_last;
        let mut logits = Vec::new();
        let mut done = 0;
        for chunk in tokens.chunks(MAX_UBATCH) {
            let h = self.hidden(chunk)?;
            let m = chunk.len();
            // Rows of this chunk that are among the last n_last.
            let from = skip.saturating_sub(done).min(m);
            if from < m {
                logits.push(self.output.forward(&h.narrow(0, from, m - from)?)?);
            }
            done += m;
        }
        Ok(Tensor::cat(&logits, 0)?)
    }

    fn check(&self, tokens: &[u32]) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let n_vocab = self.config.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id, n_vocab });
        }
        if self.config.rolling_window().is_none() && self.pos + tokens.len() > self.config.ctx_size
        {
            return Err(if self.pos == 0 {
                ModelError::PromptTooLong {
                    prompt_tokens: tokens.len(),
                    context: self.config.ctx_size,
                }
            } else {
                ModelError::ContextFull {
                    position: self.pos,
                    tokens: tokens.len(),
                    context: self.config.ctx_size,
                }
            });
        }
        Ok(())
    }

    /// One batch (at most `MAX_UBATCH` tokens) through the layers and the final
    /// norm: `[n, n_embd]`. Advances the position.
    fn hidden(&mut self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let cfg = &self.config;
        let n = tokens.len();
        let start = self.pos;
        let mut x = self.tok_embd.rows(tokens, &self.device)?; // [n, n_embd]

        let (cos, sin) = self.rope.tables(start, n, &self.device)?;
        let rolling = cfg.rolling_window().is_some();
        let slots = slot_positions(start + n, cfg.kv_capacity(), rolling);
        let mask = attention_mask(start, n, &slots, cfg.sliding_window, &self.device)?;
        let inp = AttentionInputs {
            start,
            cos,
            sin,
            mask,
        };
        let eps = cfg.rms_norm_eps;

        for (layer, cache) in self.layers.iter().zip(self.caches.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            x = (x + layer.attn.forward(&h, &inp, cache)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (x + layer.ffn.forward(&h)?)?;
        }
        self.pos += n;
        Ok(candle_nn::ops::rms_norm(&x, &self.output_norm, eps)?)
    }
}
