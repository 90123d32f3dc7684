//! The crate's one error type.

/// Everything that can go wrong loading a tokenizer, encoding, decoding or
/// rendering a chat template. Messages name the key, token or id at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Metadata(#[from] mistral_gguf::ErrorKind),
    #[error("unsupported tokenizer model {0:?} in tokenizer.ggml.model (supported: \"llama\" = SentencePiece BPE, \"gpt2\" = byte-level BPE)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?} in tokenizer.ggml.pre (supported: {supported})", supported = crate::pretok::SUPPORTED_NAMES)]
    UnsupportedPreTokenizer(String),
    #[error("the vocabulary in tokenizer.ggml.tokens is empty")]
    EmptyVocab,
    #[error("{key} has {found} entries, but tokenizer.ggml.tokens has {expected}")]
    LengthMismatch {
        key: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("token {text:?} appears twice in tokenizer.ggml.tokens (ids {first} and {second})")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{key} = {id} is outside the vocabulary ({n_vocab} tokens)")]
    SpecialIdOutOfRange {
        key: &'static str,
        id: i64,
        n_vocab: usize,
    },
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    IdOutOfRange { id: u32, n_vocab: usize },
    #[error("the tokenizer asks for a BOS token (tokenizer.ggml.add_bos_token) but has no BOS id")]
    MissingBos,
    #[error(
        "the tokenizer asks for an EOS token (tokenizer.ggml.add_eos_token) but has no EOS id"
    )]
    MissingEos,
    #[error(
        "tokenizer.ggml.merges entry {index} ({merge:?}) is not two tokens separated by a space"
    )]
    BadMerge { index: usize, merge: String },
    #[error("cannot encode a character starting with byte 0x{0:02X}: the vocabulary has neither byte tokens for it nor an unknown token")]
    Unencodable(u8),
    /// An error inside the `tokenizers` crate (byte-level BPE).
    #[error("byte-level BPE: {0}")]
    Bpe(String),
    /// The chat template does not compile.
    #[error("chat template does not compile: {0}")]
    TemplateSyntax(String),
    /// The template called `raise_exception(message)`: the message is the template's own.
    #[error("chat template rejected the conversation: {0}")]
    TemplateRaised(String),
    /// Any other error while rendering.
    #[error("chat template failed: {0}")]
    TemplateRender(String),
}
