//! Token sampling: the parameters a user chooses ([`SamplingParams`]) and the
//! [`Sampler`] that turns a row of logits into the next token id.
//!
//! The chain follows llama.cpp's default order:
//!
//! 1. repetition penalty over the last `repeat_last_n` tokens
//!    (a positive logit is divided by the penalty, a non-positive one multiplied),
//! 2. top-k (keep the `k` largest logits),
//! 3. top-p / nucleus (keep the smallest prefix, by descending probability, whose
//!    cumulative probability reaches `p`),
//! 4. min-p (keep tokens whose probability is at least `min_p` times the largest),
//! 5. temperature (divide the logits),
//! 6. a draw from the softmax of what is left, with a seeded RNG.
//!
//! Top-p and min-p look at the probabilities *before* temperature, as llama.cpp does.
//! A temperature of `0` is greedy decoding: the repetition penalty still applies, then
//! the largest logit wins (ties go to the lowest id), and the RNG is never used.

use std::collections::VecDeque;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::ModelError;

/// User-facing sampling settings. [`Default`] gives llama.cpp's defaults.
///
/// ```
/// use mistral_transformer::SamplingParams;
/// let greedy = SamplingParams::greedy();
/// assert_eq!(greedy.temperature, 0.0);
/// let creative = SamplingParams { temperature: 1.0, top_k: 0, seed: Some(7), ..Default::default() };
/// creative.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy decoding. Must be finite and `>= 0`.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables the filter.
    pub top_k: usize,
    /// Nucleus sampling threshold in `(0, 1]`; `1` disables the filter.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in `[0, 1]`; `0` disables it.
    pub min_p: f32,
    /// Repetition penalty, `> 0`; `1` disables it. Values above 1 discourage repeats.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens (prompt included) the penalty looks at; `0` disables it.
    pub repeat_last_n: usize,
    /// RNG seed for reproducible sampling; `None` picks a random one (see [`Sampler::seed`]).
    pub seed: Option<u64>,
    /// Stop after this many generated tokens; `None` runs until an end-of-generation
    /// token, a stop string, or the end of the context.
    pub max_tokens: Option<usize>,
    /// Stop as soon as the generated text contains one of these (non-empty) strings;
    /// the stop string itself is not returned.
    pub stop: Vec<String>,
    /// Never end on an end-of-generation token (their logits are masked out), as
    /// llama.cpp's `--ignore-eos`: for benchmarks with a fixed token count.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0), everything else at its default.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks every value's range; the error
    /// ([`ModelError::InvalidOption`]) names the first bad parameter as the CLI spells it.
    pub fn validate(&self) -> Result<(), ModelError> {
        fn bad(name: &'static str, value: impl fmt::Display, expected: &'static str) -> ModelError {
            ModelError::InvalidOption {
                name,
                value: value.to_string(),
                expected,
            }
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(bad(
                "temperature",
                self.temperature,
                "must be a finite number >= 0 (0 = greedy)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad("top-p", self.top_p, "must be in (0, 1] (1 = off)"));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(bad("min-p", self.min_p, "must be in [0, 1] (0 = off)"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(bad(
                "repeat-penalty",
                self.repeat_penalty,
                "must be a finite number > 0 (1 = off)",
            ));
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty()) {
            return Err(bad("stop", format!("{s:?}"), "must not be empty"));
        }
        Ok(())
    }
}

/// One candidate token during sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Token id (its index in the logits row).
    pub id: u32,
    /// Its current (possibly penalised / scaled) logit.
    pub logit: f32,
}

/// Orders candidates by descending logit, ties by ascending id (a total, deterministic order).
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Applies llama.cpp's repetition penalty to the logits row (indexed by token id)
/// for every distinct id in `recent` (once, however often it occurs): a positive
/// logit is divided by `penalty`, a non-positive one multiplied by it. Ids outside
/// the row are ignored.
pub fn apply_repeat_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    if penalty == 1.0 || recent.is_empty() {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(recent.len());
    for &id in recent {
        if !seen.insert(id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            if *l <= 0.0 {
                *l *= penalty;
            } else {
                *l /= penalty;
            }
        }
    }
}

