//! Weight layouts regrouped once, when a matrix is built, for faster
//! kernels than the GGUF layout allows (llama.cpp's "repack" buffers and
//! candle's repacked Q4_K do the same).
//!
//! - [`q4k`]: Q4_K in groups of 16 rows ([`BlockQ4Kx16`]): the scales and
//!   mins unpacked to bytes and the nibbles of the 16 rows interleaved in
//!   4-byte words, so a matrix × vector handles 16 rows per vector
//!   instruction. Lossless: the GGUF bytes come back exactly.
//!
//! - [`q2k`]: Q2_K in groups of 8 rows ([`BlockQ2Kx8`]): the 2-bit fields
//!   and the scale bytes of the 8 rows interleaved in 4-byte words and
//!   pairs, same size. Lossless.
//!
//! - [`q8_0`]: Q8_0 in groups of 16 rows ([`PackedQ8_0`]), word-interleaved
//!   with the sign bits flipped, for the AVX-512 VNNI matrix × vector and
//!   matrix × matrix (16 rows per `vpdpbusd`, read in place). Lossless, same
//!   size.
//!
//! - [`q32`]: Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL in groups of 16 rows
//!   ([`PackedQ32`]): the nibbles word-interleaved as Q8_0's bytes, the
//!   fifth bits as byte masks, for the AVX-512 VNNI matrix × vector (and an
//!   AVX2 one for Q4_0 and Q4_1). Lossless, same size.
//!
//! [`Packed`] is a whole matrix in a grouped layout ([`PackedQ4K`],
//! [`PackedQ2K`]; a last partial group is padded with zero rows);
//! [`crate::QMatrix`] stores Q4_K matrices it owns this way, and Q2_K,
//! Q8_0 and the 4-bit 32-value matrices it owns as [`PackedQ2K`],
//! [`PackedQ8_0`] and [`PackedQ32`] when it computes on [`Isa::Avx512`]
//! (Q4_0 and Q4_1 also on [`Isa::Avx2`]): [`crate::plan::pack_kind`] decides.

/// The entry points of a packed AVX-512 matrix × vector kernel module:
/// `gemv` (one Q8_K activation row) and `gemv4` (4 rows in one pass over
/// the weights, results equal to 4 calls of `gemv`), both the module's own
/// `gemv_rows::<M>`, for groups of `$rows` rows.
#[cfg(target_arch = "x86_64")]
macro_rules! gemv_entry_points {
    ($block:ty, $rows:expr) => {
        /// The group's dot products with one Q8_K activation row, one per row.
        ///
        /// # Safety
        /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn gemv(w: &[$block], a: &[BlockQ8K]) -> [f32; $rows] {
            gemv_rows::<1>(w, [a])[0]
        }

        /// [`gemv`] for 4 activation rows in one pass over the weights,
        /// each weight word loaded and unpacked once for all 4 (results
        /// equal to 4 calls of [`gemv`]).
        ///
        /// # Safety
        /// As [`gemv`].
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn gemv4(w: &[$block], a: [&[BlockQ8K]; 4]) -> [[f32; $rows]; 4] {
            gemv_rows::<4>(w, a)
        }
    };
}

pub mod q2k;
#[cfg(target_arch = "x86_64")]
pub mod q2k_avx512;
pub mod q32;
#[cfg(target_arch = "x86_64")]
pub mod q32_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q32_avx512;
pub mod q4k;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx512;
#[cfg(target_arch = "aarch64")]
pub mod q4k_neon;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
pub mod q8_0_avx512;

use crate::blocks::{blocks_as_bytes, cast_blocks, matrix_bytes, BlockQ8K, ByteBlock, QK_K};
use crate::dequant::dequantize;
use crate::dot::ActFormat;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::shared::{activation_rows, with_scratch, OutPtr};
pub use q2k::BlockQ2Kx8;
pub use q32::PackedQ32;
pub use q4k::BlockQ4Kx16;
pub use q8_0::{PackedQ8_0, GROUP16};
use rayon::prelude::*;

