//! Q2_K regrouped by 8 rows ([`BlockQ2Kx8`]), and the scalar reference
//! matrix × vector on that layout, written from the layout description
//! below (not from the SIMD code).
//!
//! One [`BlockQ2Kx8`] holds super-block `s` of 8 consecutive weight rows:
//!
//! ```text
//! qs[256h + 32t + 4r + i] = row r's qs[32h + 4t + i]   h: 128-value half (0..2)
//!                                                       t: 4-byte word (0..8)
//! sc[16p + 2r + e]        = row r's scales[2p + e]      p: 0..8, e: 0..2
//! d[r], dmin[r]           = row r's super-block scales (f16)
//! ```
//!
//! Byte `i` of word `t` of half `h` holds, in bits `2k..2k + 2`, the level
//! of value `128h + 32k + 4t + i` (GGUF's Q2_K order), which is in 16-value
//! group `8h + 2k + t / 4`. So one 32-byte load `qs[256h + 32t..]` holds 4
//! bytes of each of the 8 rows, and masking it with `3 << 2k` gives 4 levels
//! of each row (times `4^k`) for one group: a kernel multiplies them by 4
//! broadcast activation bytes and gets the 8 rows' partial sums in 8 lanes.
//! The scale bytes (4-bit scale, 4-bit min) of groups `2p` and `2p + 1`
//! of a row are adjacent, so 16 bytes widened to 16-bit give each row's
//! pair in one 32-bit lane. Same size as the 8 GGUF blocks (672 bytes), and
//! nothing is lost: [`GroupBlock::unpack`] gives back the GGUF blocks bit
//! for bit.

use super::GroupBlock;
use crate::blocks::{BlockQ2K, BlockQ8K, F16Le, QK_K};
use crate::dot::scalar::step_kmin;
use crate::isa::Isa;

use super::GROUP;

/// Super-block `s` of 8 weight rows (see the module docs for the layout).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct BlockQ2Kx8 {
    pub qs: [u8; GROUP * QK_K / 4],
    pub sc: [u8; GROUP * QK_K / 16],
    pub d: [F16Le; GROUP],
    pub dmin: [F16Le; GROUP],
}
// Exactly the 8 GGUF blocks' bytes, regrouped.
const _: () = assert!(size_of::<BlockQ2Kx8>() == 8 * 84);
const _: () = assert!(size_of::<BlockQ2Kx8>().is_multiple_of(32));

impl BlockQ2Kx8 {
    pub const ZERO: BlockQ2Kx8 = BlockQ2Kx8 {
        qs: [0; GROUP * QK_K / 4],
        sc: [0; GROUP * QK_K / 16],
        d: [F16Le([0, 0]); GROUP],
        dmin: [F16Le([0, 0]); GROUP],
    };

    /// Where byte `b` (0..64) of row `r`'s `qs` goes.
    const fn qs_index(r: usize, b: usize) -> usize {
        let (h, t, i) = (b / 32, (b % 32) / 4, b % 4);
        256 * h + 32 * t + 4 * r + i
    }

    /// Where row `r`'s scale byte of group `g` (0..16) goes.
    const fn sc_index(r: usize, g: usize) -> usize {
        16 * (g / 2) + 2 * r + g % 2
    }

    /// Row `r`'s scale byte of group `g`: scale in the low nibble, min in the high one.
    pub fn scale_byte(&self, r: usize, g: usize) -> u8 {
        self.sc[Self::sc_index(r, g)]
    }

    /// Row `r`'s 2-bit level of value `v` (0..256) of this super-block.
    fn level(&self, r: usize, v: usize) -> u8 {
        let (h, k, b) = (v / 128, (v % 128) / 32, v % 32);
        (self.qs[Self::qs_index(r, 32 * h + b)] >> (2 * k)) & 3
    }
}

impl GroupBlock for BlockQ2Kx8 {
    type Gguf = BlockQ2K;
    const ZERO_ROW: BlockQ2K = BlockQ2K {
        scales: [0; QK_K / 16],
        qs: [0; QK_K / 4],
        d: F16Le([0, 0]),
        dmin: F16Le([0, 0]),
    };

    const ROWS: usize = GROUP;
    type Lanes = [f32; GROUP];

    fn pack<'a>(row: impl Fn(usize) -> &'a BlockQ2K) -> BlockQ2Kx8 {
        let mut out = BlockQ2Kx8::ZERO;
        for r in 0..GROUP {
            let x = row(r);
            for (b, &q) in x.qs.iter().enumerate() {
                out.qs[Self::qs_index(r, b)] = q;
            }
            for (g, &s) in x.scales.iter().enumerate() {
                out.sc[Self::sc_index(r, g)] = s;
            }
            out.d[r] = x.d;
            out.dmin[r] = x.dmin;
        }
        out
    }

    fn unpack(&self, r: usize) -> BlockQ2K {
        BlockQ2K {
            scales: std::array::from_fn(|g| self.scale_byte(r, g)),
            qs: std::array::from_fn(|b| self.qs[Self::qs_index(r, b)]),
            d: self.d[r],
            dmin: self.dmin[r],
        }
    }

    fn gemv4(isa: Isa, w: &[BlockQ2Kx8], a: [&[BlockQ8K]; 4]) -> [[f32; GROUP]; 4] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: as in `gemv`.
            return unsafe { super::q2k_avx512::gemv4(w, a) };
        }
        a.map(|a| Self::gemv(isa, w, a))
    }

    fn gemv(isa: Isa, w: &[BlockQ2Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: `isa` was checked available (AVX-512 F/BW/VL/VNNI with
            // AVX2, FMA, F16C) by the caller (`Isa::checked` in
            // `Packed::matmul`); the kernel reads only the blocks both
            // slices have.
            return unsafe { super::q2k_avx512::gemv(w, a) };
        }
        let _ = isa;
        gemv_scalar(w, a)
    }
}

/// The 8 rows' dot products with one Q8_K activation row: per super-block
/// `Σ_g sc_g·Σ q·a` and `Σ_g m_g·bsum_g` in exact integers, then the float
/// steps of [`crate::dot::scalar::q2k_q8k`] in its order, so the results
/// equal it bit for bit.
pub fn gemv_scalar(w: &[BlockQ2Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    for (r, o) in out.iter_mut().enumerate() {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for g in 0..QK_K / 16 {
                let mut s = 0i32;
                for v in 16 * g..16 * g + 16 {
                    s += x.level(r, v) as i32 * y.qs[v] as i32;
                }
                let b = x.scale_byte(r, g);
                sumi += (b & 0xF) as i32 * s;
                summ += (b >> 4) as i32 * y.bsums[g] as i32;
            }
            sumf = step_kmin(sumf, y.d, (x.d[r], x.dmin[r]), (sumi, summ));
        }
        *o = sumf;
    }
    out
}
