//! The crate's one error type.

/// Everything that can go wrong loading or running a model. Each message is one
/// line that names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read, or a metadata key is missing / malformed.
    #[error(transparent)]
    Gguf(#[from] mistral_gguf::Error),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] mistral_tokenizer::TokenizerError),
    /// A tensor operation of the candle backend failed (a bug or an
    /// out-of-memory condition, not bad input).
    #[error("tensor operation failed: {0}")]
    Tensor(String),
    /// A kernel refused its inputs (a bug: shapes are checked at load).
    #[error("kernel error: {0}")]
    Kernel(#[from] mistral_kernels::KernelError),
    /// I/O while writing a file (synthetic models).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// `general.architecture` is not one this engine runs.
    #[error("{file}: unsupported architecture {arch:?} (supported: {supported})")]
    UnsupportedArchitecture {
        file: String,
        arch: String,
        supported: String,
    },
    /// A required tensor is not in the file.
    #[error("{file}: missing tensor {name:?}")]
    MissingTensor { file: String, name: String },
    /// A tensor has a GGML type the matmul backend cannot use.
    #[error("{file}: tensor {name:?} has type {ggml_type}, which is not supported (supported: {supported})")]
    UnsupportedTensorType {
        file: String,
        name: String,
        ggml_type: mistral_gguf::GgmlType,
        supported: &'static str,
    },
    /// A tensor's shape does not match the hyper-parameters.
    #[error("{file}: tensor {name:?} has dims {found:?} (GGML order), expected {expected:?}")]
    BadTensorShape {
        file: String,
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    /// The hyper-parameters describe a model this engine cannot run.
    #[error("{file}: unsupported model configuration: {what}")]
    UnsupportedConfig { file: String, what: String },
    /// A load option is out of range.
    #[error("invalid option {name} = {value}: {expected}")]
    InvalidOption {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The device cannot run a model in this build.
    #[error("device {device}: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// Nothing to run.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The request was cancelled (before its first token).
    #[error("the request was cancelled")]
    Cancelled,
    /// The prompt does not fit in the context.
    #[error("the prompt has {prompt_tokens} tokens, more than the context size {context} (raise --ctx-size)")]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    /// The KV cache is full (no sliding window): `position + tokens > context`.
    #[error("the context is full: {position} tokens processed, {tokens} more do not fit in the context size {context}")]
    ContextFull {
        position: usize,
        tokens: usize,
        context: usize,
    },
    /// A token id is not below the vocabulary size.
    #[error("token id {id} is out of range for the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    /// A structured-output constraint (JSON schema, grammar, regular
    /// expression) that does not compile or matches nothing.
    #[error("{0}")]
    InvalidConstraint(String),
    /// Invalid input to a command (e.g. a text too short for one perplexity chunk).
    #[error("{0}")]
    InvalidInput(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Tensor(e.to_string())
    }
}
