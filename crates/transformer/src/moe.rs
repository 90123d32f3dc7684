//! Mixtral's sparse mixture of experts: the router `ffn_gate_inp` scores every
//! expert, softmax over all experts, the top-k (`expert_used_count`) are kept and
//! their weights renormalised to sum to 1, and the output is the weighted sum of
//! the chosen experts' SwiGLU outputs.
//!
//! Routing (softmax, top-k by sort, gather, renormalise) runs as tensor ops on the
//! device. On the CPU the chosen ids are then read in place (no device transfer)
//! to batch each expert's tokens: an expert runs once per forward on exactly the
//! rows routed to it. On other devices every expert runs on all rows with a
//! zero weight where it was not chosen, which needs no host round trip at all.

use candle_core::{DType, Device, Tensor, D};
use mistral_gguf::keys::TensorName;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::ffn::FeedForward;
use crate::matmul::Linear;
use crate::weights::WeightLoader;

/// One MoE layer.
#[derive(Debug, Clone)]
pub struct Moe {
    router: Tensor, // [n_expert, n_embd] f32
    experts: Vec<FeedForward>,
    n_used: usize,
}

impl Moe {
    /// Loads the stacked `ffn_{gate,up,down}_exps` tensors, or the older
    /// per-expert `ffn_{gate,up,down}.E` ones.
    pub fn load(w: &mut WeightLoader, cfg: &ModelConfig, layer: usize) -> Result<Moe, ModelError> {
        let (d, ff, e, k) = (cfg.n_embd, cfg.n_ff, cfg.n_expert, cfg.kernels);
        let router = w.f32_tensor(&TensorName::FfnGateInp.layer(layer), &[d, e])?;
        let experts = if w.contains(&TensorName::FfnGateExps.layer(layer)) {
            let gate = Linear::load_stack(w, &TensorName::FfnGateExps.layer(layer), d, ff, e, k)?;
            let up = Linear::load_stack(w, &TensorName::FfnUpExps.layer(layer), d, ff, e, k)?;
            let down = Linear::load_stack(w, &TensorName::FfnDownExps.layer(layer), ff, d, e, k)?;
            gate.into_iter()
                .zip(up)
                .zip(down)
                .map(|((g, u), dn)| FeedForward::new(g, u, dn))
                .collect()
        } else {
            (0..e)
                .map(|x| {
                    Ok(FeedForward::new(
                        Linear::load(w, &TensorName::FfnGate.expert(layer, x), d, ff, k)?,
                        Linear::load(w, &TensorName::FfnUp.expert(layer, x), d, ff, k)?,
                        Linear::load(w, &TensorName::FfnDown.expert(layer, x), ff, d, k)?,
                    ))
                })
                .collect::<Result<Vec<_>, ModelError>>()?
        };
        Ok(Moe {
            router,
            experts,
            n_used: cfg.n_expert_used,
        })
    }

    /// Chosen experts `[n, k]` (u32) and their renormalised weights `[n, k]` (f32).
    pub fn route(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let logits = x.matmul(&self.router.t()?)?; // [n, n_expert]
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let order = probs.arg_sort_last_dim(false)?;
        let ids = order.narrow(D::Minus1, 0, self.n_used)?.contiguous()?;
        let w = probs.gather(&ids, D::Minus1)?;
        let w = w.broadcast_div(&w.sum_keepdim(D::Minus1)?)?;
        Ok((ids, w))
    }

    /// `x [n, n_embd] -> [n, n_embd]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (ids, w) = self.route(x)?;
        match x.device() {
            Device::Cpu => self.forward_grouped(x, &ids, &w),
            _ => self.forward_dense(x, &ids, &w),
        }
    }

    fn forward_grouped(&self, x: &Tensor, ids: &Tensor, w: &Tensor) -> Result<Tensor, ModelError> {
        let ids = ids.to_vec2::<u32>()?;
        let w = w.to_vec2::<f32>()?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.experts.len()];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); self.experts.len()];
        for (t, (ids, w)) in ids.iter().zip(&w).enumerate() {
            for (&e, &wt) in ids.iter().zip(w) {
                // ids come from a sort over n_expert columns, so they are in range.
                if let (Some(r), Some(ws)) = (rows.get_mut(e as usize), weights.get_mut(e as usize))
                {
                    r.push(t as u32);
                    ws.push(wt);
                }
            }
        }
        let mut out = x.zeros_like()?;
        for ((expert, rows), weights) in self.experts.iter().zip(rows).zip(weights) {
            if rows.is_empty() {
                continue;
            }
            let m = rows.len();
            let idx = Tensor::from_vec(rows, m, x.device())?;
            let y = expert.forward(&x.index_select(&idx, 0)?)?;
            let y = y.broadcast_mul(&Tensor::from_vec(weights, (m, 1), x.device())?)?;
            out = out.index_add(&idx, &y, 0)?;
        }
        Ok(out)
    }

    fn forward_dense(&self, x: &Tensor, ids: &Tensor, w: &Tensor) -> Result<Tensor, ModelError> {
        let mut out = x.zeros_like()?;
        for (e, expert) in self.experts.iter().enumerate() {
            let chosen = ids.eq(e as u32)?.to_dtype(DType::F32)?;
            let col = (chosen * w)?.sum_keepdim(D::Minus1)?; // [n, 1]
            out = (out + expert.forward(x)?.broadcast_mul(&col)?)?;
        }
        Ok(out)
    }
}
