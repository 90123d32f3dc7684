//! The generation loop: prefill a prompt, then sample and decode one token at
//! a time, streaming each token's text as soon as it is sampled.
//!
//! What happens to one sampled token (the logits hook, log-probabilities,
//! sampling, end-of-generation, stop strings, the token limit, detokenizing)
//! is [`Decoding`]'s job, shared by the single-session [`Generation`] iterator
//! and the batch scheduler ([`crate::Scheduler`]).
//!
//! [`Generation`] is an [`Iterator`] of [`GeneratedToken`]s. It stops on an
//! end-of-generation token ([`Tokenizer::is_eog`]), on a user stop string (whose text
//! is never returned), after `max_tokens`, or when the model's context is full. The
//! model only runs when the caller asks for the next token, so dropping the
//! iterator (Ctrl-C in the chat) stops generation at once.
//!
//! The loop is written against the small [`LanguageModel`] trait, implemented by
//! [`crate::Session`]; tests drive it with scripted toy models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_tokenizer::{StreamDecoder, Tokenizer};

use crate::config::MAX_UBATCH;
use crate::sampling::{Sampler, SamplingParams};
use crate::session::Session;
use crate::ModelError;

/// What the generation loop needs from a model.
pub trait LanguageModel {
    /// Runs `tokens` after the context (appending them to it) and returns the
    /// logits of the last one (`[vocab]`).
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError>;
    /// The tokens of the context, as the cache holds them (after any context shift).
    fn tokens(&self) -> &[u32];
    /// Empties the context.
    fn reset(&mut self);
    /// The most tokens a prompt may have; `None`: any (a rolling window).
    fn max_prompt(&self) -> Option<usize>;
    /// The most positions the model can process since a reset; `None` when
    /// generation may go on indefinitely (a rolling window, or context shifts).
    fn max_positions(&self) -> Option<usize>;
    /// How many context shifts the model has made since it was created.
    fn context_shifts(&self) -> usize {
        0
    }
    /// Keeps the first `len` tokens of the context; `false` when it cannot
    /// (the caller then resets).
    fn truncate(&mut self, _len: usize) -> bool {
        false
    }
}

/// How much of `cached` a new `prompt` can keep: their common start, less
/// at least one prompt token (whose logits the first sample needs).
pub(crate) fn reusable(cached: &[u32], prompt: &[u32]) -> usize {
    cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len().saturating_sub(1))
}

/// A hook that sees (and may change) the logits of every step before the
/// sampler, e.g. to constrain output to a grammar.
pub trait LogitsProcessor: Send {
    /// `generated` lists the ids sampled so far in this generation.
    fn process(&mut self, generated: &[u32], logits: &mut [f32]);
}

impl<F: FnMut(&[u32], &mut [f32]) + Send> LogitsProcessor for F {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        self(generated, logits)
    }
}

/// Cancels a request from any thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Options of a generation beyond its prompt and sampling parameters.
#[derive(Default)]
pub struct GenerateOptions {
    /// Report each sampled token's log-probability and the `n` most likely
    /// alternatives (`Some(0)`: the sampled token's only).
    pub logprobs: Option<usize>,
    /// Runs on the logits of every step, before sampling.
    pub processor: Option<Box<dyn LogitsProcessor>>,
    /// Stops the generation between two steps (also between two chunks of
    /// a long prompt) when cancelled from another thread.
    pub cancel: Option<CancelToken>,
    /// Run the whole prompt in an empty context instead of reusing the
    /// cached start of an earlier one (llama-server's `cache_prompt: false`).
    /// Slower for a follow-up turn, but the result no longer depends on
    /// where an earlier request split the prompt: the kernels' rounding
    /// differs with the number of tokens run together, which can flip a
    /// greedy choice between two near-equal tokens.
    pub fresh_context: bool,
}

impl std::fmt::Debug for GenerateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("logprobs", &self.logprobs)
            .field("processor", &self.processor.is_some())
            .field("fresh_context", &self.fresh_context)
            .finish()
    }
}

