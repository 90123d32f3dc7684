//! GGUF writer (version 3). Streams tensor data through a callback so that
//! files larger than memory (e.g. a synthetic 26 GB Mixtral) can be written.

use std::io::{self, Write};

use crate::error::ErrorKind;
use crate::keys::GENERAL_ALIGNMENT;
use crate::metadata::Metadata;
use crate::reader::{TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::types::GgmlType;
use crate::value::{Array, Value};

/// A tensor to be written: name, type and GGML-order dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub ggml_type: GgmlType,
    pub dims: Vec<u64>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, ggml_type: GgmlType, dims: &[u64]) -> Self {
        TensorSpec {
            name: name.into(),
            ggml_type,
            dims: dims.to_vec(),
        }
    }

    /// Bytes of this tensor's data, or an error if the shape is invalid for the type.
    pub fn n_bytes(&self) -> Result<u64, ErrorKind> {
        let n = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let row_ok = self
            .dims
            .first()
            .is_some_and(|&d| d > 0 && d % self.ggml_type.block_size() == 0);
        match n.and_then(|n| self.ggml_type.bytes_for(n)) {
            Some(b) if row_ok && self.dims.len() <= 4 && !self.dims.contains(&0) => Ok(b),
            _ => Err(ErrorKind::Write(format!(
                "tensor {:?}: shape {:?} is invalid for {}",
                self.name, self.dims, self.ggml_type
            ))),
        }
    }
}

/// Builds a GGUF file: metadata plus tensor specs, then the data in order.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    pub metadata: Metadata,
    pub tensors: Vec<TensorSpec>,
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl GgufWriter {
    pub fn new(metadata: Metadata) -> Self {
        GgufWriter {
            metadata,
            tensors: Vec::new(),
        }
    }

    pub fn add_tensor(&mut self, spec: TensorSpec) {
        self.tensors.push(spec);
    }

    fn alignment(&self) -> Result<u64, ErrorKind> {
        match self.metadata.get(GENERAL_ALIGNMENT) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => Ok(*a as u64),
            Some(v) => Err(ErrorKind::Write(format!("invalid general.alignment {v:?}"))),
        }
    }

    /// The tensor infos (with offsets) that [`write`](Self::write) will produce.
    pub fn layout(&self) -> Result<Vec<TensorInfo>, ErrorKind> {
        let alignment = self.alignment()?;
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let n = t.n_bytes()?;
            out.push(TensorInfo {
                name: t.name.clone(),
                ggml_type: t.ggml_type,
                dims: t.dims.clone(),
                offset,
            });
            offset = offset
                .checked_add(n)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(|| {
                    ErrorKind::Write(format!("tensor {:?}: data offsets overflow", t.name))
                })?;
        }
        Ok(out)
    }

    /// Writes the file. `data(i, spec, out)` must write exactly the bytes of tensor `i`.
    pub fn write<W: Write>(
        &self,
        out: &mut W,
        mut data: impl FnMut(usize, &TensorSpec, &mut dyn Write) -> io::Result<()>,
    ) -> Result<u64, ErrorKind> {
        let alignment = self.alignment()?;
        let layout = self.layout()?;
        let mut w = CountingWriter { inner: out, n: 0 };
        w.write_all(&GGUF_MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (k, v) in self.metadata.iter() {
            write_string(&mut w, k)?;
            w.write_all(&(v.value_type() as u32).to_le_bytes())?;
            write_value(&mut w, v)?;
        }
        for t in &layout {
            write_string(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ggml_type.id().to_le_bytes())?;
            w.write_all(&t.offset.to_le_bytes())?;
        }
        pad(&mut w, alignment)?;
        let data_start = w.n;
        for (i, (spec, info)) in self.tensors.iter().zip(&layout).enumerate() {
            let before = w.n;
            data(i, spec, &mut w)?;
            let written = w.n - before;
            if written != info.n_bytes() {
                return Err(ErrorKind::Write(format!(
                    "tensor {:?}: {} bytes written, {} expected",
                    spec.name,
                    written,
                    info.n_bytes()
                )));
            }
            if i + 1 < layout.len() {
                pad(&mut w, alignment)?;
            }
            debug_assert!(i + 1 == layout.len() || w.n - data_start == layout[i + 1].offset);
        }
        w.flush()?;
        Ok(w.n)
    }

    /// Writes the file into memory with the tensor data given in order.
    pub fn to_bytes(&self, data: &[&[u8]]) -> Result<Vec<u8>, ErrorKind> {
        if data.len() != self.tensors.len() {
            return Err(ErrorKind::Write(format!(
                "{} tensors declared, {} data buffers given",
                self.tensors.len(),
                data.len()
            )));
        }
        let mut out = Vec::new();
        self.write(&mut out, |i, _, w| w.write_all(data[i]))?;
        Ok(out)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes zeros up to the next multiple of `alignment` (from a fixed buffer: an
/// alignment of 2^31 must not allocate 2 GiB).
fn pad<W: Write>(w: &mut CountingWriter<W>, alignment: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut n = align(w.n, alignment) - w.n;
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(b) => w.write_all(&[*b as u8]),
        Value::String(s) => write_string(w, s),
        Value::Array(a) => write_array(w, a),
    }
}

fn write_array(w: &mut impl Write, a: &Array) -> io::Result<()> {
    w.write_all(&(a.item_type() as u32).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr) => {{
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match a {
        Array::U8(v) => w.write_all(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => w.write_all(&v.iter().map(|&b| b as u8).collect::<Vec<_>>()),
        Array::String(v) => v.iter().try_for_each(|s| write_string(w, s)),
        Array::Array(v) => v.iter().try_for_each(|a| write_array(w, a)),
    }
}