/// Rows per Q2_K group, and per half of a Q4_K group: the unit the tiled
/// prefill kernels expand at once.
pub const GROUP: usize = 8;
const _: () = assert!(GROUP == 8 && GROUP16 == 16 && BlockQ4Kx16::ROWS == 16);

/// A k-quant block type regrouped by [`GroupBlock::ROWS`] rows: super-block
/// `s` of rows `ROWS·g..ROWS·(g + 1)` in one value ([`BlockQ4Kx16`],
/// [`BlockQ2Kx8`]), with its
/// matrix × vector kernels. Sealed: implemented in this module only.
pub trait GroupBlock: Copy + Send + Sync + sealed::Sealed + 'static {
    /// The GGUF block of one row.
    type Gguf: ByteBlock + Copy + Send + Sync;
    /// An all-zero GGUF block (a padding row).
    const ZERO_ROW: Self::Gguf;
    /// Rows per group.
    const ROWS: usize;
    /// One result per row of a group.
    type Lanes: Copy + Send + AsRef<[f32]>;
    /// Regroups the same super-block of [`GroupBlock::ROWS`] rows, row `r`'s
    /// block being `row(r)`.
    fn pack<'a>(row: impl Fn(usize) -> &'a Self::Gguf) -> Self
    where
        Self::Gguf: 'a;
    /// Row `r`'s GGUF block (the inverse of [`GroupBlock::pack`]).
    fn unpack(&self, r: usize) -> Self::Gguf;
    /// The group's dot products with one Q8_K activation row, on `isa`
    /// (checked available by the caller).
    fn gemv(isa: Isa, w: &[Self], a: &[BlockQ8K]) -> Self::Lanes;
    /// [`GroupBlock::gemv`] for 4 activation rows, the same results; one
    /// pass over the weights where `isa` has such a kernel, else 4 calls.
    fn gemv4(isa: Isa, w: &[Self], a: [&[BlockQ8K]; 4]) -> [Self::Lanes; 4] {
        a.map(|a| Self::gemv(isa, w, a))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::BlockQ4Kx16 {}
    impl Sealed for super::BlockQ2Kx8 {}
}

/// A `[rows, cols]` matrix of a k-quant in groups of rows (`kb = cols /
/// 256` group blocks per group, in super-block order), the last group padded
/// with all-zero rows.
#[derive(Clone)]
pub struct Packed<B> {
    rows: usize,
    cols: usize,
    groups: Vec<B>,
}

/// Q4_K in groups of 16 rows.
pub type PackedQ4K = Packed<BlockQ4Kx16>;
/// Q2_K in groups of 8 rows.
pub type PackedQ2K = Packed<BlockQ2Kx8>;

impl<B: GroupBlock> std::fmt::Debug for Packed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed{} [{}, {}]", B::Gguf::TYPE, self.rows, self.cols)
    }
}

impl<B: GroupBlock> Packed<B> {
    /// Regroups `rows` GGUF rows of `cols` values (`bytes`), in parallel.
    pub fn pack(bytes: &[u8], rows: usize, cols: usize) -> Result<Packed<B>> {
        check_size(B::Gguf::TYPE, bytes, rows, cols)?;
        let mut p = Packed::with_capacity(rows, cols);
        p.append_rows(bytes, rows)?;
        Ok(p)
    }

    /// An empty `[0, cols]` matrix with room for `rows` rows.
    pub(crate) fn with_capacity(rows: usize, cols: usize) -> Packed<B> {
        Packed {
            rows: 0,
            cols,
            groups: Vec::with_capacity(rows.div_ceil(B::ROWS) * (cols / QK_K)),
        }
    }