/// A sampled token's log-probability under the model (log-softmax of the
/// logits after the [`LogitsProcessor`], before penalties and temperature),
/// and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// `(id, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// One sampled token and the text it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    /// The sampled id.
    pub id: u32,
    /// Text that became final with this token: may be empty (half a UTF-8 character,
    /// a control token, or text held back because it could start a stop string) or
    /// hold earlier held-back text too. Concatenating every item's `text` gives the
    /// whole completion.
    pub text: String,
    /// When asked for ([`GenerateOptions::logprobs`]).
    pub logprob: Option<TokenLogprob>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model sampled an end-of-generation token (EOS, `<|im_end|>`, ...).
    EndOfGeneration,
    /// The text reached one of the user's stop strings.
    StopString,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The model's context is full.
    ContextFull,
    /// The request was cancelled.
    Cancelled,
}

/// Counters and timings of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens already in the KV cache from the previous turn (not re-run).
    pub reused_tokens: usize,
    /// Time of the prompt's forward passes.
    pub prefill_time: Duration,
    /// Tokens sampled (including a final end-of-generation token).
    pub generated_tokens: usize,
    /// One-token forward steps run after the prefill.
    pub decode_steps: usize,
    /// Time of those steps.
    pub decode_time: Duration,
    /// Time spent sampling (filters and draw).
    pub sample_time: Duration,
    /// Context shifts made during this generation.
    pub context_shifts: usize,
}

impl GenerationStats {
    /// Prompt tokens actually run, per second of prefill.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens - self.reused_tokens, self.prefill_time)
    }
    /// Decode steps per second.
    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.decode_steps, self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// The state of one request between its steps: sampler, logits hook, stop
/// strings, streamed text and finish reason.
pub(crate) struct Decoding {
    tokenizer: Tokenizer,
    decoder: StreamDecoder,
    sampler: Sampler,
    stop: Vec<String>,
    ignore_eos: bool,
    max_tokens: Option<usize>,
    logprobs: Option<usize>,
    processor: Option<Box<dyn LogitsProcessor>>,
    cancel: Option<CancelToken>,
    generated: Vec<u32>,
    /// Decoded text not yet returned because it may be the start of a stop string.
    held: String,
    text: String,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) stats: GenerationStats,
}

