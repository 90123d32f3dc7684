//! The transformer: token embedding, `n_layer` pre-norm residual blocks
//! (RMSNorm → GQA attention → residual, RMSNorm → SwiGLU FFN or MoE → residual),
//! final RMSNorm and the output projection. One type serves Mistral (dense),
//! Mixtral (MoE) and other llama-architecture files (e.g. SmolLM2).
//!
//! The weights are immutable once loaded; all per-conversation state lives in
//! the [`KvCache`]s passed to [`Transformer::step`], which runs the tokens of
//! several sequences through the layers in one batch.

use mistral_gguf::keys::TensorName;
use mistral_gguf::GgufFile;

use crate::attention::{Attention, AttnScratch, SeqSlice};
use crate::config::{CachePolicy, CacheType, LoadOptions, ModelConfig, MAX_UBATCH};
use crate::error::ModelError;
use crate::ffn::{FeedForward, FfnScratch};
use crate::generic::{GenericCache, GenericModel};
use crate::kv_cache::{ContextShift, KvCache, KvLayout, Placement};
use crate::matmul::{Linear, Stack};
use crate::moe::Moe;
use crate::ops::{add_assign, rms_norm};
use crate::rope::Rope;
use crate::weights::{LoadProgress, WeightLoader};

/// A layer's feed-forward part.
#[derive(Debug, Clone)]
enum Ffn {
    Dense(FeedForward),
    Moe(Moe),
}

impl Ffn {
    fn forward(&self, x: &[f32], s: &mut FfnScratch, out: &mut Vec<f32>) -> Result<(), ModelError> {
        match self {
            Ffn::Dense(f) => f.forward(x, s, out),
            Ffn::Moe(m) => m.forward(x, s, out),
        }
    }
}

/// The buffers of one step, reused from layer to layer and, through the
/// model's pool, from step to step (large ones would otherwise be mapped
/// and faulted in afresh every layer).
#[derive(Debug, Default)]
struct Scratch {
    h: Vec<f32>,
    out: Vec<f32>,
    attn: AttnScratch,
    ffn: FfnScratch,
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    attn: Attention,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

/// Each sequence's new tokens and its device cache, set to the position its
/// placement starts at.
fn device_batch<'a>(
    seqs: &'a mut [SeqStep<'_>],
    places: &[Placement],
) -> Result<Vec<(&'a [u32], &'a mut GenericCache)>, ModelError> {
    seqs.iter_mut()
        .zip(places)
        .map(|(s, place)| {
            let at = place.positions.first().map_or(0, |&p| p as usize);
            let tokens: &'a [u32] = s.tokens;
            let dev = s.cache.device_mut().ok_or_else(|| {
                ModelError::InvalidInput(
                    "a session of another model was passed to this model".into(),
                )
            })?;
            dev.truncate(at);
            Ok((tokens, dev))
        })
        .collect()
}

/// One sequence's part of a step.
pub(crate) struct SeqStep<'a> {
    pub cache: &'a mut KvCache,
    /// Its new tokens (at most [`MAX_UBATCH`]).
    pub tokens: &'a [u32],
    /// Logits wanted for its last `logits` tokens (0: none).
    pub logits: usize,
    /// Whether to return the final hidden states (after the output norm) of
    /// all its tokens.
    pub hidden: bool,
}

/// What one sequence gets back from a step.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqResult {
    /// `[logits, n_vocab]`.
    pub logits: Vec<f32>,
    /// `[tokens, n_embd]` when asked.
    pub hidden: Vec<f32>,
    /// The context shift that made room, if any.
    pub shift: Option<ContextShift>,
}

/// The loaded weights.
#[derive(Debug)]
pub(crate) struct Transformer {
    config: ModelConfig,
    layout: KvLayout,
    tok_embd: Linear, // [n_vocab, n_embd], rows dequantized on lookup
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Linear, // [n_vocab, n_embd] (token_embd when tied)
    rope: Rope,
    weight_bytes: usize,
    scratch: std::sync::Mutex<Vec<Scratch>>,
    /// The device-generic path, for a model loaded on a GPU (or on
    /// `candle-cpu`): it holds the weights of the layers below `layer0`
    /// (all of them, `layers` then empty, or the first ones when
    /// offloading part of the model).
    generic: Option<GenericModel>,
    /// The first layer `layers` holds.
    layer0: usize,
}