/// Keeps the `k` candidates with the largest logits (`k == 0` keeps all) and leaves
/// `cands` sorted by descending logit.
pub fn top_k(cands: &mut Vec<Candidate>, k: usize) {
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    cands.sort_unstable_by(by_logit_desc);
}

/// Softmax probabilities of `cands` (any order), computed stably in f64.
pub fn softmax(cands: &[Candidate]) -> Vec<f64> {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Every candidate is masked out: treat them as equally likely.
        return vec![1.0 / cands.len() as f64; cands.len()];
    }
    let exps: Vec<f64> = cands
        .iter()
        .map(|c| f64::from(c.logit - max).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Nucleus filter on candidates sorted by descending logit: keeps the shortest
/// prefix whose cumulative probability reaches `p` (at least one token).
pub fn top_p(cands: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || cands.is_empty() {
        return;
    }
    let probs = softmax(cands);
    let mut cum = 0.0f64;
    let mut keep = cands.len();
    for (i, pr) in probs.iter().enumerate() {
        cum += pr;
        if cum >= f64::from(p) {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep);
}

/// Min-p filter: keeps candidates whose probability is at least `p` times the
/// largest one's, i.e. whose logit is at least `max_logit + ln(p)` (at least one token).
pub fn min_p(cands: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || cands.is_empty() {
        return;
    }
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + p.ln();
    cands.retain(|c| c.logit >= threshold);
}

/// Index of the largest logit (ties: the first), or `None` for an empty slice.
fn argmax(cands: &[Candidate]) -> Option<Candidate> {
    cands
        .iter()
        .copied()
        .reduce(|best, c| if c.logit > best.logit { c } else { best })
}

/// Turns logits into token ids according to [`SamplingParams`], keeping the
/// repetition-penalty window and a seeded RNG between calls.
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: StdRng,
    recent: VecDeque<u32>,
    row: Vec<f32>,
    cands: Vec<Candidate>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("seed", &self.seed)
            .finish()
    }
}