impl Decoding {
    /// Validates the request and records the prompt in the sampler's
    /// repetition window.
    pub(crate) fn new(
        tokenizer: &Tokenizer,
        prompt: &[u32],
        params: &SamplingParams,
        options: GenerateOptions,
        max_prompt: Option<usize>,
    ) -> Result<Decoding, ModelError> {
        let mut sampler = Sampler::new(params)?;
        if prompt.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if let Some(max) = max_prompt {
            if prompt.len() > max {
                return Err(ModelError::PromptTooLong {
                    prompt_tokens: prompt.len(),
                    context: max,
                });
            }
        }
        let n_vocab = tokenizer.vocab_size();
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id: bad, n_vocab });
        }
        if options.logprobs.is_some_and(|n| n > n_vocab) {
            return Err(ModelError::InvalidInput(format!(
                "{} log-probabilities asked for a vocabulary of {n_vocab}",
                options.logprobs.unwrap_or(0)
            )));
        }
        for &id in prompt {
            sampler.accept(id);
        }
        Ok(Decoding {
            tokenizer: tokenizer.clone(),
            decoder: tokenizer.stream_decoder(),
            sampler,
            stop: params.stop.clone(),
            ignore_eos: params.ignore_eos,
            max_tokens: params.max_tokens,
            logprobs: options.logprobs,
            processor: options.processor,
            cancel: options.cancel,
            generated: Vec::new(),
            held: String::new(),
            text: String::new(),
            finish: (params.max_tokens == Some(0)).then_some(FinishReason::MaxTokens),
            stats: GenerationStats {
                prompt_tokens: prompt.len(),
                ..Default::default()
            },
        })
    }

    /// The sampler's seed.
    pub(crate) fn seed(&self) -> u64 {
        self.sampler.seed()
    }

    /// The completion returned so far.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Samples the next token from `logits`. `context_full`: the sampled
    /// token could not be fed to the model, so generation ends with it.
    /// Sets [`Decoding::finish`] when this token ends the generation.
    pub(crate) fn sample(
        &mut self,
        mut logits: Vec<f32>,
        context_full: bool,
    ) -> Result<GeneratedToken, ModelError> {
        let start = Instant::now();
        if let Some(p) = &mut self.processor {
            p.process(&self.generated, &mut logits);
        }
        // A model whose output rows are padded past the tokenizer's vocabulary
        // must not produce ids the tokenizer cannot decode.
        let n_vocab = self.tokenizer.vocab_size().min(logits.len());
        logits.truncate(n_vocab);
        let logprob_of = self.logprobs.map(|n| log_softmax_top(&logits, n));
        if self.ignore_eos {
            for &eog in self.tokenizer.eog_ids() {
                if let Some(l) = logits.get_mut(eog as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let sampled = self.sampler.sample(&logits);
        self.stats.sample_time += start.elapsed();
        let id = sampled?;
        self.sampler.accept(id);
        self.generated.push(id);
        self.stats.generated_tokens += 1;
        let logprob = logprob_of.map(|(lse, top)| TokenLogprob {
            logprob: logits
                .get(id as usize)
                .map_or(f32::NEG_INFINITY, |l| l - lse),
            top,
        });

        if self.tokenizer.is_eog(id) {
            self.finish = Some(FinishReason::EndOfGeneration);
            let text = self.flush()?;
            return Ok(self.emit(id, text, logprob));
        }
        if let Some(t) = self.decoder.push(id)? {
            self.held.push_str(&t);
        }
        let mut text = self.release(false);
        if self.finish.is_some() {
            return Ok(self.emit(id, text, logprob));
        }
        let at_max = self
            .max_tokens
            .is_some_and(|max| self.stats.generated_tokens >= max);
        if at_max || context_full {
            self.finish = Some(if context_full {
                FinishReason::ContextFull
            } else {
                FinishReason::MaxTokens
            });
            text.push_str(&self.flush()?);
            // A stop string completed by the flush still wins.
        }
        Ok(self.emit(id, text, logprob))
    }

    /// Whether the request's own cancel token was used.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    /// Ends the generation early (cancelled); text held back is dropped.
    pub(crate) fn cancel(&mut self) {
        self.finish.get_or_insert(FinishReason::Cancelled);
    }

    fn emit(&mut self, id: u32, text: String, logprob: Option<TokenLogprob>) -> GeneratedToken {
        self.text.push_str(&text);
        GeneratedToken { id, text, logprob }
    }

    /// Splits `held` into text that is safe to return and text that may still
    /// become a stop string; stops when a stop string is complete.
    fn release(&mut self, at_end: bool) -> String {
        let first_stop = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(i) = first_stop {
            self.held.truncate(i);
            self.finish = Some(FinishReason::StopString);
            return std::mem::take(&mut self.held);
        }
        if at_end {
            return std::mem::take(&mut self.held);
        }
        let keep = held_back_len(&self.held, &self.stop);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        out
    }

    /// Text still held at the end (an incomplete character, a partial stop string).
    fn flush(&mut self) -> Result<String, ModelError> {
        if let Some(t) = self.decoder.finish()? {
            self.held.push_str(&t);
        }
        Ok(self.release(true))
    }
}

/// `(log Σ exp(logits), the n largest (id, logprob))`, accumulated in f64.
fn log_softmax_top(logits: &[f32], n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() < n || l > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, x)| x >= l);
                top.insert(at, (i as u32, l));
                top.truncate(n);
            }
        }
    }
    (lse, top.into_iter().map(|(i, l)| (i, l - lse)).collect())
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string
/// (on a char boundary): that much must wait for the next token.
fn held_back_len(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        let max = (s.len() - 1).min(text.len());
        for n in (keep + 1..=max).rev() {
            let start = text.len() - n;
            if text.is_char_boundary(start) && s.starts_with(&text[start..]) {
                keep = n;
                break;
            }
        }
    }
    keep
}

/// A running generation: an iterator of [`GeneratedToken`]s (see the module docs).
///
/// Created by [`Session::generate`] / [`Session::chat`], or directly with
/// [`Generation::new`] over any [`LanguageModel`].
pub struct Generation<'a, M: LanguageModel = Session> {
    model: &'a mut M,
    decoding: Decoding,
    /// Logits to sample the next token from.
    logits: Option<Vec<f32>>,
    /// Sampled token still to be fed to the model (lazily, on the next call).
    to_feed: Option<u32>,
    /// An error ended the generation.
    failed: bool,
    shifts_at_start: usize,
}

