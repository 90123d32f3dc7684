//! A strict, zero-copy GGUF reader and writer.
//!
//! ```no_run
//! let file = mistral_gguf::GgufFile::open("model.gguf")?;
//! let hp = mistral_gguf::LlamaHparams::from_metadata(file.metadata()).map_err(|k| file.error(k))?;
//! let (info, bytes) = file.tensor("token_embd.weight")?;
//! println!("{} layers, embedding {:?} {} ({} bytes)", hp.block_count, info.dims, info.ggml_type, bytes.len());
//! # Ok::<(), mistral_gguf::Error>(())
//! ```
//!
//! The reader validates every count against the bytes that remain before it
//! allocates, every tensor against the file's bounds, and never panics on bad
//! input (fuzzed with `cargo fuzz`, see the README).

pub mod error;
pub mod hparams;
pub mod keys;
pub mod metadata;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{Error, ErrorKind, Result};
pub use hparams::{file_type_id, file_type_name, LlamaHparams, SUPPORTED_ARCHITECTURES};
pub use metadata::Metadata;
pub use reader::{Gguf, GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorSpec};
