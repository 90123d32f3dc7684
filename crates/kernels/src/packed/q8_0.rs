//! Q8_0 regrouped by 16 rows ([`PackedQ8_0`]) for the AVX-512 VNNI matrix ×
//! vector, and the scalar reference on that layout, written from the layout
//! description below (not from the SIMD code).
//!
//! Group `g`, block column `i` (values `32i..32i + 32` of rows `16g..16g + 16`):
//!
//! ```text
//! qs[g·nb + i].0[64t + 4r + k] = (row r's qs[4t + k]) ^ 0x80   t: 4-byte word (0..8)
//! d[g·nb + i][r]               = row r's scale (f16)
//! ```
//!
//! A 64-byte load `qs[..].0[64t..]` holds word `t` of all 16 rows, so one
//! broadcast of 4 activation bytes and one `vpdpbusd` give the 16 rows'
//! partial sums in 16 lanes. The sign bit is flipped so the weights are the
//! instruction's unsigned operand: `Σ (w + 128)·a = Σ w·a + 128·Σ a`, and
//! the activation sum is subtracted once per block for all rows. Same bytes
//! as the GGUF layout (512 + 32 per 16 blocks); [`PackedQ8_0::block`] gives
//! every GGUF block back bit for bit.

use crate::blocks::{cast_blocks, BlockQ8_0, F16Le, QK};
use crate::dot::scalar::step_d;
use crate::error::Result;
use crate::isa::Isa;
use mistral_gguf::GgmlType;
use rayon::prelude::*;

/// Rows per group.
pub const GROUP16: usize = 16;

/// One block column of a group's 16 rows: the flipped quants, word-interleaved.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Qs16(pub [u8; GROUP16 * QK]);
const _: () = assert!(size_of::<Qs16>() == 512);

/// A `[rows, cols]` Q8_0 matrix in groups of 16 rows (the last one padded
/// with zero rows), see the module docs.
#[derive(Clone)]
pub struct PackedQ8_0 {
    rows: usize,
    cols: usize,
    qs: Vec<Qs16>,
    d: Vec<[F16Le; GROUP16]>,
}

impl std::fmt::Debug for PackedQ8_0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ8_0 [{}, {}]", self.rows, self.cols)
    }
}

impl PackedQ8_0 {
    /// Regroups `rows` GGUF Q8_0 rows of `cols` values (`bytes`), in parallel.
    pub fn pack(bytes: &[u8], rows: usize, cols: usize) -> Result<PackedQ8_0> {
        super::check_size(GgmlType::Q8_0, bytes, rows, cols)?;
        let mut p = PackedQ8_0::with_capacity(rows, cols);
        p.append_rows(bytes, rows)?;
        Ok(p)
    }

    /// See [`super::Packed::with_capacity`].
    pub(crate) fn with_capacity(rows: usize, cols: usize) -> PackedQ8_0 {
        let n = rows.div_ceil(GROUP16) * (cols / QK);
        PackedQ8_0 {
            rows: 0,
            cols,
            qs: Vec::with_capacity(n),
            d: Vec::with_capacity(n),
        }
    }

