//! [`QMatrix`]: a quantized weight matrix the transformer multiplies by, and
//! its candle `CustomOp1` / `Module` wrapper (a drop-in for candle's `QMatMul`).

use crate::dequant::dequantize_row;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::packed::{PackedQ2K, PackedQ32, PackedQ4K, PackedQ8_0};
use crate::plan::PackKind;
use crate::{blocks::matrix_bytes, dot::supports_matmul, matmul};
use mistral_gguf::{GgmlType, GgufFile};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Bytes shared between matrices: an owned buffer or a whole mapped file.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

struct GgufBytes(Arc<GgufFile>);
impl AsRef<[u8]> for GgufBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// How a [`QMatrix`] holds its weights.
#[derive(Clone)]
enum Store {
    /// GGUF row-major blocks: `data[range]`.
    Plain {
        data: SharedBytes,
        range: Range<usize>,
    },
    /// Q4_K regrouped by 16 rows for the matrix × vector kernels.
    PackedQ4K(Arc<PackedQ4K>),
    /// Q8_0 regrouped by 16 rows for the AVX-512 matrix × vector kernel.
    PackedQ8_0(Arc<PackedQ8_0>),
    /// Q2_K regrouped by 8 rows for the AVX-512 matrix × vector kernel.
    PackedQ2K(Arc<PackedQ2K>),
    /// Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL regrouped by 16 rows for the
    /// AVX-512 (Q4_0, Q4_1 also AVX2) matrix × vector kernels.
    PackedQ32(Arc<PackedQ32>),
}

/// Input bytes [`QMatrix::from_parts`] takes per slice of rows.
pub const BUILD_SLICE: usize = 4 << 20;

impl PackKind {
    /// An empty matrix of this layout with room for `rows` rows.
    fn start(self, ty: GgmlType, rows: usize, cols: usize) -> Packing {
        match self {
            PackKind::Q4K => Packing::Q4K(PackedQ4K::with_capacity(rows, cols)),
            PackKind::Q2K => Packing::Q2K(PackedQ2K::with_capacity(rows, cols)),
            PackKind::Q8_0 => Packing::Q8_0(PackedQ8_0::with_capacity(rows, cols)),
            PackKind::Q32 => Packing::Q32(PackedQ32::with_capacity(ty, rows, cols)),
        }
    }
}

/// A packed matrix being built.
enum Packing {
    Q4K(PackedQ4K),
    Q2K(PackedQ2K),
    Q8_0(PackedQ8_0),
    Q32(PackedQ32),
}

impl Packing {
    /// Packs `rows` more GGUF rows (`data`) in place.
    fn append_rows(&mut self, data: &[u8], rows: usize) -> Result<()> {
        match self {
            Packing::Q4K(p) => p.append_rows(data, rows),
            Packing::Q2K(p) => p.append_rows(data, rows),
            Packing::Q8_0(p) => p.append_rows(data, rows),
            Packing::Q32(p) => p.append_rows(data, rows),
        }
    }

    fn into_store(self) -> Store {
        match self {
            Packing::Q4K(p) => Store::PackedQ4K(Arc::new(p)),
            Packing::Q2K(p) => Store::PackedQ2K(Arc::new(p)),
            Packing::Q8_0(p) => Store::PackedQ8_0(Arc::new(p)),
            Packing::Q32(p) => Store::PackedQ32(Arc::new(p)),
        }
    }
}

/// The bytes of a [`Store::Plain`].
fn plain<'a>(data: &'a SharedBytes, range: &Range<usize>) -> &'a [u8] {
    &(**data).as_ref()[range.clone()]
}

/// A `[rows, cols]` row-major matrix of GGML type `ty` (each row a whole
/// number of blocks), owning its bytes or borrowing them from a mapped file.
/// Q4_K matrices it owns ([`QMatrix::new`]) are regrouped into the
/// [`PackedQ4K`] layout, and Q8_0, Q2_K and the 4-bit 32-value ones into
/// [`PackedQ8_0`], [`PackedQ2K`] and [`PackedQ32`] while the matrix
/// computes on [`Isa::Avx512`], Q4_0 and Q4_1 also on [`Isa::Avx2`] (same
/// size, same results, faster decode).
#[derive(Clone)]
pub struct QMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    store: Store,
    isa: Isa,
}

impl fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QMatrix({} [{}, {}], {:?})",
            self.ty, self.rows, self.cols, self.isa
        )
    }
}

