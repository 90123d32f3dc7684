//! A session: one conversation over a shared [`Model`]. It owns its KV cache
//! (and through it the tokens of its context); the weights stay in the model.
//! Sessions of one model may run on different threads at once.

use mistral_tokenizer::Message;

use crate::api::Model;
use crate::config::MAX_UBATCH;
use crate::error::ModelError;
use crate::generate::{GenerateOptions, Generation, LanguageModel};
use crate::kv_cache::{ContextShift, KvCache};
use crate::model::SeqStep;
use crate::sampling::SamplingParams;

/// How [`Session::embed`] pools the final hidden states of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The last token's state (what a causal model has read the whole text at).
    #[default]
    Last,
    /// The mean over every token.
    Mean,
}

/// One conversation: its KV cache, the tokens of its context, and counters.
pub struct Session {
    model: Model,
    pub(crate) cache: KvCache,
    shifts: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tokens", &self.cache.tokens().len())
            .field("kv_cache_bytes", &self.cache.bytes())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(model: Model) -> Session {
        Session {
            cache: model.transformer().new_cache(),
            model,
            shifts: 0,
        }
    }

    /// The model this session runs on.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokens of the context (what the cache holds, after any context shift).
    pub fn tokens(&self) -> &[u32] {
        self.cache.tokens()
    }

    /// The position the next token takes.
    pub fn position(&self) -> usize {
        self.cache.tokens().len()
    }

    /// Empties the context (the next generation runs its whole prompt).
    pub fn reset(&mut self) {
        self.cache.reset();
    }

    /// Keeps the first `len` tokens of the context and forgets the rest
    /// (with a sliding window, only while the rolling cache has not wrapped).
    pub fn truncate(&mut self, len: usize) -> Result<(), ModelError> {
        self.cache.truncate(len)
    }

    /// Bytes of KV cache this session holds.
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Context shifts this session has made.
    pub fn context_shifts(&self) -> usize {
        self.shifts
    }

    pub(crate) fn note_shift(&mut self, shift: Option<ContextShift>) {
        if let Some(s) = shift {
            self.shifts += 1;
            tracing::debug!(keep = s.keep, discarded = s.discarded, "context shift");
        }
    }

    /// Runs `tokens` after the context and returns the logits of the last
    /// `n_last` of them, `[n_last, n_vocab]` row-major (raw logits, before
    /// any sampling). Long inputs run in steps of [`MAX_UBATCH`] tokens.
    pub fn forward(&mut self, tokens: &[u32], n_last: usize) -> Result<Vec<f32>, ModelError> {
        Ok(self.run(tokens, n_last, false)?.0)
    }

    /// Resets the context, runs `tokens` and returns an embedding of the
    /// text: the final hidden state (after the output norm) pooled over its
    /// tokens, `[n_embd]`.
    pub fn embed(&mut self, tokens: &[u32], pooling: Pooling) -> Result<Vec<f32>, ModelError> {
        self.reset();
        let hidden = self.run(tokens, 0, true)?.1;
        self.reset();
        let d = self.model.config().n_embd;
        Ok(match pooling {
            Pooling::Last => hidden[hidden.len() - d..].to_vec(),
            Pooling::Mean => {
                let mut out = vec![0f32; d];
                for row in hidden.chunks_exact(d) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
                let n = (hidden.len() / d) as f32;
                out.iter_mut().for_each(|o| *o /= n);
                out
            }
        })
    }

    /// Logits of the last `n_last` tokens and (when `hidden`) every token's
    /// final hidden state.
    fn run(
        &mut self,
        tokens: &[u32],
        n_last: usize,
        hidden: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        let n_last = n_last.min(tokens.len());
        let skip = tokens.len() - n_last;
        let model = self.model.clone();
        let (mut logits, mut states) = (Vec::new(), Vec::new());
        let mut done = 0;
        for chunk in tokens.chunks(MAX_UBATCH) {
            let want = (done + chunk.len()).saturating_sub(skip).min(chunk.len());
            let r = model.run(|t| {
                t.step(&mut [SeqStep {
                    cache: &mut self.cache,
                    tokens: chunk,
                    logits: want,
                    hidden,
                }])
            });
            let r = match r {
                Ok(mut r) => r.remove(0),
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            };
            self.note_shift(r.shift);
            logits.extend_from_slice(&r.logits);
            states.extend_from_slice(&r.hidden);
            done += chunk.len();
        }
        Ok((logits, states))
    }

    /// Completes a raw prompt (no chat template); see [`Generation`].
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        let ids = self.model.encode_prompt(prompt)?;
        self.generate_tokens(&ids, params)
    }

    /// Answers a conversation: applies the chat template and generates the
    /// assistant's next message. The context of the previous turn is reused
    /// when the new prompt extends it.
    pub fn chat(
        &mut self,
        messages: &[Message],
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        let ids = self.model.encode_chat(messages)?;
        self.generate_tokens(&ids, params)
    }

    /// Generates from prompt token ids.
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        self.generate_with(prompt, params, GenerateOptions::default())
    }

    /// Generates from prompt token ids with log-probabilities or a logits hook.
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        options: GenerateOptions,
    ) -> Result<Generation<'_>, ModelError> {
        let tokenizer = self.model.tokenizer().clone();
        Generation::with_options(self, &tokenizer, prompt, params, options)
    }
}

impl LanguageModel for Session {
    fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.forward(tokens, 1)
    }
    fn tokens(&self) -> &[u32] {
        Session::tokens(self)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn max_prompt(&self) -> Option<usize> {
        self.model.config().cache.max_prompt()
    }
    fn max_positions(&self) -> Option<usize> {
        self.model.config().cache.max_positions()
    }
    fn context_shifts(&self) -> usize {
        self.shifts
    }
    fn truncate(&mut self, len: usize) -> bool {
        self.cache.truncate(len).is_ok()
    }
}
