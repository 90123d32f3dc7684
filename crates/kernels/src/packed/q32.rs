//! The 32-value types with 4-bit nibbles (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL)
//! regrouped by 16 rows ([`PackedQ32`]) for the AVX-512 VNNI and the AVX2
//! matrix × vector (`q32_avx512`, `q32_avx2`), and the scalar
//! reference on that layout, written from the layout description below (not
//! from the SIMD code).
//!
//! Group `g`, block column `i` (values `32i..32i + 32` of rows `16g..16g + 16`),
//! `j = g·nb + i`:
//!
//! ```text
//! qs[j].0[64t + 4r + k]  = row r's qs[4t + k]        t: 4-byte word (0..4), k: 0..4
//! qh[j].0[2t + h] bit 4r + k = row r's qh bit 16h + 4t + k     (Q5_0, Q5_1)
//! d[j][r], m[j][r]       = row r's scale and min (f16; m: Q4_1, Q5_1)
//! ```
//!
//! Byte `k` of a row's word `t` holds levels `4t + k` (low nibble) and
//! `16 + 4t + k` (high nibble). A 64-byte load `qs[j].0[64t..]` holds word
//! `t` of all 16 rows, so one mask gives the 16 rows' levels `4t..4t + 4` and
//! a shift and a mask levels `16 + 4t..`, each against 4 broadcast
//! activation bytes in one `vpdpbusd` (16 rows' partial sums in 16 lanes).
//! `qh[j].0[2t + h]` is the 64-bit byte mask that adds the fifth bit (16) to
//! exactly those 64 levels. The offset of Q4_0 / Q5_0 (`d·(u − OFF)`) is
//! taken off once per block for all rows (`OFF·Σ a`); IQ4_NL's nibbles
//! index its table, looked up by one byte shuffle per 64 levels as the
//! table value plus 128 (`OFF = 128`). Same bytes as the GGUF layout (16
//! rows × 18 / 20 / 22 / 24 bytes per block column);
//! [`PackedQ32::to_bytes`] gives every GGUF block back bit for bit.

use super::{run_groups, GROUP16};
use crate::blocks::{
    blocks_as_bytes, cast_blocks, BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1,
    BlockQ8_0, ByteBlock, F16Le, KVALUES_IQ4NL, QK,
};
use crate::dot::scalar::{step_d, step_dm};
use crate::error::{KernelError, Result};
use crate::isa::Isa;
use mistral_gguf::GgmlType;
use rayon::prelude::*;

/// One block column of a group's 16 rows: the nibbles, word-interleaved.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Nibbles16(pub [u8; GROUP16 * QK / 2]);
const _: () = assert!(size_of::<Nibbles16>() == 256);

/// One block column of a group's 16 rows: the fifth bits as 8 byte masks.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct HighBits16(pub [u64; 8]);
const _: () = assert!(size_of::<HighBits16>() == 64);

/// A 32-value block type of 16 or 32 levels that [`PackedQ32`] holds:
/// value `d·(u − OFF)`, or `d·u + m` where it has a min. Sealed.
pub trait Block32: ByteBlock + sealed::Sealed {
    /// The offset subtracted from the levels (0 for the types with a min).
    const OFF: i32;
    /// Whether the block has a min `m`.
    const MIN: bool;
    /// Whether the block has fifth bits `qh`.
    const QH: bool;
    /// Whether a level `u` stands for [`KVALUES_IQ4NL`]`[u]` (IQ4_NL);
    /// the kernels then take `u' = KVALUES_IQ4NL[u] + 128` (unsigned) with
    /// `OFF = 128`.
    const LOOKUP: bool = false;
    /// `(d, m, qh, qs)`: `m` zero and `qh` 0 where the type has none.
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]);
    /// The inverse of [`Block32::parts`].
    fn from_parts(d: F16Le, m: F16Le, qh: u32, qs: [u8; 16]) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::blocks::BlockQ4_0 {}
    impl Sealed for crate::blocks::BlockQ4_1 {}
    impl Sealed for crate::blocks::BlockQ5_0 {}
    impl Sealed for crate::blocks::BlockQ5_1 {}
    impl Sealed for crate::blocks::BlockIQ4NL {}
}

