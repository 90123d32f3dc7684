//! The crate's one error type.

use mistral_gguf::GgmlType;

/// Errors from the kernels: wrong sizes or shapes, unsupported types.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The byte slice does not hold the number of blocks the element count needs.
    #[error("{ty} data is {got} bytes, expected {expected}")]
    DataSize {
        ty: GgmlType,
        expected: usize,
        got: usize,
    },
    /// An element count that is not a whole number of blocks.
    #[error("{ty}: {n} elements is not a multiple of its block size {block}")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    /// An operation the type has no kernel for.
    #[error("{op} is not implemented for {ty}")]
    Unsupported { ty: GgmlType, op: &'static str },
    /// Mismatched input / output lengths.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A row index past the end of a matrix.
    #[error("row {row} out of range for a matrix of {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
    /// An instruction set this CPU does not have was forced.
    #[error("instruction set {0:?} is not available on this CPU")]
    IsaUnavailable(crate::Isa),
    /// A tensor could not be read from a GGUF file.
    #[error(transparent)]
    Gguf(#[from] mistral_gguf::Error),
    /// A tensor of more than two dimensions where a matrix was expected.
    #[error("tensor {name} has shape {dims:?}, not a matrix")]
    NotAMatrix { name: String, dims: Vec<u64> },
}

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, KernelError>;
