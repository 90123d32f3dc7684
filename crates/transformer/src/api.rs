//! The public model: load a GGUF file once, share it (`Clone` is an `Arc`
//! clone; it is `Send + Sync`), and run any number of [`Session`]s on it,
//! one at a time each or many in one batched step.
//!
//! ```no_run
//! use mistral_transformer::{LoadOptions, Message, Model, SamplingParams};
//!
//! let model = Model::load("mistral-7b-instruct.Q4_K_M.gguf", LoadOptions::default())?;
//! let mut session = model.new_session();
//! let params = SamplingParams { max_tokens: Some(64), ..SamplingParams::greedy() };
//! for token in session.chat(&[Message::user("What is the capital of France?")], &params)? {
//!     print!("{}", token?.text);
//! }
//! # Ok::<(), mistral_transformer::ModelError>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use mistral_gguf::GgufFile;
use mistral_tokenizer::{ChatTemplate, Message, Tokenizer};

use crate::config::{LoadOptions, ModelConfig};
use crate::constraint::{Constraint, ConstraintProcessor, GuidanceCell};
use crate::error::ModelError;
use crate::model::{SeqStep, Transformer};
use crate::session::Session;
use crate::weights::LoadProgress;

struct Inner {
    transformer: Arc<Transformer>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// The threads every forward pass of this model runs on.
    pool: Arc<rayon::ThreadPool>,
    /// llguidance's view of the vocabulary, built on the first constraint.
    guidance: Arc<GuidanceCell>,
    /// Mistral's own format with function calling, for a vocabulary with
    /// its tool tokens whose file template does not render tools.
    tool_template: Option<ChatTemplate>,
}

/// A loaded model: weights, tokenizer and chat template, and the thread pool
/// its forward passes run on. Cheap to clone; all clones share the weights.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", self.config())
            .finish()
    }
}

/// One session's share of [`Model::step`].
pub struct BatchSeq<'a> {
    pub session: &'a mut Session,
    /// Its new tokens (at most [`crate::MAX_UBATCH`]).
    pub tokens: &'a [u32],
    /// Logits wanted for its last `logits` tokens (0: none).
    pub logits: usize,
}

impl Model {
    /// Opens a GGUF file and builds the tokenizer, the chat template and the weights.
    pub fn load(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Model, ModelError> {
        Self::load_with_progress(path, opts, |_| {})
    }

    /// [`Model::load`], calling `progress` as the weights are read.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        opts: LoadOptions,
        progress: impl FnMut(LoadProgress) + Send,
    ) -> Result<Model, ModelError> {
        let file = GgufFile::open(path.as_ref())?;
        Model::from_gguf_with_progress(&file, opts, progress)
    }

    /// Builds the model from an already open GGUF file.
    pub fn from_gguf(file: &GgufFile, opts: LoadOptions) -> Result<Model, ModelError> {
        Self::from_gguf_with_progress(file, opts, |_| {})
    }

