//! The strict GGUF reader. Parses the header from a byte slice (normally a
//! memory map) without touching the tensor data, and validates everything a
//! file could get wrong before any later code trusts it.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::keys::GENERAL_ALIGNMENT;
use crate::metadata::Metadata;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// `"GGUF"` as the first four bytes.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays inside arrays that the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: u32 = 4;

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Dimensions in GGML order: `dims[0]` is the row length (fastest-varying).
    pub dims: Vec<u64>,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (validated not to overflow when read; saturates for a
    /// hand-built info whose dims do).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Size of the tensor's data in bytes (validated not to overflow when read).
    pub fn n_bytes(&self) -> u64 {
        self.ggml_type
            .bytes_for(self.n_elements())
            .unwrap_or(u64::MAX)
    }

    /// The shape in row-major (PyTorch/candle) order: the reverse of `dims`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// The parsed header of a GGUF file: version, metadata and tensor infos.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section and of every tensor offset.
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
    /// Bytes of header actually read (everything before the padding).
    pub header_len: u64,
}

impl Gguf {
    /// Parses and validates a whole file held in `bytes`. `source_name` is used in errors.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Gguf> {
        Self::parse_prefix(bytes, bytes.len() as u64, source_name)
    }

    /// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes,
    /// validating the tensor layout against `file_len`. A prefix that ends inside the
    /// header gives `Truncated`: read more and try again. Counts are checked against
    /// `file_len`, so the caller's file size also bounds what the parser allocates.
    pub fn parse_prefix(prefix: &[u8], file_len: u64, source_name: &str) -> Result<Gguf> {
        let file_len = file_len.max(prefix.len() as u64);
        parse_inner(prefix, file_len).map_err(|kind| Error::new(source_name, kind))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Total bytes of tensor data.
    pub fn tensor_data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes()).sum()
    }
}

/// A forward-only reader over the bytes of a file (or a prefix of it).
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Length of the whole file (`>= bytes.len()`).
    file_len: u64,
}

impl<'a> Cursor<'a> {
    /// Bytes of the file after the cursor.
    fn remaining(&self) -> u64 {
        self.file_len - self.pos as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], ErrorKind> {
        let available = (self.bytes.len() - self.pos) as u64;
        if n > available {
            return Err(ErrorKind::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.file_len,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], ErrorKind> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, ErrorKind> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, ErrorKind> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in the
    /// bytes left, before anything is allocated for them. A count that even the
    /// whole file could not hold is `CountTooLarge`; a plausible one whose items run
    /// past the end of the file means the file is `Truncated`. `items` names what is
    /// counted, `word` the count ("length", "count").
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        word: &str,
        items: &dyn Fn() -> String,
    ) -> Result<usize, ErrorKind> {
        let remaining = self.remaining();
        let too_large = || ErrorKind::CountTooLarge {
            what: format!("{word} of {}", items()),
            count,
            remaining,
            offset: self.pos as u64,
        };
        match count.checked_mul(min_size) {
            Some(n) if n <= remaining => usize::try_from(count).map_err(|_| too_large()),
            Some(n) if n <= self.file_len => Err(ErrorKind::Truncated {
                what: items(),
                offset: self.pos as u64,
                needed: n,
                len: self.file_len,
            }),
            _ => Err(too_large()),
        }
    }

    /// A header count: `CountTooLarge` unless its items could fit in the whole file.
    fn check_plausible(
        &self,
        count: u64,
        min_size: u64,
        items: &dyn Fn() -> String,
    ) -> Result<u64, ErrorKind> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.file_len => Ok(count),
            _ => Err(ErrorKind::CountTooLarge {
                what: format!("count of {}", items()),
                count,
                remaining: self.remaining(),
                offset: self.pos as u64,
            }),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, ErrorKind> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        self.check_count(len, 1, "length", what)?;
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ErrorKind::InvalidUtf8 {
                what: what(),
                offset: start,
            })
    }
}

/// Smallest on-disk size of one metadata key/value: key length, type, a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest on-disk size of one tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;
/// Most items preallocated for an array of arrays: every nesting level could otherwise
/// reserve room for the whole rest of the file at once.
const MAX_NESTED_PREALLOC: usize = 1024;

