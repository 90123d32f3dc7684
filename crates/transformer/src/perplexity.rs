//! Perplexity the way llama.cpp's `llama-perplexity` computes it, so figures are
//! comparable: the whole text is tokenized once (with BOS when the model adds
//! one), cut into `n_ctx`-token chunks (a trailing partial chunk is dropped); each
//! chunk is evaluated from an empty cache with its first token replaced by BOS (when
//! the model adds one), and only the second half is scored: the logits at
//! positions `n_ctx/2 .. n_ctx-1` predicting the next token. The estimate is
//! `exp(mean NLL)` with the standard error `ppl * sqrt(var(NLL) / (N - 1))`.

use crate::api::Model;
use crate::error::ModelError;

/// Running totals after a chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerplexityStats {
    /// Chunks evaluated so far.
    pub chunks: usize,
    /// Tokens scored so far.
    pub scored: usize,
    /// Sum of negative log-likelihoods (nats).
    pub nll: f64,
    /// Sum of squared NLLs.
    pub nll2: f64,
}

impl PerplexityStats {
    /// `exp(mean NLL)`.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.scored.max(1) as f64).exp()
    }

    /// Standard error of the perplexity estimate (llama.cpp's formula).
    pub fn stderr(&self) -> f64 {
        let n = self.scored as f64;
        if self.scored < 2 {
            return 0.0;
        }
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        (var / (n - 1.0)).sqrt() * self.ppl()
    }
}

/// `-log softmax(logits)[target]`, accumulated in f64 like llama.cpp.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let t = logits.get(target).copied().unwrap_or(f32::NEG_INFINITY);
    -((t - max) as f64 - sum.ln())
}

/// Number of whole chunks of `n_ctx` tokens in `n_tokens` (at most `max_chunks`).
pub fn chunk_count(n_tokens: usize, n_ctx: usize, max_chunks: Option<usize>) -> usize {
    let n = n_tokens / n_ctx.max(1);
    max_chunks.map_or(n, |m| m.min(n))
}

/// Evaluates `tokens` (the whole tokenized text) in chunks of `n_ctx`; `bos` is
/// the id written over each chunk's first token (None: the model adds no BOS).
/// `on_chunk` sees the running totals after every chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(&PerplexityStats),
) -> Result<PerplexityStats, ModelError> {
    if n_ctx < 4 {
        return Err(ModelError::InvalidInput(format!(
            "perplexity context {n_ctx} is too small (need at least 4)"
        )));
    }
    let n_chunks = chunk_count(tokens.len(), n_ctx, max_chunks);
    if n_chunks == 0 {
        return Err(ModelError::InvalidInput(format!(
            "the text has {} tokens; perplexity needs at least one chunk of {n_ctx} (lower --ctx)",
            tokens.len()
        )));
    }
    let first = n_ctx / 2;
    let mut session = model.new_session();
    let n_vocab = model.config().n_vocab;
    let mut stats = PerplexityStats {
        chunks: 0,
        scored: 0,
        nll: 0.0,
        nll2: 0.0,
    };
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        let mut input = chunk.to_vec();
        if let Some(b) = bos {
            input[0] = b;
        }
        session.reset();
        // Logits of positions first .. n_ctx - 2 predict tokens first + 1 .. n_ctx - 1.
        let logits = session.forward(&input, n_ctx - first)?;
        for (row, &target) in logits.chunks_exact(n_vocab).zip(&chunk[first + 1..]) {
            let v = nll(row, target as usize);
            stats.nll += v;
            stats.nll2 += v * v;
            stats.scored += 1;
        }
        stats.chunks += 1;
        on_chunk(&stats);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_cross_entropy() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        assert!((nll(&l, 2) - (z.ln() - 3.0)).abs() < 1e-9);
        assert_eq!(chunk_count(1000, 512, None), 1);
        assert_eq!(chunk_count(5000, 512, Some(3)), 3);
    }

    #[test]
    fn stats_match_llama_cpp_formula() {
        let xs = [1.0f64, 2.0, 4.0];
        let s = PerplexityStats {
            chunks: 1,
            scored: 3,
            nll: xs.iter().sum(),
            nll2: xs.iter().map(|x| x * x).sum(),
        };
        let mean = 7.0 / 3.0;
        assert!((s.ppl() - f64::exp(mean)).abs() < 1e-12);
        let var = (1.0 + 4.0 + 16.0) / 3.0 - mean * mean;
        assert!((s.stderr() - (var / 2.0).sqrt() * s.ppl()).abs() < 1e-12);
    }
}
