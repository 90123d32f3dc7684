//! Shared test helpers: tiny synthetic models in memory and a naive reference
//! forward pass written in plain f32 loops (no candle in the arithmetic).

#![allow(dead_code)]

use mistral_gguf::keys::TensorName;
use mistral_gguf::{GgmlType, GgufFile, GgufWriter, LlamaHparams, TensorSpec};
use mistral_transformer::synth::{
    default_vocab, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use mistral_transformer::{CacheType, LoadOptions, Model, ModelConfig, ModelError, Session};

/// A tiny spec: 256 wide, 2 layers, 8 heads / 4 KV heads, vocab truncated to 300.
pub fn tiny(arch: SynthArch, ftype: SynthType) -> SynthSpec {
    let mut s = SynthSpec::preset(arch, SynthPreset::Tiny);
    s.ftype = ftype;
    s.vocab_size = Some(300);
    s.seed = 7;
    s
}

/// Writes `spec` into memory and opens it.
pub fn synth_file(spec: &SynthSpec) -> GgufFile {
    let vocab = default_vocab().unwrap();
    let mut bytes = Vec::new();
    write_synth(spec, vocab.metadata(), &mut bytes, &|_| {}).unwrap();
    GgufFile::from_bytes(bytes, "synthetic").unwrap()
}

/// Rewrites `file` with tensors changed by `edit(name) -> Some(new spec, bytes)`
/// (or dropped with `Some(None)`); other tensors are copied.
pub fn rewrite(
    file: &GgufFile,
    md: mistral_gguf::Metadata,
    mut edit: impl FnMut(&str) -> Option<Vec<(TensorSpec, Vec<u8>)>>,
) -> GgufFile {
    let mut w = GgufWriter::new(md);
    let mut data: Vec<Vec<u8>> = Vec::new();
    for t in file.tensors() {
        match edit(&t.name) {
            Some(repl) => {
                for (spec, bytes) in repl {
                    w.add_tensor(spec);
                    data.push(bytes);
                }
            }
            None => {
                w.add_tensor(TensorSpec::new(t.name.clone(), t.ggml_type, &t.dims));
                data.push(file.tensor_data(t).to_vec());
            }
        }
    }
    let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    GgufFile::from_bytes(w.to_bytes(&refs).unwrap(), "rewritten").unwrap()
}

/// Load options for exact comparisons: f32 KV cache, no context shift.
pub fn exact() -> LoadOptions {
    LoadOptions {
        cache_type_k: CacheType::F32,
        cache_type_v: CacheType::F32,
        context_shift: false,
        ..LoadOptions::default()
    }
}

/// A model with one session, driven the way the tests need.
pub struct TestModel {
    pub model: Model,
    pub session: Session,
}

impl TestModel {
    /// Logits of every token of `toks`, run after the context.
    pub fn forward(&mut self, toks: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let v = self.model.config().n_vocab;
        Ok(self
            .session
            .forward(toks, toks.len())?
            .chunks_exact(v)
            .map(|r| r.to_vec())
            .collect())
    }

    /// Logits of the last token of `toks`.
    pub fn forward_last(&mut self, toks: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.session.forward(toks, 1)
    }

    pub fn reset(&mut self) {
        self.session.reset();
    }

    pub fn position(&self) -> usize {
        self.session.position()
    }

    pub fn kv_cache_bytes(&self) -> usize {
        self.session.kv_cache_bytes()
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }
}

pub fn load(file: &GgufFile, opts: LoadOptions) -> TestModel {
    let model = Model::from_gguf(file, opts).unwrap();
    TestModel {
        session: model.new_session(),
        model,
    }
}

/// Deterministic pseudo-random token ids below `n`.
pub fn tokens(n_vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % n_vocab as u64) as u32
        })
        .collect()
}

/// A tensor's values as f32 (row-major): F32 bytes are read directly; other
/// types go through the kernels crate's scalar dequantization (held to the
/// `gguf` package's golden vectors in its own tests); the reference
/// arithmetic itself is plain loops.
pub fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    let (info, bytes) = file.tensor(name).unwrap();
    match info.ggml_type {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        t => {
            let mut out = vec![0f32; info.n_elements() as usize];
            mistral_kernels::dequantize(t, bytes, &mut out).unwrap();
            out
        }
    }
}

/// A matrix `[rows][cols]` (row = one output).
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub w: Vec<f32>,
}