fn parse_inner(bytes: &[u8], file_len: u64) -> Result<Gguf, ErrorKind> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        file_len,
    };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(ErrorKind::BadMagic(magic));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(ErrorKind::BigEndian(v.swap_bytes())),
        v => return Err(ErrorKind::UnsupportedVersion(v)),
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata key/value count".into())?;

    // Counts that not even the whole file could hold fail here, before anything is
    // read or allocated. Plausible counts that run past the end of a cut-off file are
    // reported as `Truncated` at the first key or tensor that is missing.
    let n_kv = c.check_plausible(n_kv, MIN_KV_SIZE, &|| "metadata key/values".into())?;
    let n_tensors =
        c.check_plausible(n_tensors, MIN_TENSOR_INFO_SIZE, &|| "tensor infos".into())?;

    // Preallocate only what the bytes left can hold.
    let mut metadata = Metadata::with_capacity(n_kv.min(c.remaining() / MIN_KV_SIZE) as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let type_id = c.u32(&|| format!("type of metadata key {key:?}"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| ErrorKind::UnknownValueType {
            key: key.clone(),
            id: type_id,
        })?;
        let value = read_value(&mut c, ty, &key, 0)?;
        metadata.insert(key, value)?;
    }

    // Preallocate only what the bytes left can hold (each info is at least 32 bytes).
    let cap = n_tensors.min(c.remaining() / MIN_TENSOR_INFO_SIZE) as usize;
    let mut tensors = Vec::with_capacity(cap);
    let mut tensor_index = HashMap::with_capacity(cap);
    for i in 0..n_tensors as usize {
        let info = read_tensor_info(&mut c, i)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(ErrorKind::DuplicateTensor(info.name));
        }
        tensors.push(info);
    }

    let alignment = match metadata.get(GENERAL_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = match v {
                Value::U32(a) => *a as u64,
                other => {
                    return Err(ErrorKind::WrongType {
                        key: GENERAL_ALIGNMENT.into(),
                        expected: "u32",
                        found: other.value_type(),
                    })
                }
            };
            if a == 0 || !a.is_power_of_two() {
                return Err(ErrorKind::InvalidAlignment(a));
            }
            a
        }
    };

    let header_len = c.pos as u64;
    let data_offset = header_len.div_ceil(alignment) * alignment;
    validate_layout(&tensors, alignment, data_offset, file_len)?;

    Ok(Gguf {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
        header_len,
    })
}

fn read_tensor_info(c: &mut Cursor, i: usize) -> Result<TensorInfo, ErrorKind> {
    let name = c.string(&|| format!("name of tensor #{i}"))?;
    let n_dims = c.u32(&|| format!("n_dims of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(ErrorKind::InvalidDimCount {
            tensor: name,
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims as usize {
        let v = c.u64(&|| format!("dimension {d} of tensor {name:?}"))?;
        if v == 0 {
            return Err(ErrorKind::ZeroDim {
                tensor: name,
                index: d,
            });
        }
        if v > i64::MAX as u64 {
            return Err(ErrorKind::NegativeDim {
                tensor: name,
                index: d,
                value: v as i64,
            });
        }
        dims.push(v);
    }
    let type_id = c.u32(&|| format!("type of tensor {name:?}"))?;
    let offset = c.u64(&|| format!("offset of tensor {name:?}"))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| ErrorKind::UnknownTensorType {
        tensor: name.clone(),
        id: type_id,
    })?;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| ErrorKind::ElementCountOverflow {
            tensor: name.clone(),
            dims: dims.clone(),
        })?;
    let block = ggml_type.block_size();
    if dims[0] % block != 0 {
        return Err(ErrorKind::RowNotBlockMultiple {
            tensor: name,
            row: dims[0],
            ggml_type: ggml_type.name().into(),
            block,
        });
    }
    if ggml_type.bytes_for(n_elements).is_none() {
        return Err(ErrorKind::ByteSizeOverflow {
            tensor: name,
            n_elements,
            ggml_type: ggml_type.name().into(),
        });
    }
    Ok(TensorInfo {
        name,
        ggml_type,
        dims,
        offset,
    })
}

/// Checks every tensor's alignment, bounds and overlap, in the order of their offsets.
/// A tensor whose data starts inside the file (or in the padding at its end) but runs
/// past the end means the file is `Truncated`; one that starts beyond it, or whose end
/// overflows, is `TensorOutOfBounds`.
fn validate_layout(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<(), ErrorKind> {
    if let Some(t) = tensors.iter().find(|t| t.offset % alignment != 0) {
        return Err(ErrorKind::MisalignedOffset {
            tensor: t.name.clone(),
            offset: t.offset,
            alignment,
        });
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    let padded_len = file_len.div_ceil(alignment).saturating_mul(alignment);
    for t in &order {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes()));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            (Some(start), Some(end)) if start <= padded_len => {
                return Err(ErrorKind::Truncated {
                    what: format!("data of tensor {:?}", t.name),
                    offset: start,
                    needed: end - start,
                    len: file_len,
                })
            }
            _ => {
                return Err(ErrorKind::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len: file_len,
                })
            }
        }
    }
    for w in order.windows(2) {
        // Both ends were checked against the file length above: no overflow.
        if w[0].offset + w[0].n_bytes() > w[1].offset {
            return Err(ErrorKind::TensorOverlap {
                tensor: w[1].name.clone(),
                other: w[0].name.clone(),
            });
        }
    }
    Ok(())
}

