//! The device-generic forward pass: the model on any candle device (CUDA,
//! Metal, or candle's CPU device, where the default tests hold it against
//! the native path), through candle's own ops only: the quantized matmul
//! (`QMatMul`, which has CUDA and Metal kernels for the GGUF types), RMSNorm,
//! interleaved RoPE, softmax and SiLU, with the KV cache on the device in
//! f16 and Mixtral's experts run only for the tokens routed to them. This is
//! exactly the code a GPU runs; the CPU's fast path stays the native one
//! ([`crate::model::Transformer`]).
//!
//! Scope of this first version: a batched step multiplies every sequence's
//! rows at once and attends each sequence to its own cache in turn; a cache
//! of the whole context (a sliding
//! window is applied as a mask, not as a rolling buffer; a context shift
//! moves and re-rotates the kept keys as the host cache does), the first
//! layers only when offloading part of the model (`gpu_layers`). The
//! token-embedding lookup runs on the host (one row per token, uploaded).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use mistral_gguf::keys::TensorName;
use mistral_gguf::GgufFile;
use std::sync::Arc;

use crate::config::{KernelChoice, LoadOptions, ModelConfig};
use crate::error::ModelError;
use crate::matmul::Linear;
use crate::weights::WeightLoader;

/// One layer's feed-forward weights.
enum Ffn {
    Dense {
        gate: QMatMul,
        up: QMatMul,
        down: QMatMul,
    },
    Moe {
        /// `[n_expert, n_embd]`, f32 on the device.
        router: Tensor,
        /// `(gate, up, down)` of every expert.
        experts: Vec<(QMatMul, QMatMul, QMatMul)>,
        n_used: usize,
    },
}

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    ffn: Ffn,
}

/// The model's weights on one candle device.
pub(crate) struct GenericModel {
    device: Device,
    cfg: ModelConfig,
    /// Looked up on the host (candle's CPU kernels).
    tok_embd: Linear,
    layers: Vec<Layer>,
    /// The final norm and output projection (absent when the model's last
    /// layers run elsewhere).
    head: Option<(Tensor, QMatMul)>,
    inv_freq: Vec<f32>,
    weight_bytes: usize,
}

/// One sequence's KV cache on the device: per layer, keys and values
/// `[n_head_kv, capacity, head_dim]` in f16 (allocated at the first token),
/// of which the first `len` positions are the context.
pub(crate) struct GenericCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl GenericCache {
    /// Positions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Keeps the first `len` positions (later writes overwrite the rest).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes of the device tensors allocated.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 2)
            .sum()
    }

    /// A context shift (llama.cpp's): keeps the first `keep` positions,
    /// drops the next `discard`, moves the rest down and rotates their keys
    /// back by `discard` positions (`cos`, `sin`: `[head_dim / 2]` of that
    /// angle), as the host cache does.
    pub fn shift(&mut self, keep: usize, discard: usize, cos: &[f32], sin: &[f32]) -> R<()> {
        let rest = self.len.saturating_sub(keep + discard);
        if rest > 0 {
            for (k, v) in self.layers.iter().flatten() {
                let dev = k.device();
                let half = cos.len();
                let c = Tensor::from_slice(cos, (1, half), dev)
                    .and_then(|t| t.broadcast_as((rest, half)))
                    .and_then(|t| t.contiguous())
                    .tc()?;
                let s = Tensor::from_slice(sin, (1, half), dev)
                    .and_then(|t| t.broadcast_as((rest, half)))
                    .and_then(|t| t.contiguous())
                    .tc()?;
                let moved = k
                    .narrow(1, keep + discard, rest)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.contiguous())
                    .and_then(|t| t.unsqueeze(0))
                    .tc()?;
                let rotated = candle_nn::rotary_emb::rope_i(&moved, &c, &s)
                    .and_then(|t| t.squeeze(0))
                    .and_then(|t| t.to_dtype(DType::F16))
                    .and_then(|t| t.contiguous())
                    .tc()?;
                k.slice_set(&rotated, 1, keep).tc()?;
                let vals = v
                    .narrow(1, keep + discard, rest)
                    .and_then(|t| t.contiguous())
                    .tc()?;
                v.slice_set(&vals, 1, keep).tc()?;
            }
        }
        self.len = self
            .len
            .saturating_sub(discard.min(self.len.saturating_sub(keep)));
        Ok(())
    }

    /// Writes `k`, `v` (`[n_head_kv, n, head_dim]`, f16) of layer `l` at
    /// position `at` and returns the keys and values of positions `0..at + n`.
    fn write(&mut self, l: usize, at: usize, k: &Tensor, v: &Tensor) -> R<(Tensor, Tensor)> {
        let n = k.dim(1).tc()?;
        if self.layers[l].is_none() {
            let (h, _, d) = k.dims3().tc()?;
            let z = || Tensor::zeros((h, self.capacity, d), DType::F16, k.device()).tc();
            self.layers[l] = Some((z()?, z()?));
        }
        let Some((ck, cv)) = &self.layers[l] else {
            return Err(ModelError::Tensor("cache layer missing".into()));
        };
        ck.slice_set(k, 1, at).tc()?;
        cv.slice_set(v, 1, at).tc()?;
        Ok((ck.narrow(1, 0, at + n).tc()?, cv.narrow(1, 0, at + n).tc()?))
    }
}