impl Mat {
    fn from(w: Vec<f32>, cols: usize) -> Mat {
        Mat {
            rows: w.len() / cols,
            cols,
            w,
        }
    }
    pub fn mul(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols);
        (0..self.rows)
            .map(|r| {
                let row = &self.w[r * self.cols..(r + 1) * self.cols];
                // f64 accumulation: the reference should be the more exact side.
                row.iter()
                    .zip(x)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

pub struct RefFfn {
    gate: Mat,
    up: Mat,
    down: Mat,
}

impl RefFfn {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let g = self.gate.mul(x);
        let u = self.up.mul(x);
        let h: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        self.down.mul(&h)
    }
}

pub enum RefFfnKind {
    Dense(RefFfn),
    Moe {
        router: Mat,
        experts: Vec<RefFfn>,
        k: usize,
    },
}

pub struct RefLayer {
    attn_norm: Vec<f32>,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    wo: Mat,
    ffn_norm: Vec<f32>,
    ffn: RefFfnKind,
}

/// The reference model.
pub struct RefModel {
    pub hp: LlamaHparams,
    embd: Mat,
    layers: Vec<RefLayer>,
    out_norm: Vec<f32>,
    output: Mat,
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(&v, &w)| (v as f64 * s) as f32 * w)
        .collect()
}

/// Rotates adjacent pairs of each head (llama.cpp's "normal" RoPE).
fn rope(x: &mut [f32], head_dim: usize, pos: usize, base: f32) {
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..head_dim / 2 {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let (s, c) = theta.sin_cos();
            let (a, b) = (head[2 * i] as f64, head[2 * i + 1] as f64);
            head[2 * i] = (a * c - b * s) as f32;
            head[2 * i + 1] = (a * s + b * c) as f32;
        }
    }
}

/// Top-k of `p` by value (ties: lower index first), as (index, weight) renormalised.
pub fn top_k_renorm(p: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap().then(a.cmp(&b)));
    let chosen = &idx[..k];
    let sum: f32 = chosen.iter().map(|&i| p[i]).sum();
    chosen.iter().map(|&i| (i, p[i] / sum)).collect()
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| (v / s) as f32).collect()
}

impl RefModel {
    pub fn load(file: &GgufFile) -> RefModel {
        let hp = LlamaHparams::from_metadata(file.metadata()).unwrap();
        let d = hp.embedding_length as usize;
        let ff = hp.feed_forward_length as usize;
        let e = hp.expert_count as usize;
        let mat = |name: String, cols: usize| Mat::from(values(file, &name), cols);
        let embd = mat(TensorName::TokenEmbd.global(), d);
        let layers = (0..hp.block_count as usize)
            .map(|l| {
                let ffn = if e == 0 {
                    RefFfnKind::Dense(RefFfn {
                        gate: mat(TensorName::FfnGate.layer(l), d),
                        up: mat(TensorName::FfnUp.layer(l), d),
                        down: mat(TensorName::FfnDown.layer(l), ff),
                    })
                } else {
                    let split = |name: TensorName, cols: usize| -> Vec<Mat> {
                        let all = values(file, &name.layer(l));
                        let per = all.len() / e;
                        (0..e)
                            .map(|x| Mat::from(all[x * per..(x + 1) * per].to_vec(), cols))
                            .collect()
                    };
                    let experts = if file
                        .tensor_info(&TensorName::FfnGateExps.layer(l))
                        .is_some()
                    {
                        split(TensorName::FfnGateExps, d)
                            .into_iter()
                            .zip(split(TensorName::FfnUpExps, d))
                            .zip(split(TensorName::FfnDownExps, ff))
                            .map(|((gate, up), down)| RefFfn { gate, up, down })
                            .collect()
                    } else {
                        (0..e)
                            .map(|x| RefFfn {
                                gate: mat(TensorName::FfnGate.expert(l, x), d),
                                up: mat(TensorName::FfnUp.expert(l, x), d),
                                down: mat(TensorName::FfnDown.expert(l, x), ff),
                            })
                            .collect()
                    };
                    RefFfnKind::Moe {
                        router: mat(TensorName::FfnGateInp.layer(l), d),
                        experts,
                        k: hp.expert_used_count as usize,
                    }
                };
                RefLayer {
                    attn_norm: values(file, &TensorName::AttnNorm.layer(l)),
                    wq: mat(TensorName::AttnQ.layer(l), d),
                    wk: mat(TensorName::AttnK.layer(l), d),
                    wv: mat(TensorName::AttnV.layer(l), d),
                    wo: mat(
                        TensorName::AttnOutput.layer(l),
                        (hp.head_count * hp.head_dim) as usize,
                    ),
                    ffn_norm: values(file, &TensorName::FfnNorm.layer(l)),
                    ffn,
                }
            })
            .collect();
        let output = if file.tensor_info(&TensorName::Output.global()).is_some() {
            mat(TensorName::Output.global(), d)
        } else {
            mat(TensorName::TokenEmbd.global(), d)
        };
        RefModel {
            embd,
            layers,
            out_norm: values(file, &TensorName::OutputNorm.global()),
            output,
            hp,
        }
    }