fn read_value(c: &mut Cursor, ty: ValueType, key: &str, depth: usize) -> Result<Value, ErrorKind> {
    let what = || format!("value of metadata key {key:?}");
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&what)?)),
        // Any non-zero byte reads as true, as in llama.cpp.
        ValueType::Bool => Value::Bool(c.array::<1>(&what)?[0] != 0),
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth + 1)?),
    })
}

fn read_array(c: &mut Cursor, key: &str, depth: usize) -> Result<Array, ErrorKind> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(ErrorKind::NestingTooDeep {
            key: key.to_string(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("array of metadata key {key:?}");
    let type_id = c.u32(&what)?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| ErrorKind::UnknownValueType {
        key: key.to_string(),
        id: type_id,
    })?;
    let count = c.u64(&what)?;
    let n = c.check_count(count, ty.min_size(), "length", &what)?;

    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let raw = c.take((n * W) as u64, &what)?;
            Array::$variant(
                raw.chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().unwrap_or([0; W])))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => fixed!(U8, u8),
        ValueType::I8 => fixed!(I8, i8),
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::Bool => Array::Bool(c.take(n as u64, &what)?.iter().map(|&b| b != 0).collect()),
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("string #{i} of metadata key {key:?}"))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n.min(MAX_NESTED_PREALLOC));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A GGUF file opened for use: the parsed header plus the bytes (memory-mapped
/// from disk, or owned) from which tensor data is lent out without copying.
pub struct GgufFile {
    source_name: String,
    backing: Backing,
    gguf: Gguf,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source_name", &self.source_name)
            .field("gguf", &self.gguf)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and validates the file at `path`. Only the header pages are read.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::new(&name, e.into()))?;
        let len = file
            .metadata()
            .map_err(|e| Error::new(&name, e.into()))?
            .len();
        if len == 0 {
            // An empty file cannot be mapped on every platform; report it as truncated.
            return Self::from_bytes(Vec::new(), name);
        }
        // SAFETY: the map is read-only and private to this process. Like every
        // mmap-based loader (llama.cpp, candle), we rely on the file not being
        // truncated or rewritten while it is open; all offsets handed out below were
        // validated against the length at open time.
        let mmap = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| Error::new(&name, e.into()))?;
        let gguf = Gguf::parse(&mmap, &name)?;
        Ok(GgufFile {
            source_name: name,
            backing: Backing::Mmap(mmap),
            gguf,
        })
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>, source_name: impl Into<String>) -> Result<GgufFile> {
        let source_name = source_name.into();
        let gguf = Gguf::parse(&bytes, &source_name)?;
        Ok(GgufFile {
            source_name,
            backing: Backing::Owned(bytes),
            gguf,
        })
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn header(&self) -> &Gguf {
        &self.gguf
    }

    pub fn metadata(&self) -> &Metadata {
        &self.gguf.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.gguf.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.gguf.tensor(name)
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// Takes the pages that lie wholly inside `bytes` (a slice of this file)
    /// out of this process's resident memory, for a caller that has copied
    /// what it needs: the loader, so a model does not count twice (its copy
    /// and the mapped file) in RSS. The pages stay in the OS page cache and a
    /// later read maps them back in with the same bytes. A hint only: nothing
    /// happens for files held in memory, slices of other memory, or on
    /// non-Unix systems.
    pub fn release(&self, bytes: &[u8]) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = &self.backing {
            const PAGE: usize = 4096;
            let base = m.as_ptr() as usize;
            let start = bytes.as_ptr() as usize;
            let Some(off) = start.checked_sub(base) else {
                return;
            };
            if off + bytes.len() > m.len() {
                return;
            }
            // Whole pages only (the neighbouring tensors' pages stay), rounded
            // inward from absolute addresses (the map itself is page-aligned).
            let lo = (start.div_ceil(PAGE) * PAGE) - base;
            let hi = ((start + bytes.len()) / PAGE * PAGE).saturating_sub(base);
            if hi <= lo {
                return;
            }
            // SAFETY: the map is private and read-only (`open`), so no page
            // of it was ever written: MADV_DONTNEED only unmaps them, and a
            // later access faults the file's unchanged bytes back in. Every
            // slice lent out from this map therefore keeps reading the same
            // bytes; `lo..hi` lies inside the map (checked above). Errors
            // are ignored: this is a memory hint.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
            };
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// The data of a tensor of this file, borrowed from the map (validated at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.gguf.data_offset + info.offset) as usize;
        let end = start + info.n_bytes() as usize;
        self.bytes().get(start..end).unwrap_or(&[])
    }

    /// The info and data of the tensor `name`, or a `MissingTensor` error.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.error(ErrorKind::MissingTensor(name.to_string())))?;
        Ok((info, self.tensor_data(info)))
    }

    /// Wraps an error kind (e.g. from a metadata accessor) with this file's name.
    pub fn error(&self, kind: ErrorKind) -> Error {
        Error::new(&self.source_name, kind)
    }
}