    /// Packs `rows` more GGUF rows (`bytes`) after this matrix's, which
    /// must fill its last group, straight into its storage (the result is
    /// the packing of both row ranges together).
    pub(crate) fn append_rows(&mut self, bytes: &[u8], rows: usize) -> Result<()> {
        let ty = B::Gguf::TYPE;
        check_append(ty, self.rows, B::ROWS)?;
        check_size(ty, bytes, rows, self.cols)?;
        let blocks: &[B::Gguf] = cast_blocks(bytes)?;
        let kb = self.cols / QK_K;
        let zero = B::ZERO_ROW;
        // Block `i` is super-block `i % kb` of group `i / kb`.
        self.groups
            .par_extend((0..rows.div_ceil(B::ROWS) * kb).into_par_iter().map(|i| {
                let (g, s) = (i / kb, i % kb);
                B::pack(|k| {
                    let r = B::ROWS * g + k;
                    if r < rows {
                        &blocks[r * kb + s]
                    } else {
                        &zero
                    }
                })
            }));
        self.rows += rows;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn kb(&self) -> usize {
        self.cols / QK_K
    }

    /// Row `r`'s super-block `s` as a GGUF block (`r < rows`, `s < cols / 256`).
    pub fn block(&self, r: usize, s: usize) -> B::Gguf {
        self.group_block(r, s).unpack(r % B::ROWS)
    }

    /// The group block holding row `r`'s super-block `s` (as row `r % ROWS`).
    pub fn group_block(&self, r: usize, s: usize) -> &B {
        &self.groups[r / B::ROWS * self.kb() + s]
    }

    /// The matrix in GGUF layout (row-major blocks).
    pub fn to_bytes(&self) -> Vec<u8> {
        let kb = self.kb();
        let blocks: Vec<B::Gguf> = (0..self.rows * kb)
            .map(|i| self.block(i / kb, i % kb))
            .collect();
        blocks_as_bytes(&blocks).to_vec()
    }

    /// Row `row` as f32.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        dequantize_packed_row((self.rows, self.cols), row, out, |s| self.block(row, s))
    }

    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n *
    /// rows`) by the row kernels, unless `tiled` takes it ([`matmul_frame`];
    /// the public `matmul` is in [`crate::matmul`], which also sees the
    /// tiled kernels).
    pub(crate) fn matmul_with(
        &self,
        isa: Isa,
        x: &[f32],
        y: &mut [f32],
        tiled: impl FnOnce(Isa, &[f32], &mut [f32]) -> bool,
    ) -> Result<()> {
        let (rows, cols, kb) = (self.rows, self.cols, self.kb());
        matmul_frame(isa, (rows, cols), x, y, tiled, |isa, n, buf, y| {
            buf.prepare(ActFormat::Q8K, x, cols);
            let act = |t: usize| &buf.q8k[t * kb..(t + 1) * kb];
            let w = |g: usize| &self.groups[g * kb..(g + 1) * kb];
            run_groups(
                (rows, B::ROWS),
                n,
                y,
                |g, t| B::gemv4(isa, w(g), [act(t), act(t + 1), act(t + 2), act(t + 3)]),
                |g, t| B::gemv(isa, w(g), act(t)),
            );
        })
    }
}

