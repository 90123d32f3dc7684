//! The crate's one error type.

use crate::value::ValueType;

/// Everything that can be wrong with a GGUF file or a metadata lookup.
/// Each validation rule has its own variant; the message names the offending key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (magic {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3{hint})", hint = version_hint(*.0))]
    UnsupportedVersion(u32),
    /// The version field reads as 2 or 3 only when byte-swapped: a big-endian file
    /// (the value is the version as the file meant it).
    #[error("big-endian GGUF file (version {0}); only little-endian files are supported: reconvert the model")]
    BigEndian(u32),
    /// The file ends before something it declares: a header field, a key or value, an
    /// array's items (when the whole file could have held them), a tensor info, or a
    /// tensor's data (when it starts inside the file but runs past its end).
    #[error("file truncated: needed {needed} bytes for {what} at offset {offset}, file has {len}")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    /// A count or length that not even the whole file could hold (a corrupt count; a
    /// plausible count whose items run past the end of the file is `Truncated`).
    #[error("{what} = {count} cannot fit in the {remaining} bytes left at offset {offset}")]
    CountTooLarge {
        what: String,
        count: u64,
        remaining: u64,
        offset: u64,
    },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?}: unknown value type id {id}")]
    UnknownValueType { key: String, id: u32 },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {tensor:?}: {n_dims} dimensions (must be 1 to 4)")]
    InvalidDimCount { tensor: String, n_dims: u32 },
    #[error("tensor {tensor:?}: dimension {index} is zero")]
    ZeroDim { tensor: String, index: usize },
    #[error(
        "tensor {tensor:?}: dimension {index} is negative ({value} as a signed 64-bit integer)"
    )]
    NegativeDim {
        tensor: String,
        index: usize,
        value: i64,
    },
    #[error("tensor {tensor:?}: element count {dims:?} overflows")]
    ElementCountOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor {tensor:?}: byte size of {n_elements} {ggml_type} elements overflows")]
    ByteSizeOverflow {
        tensor: String,
        n_elements: u64,
        ggml_type: String,
    },
    #[error(
        "tensor {tensor:?}: row length {row} is not a multiple of {ggml_type}'s block size {block}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        row: u64,
        ggml_type: String,
        block: u64,
    },
    #[error("tensor {tensor:?}: unknown GGML type id {id}")]
    UnknownTensorType { tensor: String, id: u32 },
    #[error("general.alignment = {0} (must be a non-zero power of two)")]
    InvalidAlignment(u64),
    #[error("tensor {tensor:?}: data [{start}, {end}) lies outside the file ({len} bytes)")]
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("tensor {tensor:?} overlaps tensor {other:?} in the data section")]
    TensorOverlap { tensor: String, other: String },
    #[error("tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },
    #[error("metadata key {key:?} = {value} is out of range for {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("writer: {0}")]
    Write(String),
}

fn version_hint(v: u32) -> &'static str {
    match v {
        1 => "; version 1 files predate 64-bit counts: reconvert the model",
        _ => "",
    }
}

impl ErrorKind {
    /// The variant's name (`"Truncated"`, `"DuplicateKey"`, ...): a stable code for
    /// tests, the malformed-file corpus manifest and machine-readable CLI output.
    pub fn name(&self) -> &'static str {
        use ErrorKind::*;
        match self {
            Io(_) => "Io",
            BadMagic(_) => "BadMagic",
            UnsupportedVersion(_) => "UnsupportedVersion",
            BigEndian(_) => "BigEndian",
            Truncated { .. } => "Truncated",
            CountTooLarge { .. } => "CountTooLarge",
            NestingTooDeep { .. } => "NestingTooDeep",
            InvalidUtf8 { .. } => "InvalidUtf8",
            UnknownValueType { .. } => "UnknownValueType",
            DuplicateKey(_) => "DuplicateKey",
            DuplicateTensor(_) => "DuplicateTensor",
            InvalidDimCount { .. } => "InvalidDimCount",
            ZeroDim { .. } => "ZeroDim",
            NegativeDim { .. } => "NegativeDim",
            ElementCountOverflow { .. } => "ElementCountOverflow",
            ByteSizeOverflow { .. } => "ByteSizeOverflow",
            RowNotBlockMultiple { .. } => "RowNotBlockMultiple",
            UnknownTensorType { .. } => "UnknownTensorType",
            InvalidAlignment(_) => "InvalidAlignment",
            TensorOutOfBounds { .. } => "TensorOutOfBounds",
            TensorOverlap { .. } => "TensorOverlap",
            MisalignedOffset { .. } => "MisalignedOffset",
            MissingKey(_) => "MissingKey",
            WrongType { .. } => "WrongType",
            OutOfRange { .. } => "OutOfRange",
            MissingTensor(_) => "MissingTensor",
            Write(_) => "Write",
        }
    }
}

/// An error with the file it came from.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {kind}")]
pub struct Error {
    /// The path (or a name given by the caller) of the file.
    pub source_name: String,
    pub kind: ErrorKind,
}

impl Error {
    pub fn new(source_name: impl Into<String>, kind: ErrorKind) -> Self {
        Error {
            source_name: source_name.into(),
            kind,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