    /// See [`super::Packed::append_rows`].
    pub(crate) fn append_rows(&mut self, bytes: &[u8], rows: usize) -> Result<()> {
        let ty = GgmlType::Q8_0;
        super::check_append(ty, self.rows, GROUP16)?;
        super::check_size(ty, bytes, rows, self.cols)?;
        let blocks: &[BlockQ8_0] = cast_blocks(bytes)?;
        let nb = self.cols / QK;
        let n = rows.div_ceil(GROUP16) * nb;
        let block = |g: usize, i: usize, r: usize| {
            let row = GROUP16 * g + r;
            (row < rows).then(|| &blocks[row * nb + i])
        };
        self.qs.par_extend((0..n).into_par_iter().map(|j| {
            let (g, i) = (j / nb, j % nb);
            let mut out = Qs16([0x80; GROUP16 * QK]);
            for r in 0..GROUP16 {
                if let Some(b) = block(g, i, r) {
                    for (k, &q) in b.qs.iter().enumerate() {
                        out.0[Self::qs_index(r, k)] = q as u8 ^ 0x80;
                    }
                }
            }
            out
        }));
        self.d.extend((0..n).map(|j| {
            let (g, i) = (j / nb, j % nb);
            std::array::from_fn(|r| block(g, i, r).map_or(F16Le([0, 0]), |b| b.d))
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

    fn nb(&self) -> usize {
        self.cols / QK
    }

    /// Group `g`'s block columns: the flipped quants and the scales.
    pub(crate) fn group(&self, g: usize) -> (&[Qs16], &[[F16Le; GROUP16]]) {
        let nb = self.nb();
        (
            &self.qs[g * nb..(g + 1) * nb],
            &self.d[g * nb..(g + 1) * nb],
        )
    }

    /// Where quant `k` (0..32) of row `r` (0..16) sits in a [`Qs16`].
    const fn qs_index(r: usize, k: usize) -> usize {
        64 * (k / 4) + 4 * r + k % 4
    }

    /// Row `r`'s block `i` as a GGUF block (`r < rows`, `i < cols / 32`).
    pub fn block(&self, r: usize, i: usize) -> BlockQ8_0 {
        let j = r / GROUP16 * self.nb() + i;
        let q = &self.qs[j].0;
        BlockQ8_0 {
            d: self.d[j][r % GROUP16],
            qs: std::array::from_fn(|k| (q[Self::qs_index(r % GROUP16, k)] ^ 0x80) as i8),
        }
    }

    /// The matrix in GGUF layout (row-major blocks).
    pub fn to_bytes(&self) -> Vec<u8> {
        let nb = self.nb();
        let blocks: Vec<BlockQ8_0> = (0..self.rows * nb)
            .map(|j| self.block(j / nb, j % nb))
            .collect();
        crate::blocks::blocks_as_bytes(&blocks).to_vec()
    }

    /// Row `row` as f32.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        super::dequantize_packed_row((self.rows, self.cols), row, out, |i| self.block(row, i))
    }

    /// The 16 rows of group `g` against one Q8_0 activation row (`asum`:
    /// each activation block's quant sum).
    fn gemv(&self, isa: Isa, g: usize, a: &[BlockQ8_0], asum: &[i32]) -> [f32; GROUP16] {
        let (qs, d) = self.group(g);
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            let nb = qs.len();
            // SAFETY: `isa` was checked available (AVX-512 F/BW/VL/VNNI with
            // F16C) by the caller (`Isa::checked` in `matmul`); the kernel
            // reads `nb` entries of each slice, which all have them.
            return unsafe { super::q8_0_avx512::gemv(qs, d, &a[..nb], &asum[..nb]) };
        }
        let _ = isa;
        gemv_scalar(qs, d, a, asum)
    }

    /// `y[t, r] = Σ_c w[r, c] · x[t, c]` by the row kernels unless `tiled`
    /// takes it (as [`super::Packed::matmul_with`]).
    pub(crate) fn matmul_with(
        &self,
        isa: Isa,
        x: &[f32],
        y: &mut [f32],
        tiled: impl FnOnce(Isa, &[f32], &mut [f32]) -> bool,
    ) -> Result<()> {
        let (rows, cols, nb) = (self.rows, self.cols, self.nb());
        super::matmul_frame(isa, (rows, cols), x, y, tiled, |isa, n, buf, y| {
            buf.prepare_q8_0_with_sums(x, cols);
            let gemv = |g: usize, t: usize| {
                let (a, asum) = super::q8_0_row(buf, nb, t);
                self.gemv(isa, g, a, asum)
            };
            let gemv4 = |g: usize, t: usize| std::array::from_fn::<_, 4, _>(|k| gemv(g, t + k));
            super::run_groups((rows, GROUP16), n, y, gemv4, gemv);
        })
    }
}

/// The 16 rows' dot products with one Q8_0 activation row: per block the
/// exact integer sum `Σ w·a` (here `Σ (w ^ 0x80)·a − 128·Σ a`), then
/// [`crate::dot::scalar::q8_0_q8_0`]'s float step, so the results equal it
/// bit for bit.
pub fn gemv_scalar(
    qs: &[Qs16],
    d: &[[F16Le; GROUP16]],
    a: &[BlockQ8_0],
    asum: &[i32],
) -> [f32; GROUP16] {
    std::array::from_fn(|r| {
        let mut sumf = 0f32;
        for (((q, d), y), &s) in qs.iter().zip(d).zip(a).zip(asum) {
            let mut sumi = 0i32;
            for k in 0..QK {
                sumi += q.0[PackedQ8_0::qs_index(r, k)] as i32 * y.qs[k] as i32;
            }
            sumf = step_d(sumf, sumi - 128 * s, d[r], y.d);
        }
        sumf
    })
}