fn tensor_err(e: candle_core::Error) -> ModelError {
    ModelError::Tensor(e.to_string())
}

type R<T> = Result<T, ModelError>;

/// `map_err` into [`ModelError::Tensor`] for candle results.
trait Tc<T> {
    fn tc(self) -> R<T>;
}
impl<T> Tc<T> for candle_core::Result<T> {
    fn tc(self) -> R<T> {
        self.map_err(tensor_err)
    }
}

impl std::fmt::Debug for GenericModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GenericModel({:?}, {} layers)",
            self.device,
            self.layers.len()
        )
    }
}

impl GenericModel {
    /// Loads the weights of `file` onto `device` (the matrices as candle
    /// quantized tensors of the file's types, no full-precision copy).
    pub fn load(file: &GgufFile, opts: &LoadOptions, device: Device) -> R<GenericModel> {
        Self::load_layers(file, opts, device, usize::MAX)
    }

    /// [`GenericModel::load`] of the first `n_layers` layers only (hybrid
    /// offload: the rest and the output head run on the native CPU path;
    /// with fewer layers than the model has, there is no output head here).
    pub fn load_layers(
        file: &GgufFile,
        opts: &LoadOptions,
        device: Device,
        n_layers: usize,
    ) -> R<GenericModel> {
        let mut host_opts = opts.clone();
        host_opts.kernels = KernelChoice::Candle;
        let cfg = ModelConfig::from_file(file, &host_opts)?;
        let (d, hd, ff) = (cfg.n_embd, cfg.head_dim, cfg.n_ff);
        let mut progress = |_: crate::LoadProgress| {};
        let mut w = WeightLoader::new(file, &mut progress).on_device(device.clone());
        let mm = |w: &mut WeightLoader, name: &str, n_in: usize, n_out: usize| -> R<QMatMul> {
            let (ty, bytes) = w.raw(name, &[n_in, n_out])?;
            let q = w.qtensor_from_raw(name, ty, bytes, n_out, n_in)?;
            QMatMul::from_arc(Arc::new(q)).tc()
        };
        let vec = |w: &mut WeightLoader, name: &str, dims: &[usize]| -> R<Tensor> {
            let v = w.f32_values(name, dims)?;
            Tensor::from_vec(v, dims.iter().rev().product::<usize>(), &device).tc()
        };
        let mut host_progress = |_: crate::LoadProgress| {};
        let mut hw = WeightLoader::new(file, &mut host_progress);
        let tok_embd = Linear::load(
            &mut hw,
            &TensorName::TokenEmbd.global(),
            d,
            cfg.n_vocab,
            KernelChoice::Candle,
        )?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        let n_layers = n_layers.min(cfg.n_layer);
        for l in 0..n_layers {
            let ffn = if cfg.is_moe() {
                let e = cfg.n_expert;
                let router = w.f32_values(&TensorName::FfnGateInp.layer(l), &[d, e])?;
                let router = Tensor::from_vec(router, (e, d), &device).tc()?;
                let experts = if w.contains(&TensorName::FfnGateExps.layer(l)) {
                    // One matrix per expert of a stacked `[n_in, n_out, e]` tensor.
                    let mut stack = |name: &str, n_in: usize, n_out: usize| -> R<Vec<QMatMul>> {
                        let (ty, bytes) = w.raw(name, &[n_in, n_out, e])?;
                        let per = bytes.len() / e;
                        (0..e)
                            .map(|x| {
                                let q = w.qtensor_from_raw(
                                    name,
                                    ty,
                                    &bytes[x * per..(x + 1) * per],
                                    n_out,
                                    n_in,
                                )?;
                                QMatMul::from_arc(Arc::new(q)).tc()
                            })
                            .collect()
                    };
                    let gate = stack(&TensorName::FfnGateExps.layer(l), d, ff)?;
                    let up = stack(&TensorName::FfnUpExps.layer(l), d, ff)?;
                    let down = stack(&TensorName::FfnDownExps.layer(l), ff, d)?;
                    gate.into_iter()
                        .zip(up)
                        .zip(down)
                        .map(|((g, u), dn)| (g, u, dn))
                        .collect()
                } else {
                    (0..e)
                        .map(|x| {
                            Ok((
                                mm(&mut w, &TensorName::FfnGate.expert(l, x), d, ff)?,
                                mm(&mut w, &TensorName::FfnUp.expert(l, x), d, ff)?,
                                mm(&mut w, &TensorName::FfnDown.expert(l, x), ff, d)?,
                            ))
                        })
                        .collect::<R<Vec<_>>>()?
                };
                Ffn::Moe {
                    router,
                    experts,
                    n_used: cfg.n_expert_used,
                }
            } else {
                Ffn::Dense {
                    gate: mm(&mut w, &TensorName::FfnGate.layer(l), d, ff)?,
                    up: mm(&mut w, &TensorName::FfnUp.layer(l), d, ff)?,
                    down: mm(&mut w, &TensorName::FfnDown.layer(l), ff, d)?,
                }
            };
            layers.push(Layer {
                attn_norm: vec(&mut w, &TensorName::AttnNorm.layer(l), &[d])?,
                wq: mm(&mut w, &TensorName::AttnQ.layer(l), d, cfg.n_head * hd)?,
                wk: mm(&mut w, &TensorName::AttnK.layer(l), d, cfg.n_head_kv * hd)?,
                wv: mm(&mut w, &TensorName::AttnV.layer(l), d, cfg.n_head_kv * hd)?,
                wo: mm(&mut w, &TensorName::AttnOutput.layer(l), cfg.n_head * hd, d)?,
                ffn_norm: vec(&mut w, &TensorName::FfnNorm.layer(l), &[d])?,
                ffn,
            });
        }
        let head = if n_layers == cfg.n_layer {
            let output_norm = vec(&mut w, &TensorName::OutputNorm.global(), &[d])?;
            let out_name = if cfg.tied_embeddings {
                TensorName::TokenEmbd.global()
            } else {
                TensorName::Output.global()
            };
            Some((output_norm, mm(&mut w, &out_name, d, cfg.n_vocab)?))
        } else {
            None
        };
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / (cfg.rope_freq_base as f64).powf(2.0 * i as f64 / hd as f64) as f32)
            .collect();
        let weight_bytes = w.bytes_loaded() + hw.bytes_loaded();
        Ok(GenericModel {
            weight_bytes,
            device,
            cfg,
            tok_embd,
            layers,
            head,
            inv_freq,
        })
    }

    /// An empty cache for one sequence of up to the context size.
    pub fn new_cache(&self) -> GenericCache {
        GenericCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
            capacity: self.cfg.ctx_size,
        }
    }

    /// The token-embedding matrix, looked up on the host.
    pub fn host_embedding(&self) -> &Linear {
        &self.tok_embd
    }

    /// Bytes of weight data loaded from the file.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Runs `tokens` after what `cache` holds; returns the logits of the last
    /// `n_last` tokens, `[n_last, n_vocab]` row-major.
    #[cfg(test)]
    pub fn forward(&self, tokens: &[u32], cache: &mut GenericCache, n_last: usize) -> R<Vec<f32>> {
        let mut r = self.forward_batch(&mut [(tokens, cache)], &[n_last], &[false])?;
        Ok(r.pop().map(|(logits, _)| logits).unwrap_or_default())
    }

    /// The embedding and the layers for several sequences at once: the
    /// matrix products over all their rows (the weights read once), the
    /// attention of each against its own cache. `[Σ n, n_embd]` on the
    /// device, sequence after sequence.
    /// The caller ([`crate::model::Transformer`]) has checked the tokens
    /// (ids, counts) and made room for them in the sessions' caches.
    fn run_batch(&self, seqs: &mut [(&[u32], &mut GenericCache)]) -> R<Tensor> {
        let cfg = &self.cfg;
        let all: Vec<u32> = seqs.iter().flat_map(|(t, _)| t.iter().copied()).collect();
        let rows = self.tok_embd.rows(&all)?;
        let mut x = Tensor::from_vec(rows, (all.len(), cfg.n_embd), &self.device).tc()?;
        // Each sequence: first row, rows, first position, mask.
        let mut spans = Vec::with_capacity(seqs.len());
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        let mut row = 0;
        for (tokens, cache) in seqs.iter() {
            let (p0, n) = (cache.len, tokens.len());
            let (c, s) = self.rope_tables(p0, n)?;
            cos.push(c);
            sin.push(s);
            spans.push((row, n, p0, self.mask(p0, n)?));
            row += n;
        }
        let cos = Tensor::cat(&cos, 0).tc()?;
        let sin = Tensor::cat(&sin, 0).tc()?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps).tc()?;
            let a = self.attention(layer, &h, &cos, &sin, &spans, seqs, l)?;
            x = (x + a).tc()?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_norm_eps).tc()?;
            let f = self.ffn(&layer.ffn, &h)?;
            x = (x + f).tc()?;
        }
        for (tokens, cache) in seqs.iter_mut() {
            cache.len += tokens.len();
        }
        Ok(x)
    }

    /// [`GenericModel::forward_with`] for several sequences in one batch:
    /// per sequence, the logits of its last `n_last` tokens and (with
    /// `hidden`) its final hidden states.
    pub fn forward_batch(
        &self,
        seqs: &mut [(&[u32], &mut GenericCache)],
        n_last: &[usize],
        hidden: &[bool],
    ) -> R<Vec<(Vec<f32>, Vec<f32>)>> {
        let Some((output_norm, output)) = &self.head else {
            return Err(ModelError::InvalidInput(
                "this part of the model has no output head".into(),
            ));
        };
        let x = self.run_batch(seqs)?;
        let eps = self.cfg.rms_norm_eps;
        let to_vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .tc()
        };
        let mut out = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for (i, (tokens, _)) in seqs.iter().enumerate() {
            let n = tokens.len();
            let xs = x.narrow(0, row, n).tc()?;
            let states = if hidden.get(i).copied().unwrap_or(false) {
                to_vec(candle_nn::ops::rms_norm(&xs, output_norm, eps).tc()?)?
            } else {
                Vec::new()
            };
            let k = n_last.get(i).copied().unwrap_or(1).min(n);
            let logits = if k == 0 {
                Vec::new()
            } else {
                let last = xs.narrow(0, n - k, k).tc()?;
                let last = candle_nn::ops::rms_norm(&last, output_norm, eps).tc()?;
                to_vec(output.forward(&last).tc()?)?
            };
            out.push((logits, states));
            row += n;
        }
        Ok(out)
    }

    /// [`GenericModel::hidden`] for several sequences: `[Σ n, n_embd]`.
    pub fn hidden_batch(&self, seqs: &mut [(&[u32], &mut GenericCache)]) -> R<Vec<f32>> {
        self.run_batch(seqs)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .tc()
    }

    /// `cos`, `sin` `[n, head_dim / 2]` for positions `p0..p0 + n`.
    fn rope_tables(&self, p0: usize, n: usize) -> R<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (mut c, mut s) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in p0..p0 + n {
            for &f in &self.inv_freq {
                let a = p as f64 * f as f64;
                c.push(a.cos() as f32);
                s.push(a.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(c, (n, half), &self.device).tc()?,
            Tensor::from_vec(s, (n, half), &self.device).tc()?,
        ))
    }

    /// The additive mask `[n, p0 + n]` of queries `p0..p0 + n` over keys
    /// `0..p0 + n` (causal, and the sliding window when the model has one),
    /// or `None` where every key is visible (one query, no window reach).
    fn mask(&self, p0: usize, n: usize) -> R<Option<Tensor>> {
        let window = self.cfg.sliding_window;
        let total = p0 + n;
        let visible = |q: usize, k: usize| k <= q && window.is_none_or(|w| q - k < w);
        if n == 1 && (0..total).all(|k| visible(p0, k)) {
            return Ok(None);
        }
        let m: Vec<f32> = (p0..total)
            .flat_map(|q| (0..total).map(move |k| (q, k)))
            .map(|(q, k)| {
                if visible(q, k) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Ok(Some(Tensor::from_vec(m, (n, total), &self.device).tc()?))
    }

    /// One layer's attention over a batch: the projections and RoPE on
    /// every row, then each sequence's rows (`spans`: first row, rows, first
    /// position, mask) against its own cache.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        spans: &[(usize, usize, usize, Option<Tensor>)],
        seqs: &mut [(&[u32], &mut GenericCache)],
        l: usize,
    ) -> R<Tensor> {
        let cfg = &self.cfg;
        let (rows, hd, nh, nkv) = (h.dim(0).tc()?, cfg.head_dim, cfg.n_head, cfg.n_head_kv);
        let heads = |t: Tensor, k: usize| -> R<Tensor> {
            // [rows, k * hd] -> [1, k, rows, hd]
            t.reshape((rows, k, hd))
                .and_then(|t| t.transpose(0, 1))
                .and_then(|t| t.contiguous())
                .and_then(|t| t.unsqueeze(0))
                .tc()
        };
        let q = heads(layer.wq.forward(h).tc()?, nh)?;
        let k = heads(layer.wk.forward(h).tc()?, nkv)?;
        let v = heads(layer.wv.forward(h).tc()?, nkv)?;
        let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)
            .and_then(|t| t.squeeze(0))
            .tc()?;
        let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)
            .and_then(|t| t.squeeze(0))
            .tc()?;
        let v = v.squeeze(0).tc()?;
        let g = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut ys = Vec::with_capacity(spans.len());
        for ((r0, n, p0, mask), (_, cache)) in spans.iter().zip(seqs.iter_mut()) {
            let (r0, n, p0) = (*r0, *n, *p0);
            let part =
                |t: &Tensor| -> R<Tensor> { t.narrow(1, r0, n).and_then(|t| t.contiguous()).tc() };
            let (kc, vc) = cache.write(
                l,
                p0,
                &part(&k)?.to_dtype(DType::F16).tc()?,
                &part(&v)?.to_dtype(DType::F16).tc()?,
            )?;
            let (kc, vc) = (kc.to_dtype(DType::F32).tc()?, vc.to_dtype(DType::F32).tc()?);
            let total = kc.dim(1).tc()?;
            // Query heads of one KV head side by side: [nkv, g * n, hd].
            let qs = part(&q)?.reshape((nkv, g * n, hd)).tc()?;
            let att = (qs.matmul(&kc.t().tc()?).tc()? * scale).tc()?;
            let att = match mask {
                Some(m) => att
                    .reshape((nkv, g, n, total))
                    .and_then(|a| a.broadcast_add(m))
                    .and_then(|a| a.reshape((nkv, g * n, total)))
                    .tc()?,
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att).tc()?;
            let y = att.matmul(&vc.contiguous().tc()?).tc()?; // [nkv, g * n, hd]
            ys.push(
                y.reshape((nh, n, hd))
                    .and_then(|y| y.transpose(0, 1))
                    .and_then(|y| y.reshape((n, nh * hd)))
                    .tc()?,
            );
        }
        let y = Tensor::cat(&ys, 0).tc()?;
        layer.wo.forward(&y).tc()
    }

    fn ffn(&self, ffn: &Ffn, h: &Tensor) -> R<Tensor> {
        match ffn {
            Ffn::Dense { gate, up, down } => swiglu(gate, up, down, h),
            Ffn::Moe {
                router,
                experts,
                n_used,
            } => {
                let n = h.dim(0).tc()?;
                // Routing on the host: softmax over the experts, the top k by
                // probability (ties: the lower id), weights renormalised.
                let logits = h.matmul(&router.t().tc()?).tc()?;
                let logits: Vec<Vec<f32>> = logits.to_vec2().tc()?;
                let mut rows: Vec<Vec<u32>> = vec![Vec::new(); experts.len()];
                let mut weights: Vec<Vec<f32>> = vec![Vec::new(); experts.len()];
                for (t, l) in logits.iter().enumerate() {
                    let max = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let p: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
                    let mut order: Vec<usize> = (0..p.len()).collect();
                    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                    order.truncate(*n_used);
                    let sum: f32 = order.iter().map(|&e| p[e]).sum();
                    for e in order {
                        rows[e].push(t as u32);
                        weights[e].push(p[e] / sum);
                    }
                }
                let mut out = h.zeros_like().tc()?;
                for (e, (gate, up, down)) in experts.iter().enumerate() {
                    if rows[e].is_empty() {
                        continue;
                    }
                    let m = rows[e].len();
                    let idx = Tensor::from_vec(rows[e].clone(), m, h.device()).tc()?;
                    let xs = h.index_select(&idx, 0).tc()?;
                    let ys = swiglu(gate, up, down, &xs)?;
                    let w = Tensor::from_vec(weights[e].clone(), (m, 1), h.device()).tc()?;
                    let ys = ys.broadcast_mul(&w).tc()?;
                    out = out.index_add(&idx, &ys, 0).tc()?;
                }
                debug_assert_eq!(out.dim(0).ok(), Some(n));
                Ok(out)
            }
        }
    }
}

/// `down(silu(gate(x)) * up(x))`.
fn swiglu(gate: &QMatMul, up: &QMatMul, down: &QMatMul, x: &Tensor) -> R<Tensor> {
    let g = candle_nn::ops::silu(&gate.forward(x).tc()?).tc()?;
    let u = up.forward(x).tc()?;
    down.forward(&(g * u).tc()?).tc()
}

#[cfg(test)]
mod tests;
