//! Tokenizers and chat templates read from a GGUF file's metadata, so a model
//! file is all a user needs.
//!
//! - `llama` vocabularies (Mistral 7B, Mixtral, Mistral v0.3 with its `[INST]`
//!   control tokens): SentencePiece BPE by piece score with byte fallback
//!   (written here, see `spm`).
//! - `gpt2` vocabularies (SmolLM2, tekken): byte-level BPE with merges and the
//!   `tokenizer.ggml.pre` regex pre-tokenizer, on the `tokenizers` crate.
//! - Chat templates: `tokenizer.chat_template` rendered with minijinja, or
//!   Mistral's instruct format when the file has none.
//!
//! ```no_run
//! let file = mistral_gguf::GgufFile::open("mistral.gguf")?;
//! let tok = mistral_tokenizer::Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("Hello world", true, false)?;
//! assert_eq!(tok.decode(&ids)?, "Hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bpe;
mod chat;
mod decode;
mod error;
mod hash;
mod pretok;
mod special;
mod spm;
mod vocab;

use std::sync::Arc;

use mistral_gguf::{keys, GgufFile, Metadata};

pub use chat::{py_json_dumps, ChatTemplate, Message, MistralFormat, ToolCall};
pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use pretok::PreTokenizer;
pub use vocab::{ModelKind, TokenKind};

use special::Fragment;
use vocab::Vocab;

/// Where SentencePiece's dummy-prefix space goes when a prompt is split
/// around special tokens (only matters with `parse_special`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacePrefix {
    /// Before the first text and after every special token: llama.cpp's rule,
    /// and Hugging Face's `legacy: true` tokenizers (Llama 2, Mistral v0.1/v0.2),
    /// whose prompts write `<s>[INST] ...` and expect `▁[INST]`.
    AfterSpecial,
    /// Only when the text starts the prompt: Hugging Face's `legacy: false`
    /// (Mistral v0.3 and later SentencePiece vocabularies, whose prompts write
    /// `[INST] text[/INST] answer`, the space in the text being the prefix, as
    /// mistral-common tokenizes them).
    AtStart,
}

#[derive(Debug, Clone)]
enum Model {
    Spm(Box<spm::Spm>),
    Bpe(Box<bpe::ByteBpe>),
}

#[derive(Debug)]
struct Inner {
    vocab: Vocab,
    model: Model,
    pre: Option<PreTokenizer>,
    /// Special-token ids, longest text first.
    specials: Vec<u32>,
    /// What each id decodes to.
    pieces: Vec<Box<[u8]>>,
}

