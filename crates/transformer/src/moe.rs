//! Mixtral's sparse mixture of experts: the router `ffn_gate_inp` scores every
//! expert, softmax over all experts, the top-k (`expert_used_count`) are kept and
//! their weights renormalised to sum to 1, and the output is the weighted sum of
//! the chosen experts' SwiGLU outputs.
//!
//! The tokens of the whole step (every sequence of the batch) are grouped per
//! expert, so an expert runs once per step on exactly the rows routed to it.

use mistral_gguf::keys::TensorName;
use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::ffn::{FeedForward, FfnScratch};
use crate::matmul::{Linear, Stack};
use crate::weights::WeightLoader;

/// One MoE layer.
#[derive(Debug, Clone)]
pub(crate) struct Moe {
    router: Vec<f32>, // [n_expert, n_embd]
    experts: Vec<FeedForward>,
    n_used: usize,
    n_embd: usize,
}

impl Moe {
    /// Loads the stacked `ffn_{gate,up,down}_exps` tensors, or the older
    /// per-expert `ffn_{gate,up,down}.E` ones.
    pub fn load(w: &mut WeightLoader, cfg: &ModelConfig, layer: usize) -> Result<Moe, ModelError> {
        let (d, ff, e, k) = (cfg.n_embd, cfg.n_ff, cfg.n_expert, cfg.kernels);
        let router = w.f32_values(&TensorName::FfnGateInp.layer(layer), &[d, e])?;
        let experts = if w.contains(&TensorName::FfnGateExps.layer(layer)) {
            let (gate_name, up_name) = (
                TensorName::FfnGateExps.layer(layer),
                TensorName::FfnUpExps.layer(layer),
            );
            let (gt, gate) = w.raw(&gate_name, &[d, ff, e])?;
            let (ut, up) = w.raw(&up_name, &[d, ff, e])?;
            let down = Linear::load_stack(w, &TensorName::FfnDownExps.layer(layer), ff, d, e, k)?;
            let (gp, upp) = (gate.len() / e, up.len() / e);
            down.into_iter()
                .enumerate()
                .map(|(x, dn)| {
                    let parts = [
                        (gate_name.as_str(), gt, &gate[x * gp..(x + 1) * gp], ff),
                        (up_name.as_str(), ut, &up[x * upp..(x + 1) * upp], ff),
                    ];
                    Ok(FeedForward::new(Stack::from_parts(w, &parts, d, k)?, dn))
                })
                .collect::<Result<Vec<_>, ModelError>>()?
        } else {
            (0..e)
                .map(|x| {
                    let gate_up = [
                        (TensorName::FfnGate.expert(layer, x), ff),
                        (TensorName::FfnUp.expert(layer, x), ff),
                    ];
                    Ok(FeedForward::new(
                        Stack::load(w, &gate_up, d, k)?,
                        Linear::load(w, &TensorName::FfnDown.expert(layer, x), ff, d, k)?,
                    ))
                })
                .collect::<Result<Vec<_>, ModelError>>()?
        };
        Ok(Moe {
            router,
            experts,
            n_used: cfg.n_expert_used,
            n_embd: d,
        })
    }

    /// The chosen experts of one token and their renormalised weights, by
    /// descending router probability (ties: the lower expert id first).
    fn route(&self, x: &[f32]) -> Vec<(usize, f32)> {
        let logits: Vec<f32> = self
            .router
            .chunks_exact(self.n_embd)
            .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect();
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let p: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let z: f32 = p.iter().sum();
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        order.truncate(self.n_used);
        let sum: f32 = order.iter().map(|&e| p[e] / z).sum();
        order.into_iter().map(|e| (e, p[e] / z / sum)).collect()
    }

    /// `x [n, n_embd] -> out [n, n_embd]`.
    pub fn forward(
        &self,
        x: &[f32],
        s: &mut FfnScratch,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let d = self.n_embd;
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); self.experts.len()];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); self.experts.len()];
        let routes: Vec<Vec<(usize, f32)>> = if x.len() < 1 << 15 {
            x.chunks_exact(d).map(|xt| self.route(xt)).collect()
        } else {
            x.par_chunks_exact(d).map(|xt| self.route(xt)).collect()
        };
        for (t, route) in routes.into_iter().enumerate() {
            for (e, w) in route {
                rows[e].push(t);
                weights[e].push(w);
            }
        }
        out.clear();
        out.resize(x.len(), 0.0);
        let (mut xs, mut y) = (Vec::new(), Vec::new());
        for ((expert, rows), weights) in self.experts.iter().zip(rows).zip(weights) {
            if rows.is_empty() {
                continue;
            }
            xs.clear();
            for &t in &rows {
                xs.extend_from_slice(&x[t * d..(t + 1) * d]);
            }
            expert.forward(&xs, s, &mut y)?;
            for ((&t, w), yr) in rows.iter().zip(weights).zip(y.chunks_exact(d)) {
                for (o, v) in out[t * d..(t + 1) * d].iter_mut().zip(yr) {
                    *o += w * v;
                }
            }
        }
        Ok(())
    }
}
