//! Weight layouts regrouped once, when a matrix is built, for faster
//! kernels than the GGUF layout allows (llama.cpp's "repack" buffers and
//! candle's repacked Q4_K do the same).
//!
//! - [`q4k`]: Q4_K in groups of 8 rows ([`BlockQ4Kx8`]): the scales and
//!   mins unpacked to bytes and the nibbles of the 8 rows interleaved in
//!   4-byte words, so a matrix × vector handles 8 rows per vector
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
//! [`Packed`] is a whole matrix in an 8-row layout ([`PackedQ4K`],
//! [`PackedQ2K`]; a last partial group is padded with zero rows);
//! [`crate::QMatrix`] stores Q4_K matrices it owns this way, and Q2_K and
//! Q8_0 matrices it owns as [`PackedQ2K`] and [`PackedQ8_0`] when it
//! computes on [`Isa::Avx512`].

/// The shared parts of an 8-row AVX-512 matrix × vector kernel module: the
/// entry points `gemv` (one Q8_K activation row) and `gemv4` (4 rows in one
/// pass over the weights, results equal to 4 calls of `gemv`), both the
/// module's own `gemv_rows::<M>`; `lanes`, which stores its `M`
/// accumulators; and `kmin_step`, the per-super-block float step.
#[cfg(target_arch = "x86_64")]
macro_rules! gemv_entry_points {
    ($block:ty) => {
        /// The 8 rows' dot products with one Q8_K activation row, as f32 lanes.
        ///
        /// # Safety
        /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn gemv(w: &[$block], a: &[BlockQ8K]) -> [f32; GROUP] {
            gemv_rows::<1>(w, [a])[0]
        }

        /// [`gemv`] for 4 activation rows in one pass over the weights,
        /// each weight word loaded and unpacked once for all 4 (results
        /// equal to 4 calls of [`gemv`]).
        ///
        /// # Safety
        /// As [`gemv`].
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn gemv4(w: &[$block], a: [&[BlockQ8K]; 4]) -> [[f32; GROUP]; 4] {
            gemv_rows::<4>(w, a)
        }

        /// `acc` plus one super-block of the 8 rows in the lanes, the float
        /// steps of the scalar kernels in their order (no FMA):
        /// `(d_a·d)·sumi − (d_a·dmin)·summ`, with `d`, `dmin` the rows'
        /// f16 scales and `dy` the activation block's.
        #[inline(always)]
        unsafe fn kmin_step(
            acc: __m256,
            dy: f32,
            (d, dmin): (
                &[crate::blocks::F16Le; GROUP],
                &[crate::blocks::F16Le; GROUP],
            ),
            (sumi, summ): (__m256i, __m256i),
        ) -> __m256 {
            let half8 = |h: &[crate::blocks::F16Le; GROUP]| {
                _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i))
            };
            let dy = _mm256_set1_ps(dy);
            let t = _mm256_sub_ps(
                _mm256_mul_ps(_mm256_mul_ps(dy, half8(d)), _mm256_cvtepi32_ps(sumi)),
                _mm256_mul_ps(_mm256_mul_ps(dy, half8(dmin)), _mm256_cvtepi32_ps(summ)),
            );
            _mm256_add_ps(acc, t)
        }

        /// The `M` rows' f32 lanes as arrays.
        #[inline(always)]
        unsafe fn lanes<const M: usize>(acc: [__m256; M]) -> [[f32; GROUP]; M] {
            let mut out = [[0f32; GROUP]; M];
            for (o, v) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), v);
            }
            out
        }
    };
}

pub mod q2k;
#[cfg(target_arch = "x86_64")]
pub mod q2k_avx512;
pub mod q4k;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx512;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
pub mod q8_0_avx512;

use crate::blocks::{blocks_as_bytes, cast_blocks, matrix_bytes, BlockQ8K, ByteBlock, QK_K};
use crate::dequant::dequantize;
use crate::dot::ActFormat;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::matmul::{activation_rows, with_scratch, OutPtr};
pub use q2k::BlockQ2Kx8;
pub use q4k::{BlockQ4Kx8, GROUP};
pub use q8_0::{PackedQ8_0, GROUP16};
use rayon::prelude::*;