impl Sampler {
    /// Validates `params` and seeds the RNG (from `params.seed`, else from the OS).
    pub fn new(params: &SamplingParams) -> Result<Sampler, ModelError> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(rand::random);
        Ok(Sampler {
            params: params.clone(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            recent: VecDeque::with_capacity(params.repeat_last_n),
            row: Vec::new(),
            cands: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The seed actually used (the chosen one when `params.seed` was `None`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records a token (prompt or generated) in the repetition-penalty window.
    pub fn accept(&mut self, id: u32) {
        let n = self.params.repeat_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() == n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Forgets the repetition-penalty window (the RNG keeps its state).
    pub fn clear_history(&mut self) {
        self.recent.clear();
    }

    /// The tokens the repetition penalty currently looks at, oldest first.
    pub fn recent_tokens(&self) -> Vec<u32> {
        self.recent.iter().copied().collect()
    }

    /// Applies the filter chain (everything but the final draw) to `logits` and
    /// returns the surviving candidates with their final logits, sorted by descending
    /// logit. For greedy sampling this is the single winning token.
    pub fn filtered(&mut self, logits: &[f32]) -> Result<Vec<Candidate>, ModelError> {
        self.filter(logits)?;
        Ok(self.cands.clone())
    }

    fn filter(&mut self, logits: &[f32]) -> Result<(), ModelError> {
        if logits.is_empty() || logits.len() > u32::MAX as usize {
            return Err(ModelError::InvalidInput(format!(
                "cannot sample from {} logits",
                logits.len()
            )));
        }
        if let Some(i) = logits.iter().position(|l| l.is_nan()) {
            return Err(ModelError::InvalidInput(format!(
                "cannot sample: the model produced a NaN logit (token id {i})"
            )));
        }
        let p = &self.params;
        if p.temperature == 0.0 && (p.repeat_penalty == 1.0 || self.recent.is_empty()) {
            // Greedy without a penalty: the first largest logit, read in
            // place (no copy of the row; the scheduler samples every
            // session's row between two batched steps, serially).
            let best =
                logits.iter().enumerate().fold(
                    (0, logits[0]),
                    |b, (i, &l)| if l > b.1 { (i, l) } else { b },
                );
            self.cands.clear();
            self.cands.push(Candidate {
                id: best.0 as u32,
                logit: best.1,
            });
            return Ok(());
        }
        self.row.clear();
        self.row.extend_from_slice(logits);
        let recent = self.recent.make_contiguous();
        apply_repeat_penalty(&mut self.row, recent, p.repeat_penalty);
        self.cands.clear();
        self.cands
            .extend(self.row.iter().enumerate().map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
            }));
        if p.temperature == 0.0 {
            let best = argmax(&self.cands)
                .ok_or_else(|| ModelError::InvalidInput("cannot sample from 0 logits".into()))?;
            self.cands.clear();
            self.cands.push(best);
            return Ok(());
        }
        top_k(&mut self.cands, p.top_k);
        top_p(&mut self.cands, p.top_p);
        min_p(&mut self.cands, p.min_p);
        for c in &mut self.cands {
            c.logit /= p.temperature;
        }
        Ok(())
    }

    /// Picks the next token from one row of logits (`[vocab]`). Does not record it:
    /// call [`Sampler::accept`] with the result (the generator does).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, ModelError> {
        self.filter(logits)?;
        if self.cands.len() == 1 {
            return Ok(self.cands[0].id);
        }
        let probs = softmax(&self.cands);
        let u: f64 = self.rng.random();
        let mut cum = 0.0;
        for (c, pr) in self.cands.iter().zip(&probs) {
            cum += pr;
            if u < cum {
                return Ok(c.id);
            }
        }
        // Rounding left `cum` a hair below 1: the last candidate with any mass.
        let last = self
            .cands
            .iter()
            .zip(&probs)
            .rev()
            .find(|(_, p)| **p > 0.0)
            .map(|(c, _)| c.id);
        Ok(last.unwrap_or(self.cands[0].id))
    }
}

#[cfg(test)]
mod tests {
    //! Every filter is checked against a brute-force definition written
    //! independently of the implementation (plain loops, f64), and the full chain
    //! against empirical frequencies of many seeded draws.
    use super::*;
    use std::collections::{BTreeSet, HashSet};

    fn random_logits(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.random::<f32>() - 0.5) * 2.0 * scale)
            .collect()
    }