impl Transformer {
    /// Loads every tensor of `file`.
    pub fn load(
        file: &GgufFile,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Transformer, ModelError> {
        let mut config = ModelConfig::from_file(file, opts)?;
        let mut layer0 = 0;
        let mut generic = None;
        if let Some(device) = opts.device.candle()? {
            let n = opts.gpu_layers.unwrap_or(usize::MAX).min(config.n_layer);
            if n == config.n_layer {
                return Transformer::load_generic(file, opts, device);
            }
            if n > 0 {
                // Hybrid: the first n layers on the device, the rest here,
                // under the device path's rules (f16 cache, no shift).
                let gopts = Self::generic_options(opts)?;
                config = ModelConfig::from_file(file, &gopts)?;
                Self::generic_policy(&mut config);
                generic = Some(GenericModel::load_layers(file, &gopts, device, n)?);
                layer0 = n;
            }
        }
        let cfg = &config;
        let d = cfg.n_embd;
        let mut w = WeightLoader::new(file, progress);
        // Offloading, the device part looks the embedding up (its host copy
        // serves here too, as the output head of a tied model).
        let tok_embd = match &generic {
            Some(g) => g.host_embedding().clone(),
            None => Linear::load(
                &mut w,
                &TensorName::TokenEmbd.global(),
                d,
                cfg.n_vocab,
                cfg.kernels,
            )?,
        };
        let mut layers = Vec::with_capacity(cfg.n_layer - layer0);
        for l in layer0..cfg.n_layer {
            let ffn = if cfg.is_moe() {
                Ffn::Moe(Moe::load(&mut w, cfg, l)?)
            } else {
                let gate_up = [
                    (TensorName::FfnGate.layer(l), cfg.n_ff),
                    (TensorName::FfnUp.layer(l), cfg.n_ff),
                ];
                Ffn::Dense(FeedForward::new(
                    Stack::load(&mut w, &gate_up, d, cfg.kernels)?,
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
                attn_norm: w.f32_values(&TensorName::AttnNorm.layer(l), &[d])?,
                attn: Attention::load(&mut w, cfg, l)?,
                ffn_norm: w.f32_values(&TensorName::FfnNorm.layer(l), &[d])?,
                ffn,
            });
            w.release_read();
        }
        let output_norm = w.f32_values(&TensorName::OutputNorm.global(), &[d])?;
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
        w.release_read();
        tracing::debug!(
            layers = cfg.n_layer,
            moe = cfg.is_moe(),
            cache = ?cfg.cache,
            "model loaded"
        );
        Ok(Transformer {
            rope: Rope::new(cfg.head_dim, cfg.rope_freq_base),
            layout: KvLayout::new(cfg),
            weight_bytes: w.bytes_loaded() + generic.as_ref().map_or(0, |g| g.weight_bytes()),
            config,
            tok_embd,
            layers,
            output_norm,
            output,
            scratch: Default::default(),
            generic,
            layer0,
        })
    }

    /// The options a model on the device path runs under: f16 caches (an
    /// error for others).
    fn generic_options(opts: &LoadOptions) -> Result<LoadOptions, ModelError> {
        for (name, t) in [
            ("cache-type-k", opts.cache_type_k),
            ("cache-type-v", opts.cache_type_v),
        ] {
            if t != CacheType::F16 {
                return Err(ModelError::InvalidOption {
                    name,
                    value: t.name().to_string(),
                    expected: "f16 on this device (its cache is f16)",
                });
            }
        }
        Ok(opts.clone())
    }

    /// The device path's cache policy: a window is a mask over a cache of
    /// the whole context there, not a rolling buffer.
    fn generic_policy(config: &mut ModelConfig) {
        if let CachePolicy::Rolling { .. } = config.cache {
            config.cache = CachePolicy::Full {
                ctx: config.ctx_size,
            };
        }
    }

    /// The model on `device` through the device-generic path: a cache of the
    /// whole context in f16 on the device (a window as a mask).
    fn load_generic(
        file: &GgufFile,
        opts: &LoadOptions,
        device: candle_core::Device,
    ) -> Result<Transformer, ModelError> {
        let opts = Self::generic_options(opts)?;
        let mut config = ModelConfig::from_file(file, &opts)?;
        Self::generic_policy(&mut config);
        let g = GenericModel::load(file, &opts, device)?;
        let embd = g.host_embedding().clone();
        let config_layers = config.n_layer;
        tracing::debug!(device = %opts.device, layers = config.n_layer, "model loaded (generic path)");
        Ok(Transformer {
            rope: Rope::new(config.head_dim, config.rope_freq_base),
            layout: KvLayout::new(&config),
            weight_bytes: g.weight_bytes(),
            config,
            tok_embd: embd.clone(),
            layers: Vec::new(),
            output_norm: Vec::new(),
            output: embd,
            scratch: Default::default(),
            layer0: config_layers,
            generic: Some(g),
        })
    }

    /// Checks every sequence of a step, then records its tokens in its cache
    /// (shifting the context where the policy says so): nothing changes
    /// unless every sequence can run.
    fn place_all(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Placement>, ModelError> {
        for s in seqs.iter() {
            self.check_tokens(s.tokens)?;
            if let Some(e) = s.cache.room_error(s.tokens.len()) {
                return Err(e);
            }
        }
        seqs.iter_mut()
            .map(|s| s.cache.place(s.tokens, &self.rope))
            .collect()
    }

    /// [`Transformer::step`] on the device-generic path (every layer there):
    /// the matrix products over all the sequences' rows at once, the
    /// attention per sequence against its device cache.
    fn step_generic(
        &self,
        g: &GenericModel,
        seqs: &mut [SeqStep<'_>],
        places: Vec<Placement>,
    ) -> Result<Vec<SeqResult>, ModelError> {
        let (n_last, hidden): (Vec<usize>, Vec<bool>) =
            seqs.iter().map(|s| (s.logits, s.hidden)).unzip();
        let mut batch = device_batch(seqs, &places)?;
        let results = g.forward_batch(&mut batch, &n_last, &hidden)?;
        let out = results
            .into_iter()
            .zip(places)
            .map(|((logits, hidden), place)| SeqResult {
                logits,
                hidden,
                shift: place.shift,
            })
            .collect();
        Ok(out)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Bytes of weight data loaded from the file.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        match &self.generic {
            Some(g) => KvCache::on_device(self.layout, g.new_cache(), self.layer0),
            None => KvCache::new(self.layout),
        }
    }

    /// The shape every cache of this model has.
    pub fn kv_layout(&self) -> &KvLayout {
        &self.layout
    }

    /// Checks that `tokens` can run: non-empty, at most [`MAX_UBATCH`], ids
    /// in the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if tokens.len() > MAX_UBATCH {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens in one step of a sequence, at most {MAX_UBATCH}",
                tokens.len()
            )));
        }
        let n_vocab = self.config.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id, n_vocab });
        }
        Ok(())
    }

    /// Runs the new tokens of every sequence in `seqs` through the layers in
    /// one batch (each at its own next positions, against its own cache) and
    /// returns what each asked for. Every sequence is checked before anything
    /// changes; after an error inside the layers the caches are left
    /// inconsistent and must be reset.
    pub fn step(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<SeqResult>, ModelError> {
        let places = self.place_all(seqs)?;
        if let (Some(g), true) = (&self.generic, self.layers.is_empty()) {
            return self.step_generic(g, seqs, places);
        }
        let cfg = &self.config;
        let d = cfg.n_embd;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let tables = self.rope.tables(
            places
                .iter()
                .flat_map(|p| p.positions.iter().map(|&p| p as i64)),
        );
        let mut x = match &self.generic {
            // Offloading: the first layers on the device, each sequence in
            // turn, then the rest here on the whole batch.
            Some(g) => g.hidden_batch(&mut device_batch(seqs, &places)?)?,
            None => self.tok_embd.rows(&tokens)?, // [n, n_embd]
        };
        let mut s = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        s.h.clear();
        s.h.resize(x.len(), 0.0);
        let eps = cfg.rms_norm_eps;
        let mut slices: Vec<SeqSlice<'_>> = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for (s, place) in seqs.iter_mut().zip(&places) {
            slices.push(SeqSlice {
                cache: &mut *s.cache,
                place,
                row,
            });
            row += place.slots.len();
        }
        for (i, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, eps, &mut s.h);
            layer.attn.forward(
                &s.h,
                self.layer0 + i,
                &self.rope,
                &tables,
                &mut slices,
                &mut s.attn,
                &mut s.out,
            )?;
            add_assign(&mut x, &s.out);
            rms_norm(&x, &layer.ffn_norm, eps, &mut s.h);
            layer.ffn.forward(&s.h, &mut s.ffn, &mut s.out)?;
            add_assign(&mut x, &s.out);
        }
        drop(slices);
        if let Ok(mut p) = self.scratch.lock() {
            p.push(s);
        }

        // The output projection runs on the rows that want logits only.
        let mut want = Vec::new();
        let mut row = 0;
        for s in seqs.iter() {
            let n = s.tokens.len();
            let k = s.logits.min(n);
            want.extend_from_slice(&x[(row + n - k) * d..(row + n) * d]);
            row += n;
        }
        let logits = if want.is_empty() {
            Vec::new()
        } else {
            let mut normed = vec![0f32; want.len()];
            rms_norm(&want, &self.output_norm, eps, &mut normed);
            self.output.forward(&normed)?
        };
        let v = cfg.n_vocab;
        let mut out = Vec::with_capacity(seqs.len());
        let (mut row, mut lrow) = (0, 0);
        for (s, place) in seqs.iter().zip(places) {
            let n = s.tokens.len();
            let k = s.logits.min(n);
            let hidden = if s.hidden {
                let mut hs = vec![0f32; n * d];
                rms_norm(&x[row * d..(row + n) * d], &self.output_norm, eps, &mut hs);
                hs
            } else {
                Vec::new()
            };
            out.push(SeqResult {
                logits: logits[lrow * v..(lrow + k) * v].to_vec(),
                hidden,
                shift: place.shift,
            });
            row += n;
            lrow += k;
        }
        Ok(out)
    }
}