impl<'a, M: LanguageModel> Generation<'a, M> {
    /// Validates `params`, checks the prompt fits the context, and runs the prompt
    /// through the model.
    ///
    /// The context of an earlier generation is kept as far as it agrees with
    /// `prompt` (a chat's previous turns), and only the rest is run;
    /// otherwise the context is reset.
    pub fn new(
        model: &'a mut M,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        params: &SamplingParams,
    ) -> Result<Self, ModelError> {
        Self::with_options(model, tokenizer, prompt, params, GenerateOptions::default())
    }

    /// [`Generation::new`] with log-probabilities or a logits hook.
    pub fn with_options(
        model: &'a mut M,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        params: &SamplingParams,
        options: GenerateOptions,
    ) -> Result<Self, ModelError> {
        let fresh = options.fresh_context;
        let mut decoding = Decoding::new(tokenizer, prompt, params, options, model.max_prompt())?;
        let cached = model.tokens();
        let common = if fresh { 0 } else { reusable(cached, prompt) };
        let reuse = if common == cached.len() || (common > 0 && model.truncate(common)) {
            common
        } else {
            model.reset();
            0
        };
        let shifts_at_start = model.context_shifts();
        let start = Instant::now();
        // In chunks, so that a cancel token stops a long prompt between two;
        // the context then holds the start of the prompt, which the next
        // generation may reuse.
        let mut logits = Vec::new();
        for chunk in prompt[reuse..].chunks(MAX_UBATCH) {
            if decoding.cancelled() {
                return Err(ModelError::Cancelled);
            }
            logits = match model.forward_last(chunk) {
                Ok(l) => l,
                Err(e) => {
                    model.reset();
                    return Err(e);
                }
            };
        }
        decoding.stats.prefill_time = start.elapsed();
        decoding.stats.reused_tokens = reuse;
        Ok(Generation {
            model,
            decoding,
            logits: Some(logits),
            to_feed: None,
            failed: false,
            shifts_at_start,
        })
    }

    /// Counters and timings so far.
    pub fn stats(&self) -> GenerationStats {
        let mut s = self.decoding.stats;
        s.context_shifts = self.model.context_shifts() - self.shifts_at_start;
        s
    }

    /// Why generation ended (`None` while it runs).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.decoding.finish
    }

    /// The completion returned so far (the concatenated `text` of every item).
    pub fn text(&self) -> &str {
        self.decoding.text()
    }

    /// The sampler's seed (useful when `params.seed` was `None`).
    pub fn seed(&self) -> u64 {
        self.decoding.seed()
    }

    /// The model being run.
    pub fn model(&self) -> &M {
        self.model
    }

    /// Runs the iterator to the end and returns the whole completion.
    pub fn collect_text(mut self) -> Result<String, ModelError> {
        for item in self.by_ref() {
            item?;
        }
        Ok(self.decoding.text().to_string())
    }

    fn fail(&mut self, e: ModelError) -> Option<Result<GeneratedToken, ModelError>> {
        // The KV cache may hold part of a failed step: start afresh next time.
        self.model.reset();
        self.failed = true;
        Some(Err(e))
    }
}

