//! Structured output: a [`Constraint`] (any JSON value, JSON conforming to a
//! JSON Schema, a Lark grammar, a regular expression) enforced while
//! sampling, with `llguidance` computing the allowed tokens of each step over
//! the whole vocabulary. It plugs into generation as a [`LogitsProcessor`]
//! that masks every other token's logit to −∞.
//!
//! The token trie llguidance walks is built once per model from the
//! tokenizer's byte pieces (byte-level BPE and SentencePiece with byte
//! fallback alike); control tokens get llguidance's 0xFF marker so that no
//! text matches them. End-of-generation tokens (EOS, `<|im_end|>`, ...) are
//! allowed exactly where the grammar can end.

mod ends;

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use mistral_tokenizer::Tokenizer;
use serde_json::Value;

use crate::error::ModelError;
use crate::generate::LogitsProcessor;

/// What generated text must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON value.
    Json,
    /// A JSON value conforming to this JSON Schema (the draft 2020-12 subset
    /// llguidance supports; an unsupported keyword is an error naming it).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (`start: ...`).
    Lark(String),
    /// A regular expression the whole output must match.
    Regex(String),
}

/// llguidance's JSON options for compact output: `", "` and `": "`
/// separators and no other whitespace, so that the model cannot pad its
/// output with whitespace runs (the `x-guidance` key of a schema).
pub(crate) fn compact_json() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

impl Constraint {
    /// llguidance's grammar for it (JSON written compactly: [`compact_json`]).
    fn grammar(&self) -> TopLevelGrammar {
        let schema = |mut s: Value| {
            if let Value::Object(m) = &mut s {
                m.entry("x-guidance").or_insert_with(compact_json);
            }
            TopLevelGrammar::from_json_schema(s)
        };
        match self {
            Constraint::Json => schema(serde_json::json!({})),
            Constraint::JsonSchema(s) => schema(s.clone()),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Constraint::Json => "JSON",
            Constraint::JsonSchema(_) => "JSON schema",
            Constraint::Lark(_) => "grammar",
            Constraint::Regex(_) => "regular expression",
        }
    }
}

/// The tokenizer as llguidance sees it: the trie of token bytes.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        // Only used for text the grammar forces; the trie's greedy split
        // is a valid tokenization of it (see `tokenize_is_canonical`).
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// A model's llguidance state, built on first use and shared by its
/// constraints.
pub(crate) struct Guidance {
    factory: ParserFactory,
    /// End-of-generation ids (allowed together, where the grammar may end).
    eog: Vec<u32>,
    /// The one of them llguidance's masks stand for all.
    eos: u32,
    n_vocab: usize,
}

/// [`Guidance`] of one model, built once.
#[derive(Default)]
pub(crate) struct GuidanceCell(OnceLock<Result<Arc<Guidance>, String>>);

impl GuidanceCell {
    pub(crate) fn get(&self, tok: &Tokenizer) -> Result<Arc<Guidance>, ModelError> {
        self.0
            .get_or_init(|| Guidance::new(tok).map(Arc::new))
            .clone()
            .map_err(ModelError::InvalidInput)
    }
}

impl Guidance {
    fn new(tok: &Tokenizer) -> Result<Guidance, String> {
        let n = tok.vocab_size();
        let eog = tok.eog_ids().to_vec();
        let eos = tok
            .eos_id()
            .or_else(|| eog.first().copied())
            .ok_or("the vocabulary has no end-of-generation token; output cannot be constrained")?;
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tok.token_bytes(id).unwrap_or_default();
                if bytes.is_empty() || eog.contains(&id) {
                    // A control token: never text.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tok.token_piece(id).unwrap_or_default().as_bytes());
                    w
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tok.bos_id();
        info.tok_unk = tok.unk_id();
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Env { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Guidance {
            factory,
            eog,
            eos,
            n_vocab: n,
        })
    }

    /// A processor enforcing `c`; a grammar that does not compile is an
    /// error naming what is wrong.
    pub(crate) fn processor(&self, c: &Constraint) -> Result<ConstraintProcessor, ModelError> {
        // llguidance's messages may append a dump of the parser's state:
        // the first line says what is wrong.
        let invalid = |e: &dyn std::fmt::Display| {
            let e = e.to_string();
            let what = e.split("<state>").next().unwrap_or_default();
            let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
            if matches!(what.as_str(), "NoExtension" | "NoExtensionBias") {
                ModelError::InvalidConstraint(format!("the {} matches no text", c.kind()))
            } else {
                ModelError::InvalidConstraint(format!("invalid {}: {what}", c.kind()))
            }
        };
        if let Constraint::Lark(g) = c {
            if let Some(rule) = ends::start_cannot_end(g) {
                return Err(ModelError::InvalidConstraint(format!(
                    "the grammar cannot end: rule {rule} never derives a finite text"
                )));
            }
        }
        let parser = self
            .factory
            .create_parser(c.grammar())
            .map_err(|e| invalid(&e))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(&e));
        }
        // A grammar that allows nothing at all cannot be generated.
        match matcher.compute_mask() {
            Ok(m) if m.num_set() == 0 && !matcher.is_accepting().unwrap_or(false) => {
                return Err(ModelError::InvalidConstraint(format!(
                    "the {} matches no text",
                    c.kind()
                )))
            }
            Err(e) => return Err(invalid(&e)),
            Ok(_) => {}
        }
        Ok(ConstraintProcessor {
            matcher,
            eog: self.eog.clone(),
            eos: self.eos,
            n_vocab: self.n_vocab,
            consumed: 0,
        })
    }
}

/// Masks the logits of every token the constraint does not allow next.
pub struct ConstraintProcessor {
    matcher: Matcher,
    eog: Vec<u32>,
    eos: u32,
    n_vocab: usize,
    /// Generated tokens already fed to the matcher.
    consumed: usize,
}

impl ConstraintProcessor {
    /// Feeds `generated[consumed..]` to the matcher.
    fn catch_up(&mut self, generated: &[u32]) {
        for &id in generated.get(self.consumed..).unwrap_or(&[]) {
            if self.eog.contains(&id) || self.matcher.is_stopped() {
                continue;
            }
            // A token the mask did not allow (only with a processor run
            // after this one): the matcher is then in error and allows EOS only.
            let _ = self.matcher.consume_token(id);
        }
        self.consumed = generated.len();
    }
}

impl LogitsProcessor for ConstraintProcessor {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        self.catch_up(generated);
        let mask = if self.matcher.is_error() {
            None
        } else {
            self.matcher.compute_mask_or_eos().ok()
        };
        let n = logits.len().min(self.n_vocab);
        match mask {
            Some(mask) => {
                // The mask allows EOS exactly where the grammar can end
                // (or has ended: then it allows nothing else).
                let end = mask.is_allowed(self.eos);
                let eog: Vec<(u32, f32)> = self
                    .eog
                    .iter()
                    .filter_map(|&id| logits.get(id as usize).map(|&l| (id, l)))
                    .collect();
                for (id, l) in logits[..n].iter_mut().enumerate() {
                    if !mask.is_allowed(id as u32) {
                        *l = f32::NEG_INFINITY;
                    }
                }
                for (id, l) in eog {
                    logits[id as usize] = if end { l } else { f32::NEG_INFINITY };
                }
            }
            None => {
                // No way on: only ending is allowed.
                for (id, l) in logits[..n].iter_mut().enumerate() {
                    if !self.eog.contains(&(id as u32)) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        for l in logits.iter_mut().skip(n) {
            *l = f32::NEG_INFINITY;
        }
    }
}