/// A tokenizer built from GGUF metadata. Cheap to clone (shared vocabulary).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
    space_prefix: SpacePrefix,
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model_kind = ModelKind::from_name(md.get_str(keys::TOKENIZER_MODEL)?)?;
        let pre = match model_kind {
            ModelKind::SentencePiece => None,
            ModelKind::ByteLevelBpe => {
                let name = match md.get(keys::TOKENIZER_PRE) {
                    Some(_) => Some(md.get_str(keys::TOKENIZER_PRE)?),
                    None => None,
                };
                Some(PreTokenizer::from_name(name)?)
            }
        };
        let default_add_bos = match pre {
            None => true,
            Some(p) => p.default_add_bos(),
        };
        let vocab = Vocab::from_metadata(md, model_kind, default_add_bos)?;
        let model = match pre {
            None => Model::Spm(Box::new(spm::Spm::new(&vocab))),
            Some(pre) => {
                let merges = md.get_string_array(keys::TOKENIZER_MERGES)?;
                Model::Bpe(Box::new(bpe::ByteBpe::new(&vocab, merges, pre)?))
            }
        };
        let space_prefix = match vocab.id("[INST]").and_then(|id| vocab.kind(id)) {
            Some(TokenKind::Control) => SpacePrefix::AtStart,
            _ => SpacePrefix::AfterSpecial,
        };
        let specials = vocab.special_tokens();
        let pieces = decode::piece_bytes(&vocab, model_kind);
        Ok(Tokenizer {
            inner: Arc::new(Inner {
                vocab,
                model,
                pre,
                specials,
                pieces,
            }),
            space_prefix,
        })
    }

    /// Builds the tokenizer from an open GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_metadata(file.metadata())
    }

    /// Text to ids. `add_bos`: add BOS (and EOS) where the model asks for them
    /// (`tokenizer.ggml.add_bos_token` / `add_eos_token`, llama.cpp's
    /// `add_special`). `parse_special`: control tokens written in `text`
    /// (`[INST]`, `<|im_start|>`, `<s>`) become their ids; otherwise they are
    /// plain text. User-defined tokens are always matched.
    pub fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let inner = &*self.inner;
        let vocab = &inner.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && vocab.add_bos {
            out.push(vocab.bos.ok_or(TokenizerError::MissingBos)?);
        }
        let frags = special::partition(vocab, &inner.specials, text, parse_special);
        let mut after_special = true;
        for frag in frags {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(range) => {
                    let part = &text[range.clone()];
                    match &inner.model {
                        Model::Spm(spm) => {
                            let prefix = vocab.add_space_prefix
                                && match self.space_prefix {
                                    SpacePrefix::AfterSpecial => after_special,
                                    SpacePrefix::AtStart => range.start == 0,
                                };
                            spm.encode(part, prefix, &mut out)?;
                        }
                        Model::Bpe(bpe) => bpe.encode(part, &mut out)?,
                    }
                    after_special = false;
                }
            }
        }
        if add_bos && vocab.add_eos {
            out.push(vocab.eos.ok_or(TokenizerError::MissingEos)?);
        }
        Ok(out)
    }

    /// Ids to text, exactly: control tokens (BOS, EOS, `[INST]`, ...) print
    /// nothing, byte tokens are joined into characters, and SentencePiece's
    /// dummy-prefix space is dropped from the first token that prints.
    /// Invalid UTF-8 (only from ids no encoder produces) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = decode::decode_bytes(self, ids, false)?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Like `decode`, but control tokens print their text (`<s>`, `[INST]`).
    pub fn decode_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = decode::decode_bytes(self, ids, true)?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// A decoder for generated ids, one at a time.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }

    /// The raw vocabulary string of `id` (`▁Hello`, `<0x0A>`, `ĠHello`).
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.inner.vocab.text(id)
    }

    /// The bytes `id` decodes to on its own (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inner.pieces.get(id as usize).map(|b| &**b)
    }

    /// The id of a vocabulary string.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.vocab.id(piece)
    }

    /// The SentencePiece score of `id` (0 where the file has none).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.inner.vocab.scores.get(id as usize).copied()
    }

    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.inner.vocab.kind(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.inner.vocab.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.inner.vocab.eos
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.inner.vocab.unk
    }

    /// Whether `encode(.., add_bos = true, ..)` adds a BOS.
    pub fn adds_bos(&self) -> bool {
        self.inner.vocab.add_bos
    }

    /// End-of-generation: EOS, EOT/EOM ids from the file, and the control
    /// tokens that end a turn (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.vocab.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.inner.vocab.eog
    }

    pub fn model_kind(&self) -> ModelKind {
        match self.inner.model {
            Model::Spm(_) => ModelKind::SentencePiece,
            Model::Bpe(_) => ModelKind::ByteLevelBpe,
        }
    }

    /// The pre-tokenizer of a byte-level BPE vocabulary.
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        self.inner.pre
    }

    pub fn space_prefix(&self) -> SpacePrefix {
        self.space_prefix
    }

    /// Overrides the automatic choice (`AtStart` for vocabularies with an
    /// `[INST]` control token, else `AfterSpecial`).
    pub fn with_space_prefix(mut self, space_prefix: SpacePrefix) -> Tokenizer {
        self.space_prefix = space_prefix;
        self
    }

    fn strips_leading_space(&self) -> bool {
        self.inner.vocab.add_space_prefix && matches!(self.inner.model, Model::Spm(_))
    }

    fn piece_for(&self, id: u32, special: bool) -> Result<&[u8], TokenizerError> {
        let vocab = &self.inner.vocab;
        vocab.check_id(id)?;
        let i = id as usize;
        if special && matches!(vocab.kinds[i], TokenKind::Control | TokenKind::Unknown) {
            return Ok(vocab.texts[i].as_bytes());
        }
        Ok(&self.inner.pieces[i])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_across_threads() {
        fn check<T: Send + Sync + Clone>() {}
        check::<super::Tokenizer>();
        check::<super::ChatTemplate>();
        check::<super::Message>();
    }
}
