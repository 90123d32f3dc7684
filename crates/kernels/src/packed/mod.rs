//! Weight layouts regrouped once, when a matrix is built, for faster
//! kernels than the GGUF layout allows (llama.cpp's "repack" buffers and
//! candle's repacked Q4_K do the same).
//!
//! - [`q4k`]: Q4_K in groups of 8 rows ([`BlockQ4Kx8`]): the scales and
//!   mins unpacked to bytes and the nibbles of the 8 rows interleaved in
//!   4-byte words, so a matrix × vector handles 8 rows per vector
//!   instruction. Lossless: the GGUF bytes come back exactly.
//!
//! - [`q8_0`]: Q8_0 in groups of 16 rows ([`PackedQ8_0`]), word-interleaved
//!   with the sign bits flipped, for the AVX-512 VNNI matrix × vector and
//!   matrix × matrix (16 rows per `vpdpbusd`, read in place). Lossless, same
//!   size.
//!
//! [`PackedQ4K`] is a whole matrix in that layout (a last partial group is
//! padded with zero rows); [`crate::QMatrix`] stores Q4_K matrices it owns
//! this way, and Q8_0 matrices it owns as [`PackedQ8_0`] when it computes on
//! [`Isa::Avx512`].

pub mod q4k;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx2;
#[cfg(target_arch = "x86_64")]
pub mod q4k_avx512;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
pub mod q8_0_avx512;

use crate::blocks::{blocks_as_bytes, cast_blocks, matrix_bytes, BlockQ4K, F16Le, QK_K};
use crate::dequant::dequantize;
use crate::dot::ActFormat;
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use crate::matmul::{activation_rows, with_scratch, OutPtr};
use mistral_gguf::GgmlType;
pub use q4k::{BlockQ4Kx8, GROUP};
pub use q8_0::{PackedQ8_0, GROUP16};
use rayon::prelude::*;

/// A `[rows, cols]` Q4_K matrix: groups of 8 rows as [`BlockQ4Kx8`]
/// (`kb = cols / 256` per group, in super-block order), the last group
/// padded with all-zero rows.
#[derive(Clone)]
pub struct PackedQ4K {
    rows: usize,
    cols: usize,
    groups: Vec<BlockQ4Kx8>,
}

impl std::fmt::Debug for PackedQ4K {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4K [{}, {}]", self.rows, self.cols)
    }
}

impl PackedQ4K {
    /// Regroups `rows` GGUF Q4_K rows of `cols` values (`bytes`), in parallel.
    pub fn pack(bytes: &[u8], rows: usize, cols: usize) -> Result<PackedQ4K> {
        let ty = GgmlType::Q4_K;
        let expected = matrix_bytes(ty, rows, cols)?;
        if bytes.len() != expected {
            return Err(KernelError::DataSize {
                ty,
                expected,
                got: bytes.len(),
            });
        }
        let blocks: &[BlockQ4K] = cast_blocks(bytes)?;
        let kb = cols / QK_K;
        let zero = BlockQ4K {
            d: F16Le([0, 0]),
            dmin: F16Le([0, 0]),
            scales: [0; 12],
            qs: [0; QK_K / 2],
        };
        // Block `i` is super-block `i % kb` of group `i / kb`.
        let groups = (0..rows.div_ceil(GROUP) * kb)
            .into_par_iter()
            .map(|i| {
                let (g, s) = (i / kb, i % kb);
                BlockQ4Kx8::pack(std::array::from_fn(|k| {
                    let r = GROUP * g + k;
                    if r < rows {
                        &blocks[r * kb + s]
                    } else {
                        &zero
                    }
                }))
            })
            .collect();
        Ok(PackedQ4K { rows, cols, groups })
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
    pub fn block(&self, r: usize, s: usize) -> BlockQ4K {
        self.group_block(r, s).unpack(r % GROUP)
    }

    /// The group block holding row `r`'s super-block `s` (as row `r % 8`).
    pub fn group_block(&self, r: usize, s: usize) -> &BlockQ4Kx8 {
        &self.groups[r / GROUP * self.kb() + s]
    }

    /// The matrix in GGUF layout (row-major blocks).
    pub fn to_bytes(&self) -> Vec<u8> {
        let kb = self.kb();
        let blocks: Vec<BlockQ4K> = (0..self.rows * kb)
            .map(|i| self.block(i / kb, i % kb))
            .collect();
        blocks_as_bytes(&blocks).to_vec()
    }

    /// Row `row` as f32.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        dequantize_packed_row((self.rows, self.cols), row, out, |s| self.block(row, s))
    }

    /// The 8 rows of group `g` against one Q8_K activation row.
    fn gemv(&self, isa: Isa, g: usize, a: &[crate::blocks::BlockQ8K]) -> [f32; GROUP] {
        let kb = self.kb();
        let w = &self.groups[g * kb..(g + 1) * kb];
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: `isa` was checked available (AVX-512 F/BW/VL/VNNI with
            // AVX2, FMA, F16C) by the caller (`Isa::checked` in `matmul`);
            // the kernel reads only the `kb` blocks of both slices.
            return unsafe { q4k_avx512::gemv(w, a) };
        }
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            // SAFETY: `isa` was checked available (AVX2 + FMA + F16C) by
            // the caller (`Isa::checked` in `matmul`); the kernel reads
            // only the `kb` blocks of both slices.
            return unsafe { q4k_avx2::gemv(w, a) };
        }
        #[cfg(target_arch = "aarch64")]
        if isa.is_neon() {
            // SAFETY: as above for `Isa::Neon` / `Isa::NeonDot` (the
            // `sdot` kernel only for the latter).
            return unsafe {
                if isa == Isa::NeonDot {
                    crate::dot::neon::q4kx8_gemv_dot(w, a)
                } else {
                    crate::dot::neon::q4kx8_gemv(w, a)
                }
            };
        }
        let _ = isa;
        q4k::gemv_scalar(w, a)
    }

    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` (`x`: `n` rows of `cols`, `y`: `n * rows`).
    pub fn matmul(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        let isa = isa.checked()?;
        let (rows, cols) = (self.rows, self.cols);
        let n = activation_rows(rows, cols, x, y)?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        if crate::gemm::try_matmul_packed_q4k(isa, self, x, y) {
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
                for t in 0..n {
                    for g in g0..g1 {
                        store(t, g, &self.gemv(isa, g, act(t)));
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