impl<M: LanguageModel> Iterator for Generation<'_, M> {
    type Item = Result<GeneratedToken, ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.decoding.finish.is_some() || self.failed {
            return None;
        }
        if self.decoding.cancelled() {
            self.decoding.cancel();
            return None;
        }
        if let Some(id) = self.to_feed.take() {
            let start = Instant::now();
            let r = self.model.forward_last(&[id]);
            self.decoding.stats.decode_time += start.elapsed();
            match r {
                Ok(l) => {
                    self.decoding.stats.decode_steps += 1;
                    self.logits = Some(l);
                }
                Err(e) => return self.fail(e),
            }
        }
        let logits = self.logits.take()?;
        let context_full = self
            .model
            .max_positions()
            .is_some_and(|max| self.model.tokens().len() >= max);
        match self.decoding.sample(logits, context_full) {
            Ok(t) => {
                if self.decoding.finish.is_none() {
                    self.to_feed = Some(t.id);
                }
                Some(Ok(t))
            }
            Err(e) => self.fail(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loop on scripted toy models with a SentencePiece tokenizer (the
    //! synthetic models' generated vocabulary): the
    //! expected text is always `Tokenizer::decode` of the scripted ids, an
    //! independent path through the tokenizer.
    use super::*;

    fn tokenizer() -> Tokenizer {
        let file = crate::synth::default_vocab().unwrap();
        Tokenizer::from_gguf(&file).unwrap()
    }

    /// Emits `script` greedily after the prompt, then EOS; records every forward's length.
    struct Scripted {
        script: Vec<u32>,
        prompt_len: usize,
        n_vocab: usize,
        eos: u32,
        tokens: Vec<u32>,
        max: Option<usize>,
        calls: Vec<usize>,
        resets: usize,
        fail_at: Option<usize>,
    }

    impl Scripted {
        fn new(tok: &Tokenizer, script: Vec<u32>, prompt_len: usize) -> Scripted {
            Scripted {
                script,
                prompt_len,
                n_vocab: tok.vocab_size(),
                eos: tok.eos_id().unwrap(),
                tokens: Vec::new(),
                max: None,
                calls: Vec::new(),
                resets: 0,
                fail_at: None,
            }
        }
    }

    impl LanguageModel for Scripted {
        fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
            if self.fail_at == Some(self.calls.len()) {
                return Err(ModelError::Tensor("scripted failure".into()));
            }
            self.calls.push(tokens.len());
            self.tokens.extend_from_slice(tokens);
            let k = self.tokens.len() - self.prompt_len;
            let next = self.script.get(k).copied().unwrap_or(self.eos);
            let mut logits = vec![0.0; self.n_vocab];
            logits[next as usize] = 10.0;
            Ok(logits)
        }
        fn tokens(&self) -> &[u32] {
            &self.tokens
        }
        fn reset(&mut self) {
            self.tokens.clear();
            self.resets += 1;
        }
        fn max_prompt(&self) -> Option<usize> {
            self.max
        }
        fn max_positions(&self) -> Option<usize> {
            self.max
        }
    }

    const TEXT: &str = "The cat sat on the mat. Ünïcödé and emoji 🐈 too, then the end.";

    fn setup(tok: &Tokenizer) -> (Vec<u32>, Vec<u32>) {
        let prompt = tok.encode("Tell me about cats:", true, false).unwrap();
        let script = tok.encode(TEXT, false, false).unwrap();
        assert_eq!(tok.decode(&script).unwrap(), TEXT);
        (prompt, script)
    }

    fn greedy() -> SamplingParams {
        SamplingParams::greedy()
    }

    #[test]
    fn streams_the_script_then_stops_on_eos() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script.clone(), prompt.len());
        let mut g = Generation::new(&mut m, &tok, &prompt, &greedy()).unwrap();
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut k = 0;
        while let Some(item) = g.next() {
            let t = item.unwrap();
            // Lazy: item k is returned after exactly the prefill and k decode steps.
            assert_eq!(
                g.model().calls.len(),
                1 + k,
                "token {k} waited for a forward it does not need"
            );
            ids.push(t.id);
            text.push_str(&t.text);
            k += 1;
        }
        assert_eq!(g.finish_reason(), Some(FinishReason::EndOfGeneration));
        let eos = tok.eos_id().unwrap();
        assert_eq!(ids, [script.clone(), vec![eos]].concat());
        assert_eq!(text, TEXT);
        assert_eq!(g.text(), TEXT);
        let stats = g.stats();
        assert_eq!(stats.prompt_tokens, prompt.len());
        assert_eq!(stats.generated_tokens, script.len() + 1);
        assert_eq!(stats.decode_steps, script.len());
        // One batched prefill, then one token per step.
        let calls = g.model().calls.clone();
        assert_eq!(calls[0], prompt.len());
        assert!(calls[1..].iter().all(|&n| n == 1));
        drop(g);
        // The context matches what was fed: prompt + script (EOS is not fed).
        assert_eq!(m.tokens, [prompt, script].concat());
    }

    #[test]
    fn max_tokens_stops_without_an_extra_forward() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        for n in [1usize, 3, 7] {
            let mut m = Scripted::new(&tok, script.clone(), prompt.len());
            let params = SamplingParams {
                max_tokens: Some(n),
                ..greedy()
            };
            let mut g = Generation::new(&mut m, &tok, &prompt, &params).unwrap();
            let items: Vec<_> = g.by_ref().map(|t| t.unwrap()).collect();
            assert_eq!(items.len(), n);
            assert_eq!(g.finish_reason(), Some(FinishReason::MaxTokens));
            assert_eq!(g.text(), tok.decode(&script[..n]).unwrap());
            assert_eq!(g.model().calls.len(), n, "prefill + {} steps", n - 1);
        }
        let mut m = Scripted::new(&tok, script.clone(), prompt.len());
        let params = SamplingParams {
            max_tokens: Some(0),
            ..greedy()
        };
        let mut g = Generation::new(&mut m, &tok, &prompt, &params).unwrap();
        assert!(g.next().is_none());
    }

    #[test]
    fn ignore_eos_generates_past_the_end_of_the_script() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script.clone(), prompt.len());
        let n = script.len() + 3;
        let params = SamplingParams {
            max_tokens: Some(n),
            ignore_eos: true,
            ..greedy()
        };
        let mut g = Generation::new(&mut m, &tok, &prompt, &params).unwrap();
        let ids: Vec<u32> = g.by_ref().map(|t| t.unwrap().id).collect();
        assert_eq!(ids.len(), n);
        assert_eq!(ids[..script.len()], script[..]);
        assert!(ids.iter().all(|&id| !tok.is_eog(id)), "{ids:?}");
        assert_eq!(g.finish_reason(), Some(FinishReason::MaxTokens));
    }

    #[test]
    fn stop_strings_end_the_text_right_before_them() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let chars: Vec<(usize, char)> = TEXT.char_indices().collect();
        let mut cases: Vec<Vec<String>> = Vec::new();
        // Every substring of 1..=6 chars starting at every 3rd char, plus multi-stop sets.
        for (i, &(start, _)) in chars.iter().enumerate().step_by(3) {
            for len in 1..=6 {
                if let Some(&(end, _)) = chars.get(i + len) {
                    cases.push(vec![TEXT[start..end].to_string()]);
                }
            }
        }
        cases.push(vec!["end.".into(), "mat".into()]);
        cases.push(vec!["not there".into(), "🐈".into()]);
        cases.push(vec!["not there".into()]);
        cases.push(vec!["the end.!".into()]); // a prefix matches at the very end only
        for stops in cases {
            let mut m = Scripted::new(&tok, script.clone(), prompt.len());
            let params = SamplingParams {
                stop: stops.clone(),
                ..greedy()
            };
            let mut g = Generation::new(&mut m, &tok, &prompt, &params).unwrap();
            let mut text = String::new();
            for t in g.by_ref() {
                let t = t.unwrap();
                for s in &stops {
                    assert!(
                        !t.text.contains(s.as_str()),
                        "{stops:?}: piece {:?} leaks a stop string",
                        t.text
                    );
                }
                text.push_str(&t.text);
            }
            let cut = stops.iter().filter_map(|s| TEXT.find(s.as_str())).min();
            let expected = &TEXT[..cut.unwrap_or(TEXT.len())];
            assert_eq!(text, expected, "stops {stops:?}");
            let reason = if cut.is_some() {
                FinishReason::StopString
            } else {
                FinishReason::EndOfGeneration
            };
            assert_eq!(g.finish_reason(), Some(reason), "stops {stops:?}");
        }
    }

    #[test]
    fn held_back_text_is_the_longest_stop_prefix() {
        let stops = vec!["</end>".to_string(), "STOP".to_string()];
        assert_eq!(held_back_len("hello </e", &stops), 3);
        assert_eq!(held_back_len("hello ST", &stops), 2);
        assert_eq!(held_back_len("hello", &stops), 0);
        assert_eq!(held_back_len("<", &stops), 1);
        assert_eq!(held_back_len("é", &["éa".to_string()]), 2);
    }

    #[test]
    fn prompt_longer_than_the_context_is_an_error() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script, prompt.len());
        m.max = Some(prompt.len() - 1);
        let err = Generation::new(&mut m, &tok, &prompt, &greedy())
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains(&prompt.len().to_string())
                && msg.contains(&(prompt.len() - 1).to_string()),
            "{msg}"
        );
        assert!(m.calls.is_empty());
        let err = Generation::new(&mut m, &tok, &[], &greedy()).err().unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
        let bad = SamplingParams {
            temperature: -1.0,
            ..greedy()
        };
        let err = Generation::new(&mut m, &tok, &prompt, &bad).err().unwrap();
        assert!(err.to_string().contains("temperature"), "{err}");
        let err = Generation::new(&mut m, &tok, &[1, 99_999], &greedy())
            .err()
            .unwrap();
        assert!(err.to_string().contains("99999"), "{err}");
        assert!(m.calls.is_empty());
    }

    #[test]
    fn full_context_ends_generation() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script.clone(), prompt.len());
        m.max = Some(prompt.len() + 3);
        let mut g = Generation::new(&mut m, &tok, &prompt, &greedy()).unwrap();
        let ids: Vec<u32> = g.by_ref().map(|t| t.unwrap().id).collect();
        // Three tokens fill the cache; a fourth is sampled from the last logits.
        assert_eq!(ids, script[..4].to_vec());
        assert_eq!(g.finish_reason(), Some(FinishReason::ContextFull));
        assert_eq!(g.model().tokens.len(), prompt.len() + 3);
    }

    #[test]
    fn a_prompt_extending_the_cache_runs_only_the_new_tokens() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script.clone(), prompt.len());
        let params = SamplingParams {
            max_tokens: Some(4),
            ..greedy()
        };
        let ids: Vec<u32> = Generation::new(&mut m, &tok, &prompt, &params)
            .unwrap()
            .map(|t| t.unwrap().id)
            .collect();
        // The 4th token was sampled but not fed.
        assert_eq!(m.tokens, [&prompt[..], &ids[..3]].concat());
        // Next turn: everything so far plus two new tokens.
        let next_prompt = [&m.tokens[..], &ids[3..], &[5, 6]].concat();
        m.calls.clear();
        m.prompt_len = next_prompt.len();
        let g = Generation::new(&mut m, &tok, &next_prompt, &params).unwrap();
        assert_eq!(g.stats().reused_tokens, prompt.len() + 3);
        assert_eq!(g.model().calls, vec![3]);
        assert_eq!(g.model().resets, 0);
        drop(g);
        // A prompt that does not extend the cache resets it and runs in full.
        m.calls.clear();
        m.prompt_len = prompt.len();
        let g = Generation::new(&mut m, &tok, &prompt, &params).unwrap();
        assert_eq!(g.stats().reused_tokens, 0);
        assert_eq!(g.model().calls, vec![prompt.len()]);
        assert_eq!(g.model().resets, 1);
    }

    #[test]
    fn a_failing_step_is_an_error_item_then_the_end() {
        let tok = tokenizer();
        let (prompt, script) = setup(&tok);
        let mut m = Scripted::new(&tok, script, prompt.len());
        m.fail_at = Some(3);
        let mut g = Generation::new(&mut m, &tok, &prompt, &greedy()).unwrap();
        let items: Vec<_> = g.by_ref().collect();
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(|i| i.is_ok()));
        assert!(items[3]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("scripted failure"));
        assert!(g.next().is_none());
        drop(g);
        assert!(
            m.tokens.is_empty(),
            "the cache is forgotten after a failure"
        );
    }

    #[test]
    fn sampling_is_reproducible_with_a_seed() {
        // A toy whose logits are a fixed function of the position: sampled runs
        // with the same seed give the same ids, other seeds differ.
        struct Flat(usize, Vec<u32>);
        impl LanguageModel for Flat {
            fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
                self.1.extend_from_slice(tokens);
                let pos = self.1.len();
                Ok((0..self.0)
                    .map(|i| ((i * 7 + pos * 13) % 17) as f32 * 0.3)
                    .collect())
            }
            fn tokens(&self) -> &[u32] {
                &self.1
            }
            fn reset(&mut self) {
                self.1.clear();
            }
            fn max_prompt(&self) -> Option<usize> {
                None
            }
            fn max_positions(&self) -> Option<usize> {
                None
            }
        }
        let tok = tokenizer();
        let run = |seed| {
            let mut m = Flat(tok.vocab_size(), Vec::new());
            let eos = tok.eos_id().unwrap();
            let params = SamplingParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed: Some(seed),
                max_tokens: Some(30),
                ..Default::default()
            };
            let ids: Vec<u32> = Generation::new(&mut m, &tok, &[1, 100, 200], &params)
                .unwrap()
                .map(|t| t.unwrap().id)
                .collect();
            assert!(ids.len() == 30 || ids.last() == Some(&eos));
            ids
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