impl QMatrix {
    /// A matrix over `data[range]`, checking the size and that a kernel exists.
    pub fn from_shared(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: SharedBytes,
        range: Range<usize>,
    ) -> Result<QMatrix> {
        if !supports_matmul(ty) {
            return Err(KernelError::Unsupported { ty, op: "matmul" });
        }
        let expected = matrix_bytes(ty, rows, cols)?;
        let got = (*data).as_ref().get(range.clone()).map(|b| b.len());
        if got != Some(expected) {
            return Err(KernelError::DataSize {
                ty,
                expected,
                got: got.unwrap_or(0),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            store: Store::Plain { data, range },
            isa: Isa::best(),
        })
    }

    /// A matrix owning `data` (Q4_K with at least 16 rows, and on an
    /// AVX-512 machine Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL with at
    /// least 16 and Q2_K with at least 8, on an AVX2 one Q4_0 and Q4_1 with
    /// at least 16, are regrouped into a packed layout and `data` freed).
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Result<QMatrix> {
        match Self::pack(ty, rows, cols, &data)? {
            Some(m) => Ok(m),
            None => {
                let len = data.len();
                QMatrix::from_shared(ty, rows, cols, Arc::new(data), 0..len)
            }
        }
    }

    /// [`QMatrix::new`] from borrowed bytes: a matrix it packs is packed
    /// straight from `data` (no copy of it first), any other is copied.
    pub fn from_bytes(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<QMatrix> {
        let expected = matrix_bytes(ty, rows, cols)?;
        if data.len() != expected {
            return Err(KernelError::DataSize {
                ty,
                expected,
                got: data.len(),
            });
        }
        Self::from_parts(ty, cols, &[data], &mut |_| {})
    }

    /// The matrix whose rows are those of `parts` (whole rows of `cols`
    /// values of `ty` each), one after the other, as [`QMatrix::from_bytes`]
    /// of their concatenation would build it. It is built in slices of
    /// about [`BUILD_SLICE`] bytes of input, and `done` is called with each
    /// stretch of `parts` once it has been used and will not be read again:
    /// a caller holding a mapped file can drop those pages as it goes, so
    /// that building never holds much more than the finished matrix.
    pub fn from_parts(
        ty: GgmlType,
        cols: usize,
        parts: &[&[u8]],
        done: &mut dyn FnMut(&[u8]),
    ) -> Result<QMatrix> {
        if !supports_matmul(ty) {
            return Err(KernelError::Unsupported { ty, op: "matmul" });
        }
        let row_bytes = matrix_bytes(ty, 1, cols)?;
        let mut rows = 0usize;
        for p in parts {
            if row_bytes == 0 || p.len() % row_bytes != 0 {
                return Err(KernelError::DataSize {
                    ty,
                    expected: p.len().div_ceil(row_bytes.max(1)) * row_bytes,
                    got: p.len(),
                });
            }
            rows += p.len() / row_bytes;
        }
        let isa = Isa::best();
        let kind = crate::plan::pack_kind(ty, rows, isa);
        let slice_rows = match kind {
            Some(k) => (BUILD_SLICE / row_bytes.max(1) / k.group()).max(1) * k.group(),
            None => (BUILD_SLICE / row_bytes.max(1)).max(1),
        };
        let mut plain = Vec::new();
        if kind.is_none() {
            plain.reserve_exact(rows * row_bytes);
        }
        let mut packed: Option<Packing> = kind.map(|k| k.start(ty, rows, cols));
        let mut joined = Vec::new();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let (mut part, mut at) = (0, 0);
        let mut r0 = 0;
        while r0 < rows {
            let n = slice_rows.min(rows - r0);
            // This slice's rows, as pieces of one or more parts.
            pieces.clear();
            let mut need = n * row_bytes;
            while need > 0 {
                let p = parts[part];
                let take = (p.len() - at).min(need);
                if take > 0 {
                    pieces.push(&p[at..at + take]);
                }
                at += take;
                need -= take;
                if at == p.len() {
                    part += 1;
                    at = 0;
                }
            }
            match &mut packed {
                None => pieces.iter().for_each(|p| plain.extend_from_slice(p)),
                Some(acc) => {
                    let bytes = if let [one] = pieces[..] {
                        one
                    } else {
                        joined.clear();
                        pieces.iter().for_each(|p| joined.extend_from_slice(p));
                        &joined[..]
                    };
                    acc.append_rows(bytes, n)?;
                }
            }
            pieces.iter().for_each(|p| done(p));
            r0 += n;
        }
        let store = match packed {
            Some(p) => p.into_store(),
            None => {
                let len = plain.len();
                Store::Plain {
                    data: Arc::new(plain),
                    range: 0..len,
                }
            }
        };
        Ok(QMatrix {
            ty,
            rows,
            cols,
            store,
            isa,
        })
    }

    /// The matrix in the packed layout [`QMatrix::new`] chooses for `ty` on
    /// this CPU, or `None` where it keeps the GGUF layout.
    fn pack(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<Option<QMatrix>> {
        let isa = Isa::best();
        let Some(kind) = crate::plan::pack_kind(ty, rows, isa) else {
            return Ok(None);
        };
        Ok(Some(QMatrix {
            ty,
            rows,
            cols,
            store: {
                let mut p = kind.start(ty, rows, cols);
                p.append_rows(data, rows)?;
                p.into_store()
            },
            isa,
        }))
    }

    /// Quantizes a row-major f32 matrix.
    pub fn quantize(ty: GgmlType, rows: usize, cols: usize, x: &[f32]) -> Result<QMatrix> {
        if Some(x.len()) != rows.checked_mul(cols) {
            return Err(KernelError::Shape {
                op: "QMatrix::quantize",
                detail: format!("{} values for {rows} x {cols}", x.len()),
            });
        }
        QMatrix::new(ty, rows, cols, crate::quant::quantize_to_vec(ty, x)?)
    }

    /// The 2-D tensor `name` of a GGUF file, zero-copy from its map
    /// (`dims[0]` is the row length; higher dims are folded into rows).
    pub fn from_gguf(file: &Arc<GgufFile>, name: &str) -> Result<QMatrix> {
        let (info, data) = file.tensor(name)?;
        let dims = info.dims.clone();
        let cols = *dims.first().unwrap_or(&0) as usize;
        let rows = dims.iter().skip(1).product::<u64>() as usize;
        if dims.len() > 2 {
            return Err(KernelError::NotAMatrix {
                name: name.into(),
                dims,
            });
        }
        let start = data.as_ptr() as usize - file.bytes().as_ptr() as usize;
        let range = start..start + data.len();
        QMatrix::from_shared(
            info.ggml_type,
            rows,
            cols,
            Arc::new(GgufBytes(file.clone())),
            range,
        )
    }

    /// The same matrix, computing on instruction set `isa` (an error if this CPU lacks it).
    /// A matrix packed for AVX-512 only (Q8_0, Q2_K and the 32-value
    /// types; Q4_0 and Q4_1 also for AVX2) goes back to the GGUF layout for
    /// any other path (whose kernels read that).
    pub fn with_isa(mut self, isa: Isa) -> Result<QMatrix> {
        self.isa = isa.checked()?;
        let kept = |k: PackKind| k.kept_on(self.ty, isa);
        let gguf = match &self.store {
            Store::PackedQ4K(p) if !kept(PackKind::Q4K) => Some(p.to_bytes()),
            Store::PackedQ8_0(p) if !kept(PackKind::Q8_0) => Some(p.to_bytes()),
            Store::PackedQ2K(p) if !kept(PackKind::Q2K) => Some(p.to_bytes()),
            Store::PackedQ32(p) if !kept(PackKind::Q32) => Some(p.to_bytes()),
            _ => None,
        };
        if let Some(bytes) = gguf {
            let len = bytes.len();
            self.store = Store::Plain {
                data: Arc::new(bytes),
                range: 0..len,
            };
        }
        Ok(self)
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Whether the weights are held in a regrouped layout rather than GGUF's.
    pub fn is_packed(&self) -> bool {
        !matches!(self.store, Store::Plain { .. })
    }

    /// The matrix's bytes in GGUF layout (row-major blocks): borrowed, or
    /// rebuilt from a packed layout.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        match &self.store {
            Store::Plain { data, range } => Cow::Borrowed(plain(data, range)),
            Store::PackedQ4K(p) => Cow::Owned(p.to_bytes()),
            Store::PackedQ8_0(p) => Cow::Owned(p.to_bytes()),
            Store::PackedQ2K(p) => Cow::Owned(p.to_bytes()),
            Store::PackedQ32(p) => Cow::Owned(p.to_bytes()),
        }
    }

    /// `y = W x` (`x.len() == cols`, `y.len() == rows`).
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        crate::shared::check_vector(self.cols, x)?;
        self.matmul(x, y)
    }

    /// `Y = X Wᵀ` for `n` rows of `X` (`x.len() == n * cols`, `y.len() == n * rows`).
    pub fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        match &self.store {
            Store::Plain { data, range } => matmul::matmul(
                self.ty,
                self.isa,
                plain(data, range),
                self.rows,
                self.cols,
                x,
                y,
            ),
            Store::PackedQ4K(p) => p.matmul(self.isa, x, y),
            Store::PackedQ8_0(p) => p.matmul(self.isa, x, y),
            Store::PackedQ2K(p) => p.matmul(self.isa, x, y),
            Store::PackedQ32(p) => p.matmul(self.isa, x, y),
        }
    }

    /// Row `row` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        match &self.store {
            Store::Plain { data, range } => {
                dequantize_row(self.ty, plain(data, range), self.cols, row, out)
            }
            Store::PackedQ4K(p) => p.dequantize_row(row, out),
            Store::PackedQ8_0(p) => p.dequantize_row(row, out),
            Store::PackedQ2K(p) => p.dequantize_row(row, out),
            Store::PackedQ32(p) => p.dequantize_row(row, out),
        }
    }

    /// The whole matrix as f32.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.rows * self.cols];
        crate::dequant::dequantize(self.ty, &self.bytes(), &mut out)?;
        Ok(out)
    }
}