/// Checks that `bytes` hold a `[rows, cols]` matrix of `ty` (what every
/// layout's `pack` is given).
fn check_size(ty: mistral_gguf::GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<()> {
    let expected = matrix_bytes(ty, rows, cols)?;
    if bytes.len() != expected {
        return Err(KernelError::DataSize {
            ty,
            expected,
            got: bytes.len(),
        });
    }
    Ok(())
}

/// The frame of the packed layouts' `matmul`: checks `isa` and the shapes
/// (`x`: `n` rows of `cols`, `y`: `n * rows`), returns at once for an empty
/// product, gives it to a tiled kernel where `tiled(isa, x, y)` takes it,
/// else to `groups(isa, n, scratch, y)` with pooled activation buffers.
pub(crate) fn matmul_frame(
    isa: Isa,
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
    tiled: impl FnOnce(Isa, &[f32], &mut [f32]) -> bool,
    groups: impl FnOnce(Isa, usize, &mut crate::dot::ActBuffers, &mut [f32]),
) -> Result<()> {
    let isa = isa.checked()?;
    let n = activation_rows(rows, cols, x, y)?;
    if rows == 0 || n == 0 || tiled(isa, x, y) {
        return Ok(());
    }
    with_scratch(|buf| groups(isa, n, buf, y));
    Ok(())
}

/// Activation row `t` of `buf` prepared by
/// [`crate::dot::ActBuffers::prepare_q8_0_with_sums`] (`nb` blocks per row):
/// its Q8_0 blocks and their quant sums.
pub(crate) fn q8_0_row(
    buf: &crate::dot::ActBuffers,
    nb: usize,
    t: usize,
) -> (&[crate::blocks::BlockQ8_0], &[i32]) {
    let r = t * nb..(t + 1) * nb;
    (&buf.q8_0[r.clone()], &buf.q8_0_sums[r])
}

/// The matrix × vector driver of the packed layouts: `y[t, r]` for the `n`
/// activation rows and the `rows` weight rows, in groups of `per_group`
/// (the last padded), split over rayon tasks of a few groups each (their
/// weights stay in L2 while every activation row passes). `gemv4(g, t)`
/// gives group `g`'s lanes for activation rows `t..t + 4`, `gemv(g, t)` for
/// row `t` alone; the padding lanes are dropped.
pub(crate) fn run_groups<L: AsRef<[f32]>>(
    (rows, per_group): (usize, usize),
    n: usize,
    y: &mut [f32],
    gemv4: impl Fn(usize, usize) -> [L; 4] + Sync,
    gemv: impl Fn(usize, usize) -> L + Sync,
) {
    assert!(y.len() == n * rows && per_group > 0);
    let groups = rows.div_ceil(per_group);
    let threads = rayon::current_num_threads().max(1);
    // Enough tasks to even out the threads.
    let per = groups.div_ceil(threads * 8).max(1);
    let out = OutPtr(y.as_mut_ptr());
    let store = |t: usize, g: usize, v: &[f32]| {
        for (i, &v) in v.iter().enumerate().take(rows - per_group * g) {
            // SAFETY: t < n and per_group * g + i < rows (the padding rows
            // are skipped), inside `y` (n * rows values); the task calling
            // this alone writes the rows of its groups g0..g0 + per.
            unsafe { *out.get().add(t * rows + per_group * g + i) = v };
        }
    };
    (0..groups.div_ceil(per)).into_par_iter().for_each(|task| {
        let (g0, g1) = (task * per, ((task + 1) * per).min(groups));
        let mut t = 0;
        while t + 4 <= n {
            for g in g0..g1 {
                for (k, v) in gemv4(g, t).iter().enumerate() {
                    store(t + k, g, v.as_ref());
                }
            }
            t += 4;
        }
        for t in t..n {
            for g in g0..g1 {
                store(t, g, gemv(g, t).as_ref());
            }
        }
    });
}

/// Row `row` of a packed `[rows, cols]` matrix as f32, block by block
/// (`block(i)`: the row's `i`-th GGUF block).
fn dequantize_packed_row<B: crate::blocks::ByteBlock>(
    (rows, cols): (usize, usize),
    row: usize,
    out: &mut [f32],
    block: impl Fn(usize) -> B,
) -> Result<()> {
    if row >= rows {
        return Err(KernelError::RowOutOfRange { row, rows });
    }
    if out.len() != cols {
        return Err(KernelError::Shape {
            op: "dequantize_row",
            detail: format!("output has {} elements, row has {cols}", out.len()),
        });
    }
    for (i, o) in out.chunks_exact_mut(B::ELEMS).enumerate() {
        dequantize(B::TYPE, blocks_as_bytes(&[block(i)]), o)?;
    }
    Ok(())
}

/// Whether rows can follow `rows` packed rows of `ty` in groups of
/// `group` rows (none of them padding).
pub(crate) fn check_append(ty: mistral_gguf::GgmlType, rows: usize, group: usize) -> Result<()> {
    if !rows.is_multiple_of(group) {
        return Err(KernelError::Shape {
            op: "packed append",
            detail: format!("{ty} rows after {rows} rows in groups of {group}"),
        });
    }
    Ok(())
}
