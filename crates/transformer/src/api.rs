//! The public, high-level API: load a GGUF file once, then generate or chat.
//!
//! ```no_run
//! use mistral_transformer::{Device, LoadOptions, Message, Model, SamplingParams};
//!
//! let mut model = Model::load("mistral-7b-instruct.Q4_K_M.gguf", &Device::Cpu, LoadOptions::default())?;
//! let params = SamplingParams { max_tokens: Some(64), ..SamplingParams::greedy() };
//! for token in model.chat(&[Message::user("What is the capital of France?")], &params)? {
//!     print!("{}", token?.text);
//! }
//! # Ok::<(), mistral_transformer::ModelError>(())
//! ```

use std::path::Path;

use mistral_gguf::GgufFile;
use mistral_tokenizer::{ChatTemplate, Tokenizer};

pub use candle_core::Device;
pub use mistral_tokenizer::Message;

use crate::generate::Generation;
use crate::sampling::SamplingParams;
use crate::{LoadOptions, ModelConfig, ModelError, Transformer};

/// A loaded model: weights, tokenizer and chat template, plus the KV cache of
/// the last generation (reused when the next prompt extends it, as in a chat).
pub struct Model {
    transformer: Transformer,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// Tokens in the transformer's KV cache.
    cached: Vec<u32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", self.transformer.config())
            .field("cached_tokens", &self.cached.len())
            .finish()
    }
}

impl Model {
    /// Opens a GGUF file and builds the tokenizer, the chat template and the
    /// transformer on `device`.
    pub fn load(
        path: impl AsRef<Path>,
        device: &Device,
        opts: LoadOptions,
    ) -> Result<Model, ModelError> {
        let file = GgufFile::open(path.as_ref())?;
        Model::from_gguf(&file, device, opts)
    }

    /// Builds the model from an already open GGUF file.
    pub fn from_gguf(
        file: &GgufFile,
        device: &Device,
        opts: LoadOptions,
    ) -> Result<Model, ModelError> {
        let tokenizer = Tokenizer::from_gguf(file)?;
        let template = ChatTemplate::from_metadata(file.metadata())?;
        let transformer = Transformer::load(file, device, &opts)?;
        Ok(Model::from_parts(transformer, tokenizer, template))
    }

    /// Assembles a model from its parts (e.g. a custom `--chat-template`).
    pub fn from_parts(
        transformer: Transformer,
        tokenizer: Tokenizer,
        template: ChatTemplate,
    ) -> Model {
        Model {
            transformer,
            tokenizer,
            template,
            cached: Vec::new(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template used by [`Model::chat`].
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Replaces the chat template.
    pub fn set_chat_template(&mut self, template: ChatTemplate) {
        self.template = template;
    }

    /// The model's configuration (shapes, context, window).
    pub fn config(&self) -> &ModelConfig {
        self.transformer.config()
    }

    /// The transformer (forward pass and KV cache).
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    /// Bytes held by the KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.transformer.kv_cache_bytes()
    }

    /// The most tokens a prompt plus its completion may hold; `None` when the
    /// KV cache is a rolling window and generation may run on indefinitely.
    pub fn max_positions(&self) -> Option<usize> {
        max_positions(self.transformer.config())
    }

    /// Empties the KV cache (the next generation re-runs its whole prompt).
    pub fn reset(&mut self) {
        self.transformer.reset();
        self.cached.clear();
    }

    /// Tokenizes a raw prompt as llama.cpp does: BOS added when the model wants
    /// one, control tokens written in the text (`<s>`, `[INST]`) parsed, and a
    /// BOS written in the text as well as added kept once.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenizer.encode(prompt, true, true)?;
        Ok(strip_duplicate_bos(ids, self.tokenizer.bos_id()))
    }

    /// Renders `messages` with the chat template (with the assistant's turn
    /// opened) and tokenizes the result.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let rendered = self.template.render(messages, true)?;
        self.encode_prompt(&rendered)
    }

    /// Completes a raw prompt (no chat template); see [`Generation`].
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        let ids = self.encode_prompt(prompt)?;
        self.generate_tokens(&ids, params)
    }

    /// Answers a conversation: applies the chat template and generates the
    /// assistant's next message.
    pub fn chat(
        &mut self,
        messages: &[Message],
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        let ids = self.encode_chat(messages)?;
        self.generate_tokens(&ids, params)
    }

    /// Generates from prompt token ids.
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
    ) -> Result<Generation<'_>, ModelError> {
        Generation::new(
            &mut self.transformer,
            &mut self.cached,
            &self.tokenizer,
            prompt,
            params,
        )
    }
}

/// Drops the second of two leading BOS ids (a template that writes `<s>` itself,
/// tokenized with the BOS the model asks for).
pub fn strip_duplicate_bos(mut ids: Vec<u32>, bos: Option<u32>) -> Vec<u32> {
    if let Some(bos) = bos {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
            ids.remove(0);
        }
    }
    ids
}

/// Positions a transformer built with `config` can process after a reset.
pub(crate) fn max_positions(config: &ModelConfig) -> Option<usize> {
    match config.sliding_window {
        Some(_) => None,
        None => Some(config.ctx_size),
    }
}