const NO_MIN: F16Le = F16Le([0, 0]);

impl Block32 for BlockQ4_0 {
    const OFF: i32 = 8;
    const MIN: bool = false;
    const QH: bool = false;
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]) {
        (self.d, NO_MIN, 0, self.qs)
    }
    fn from_parts(d: F16Le, _: F16Le, _: u32, qs: [u8; 16]) -> Self {
        BlockQ4_0 { d, qs }
    }
}

impl Block32 for BlockQ4_1 {
    const OFF: i32 = 0;
    const MIN: bool = true;
    const QH: bool = false;
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]) {
        (self.d, self.m, 0, self.qs)
    }
    fn from_parts(d: F16Le, m: F16Le, _: u32, qs: [u8; 16]) -> Self {
        BlockQ4_1 { d, m, qs }
    }
}

impl Block32 for BlockQ5_0 {
    const OFF: i32 = 16;
    const MIN: bool = false;
    const QH: bool = true;
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]) {
        (self.d, NO_MIN, u32::from_le_bytes(self.qh), self.qs)
    }
    fn from_parts(d: F16Le, _: F16Le, qh: u32, qs: [u8; 16]) -> Self {
        BlockQ5_0 {
            d,
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

impl Block32 for BlockQ5_1 {
    const OFF: i32 = 0;
    const MIN: bool = true;
    const QH: bool = true;
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]) {
        (self.d, self.m, u32::from_le_bytes(self.qh), self.qs)
    }
    fn from_parts(d: F16Le, m: F16Le, qh: u32, qs: [u8; 16]) -> Self {
        BlockQ5_1 {
            d,
            m,
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

impl Block32 for BlockIQ4NL {
    const OFF: i32 = 128;
    const MIN: bool = false;
    const QH: bool = false;
    const LOOKUP: bool = true;
    fn parts(&self) -> (F16Le, F16Le, u32, [u8; 16]) {
        (self.d, NO_MIN, 0, self.qs)
    }
    fn from_parts(d: F16Le, _: F16Le, _: u32, qs: [u8; 16]) -> Self {
        BlockIQ4NL { d, qs }
    }
}

pub use crate::plan::is_q32;

/// Calls `$f::<B>($args)` with `B` the block type of `$ty` (one of
/// [`is_q32`]'s types).
macro_rules! with_block {
    ($ty:expr, $f:ident($($args:expr),*)) => {
        match $ty {
            GgmlType::Q4_0 => $f::<BlockQ4_0>($($args),*),
            GgmlType::Q4_1 => $f::<BlockQ4_1>($($args),*),
            GgmlType::Q5_0 => $f::<BlockQ5_0>($($args),*),
            GgmlType::Q5_1 => $f::<BlockQ5_1>($($args),*),
            _ => $f::<BlockIQ4NL>($($args),*),
        }
    };
}

/// A `[rows, cols]` matrix of one of the 4-bit 32-value types (Q4_0,
/// Q4_1, Q5_0, Q5_1, IQ4_NL) in groups of
/// 16 rows (the last one padded with zero rows), see the module docs.
#[derive(Clone)]
pub struct PackedQ32 {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    qs: Vec<Nibbles16>,
    /// Empty for Q4_0, Q4_1.
    qh: Vec<HighBits16>,
    d: Vec<[F16Le; GROUP16]>,
    /// Empty for Q4_0, Q5_0.
    m: Vec<[F16Le; GROUP16]>,
}

impl std::fmt::Debug for PackedQ32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed{} [{}, {}]", self.ty, self.rows, self.cols)
    }
}

/// The blocks of group block column `j` (`None`: a padding row) of `rows`
/// GGUF rows of `nb` blocks.
fn column<B: Block32>(blocks: &[B], (rows, nb): (usize, usize), j: usize) -> [Option<B>; GROUP16] {
    let (g, i) = (j / nb, j % nb);
    std::array::from_fn(|r| {
        let row = GROUP16 * g + r;
        (row < rows).then(|| blocks[row * nb + i])
    })
}

/// Packs `rows` more GGUF rows of `B` (`bytes`) after `p`'s (whose last
/// group is full), each field filled in place.
fn pack_typed<B: Block32>(p: &mut PackedQ32, bytes: &[u8], rows: usize) -> Result<()> {
    let blocks: &[B] = cast_blocks(bytes)?;
    let dims = (rows, p.cols / QK);
    let n = rows.div_ceil(GROUP16) * dims.1;
    let parts = |j: usize| column(blocks, dims, j).map(|b| b.map(|b| b.parts()));
    let at = p.qs.len();
    p.qs.resize(at + n, Nibbles16([0; GROUP16 * QK / 2]));
    p.d.resize(at + n, [NO_MIN; GROUP16]);
    p.qs[at..]
        .par_iter_mut()
        .zip(p.d[at..].par_iter_mut())
        .enumerate()
        .for_each(|(j, (qs, d))| {
            for (r, p) in parts(j).into_iter().enumerate() {
                let Some((bd, _, _, bq)) = p else { continue };
                d[r] = bd;
                for t in 0..4 {
                    let at = PackedQ32::qs_index(r, 4 * t);
                    qs.0[at..at + 4].copy_from_slice(&bq[4 * t..4 * t + 4]);
                }
            }
        });
    if B::QH {
        p.qh.resize(at + n, HighBits16([0; 8]));
        p.qh[at..].par_iter_mut().enumerate().for_each(|(j, qh)| {
            for (r, p) in parts(j).into_iter().enumerate() {
                let Some((_, _, bh, _)) = p else { continue };
                for v in (0..QK).step_by(4) {
                    // Levels v..v + 4: 4 bits of the row's `qh`.
                    let (mask, bit) = PackedQ32::qh_index(r, v);
                    qh.0[mask] |= ((bh >> v & 0xF) as u64) << bit;
                }
            }
        });
    }
    if B::MIN {
        p.m.resize(at + n, [NO_MIN; GROUP16]);
        p.m[at..].par_iter_mut().enumerate().for_each(|(j, m)| {
            for (r, p) in parts(j).into_iter().enumerate() {
                m[r] = p.map_or(NO_MIN, |p| p.1);
            }
        });
    }
    p.rows += rows;
    Ok(())
}

/// How many `qh` and `m` entries a matrix of `B` with `n` group blocks has.
fn fields_of<B: Block32>(n: usize) -> (usize, usize) {
    (if B::QH { n } else { 0 }, if B::MIN { n } else { 0 })
}

impl PackedQ32 {
    /// See [`super::Packed::with_capacity`] (`ty` one of [`is_q32`]'s).
    pub(crate) fn with_capacity(ty: GgmlType, rows: usize, cols: usize) -> PackedQ32 {
        let n = rows.div_ceil(GROUP16) * (cols / QK);
        let (qh, m) = with_block!(ty, fields_of(n));
        PackedQ32 {
            ty,
            rows: 0,
            cols,
            qs: Vec::with_capacity(n),
            qh: Vec::with_capacity(qh),
            d: Vec::with_capacity(n),
            m: Vec::with_capacity(m),
        }
    }

    /// See [`super::Packed::append_rows`].
    pub(crate) fn append_rows(&mut self, bytes: &[u8], rows: usize) -> Result<()> {
        super::check_append(self.ty, self.rows, GROUP16)?;
        super::check_size(self.ty, bytes, rows, self.cols)?;
        with_block!(self.ty, pack_typed(self, bytes, rows))
    }

    /// Regroups `rows` GGUF rows of `cols` values (`bytes`) of `ty` (Q4_0,
    /// Q4_1, Q5_0, Q5_1 or IQ4_NL), in parallel.
    pub fn pack(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<PackedQ32> {
        if !is_q32(ty) {
            return Err(KernelError::Unsupported {
                ty,
                op: "PackedQ32",
            });
        }
        super::check_size(ty, bytes, rows, cols)?;
        let mut p = PackedQ32::with_capacity(ty, rows, cols);
        p.append_rows(bytes, rows)?;
        Ok(p)
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

    fn nb(&self) -> usize {
        self.cols / QK
    }

    /// Where nibble byte `k` (0..16) of row `r` (0..16) sits in a [`Nibbles16`].
    const fn qs_index(r: usize, k: usize) -> usize {
        64 * (k / 4) + 4 * r + k % 4
    }

    /// Where the fifth bit of row `r`'s level `v` (0..32) sits in a
    /// [`HighBits16`]: (mask, bit).
    const fn qh_index(r: usize, v: usize) -> (usize, usize) {
        let (h, t, k) = (v / 16, v % 16 / 4, v % 4);
        (2 * t + h, 4 * r + k)
    }

    /// Group `g`'s block columns.
    pub(crate) fn group(&self, g: usize) -> Group<'_> {
        let nb = self.nb();
        let r = g * nb..(g + 1) * nb;
        Group {
            qs: &self.qs[r.clone()],
            qh: self.qh.get(r.clone()).unwrap_or(&[]),
            d: &self.d[r.clone()],
            m: self.m.get(r).unwrap_or(&[]),
        }
    }

    /// Row `r`'s block `i` as its fields `(d, m, qh, qs)` (as
    /// [`Block32::parts`]: `m` zero and `qh` 0 where the type has none;
    /// `r < rows`, `i < cols / 32`).
    #[inline]
    pub fn parts(&self, r: usize, i: usize) -> (F16Le, F16Le, u32, [u8; 16]) {
        let j = r / GROUP16 * self.nb() + i;
        let q = &self.qs[j].0;
        let r16 = r % GROUP16;
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for t in 0..4 {
            let at = Self::qs_index(r16, 4 * t);
            qs[4 * t..4 * t + 4].copy_from_slice(&q[at..at + 4]);
        }
        if let Some(h) = self.qh.get(j) {
            for v in (0..QK).step_by(4) {
                let (mask, bit) = Self::qh_index(r16, v);
                qh |= ((h.0[mask] >> bit & 0xF) as u32) << v;
            }
        }
        let m = self.m.get(j).map_or(NO_MIN, |m| m[r16]);
        (self.d[j][r16], m, qh, qs)
    }

    /// Row `r`'s block `i` as a GGUF block of `B` (`B::TYPE` is the matrix's).
    fn block_typed<B: Block32>(&self, r: usize, i: usize) -> B {
        let (d, m, qh, qs) = self.parts(r, i);
        B::from_parts(d, m, qh, qs)
    }

    /// Writes row `r`'s block `i` in GGUF bytes to the start of `out` (at
    /// least one block's size) and returns them (`r < rows`, `i < cols / 32`).
    pub fn block_bytes<'a>(&self, r: usize, i: usize, out: &'a mut [u8]) -> &'a [u8] {
        fn put<'a, B: Block32>(p: &PackedQ32, r: usize, i: usize, out: &'a mut [u8]) -> &'a [u8] {
            let b = p.block_typed::<B>(r, i);
            let bytes = blocks_as_bytes(std::slice::from_ref(&b));
            out[..bytes.len()].copy_from_slice(bytes);
            &out[..bytes.len()]
        }
        with_block!(self.ty, put(self, r, i, out))
    }

    /// The matrix in GGUF layout (row-major blocks).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn all<B: Block32>(p: &PackedQ32) -> Vec<u8> {
            let nb = p.nb();
            let blocks: Vec<B> = (0..p.rows * nb)
                .map(|j| p.block_typed(j / nb, j % nb))
                .collect();
            blocks_as_bytes(&blocks).to_vec()
        }
        with_block!(self.ty, all(self))
    }

    /// Row `row` as f32.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        fn typed<B: Block32>(p: &PackedQ32, row: usize, out: &mut [f32]) -> Result<()> {
            let dims = (p.rows, p.cols);
            super::dequantize_packed_row(dims, row, out, |i| p.block_typed::<B>(row, i))
        }
        with_block!(self.ty, typed(self, row, out))
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
            let act = |t: usize| super::q8_0_row(buf, nb, t);
            with_block!(self.ty, run_typed(self, isa, &act, n, y));
        })
    }
}