    fn row(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> BTreeSet<u32> {
        c.iter().map(|c| c.id).collect()
    }

    /// Naive probabilities over the full row, f64.
    fn naive_probs(logits: &[f32]) -> Vec<f64> {
        let m = logits
            .iter()
            .fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// `a` ranks before `b`: larger logit, ties by smaller id.
    fn ranks_before(logits: &[f32], a: usize, b: usize) -> bool {
        logits[a] > logits[b] || (logits[a] == logits[b] && a < b)
    }

    /// Token i survives top-k iff fewer than k tokens rank before it.
    fn naive_top_k(logits: &[f32], k: usize) -> BTreeSet<u32> {
        (0..logits.len())
            .filter(|&i| {
                k == 0
                    || (0..logits.len())
                        .filter(|&j| ranks_before(logits, j, i))
                        .count()
                        < k
            })
            .map(|i| i as u32)
            .collect()
    }

    /// Token i survives top-p iff the mass of the tokens ranking before it is < p.
    fn naive_top_p(logits: &[f32], p: f64) -> BTreeSet<u32> {
        let probs = naive_probs(logits);
        (0..logits.len())
            .filter(|&i| {
                let before: f64 = (0..logits.len())
                    .filter(|&j| ranks_before(logits, j, i))
                    .map(|j| probs[j])
                    .sum();
                p >= 1.0 || before < p
            })
            .map(|i| i as u32)
            .collect()
    }

    /// Token i survives min-p iff prob_i >= p * max prob.
    fn naive_min_p(logits: &[f32], p: f64) -> BTreeSet<u32> {
        let probs = naive_probs(logits);
        let max = probs.iter().cloned().fold(0.0, f64::max);
        (0..logits.len())
            .filter(|&i| probs[i] >= p * max)
            .map(|i| i as u32)
            .collect()
    }

    #[test]
    fn repeat_penalty_matches_llama_cpp_math() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let logits = random_logits(&mut rng, 50, 4.0);
            let recent: Vec<u32> = (0..20).map(|_| rng.random_range(0..60)).collect(); // some ids out of range
            let penalty = 0.5 + rng.random::<f32>() * 1.5;
            let mut got = logits.clone();
            apply_repeat_penalty(&mut got, &recent, penalty);
            for (i, (&g, &l)) in got.iter().zip(&logits).enumerate() {
                let expected = if recent.contains(&(i as u32)) {
                    if l > 0.0 {
                        l / penalty
                    } else {
                        l * penalty
                    }
                } else {
                    l
                };
                assert_eq!(g, expected, "token {i}, logit {l}, penalty {penalty}");
            }
        }
        // Once per distinct token even if it repeats in the window.
        let mut l = vec![2.0, -2.0];
        apply_repeat_penalty(&mut l, &[0, 0, 0, 1, 1], 2.0);
        assert_eq!(l, vec![1.0, -4.0]);
    }