    /// [`Model::from_gguf`], calling `progress` as the weights are read.
    pub fn from_gguf_with_progress(
        file: &GgufFile,
        opts: LoadOptions,
        mut progress: impl FnMut(LoadProgress) + Send,
    ) -> Result<Model, ModelError> {
        let tokenizer = Tokenizer::from_gguf(file)?;
        let template = ChatTemplate::from_metadata(file.metadata())?;
        let tool_template = ChatTemplate::mistral_tools(file.metadata())?;
        // A context shift always keeps the BOS token, as llama.cpp's does.
        let mut opts = opts;
        if tokenizer.adds_bos() {
            opts.keep = opts.keep.saturating_add(1);
        }
        let threads = match opts.threads {
            Some(0) => {
                return Err(ModelError::InvalidOption {
                    name: "threads",
                    value: "0".into(),
                    expected: "at least 1",
                })
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mistral-run-{i}"))
            .build()
            .map_err(|e| {
                ModelError::InvalidInput(format!("cannot start {threads} threads: {e}"))
            })?;
        // Loading packs matrices on the pool too.
        let transformer = pool.install(|| Transformer::load(file, &opts, &mut progress))?;
        Ok(Model {
            inner: Arc::new(Inner {
                transformer: Arc::new(transformer),
                tokenizer,
                template,
                pool: Arc::new(pool),
                guidance: Arc::default(),
                tool_template,
            }),
        })
    }

    /// The same weights with another chat template (e.g. `--chat-template`).
    pub fn with_chat_template(&self, template: ChatTemplate) -> Model {
        Model {
            inner: Arc::new(Inner {
                transformer: self.inner.transformer.clone(),
                tokenizer: self.inner.tokenizer.clone(),
                template,
                pool: self.inner.pool.clone(),
                guidance: self.inner.guidance.clone(),
                tool_template: self.inner.tool_template.clone(),
            }),
        }
    }

    /// A logits processor that holds generation to `constraint` (put it in
    /// [`crate::GenerateOptions::processor`]). The first call builds the
    /// vocabulary's token trie (once per model). A schema, grammar or
    /// regular expression that does not compile, or matches nothing, is a
    /// [`ModelError::InvalidConstraint`] naming what is wrong.
    pub fn constraint(&self, constraint: &Constraint) -> Result<ConstraintProcessor, ModelError> {
        self.inner
            .guidance
            .get(&self.inner.tokenizer)?
            .processor(constraint)
    }

    /// A new, empty session.
    pub fn new_session(&self) -> Session {
        Session::new(self.clone())
    }

    pub(crate) fn transformer(&self) -> &Transformer {
        &self.inner.transformer
    }

    /// Runs `f` on the model's thread pool.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce(&Transformer) -> R + Send) -> R {
        let t = &*self.inner.transformer;
        self.inner.pool.install(|| f(t))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The chat template used by [`Session::chat`].
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.inner.template
    }

    /// The model's configuration (shapes, context, cache policy).
    pub fn config(&self) -> &ModelConfig {
        self.inner.transformer.config()
    }

    /// Bytes of weight data loaded from the file.
    pub fn weight_bytes(&self) -> usize {
        self.inner.transformer.weight_bytes()
    }

    /// Bytes one session's KV cache takes once it holds `positions` positions.
    pub fn kv_cache_bytes_for(&self, positions: usize) -> usize {
        self.inner.transformer.kv_layout().bytes_for(positions)
    }

    /// Tokenizes a raw prompt as llama.cpp does: BOS added when the model wants
    /// one, control tokens written in the text (`<s>`, `[INST]`) parsed, and a
    /// BOS written in the text as well as added kept once.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.inner.tokenizer.encode(prompt, true, true)?;
        Ok(strip_duplicate_bos(ids, self.inner.tokenizer.bos_id()))
    }

    /// Renders `messages` with the chat template (with the assistant's turn
    /// opened) and tokenizes the result.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let rendered = self.inner.template.render(messages, true)?;
        self.encode_prompt(&rendered)
    }

    /// [`Model::encode_chat`] offering the model `tools` (OpenAI's list of
    /// functions). A template that renders `tools` gets them; for one that
    /// does not, they are described in a system message.
    pub fn encode_chat_with_tools(
        &self,
        messages: &[Message],
        tools: &serde_json::Value,
    ) -> Result<Vec<u32>, ModelError> {
        crate::tools::tool_names(tools)?;
        let t = &self.inner.template;
        let rendered = if t.source().contains("tools") {
            t.render_with_tools(messages, Some(tools), true)?
        } else if let Some(mistral) = &self.inner.tool_template {
            mistral.render_with_tools(messages, Some(tools), true)?
        } else {
            match t.render(&crate::tools::describe_tools(messages, tools, false), true) {
                Ok(r) => r,
                // A template without system messages: the description
                // goes before the first user message instead.
                Err(_) => t.render(&crate::tools::describe_tools(messages, tools, true), true)?,
            }
        };
        self.encode_prompt(&rendered)
    }

    /// One forward pass over the new tokens of several sessions at once (the
    /// weights are read once for all of them); returns, per session, the
    /// logits of its last `logits` tokens, `[logits, n_vocab]` row-major.
    /// Every session must belong to this model. After an error the sessions
    /// of the batch are reset.
    pub fn step(&self, batch: &mut [BatchSeq<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.iter().any(|b| {
            !Arc::ptr_eq(
                &b.session.model().inner.transformer,
                &self.inner.transformer,
            )
        }) {
            return Err(ModelError::InvalidInput(
                "a session of another model was passed to Model::step".into(),
            ));
        }
        let result = self.run(|t| {
            let mut seqs: Vec<SeqStep<'_>> = batch
                .iter_mut()
                .map(|b| SeqStep {
                    cache: &mut b.session.cache,
                    tokens: b.tokens,
                    logits: b.logits,
                    hidden: false,
                })
                .collect();
            t.step(&mut seqs)
        });
        match result {
            Ok(out) => Ok(batch
                .iter_mut()
                .zip(out)
                .map(|(b, r)| {
                    b.session.note_shift(r.shift);
                    r.logits
                })
                .collect()),
            Err(e) => {
                for b in batch.iter_mut() {
                    b.session.reset();
                }
                Err(e)
            }
        }
    }
}

/// Drops the second of two leading BOS ids (a template that writes `<s>` itself,
/// tokenized with the BOS the model asks for).
pub(crate) fn strip_duplicate_bos(mut ids: Vec<u32>, bos: Option<u32>) -> Vec<u32> {
    if let Some(bos) = bos {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
            ids.remove(0);
        }
    }
    ids
}