/// Activation row `t`: its Q8_0 blocks and their quant sums.
type Act<'a> = dyn Fn(usize) -> (&'a [BlockQ8_0], &'a [i32]) + Sync + 'a;

/// [`PackedQ32::matmul`]'s per-group products for block type `B`.
fn run_typed<B: Block32>(p: &PackedQ32, isa: Isa, act: &Act<'_>, n: usize, y: &mut [f32]) {
    let gemv4 = |g: usize, t: usize| {
        let a = [act(t), act(t + 1), act(t + 2), act(t + 3)];
        p.group(g).gemv4::<B>(isa, a)
    };
    let gemv = |g: usize, t: usize| p.group(g).gemv::<B>(isa, act(t));
    run_groups((p.rows, GROUP16), n, y, gemv4, gemv);
}

/// The block columns of one group.
#[derive(Clone, Copy)]
pub(crate) struct Group<'a> {
    pub(crate) qs: &'a [Nibbles16],
    /// Empty where the type has no fifth bits.
    pub(crate) qh: &'a [HighBits16],
    pub(crate) d: &'a [[F16Le; GROUP16]],
    /// Empty where the type has no min.
    pub(crate) m: &'a [[F16Le; GROUP16]],
}

impl Group<'_> {
    /// The 16 rows against one Q8_0 activation row and its block sums.
    fn gemv<B: Block32>(self, isa: Isa, a: (&[BlockQ8_0], &[i32])) -> [f32; GROUP16] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: `isa` was checked available (AVX-512 F/BW/VL/VNNI with
            // F16C) by the caller (`Isa::checked` in `matmul`); the group
            // holds `nb` block columns of every field `B` has, and the
            // activation row `nb` blocks and sums.
            return unsafe { super::q32_avx512::gemv::<B>(self, a) };
        }
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            // SAFETY: as above, AVX2 with FMA and F16C (`isa` checked by
            // the caller).
            return unsafe { super::q32_avx2::gemv::<B>(self, a) };
        }
        let _ = isa;
        gemv_scalar::<B>(self, a)
    }

    /// [`Group::gemv`] for 4 activation rows (one pass over the weights on
    /// AVX2; AVX-512 runs the tiled kernel from 2 rows on).
    fn gemv4<B: Block32>(self, isa: Isa, a: [(&[BlockQ8_0], &[i32]); 4]) -> [[f32; GROUP16]; 4] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() && !isa.has_avx512() {
            // SAFETY: as in `gemv`.
            return unsafe { super::q32_avx2::gemv4::<B>(self, a) };
        }
        a.map(|a| self.gemv::<B>(isa, a))
    }
}