    #[test]
    fn top_k_keeps_exactly_the_k_largest() {
        let mut rng = StdRng::seed_from_u64(2);
        for trial in 0..200 {
            let n = rng.random_range(1..80);
            let mut logits = random_logits(&mut rng, n, 3.0);
            if trial % 3 == 0 {
                // Force ties.
                for l in &mut logits {
                    *l = (*l * 2.0).round();
                }
            }
            let k = rng.random_range(0..n + 3);
            let mut c = row(&logits);
            top_k(&mut c, k);
            assert_eq!(ids(&c), naive_top_k(&logits, k), "n={n} k={k}");
            assert!(
                c.windows(2).all(|w| w[0].logit >= w[1].logit),
                "sorted descending"
            );
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..300 {
            let n = rng.random_range(1..60);
            let logits = random_logits(&mut rng, n, 5.0);
            let p = rng.random_range(0.01f32..=1.0);
            let mut c = row(&logits);
            top_k(&mut c, 0); // sort
            top_p(&mut c, p);
            assert_eq!(ids(&c), naive_top_p(&logits, p as f64), "n={n} p={p}");
            assert!(!c.is_empty());
        }
    }

    #[test]
    fn min_p_keeps_tokens_above_the_relative_threshold() {
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..300 {
            let n = rng.random_range(1..60);
            let logits = random_logits(&mut rng, n, 5.0);
            let p = rng.random_range(0.0f32..=1.0);
            let mut c = row(&logits);
            min_p(&mut c, p);
            assert_eq!(ids(&c), naive_min_p(&logits, p as f64), "n={n} p={p}");
            assert!(!c.is_empty());
        }
    }

    /// The distribution the whole chain should sample from, by brute force:
    /// penalty, then the three filters as set intersections in llama.cpp's order
    /// (top-p on the renormalised top-k survivors, min-p relative to the max), then
    /// softmax of logits / temperature over the survivors.
    fn naive_chain(logits: &[f32], recent: &[u32], p: &SamplingParams) -> Vec<f64> {
        let n = logits.len();
        let mut l = logits.to_vec();
        let distinct: HashSet<u32> = recent.iter().copied().collect();
        for (i, li) in l.iter_mut().enumerate() {
            if distinct.contains(&(i as u32)) {
                *li = if *li > 0.0 {
                    *li / p.repeat_penalty
                } else {
                    *li * p.repeat_penalty
                };
            }
        }
        let topk = naive_top_k(&l, p.top_k);
        // top-p over the top-k survivors only (others masked to -inf).
        let masked: Vec<f32> = (0..n)
            .map(|i| {
                if topk.contains(&(i as u32)) {
                    l[i]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let topp: BTreeSet<u32> = naive_top_p(&masked, p.top_p as f64)
            .intersection(&topk)
            .copied()
            .collect();
        let masked: Vec<f32> = (0..n)
            .map(|i| {
                if topp.contains(&(i as u32)) {
                    l[i]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let minp: BTreeSet<u32> = naive_min_p(&masked, p.min_p as f64)
            .intersection(&topp)
            .copied()
            .collect();
        let scaled: Vec<f32> = (0..n)
            .map(|i| {
                if minp.contains(&(i as u32)) {
                    l[i] / p.temperature
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        naive_probs(&scaled)
    }

    #[test]
    fn chain_frequencies_match_the_brute_force_distribution() {
        let mut rng = StdRng::seed_from_u64(5);
        let configs = [
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: 0.7,
                top_k: 5,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.3,
                top_k: 0,
                top_p: 0.8,
                min_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: 0.9,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.1,
                ..Default::default()
            },
            SamplingParams {
                temperature: 0.8,
                top_k: 8,
                top_p: 0.9,
                min_p: 0.05,
                repeat_penalty: 1.5,
                repeat_last_n: 4,
                ..Default::default()
            },
        ];
        for (ci, params) in configs.iter().enumerate() {
            let logits = random_logits(&mut rng, 12, 2.0);
            let mut s = Sampler::new(&SamplingParams {
                seed: Some(ci as u64),
                ..params.clone()
            })
            .unwrap();
            for &t in &[3u32, 7, 3, 11, 0, 1] {
                s.accept(t);
            }
            let recent = s.recent_tokens();
            assert!(recent.len() <= params.repeat_last_n);
            let expected = naive_chain(&logits, &recent, params);
            let draws = 40_000;
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..draws {
                counts[s.sample(&logits).unwrap() as usize] += 1;
            }
            for (i, (&c, &e)) in counts.iter().zip(&expected).enumerate() {
                let freq = c as f64 / draws as f64;
                if e == 0.0 {
                    assert_eq!(c, 0, "config {ci}: filtered token {i} was sampled");
                } else {
                    // 5 standard deviations of a binomial proportion.
                    let sd = (e * (1.0 - e) / draws as f64).sqrt();
                    assert!(
                        (freq - e).abs() <= 5.0 * sd + 1e-9,
                        "config {ci} token {i}: freq {freq:.4} expected {e:.4}"
                    );
                }
            }
            // The exposed filtered set is exactly the support of the distribution.
            let support: BTreeSet<u32> = (0..logits.len())
                .filter(|&i| expected[i] > 0.0)
                .map(|i| i as u32)
                .collect();
            assert_eq!(ids(&s.filtered(&logits).unwrap()), support, "config {ci}");
        }
    }

    #[test]
    fn greedy_is_argmax_after_penalty_and_ignores_the_rng() {
        let logits = [0.5f32, 3.0, 2.9, -1.0];
        let mut a = Sampler::new(&SamplingParams {
            seed: Some(1),
            ..SamplingParams::greedy()
        })
        .unwrap();
        let mut b = Sampler::new(&SamplingParams {
            seed: Some(2),
            ..SamplingParams::greedy()
        })
        .unwrap();
        for _ in 0..10 {
            assert_eq!(a.sample(&logits).unwrap(), 1);
            assert_eq!(b.sample(&logits).unwrap(), 1);
        }
        // Penalising token 1 (3.0 / 1.1 = 2.73 < 2.9) hands the win to token 2.
        let mut p = Sampler::new(&SamplingParams {
            repeat_penalty: 1.1,
            ..SamplingParams::greedy()
        })
        .unwrap();
        p.accept(1);
        assert_eq!(p.sample(&logits).unwrap(), 2);
        // Ties go to the lowest id.
        assert_eq!(a.sample(&[1.0, 5.0, 5.0]).unwrap(), 1);
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let mut rng = StdRng::seed_from_u64(6);
        let logits = random_logits(&mut rng, 1000, 1.0);
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(42),
            ..Default::default()
        };
        let run = |seed: u64| {
            let mut s = Sampler::new(&SamplingParams {
                seed: Some(seed),
                ..params.clone()
            })
            .unwrap();
            (0..50)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let unseeded = Sampler::new(&SamplingParams {
            seed: None,
            ..params
        })
        .unwrap();
        let again = Sampler::new(&SamplingParams {
            seed: Some(unseeded.seed()),
            ..unseeded.params().clone()
        })
        .unwrap();
        assert_eq!(unseeded.seed(), again.seed());
    }

    #[test]
    fn penalty_window_keeps_only_the_last_n() {
        let mut s = Sampler::new(&SamplingParams {
            repeat_last_n: 3,
            ..Default::default()
        })
        .unwrap();
        for t in 0..10 {
            s.accept(t);
        }
        assert_eq!(s.recent_tokens(), vec![7, 8, 9]);
        let mut off = Sampler::new(&SamplingParams {
            repeat_last_n: 0,
            ..Default::default()
        })
        .unwrap();
        off.accept(1);
        assert!(off.recent_tokens().is_empty());
    }

    #[test]
    fn invalid_values_are_rejected_with_the_parameter_name() {
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::INFINITY,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                SamplingParams {
                    top_p: 2.0,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                SamplingParams {
                    top_p: f32::NAN,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                SamplingParams {
                    min_p: -0.1,
                    ..Default::default()
                },
                "min-p",
            ),
            (
                SamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min-p",
            ),
            (
                SamplingParams {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
                "repeat-penalty",
            ),
            (
                SamplingParams {
                    repeat_penalty: -1.0,
                    ..Default::default()
                },
                "repeat-penalty",
            ),
            (
                SamplingParams {
                    stop: vec!["ok".into(), String::new()],
                    ..Default::default()
                },
                "stop",
            ),
        ];
        for (p, name) in cases {
            let err = Sampler::new(&p).unwrap_err();
            assert!(
                matches!(&err, ModelError::InvalidOption { name: n, .. } if *n == name),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        for ok in [
            SamplingParams::default(),
            SamplingParams::greedy(),
            SamplingParams {
                top_p: 1.0,
                min_p: 0.0,
                repeat_penalty: 0.5,
                temperature: 100.0,
                ..Default::default()
            },
            SamplingParams {
                min_p: 1.0,
                top_p: 1e-6,
                ..Default::default()
            },
        ] {
            ok.validate().unwrap();
        }
    }

    #[test]
    fn bad_logits_are_errors_not_panics() {
        let mut s = Sampler::new(&SamplingParams::default()).unwrap();
        let err = s.sample(&[]).unwrap_err().to_string();
        assert!(err.contains("0 logits"), "{err}");
        let err = s.sample(&[0.0, f32::NAN]).unwrap_err().to_string();
        assert!(err.contains("NaN") && err.contains("token id 1"), "{err}");
        // All masked: still returns one of them.
        let id = s.sample(&[f32::NEG_INFINITY; 4]).unwrap();
        assert!(id < 4);
        // min-p = 1 keeps only the maximum.
        let mut m = Sampler::new(&SamplingParams {
            min_p: 1.0,
            top_k: 0,
            seed: Some(3),
            ..Default::default()
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(m.sample(&[0.0, 1.0, 0.99]).unwrap(), 1);
        }
    }
}