/// A k-quant block type regrouped by 8 rows: super-block `s` of rows
/// `8g..8g + 8` in one value ([`BlockQ4Kx8`], [`BlockQ2Kx8`]), with its
/// matrix × vector kernels. Sealed: implemented in this module only.
pub trait GroupBlock: Copy + Send + Sync + sealed::Sealed + 'static {
    /// The GGUF block of one row.
    type Gguf: ByteBlock + Copy + Send + Sync;
    /// An all-zero GGUF block (a padding row).
    const ZERO_ROW: Self::Gguf;
    /// Regroups the same super-block of 8 rows.
    fn pack(rows: [&Self::Gguf; GROUP]) -> Self;
    /// Row `r`'s GGUF block (the inverse of [`GroupBlock::pack`]).
    fn unpack(&self, r: usize) -> Self::Gguf;
    /// The 8 rows' dot products with one Q8_K activation row, on `isa`
    /// (checked available by the caller).
    fn gemv(isa: Isa, w: &[Self], a: &[BlockQ8K]) -> [f32; GROUP];
    /// [`GroupBlock::gemv`] for 4 activation rows, the same results; one
    /// pass over the weights where `isa` has such a kernel, else 4 calls.
    fn gemv4(isa: Isa, w: &[Self], a: [&[BlockQ8K]; 4]) -> [[f32; GROUP]; 4] {
        a.map(|a| Self::gemv(isa, w, a))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::BlockQ4Kx8 {}
    impl Sealed for super::BlockQ2Kx8 {}
}

/// A `[rows, cols]` matrix of a k-quant in groups of 8 rows (`kb = cols /
/// 256` group blocks per group, in super-block order), the last group padded
/// with all-zero rows.
#[derive(Clone)]
pub struct Packed<B> {
    rows: usize,
    cols: usize,
    groups: Vec<B>,
}

/// Q4_K in groups of 8 rows.
pub type PackedQ4K = Packed<BlockQ4Kx8>;
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
        let ty = B::Gguf::TYPE;
        let expected = matrix_bytes(ty, rows, cols)?;
        if bytes.len() != expected {
            return Err(KernelError::DataSize {
                ty,
                expected,
                got: bytes.len(),
            });
        }
        let blocks: &[B::Gguf] = cast_blocks(bytes)?;
        let kb = cols / QK_K;
        let zero = B::ZERO_ROW;
        // Block `i` is super-block `i % kb` of group `i / kb`.
        let groups = (0..rows.div_ceil(GROUP) * kb)
            .into_par_iter()
            .map(|i| {
                let (g, s) = (i / kb, i % kb);
                B::pack(std::array::from_fn(|k| {
                    let r = GROUP * g + k;
                    if r < rows {
                        &blocks[r * kb + s]
                    } else {
                        &zero
                    }
                }))
            })
            .collect();
        Ok(Packed { rows, cols, groups })
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
        self.group_block(r, s).unpack(r % GROUP)
    }

    /// The group block holding row `r`'s super-block `s` (as row `r % 8`).
    pub fn group_block(&self, r: usize, s: usize) -> &B {
        &self.groups[r / GROUP * self.kb() + s]
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

    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n * rows`).
    pub fn matmul(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        let isa = isa.checked()?;
        let (rows, cols) = (self.rows, self.cols);
        let n = activation_rows(rows, cols, x, y)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        if crate::gemm::try_matmul_packed_kquant(isa, self, x, y) {
            return Ok(());
        }
        let (groups, kb) = (rows.div_ceil(GROUP), self.kb());
        with_scratch(|buf| {
            buf.prepare(ActFormat::Q8K, x, cols);
            let act = |t: usize| &buf.q8k[t * kb..(t + 1) * kb];
            let threads = rayon::current_num_threads().max(1);
            // Tasks of a few groups each (their weights stay in L2 while
            // every activation row passes), enough to even out the threads.
            let per = groups.div_ceil(threads * 8).max(1);
            let out = OutPtr(y.as_mut_ptr());
            let store = |t: usize, g: usize, v: &[f32]| {
                for (i, &v) in v.iter().enumerate().take(rows - GROUP * g) {
                    // SAFETY: t < n and GROUP * g + i < rows (the padding
                    // rows are skipped); the task calling this alone writes
                    // the rows of its groups g0..g0 + per.
                    unsafe { *out.get().add(t * rows + GROUP * g + i) = v };
                }
            };
            (0..groups.div_ceil(per)).into_par_iter().for_each(|task| {
                let (g0, g1) = (task * per, ((task + 1) * per).min(groups));
                let mut t = 0;
                while t + 4 <= n {
                    let a = [act(t), act(t + 1), act(t + 2), act(t + 3)];
                    for g in g0..g1 {
                        let w = &self.groups[g * kb..(g + 1) * kb];
                        for (k, v) in B::gemv4(isa, w, a).iter().enumerate() {
                            store(t + k, g, v);
                        }
                    }
                    t += 4;
                }
                for t in t..n {
                    for g in g0..g1 {
                        let w = &self.groups[g * kb..(g + 1) * kb];
                        store(t, g, &B::gemv(isa, w, act(t)));
                    }
                }
            });
            Ok(())
        })
    }
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