/// The 16 rows' dot products with one Q8_0 activation row (`a.1`: each
/// block's quant sum): per block the exact integer sum `Σ (u − OFF)·a`
/// (IQ4_NL: `Σ (u' − 128)·a`, `u'` the table value plus 128),
/// then the float step of [`crate::dot::scalar`]'s kernel of `B`
/// (`step_d`, or `step_dm` with the exact `Σ a`), so the results equal it
/// bit for bit.
pub(crate) fn gemv_scalar<B: Block32>(
    w: Group<'_>,
    (a, asum): (&[BlockQ8_0], &[i32]),
) -> [f32; GROUP16] {
    std::array::from_fn(|r| {
        let mut sumf = 0f32;
        for (j, (y, &s)) in a.iter().zip(asum).enumerate().take(w.qs.len()) {
            let mut sumi = 0i32;
            for v in 0..QK {
                let byte = w.qs[j].0[PackedQ32::qs_index(r, v % 16)];
                let mut u = if v < 16 { byte & 0xF } else { byte >> 4 } as i32;
                if B::QH {
                    let (word, bit) = PackedQ32::qh_index(r, v);
                    u |= ((w.qh[j].0[word] >> bit & 1) as i32) << 4;
                }
                if B::LOOKUP {
                    u = KVALUES_IQ4NL[u as usize] as i32 + 128;
                }
                sumi += u * y.qs[v] as i32;
            }
            sumf = if B::MIN {
                step_dm(sumf, sumi, s, (w.d[j][r], w.m[j][r]), y.d)
            } else {
                step_d(sumf, sumi - B::OFF * s, w.d[j][r], y.d)
            };
        }
        sumf
    })
}