    /// Logits of every position, recomputed from scratch (no cache), with an
    /// optional sliding window.
    pub fn forward(&self, tokens: &[u32], window: Option<usize>) -> Vec<Vec<f32>> {
        self.hidden(tokens, window)
            .iter()
            .map(|h| self.output.mul(h))
            .collect()
    }

    /// The final hidden state (after the output norm) of every position.
    pub fn hidden(&self, tokens: &[u32], window: Option<usize>) -> Vec<Vec<f32>> {
        let hp = &self.hp;
        let (d, hd) = (hp.embedding_length as usize, hp.head_dim as usize);
        let (nh, nkv) = (hp.head_count as usize, hp.head_count_kv as usize);
        let group = nh / nkv;
        let eps = hp.rms_norm_eps;
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| self.embd.w[t as usize * d..(t as usize + 1) * d].to_vec())
            .collect();
        for layer in &self.layers {
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let h = rms_norm(x, &layer.attn_norm, eps);
                let mut q = layer.wq.mul(&h);
                let mut k = layer.wk.mul(&h);
                rope(&mut q, hd, pos, hp.rope_freq_base);
                rope(&mut k, hd, pos, hp.rope_freq_base);
                qs.push(q);
                ks.push(k);
                vs.push(layer.wv.mul(&h));
            }
            for (t, x) in xs.iter_mut().enumerate() {
                let mut att_out = vec![0f32; nh * hd];
                for h in 0..nh {
                    let kvh = h / group;
                    let q = &qs[t][h * hd..(h + 1) * hd];
                    let visible: Vec<usize> = (0..=t)
                        .filter(|&s| window.is_none_or(|w| t - s < w))
                        .collect();
                    let scores: Vec<f32> = visible
                        .iter()
                        .map(|&s| {
                            let k = &ks[s][kvh * hd..(kvh + 1) * hd];
                            (q.iter()
                                .zip(k)
                                .map(|(&a, &b)| a as f64 * b as f64)
                                .sum::<f64>()
                                / (hd as f64).sqrt()) as f32
                        })
                        .collect();
                    let p = softmax(&scores);
                    for (&s, &p) in visible.iter().zip(&p) {
                        let v = &vs[s][kvh * hd..(kvh + 1) * hd];
                        for i in 0..hd {
                            att_out[h * hd + i] += p * v[i];
                        }
                    }
                }
                let o = layer.wo.mul(&att_out);
                for (a, b) in x.iter_mut().zip(&o) {
                    *a += b;
                }
                let h = rms_norm(x, &layer.ffn_norm, eps);
                let f = match &layer.ffn {
                    RefFfnKind::Dense(f) => f.forward(&h),
                    RefFfnKind::Moe { router, experts, k } => {
                        let p = softmax(&router.mul(&h));
                        let mut out = vec![0f32; d];
                        for (e, w) in top_k_renorm(&p, *k) {
                            for (o, y) in out.iter_mut().zip(experts[e].forward(&h)) {
                                *o += w * y;
                            }
                        }
                        out
                    }
                };
                for (a, b) in x.iter_mut().zip(&f) {
                    *a += b;
                }
            }
        }
        xs.iter()
            .map(|x| rms_norm(x, &self.out_norm, eps))
            .collect()
    }
}

#[allow(unused_imports)] // not every test binary compares logits
pub use mistral_test_support::rel_err;

/// Sampling at temperature 1 with every filter off (seeded, at most `n`
/// tokens): what a constraint alone must keep valid.
pub fn unfiltered(seed: u64, n: usize) -> mistral_transformer::SamplingParams {
    mistral_transformer::SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        max_tokens: Some(n),
        ..Default::default()
    }
}
