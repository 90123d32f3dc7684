//! The regex pre-tokenizers of byte-level BPE models, named by
//! `tokenizer.ggml.pre` (regexes from llama.cpp's `llama-vocab.cpp`).

use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _, PreTokenizerWrapper,
    SplitDelimiterBehavior,
};

use crate::TokenizerError;

/// Names accepted in `tokenizer.ggml.pre`, for error messages.
pub const SUPPORTED_NAMES: &str =
    "default, gpt2 (gpt-2), llama-bpe (llama3, llama-v3), smollm, tekken";

/// GPT-2's word splitter.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's splitter as llama.cpp writes it (the case-insensitive group spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's tekken splitter, as in its tokenizer.json. (llama.cpp rewrites the
/// `\p{Lu}`/`\p{Ll}` classes as `[^a-z]`/`[^A-Z]` letters because std::regex
/// lacks them; the rewrite differs on non-ASCII capitals, so the original is used.)
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A byte-level BPE pre-tokenizer: regexes applied in turn, each splitting
/// every piece into its matches and the text between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's fallback for files without (or with `default`) `tokenizer.ggml.pre`.
    Default,
    Gpt2,
    LlamaBpe,
    /// SmolLM: every digit alone, then GPT-2's splitter.
    Smollm,
    Tekken,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (absent: `default`, as llama.cpp).
    pub fn from_name(name: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
        Ok(match name {
            None | Some("default") => PreTokenizer::Default,
            Some("gpt2" | "gpt-2") => PreTokenizer::Gpt2,
            Some("llama-bpe" | "llama3" | "llama-v3") => PreTokenizer::LlamaBpe,
            Some("smollm") => PreTokenizer::Smollm,
            Some("tekken") => PreTokenizer::Tekken,
            Some(other) => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PreTokenizer::Default => "default",
            PreTokenizer::Gpt2 => "gpt2",
            PreTokenizer::LlamaBpe => "llama-bpe",
            PreTokenizer::Smollm => "smollm",
            PreTokenizer::Tekken => "tekken",
        }
    }

    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            PreTokenizer::Default => {
                &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]
            }
            PreTokenizer::Gpt2 => &[GPT2],
            PreTokenizer::LlamaBpe => &[LLAMA3],
            PreTokenizer::Smollm => &[r"\p{N}", GPT2],
            PreTokenizer::Tekken => &[TEKKEN],
        }
    }

    /// The regexes as `tokenizers` pre-tokenizer steps (each piece split into
    /// its matches and the text between them).
    pub(crate) fn steps(self) -> Result<Vec<PreTokenizerWrapper>, TokenizerError> {
        self.regexes()
            .iter()
            .map(|re| {
                Split::new(
                    SplitPattern::Regex((*re).to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map(PreTokenizerWrapper::from)
                .map_err(|e| TokenizerError::Bpe(e.to_string()))
            })
            .collect()
    }

    /// Splits text into the pieces BPE then encodes one by one.
    pub fn split(self, text: &str) -> Result<Vec<String>, TokenizerError> {
        let seq = Sequence::new(self.steps()?);
        let mut pts = PreTokenizedString::from(text);
        seq.pre_tokenize(&mut pts)
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        Ok(pts
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect())
    }

    /// Whether a whole pre-token that is itself in the vocabulary skips the merges.
    pub fn ignore_merges(self) -> bool {
        matches!(self, PreTokenizer::LlamaBpe | PreTokenizer::Tekken)
    }

    /// `add_bos_token` when the file does not say.
    pub fn default_add_bos(self) -> bool {
        matches!(self, PreTokenizer::LlamaBpe | PreTokenizer::Tekken)
    }
}
