//! Q4_K regrouped by 16 rows ([`BlockQ4Kx16`]), and the scalar reference
//! matrix × vector on that layout, written from the layout description
//! below (not from the SIMD code).
//!
//! One [`BlockQ4Kx16`] holds super-block `s` of 16 consecutive weight rows:
//!
//! ```text
//! qs[512p + 64t + 4r + i] = row r's qs[32p + 4t + i]   p: 64-value chunk (0..4)
//!                                                       t: 4-byte word (0..8)
//! sc[16j + r]             = row r's 6-bit scale of sub-block j (0..8)
//! m[32p + 2r + e]         = row r's 6-bit min of sub-block 2p + e
//! d[r], dmin[r]           = row r's super-block scales (f16)
//! ```
//!
//! so one 64-byte load `qs[512p + 64t..]` holds 4 bytes of each of the 16
//! rows: its low nibbles are values `4t..4t+4` of sub-block `2p` for every
//! row and its high nibbles those of sub-block `2p + 1`. A kernel multiplies
//! them by 4 broadcast activation bytes and gets the 16 rows' partial sums
//! in 16 lanes, with no horizontal sums and no 6-bit scale unpacking; a
//! 256-bit kernel takes the two halves of the load, rows 0..8 and 8..16,
//! against the same broadcast. Nothing is lost: [`GroupBlock::unpack`]
//! gives back the GGUF blocks bit for bit.
//!
//! Why 16 rows: the AVX-512 kernel then issues one 512-bit load, two masks
//! and two `vpdpbusd` per 64 weight bytes, where 8-row groups took two
//! 256-bit loads and twice as many broadcasts and `vpdpbusd` (measurements:
//! benches/journal/2026-12-04-evening-zen4-packed-q4k-16-rows.md).

use super::GroupBlock;
use crate::blocks::{scale_min_k4, BlockQ4K, BlockQ8K, F16Le, QK_K};
use crate::dot::scalar::step_kmin;
use crate::isa::Isa;
use crate::quant::pack_scale_min_k4;

/// Rows per group.
pub const ROWS: usize = 16;

/// Super-block `s` of 16 weight rows (see the module docs for the layout).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct BlockQ4Kx16 {
    pub qs: [u8; ROWS * QK_K / 2],
    pub sc: [u8; ROWS * 8],
    pub m: [u8; ROWS * 8],
    pub d: [F16Le; ROWS],
    pub dmin: [F16Le; ROWS],
}
// 16 GGUF blocks are 2304 bytes; the unpacked scales and mins cost 64 more.
const _: () = assert!(size_of::<BlockQ4Kx16>() == 2368);
const _: () = assert!(size_of::<BlockQ4Kx16>().is_multiple_of(64));

impl BlockQ4Kx16 {
    pub const ZERO: BlockQ4Kx16 = BlockQ4Kx16 {
        qs: [0; ROWS * QK_K / 2],
        sc: [0; ROWS * 8],
        m: [0; ROWS * 8],
        d: [F16Le([0, 0]); ROWS],
        dmin: [F16Le([0, 0]); ROWS],
    };

    /// Where row `r`'s word `t` of chunk `p` starts in `qs`.
    const fn qs_index(r: usize, p: usize, t: usize) -> usize {
        512 * p + 64 * t + 4 * r
    }

    /// Where row `r`'s scale of sub-block `j` is in `sc`.
    const fn sc_index(r: usize, j: usize) -> usize {
        16 * j + r
    }

    /// Where row `r`'s min of sub-block `j` is in `m`.
    const fn m_index(r: usize, j: usize) -> usize {
        32 * (j / 2) + 2 * r + j % 2
    }

    /// Row `r`'s 6-bit scale and min of sub-block `j` (0..8).
    #[inline(always)]
    pub fn scale_min(&self, r: usize, j: usize) -> (u8, u8) {
        (self.sc[Self::sc_index(r, j)], self.m[Self::m_index(r, j)])
    }

    /// Row `r`'s 4-bit level `k` (0..256) of this super-block.
    fn level(&self, r: usize, k: usize) -> u8 {
        let (j, i) = (k / 32, k % 32);
        let (p, t, b) = (j / 2, i / 4, i % 4);
        let byte = self.qs[Self::qs_index(r, p, t) + b];
        if j % 2 == 0 {
            byte & 0xF
        } else {
            byte >> 4
        }
    }
}

impl GroupBlock for BlockQ4Kx16 {
    type Gguf = BlockQ4K;
    const ROWS: usize = ROWS;
    type Lanes = [f32; ROWS];
    const ZERO_ROW: BlockQ4K = BlockQ4K {
        d: F16Le([0, 0]),
        dmin: F16Le([0, 0]),
        scales: [0; 12],
        qs: [0; QK_K / 2],
    };

    fn pack<'a>(row: impl Fn(usize) -> &'a BlockQ4K) -> BlockQ4Kx16 {
        let mut out = BlockQ4Kx16::ZERO;
        for r in 0..ROWS {
            let x = row(r);
            for p in 0..4 {
                for t in 0..8 {
                    let dst = Self::qs_index(r, p, t);
                    let src = 32 * p + 4 * t;
                    out.qs[dst..dst + 4].copy_from_slice(&x.qs[src..src + 4]);
                }
            }
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &x.scales);
                out.sc[Self::sc_index(r, j)] = s;
                out.m[Self::m_index(r, j)] = m;
            }
            out.d[r] = x.d;
            out.dmin[r] = x.dmin;
        }
        out
    }

    fn unpack(&self, r: usize) -> BlockQ4K {
        let mut x = BlockQ4K {
            d: self.d[r],
            dmin: self.dmin[r],
            scales: [0; 12],
            qs: [0; QK_K / 2],
        };
        for p in 0..4 {
            for t in 0..8 {
                let src = Self::qs_index(r, p, t);
                let dst = 32 * p + 4 * t;
                x.qs[dst..dst + 4].copy_from_slice(&self.qs[src..src + 4]);
            }
        }
        let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
        for j in 0..8 {
            (ls[j], lm[j]) = self.scale_min(r, j);
        }
        pack_scale_min_k4(&ls, &lm, &mut x.scales);
        x
    }

    fn gemv4(isa: Isa, w: &[BlockQ4Kx16], a: [&[BlockQ8K]; 4]) -> [[f32; ROWS]; 4] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: as in `gemv`.
            return unsafe { super::q4k_avx512::gemv4(w, a) };
        }
        a.map(|a| Self::gemv(isa, w, a))
    }

    fn gemv(isa: Isa, w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; ROWS] {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `isa` was checked available by the caller
            // (`Isa::checked` in `Packed::matmul`): AVX-512 F/BW/VL/VNNI
            // with AVX2, FMA, F16C, or AVX2 + FMA + F16C; the kernels read
            // only the blocks both slices have.
            if isa.has_avx512() {
                return unsafe { super::q4k_avx512::gemv(w, a) };
            }
            if isa.has_avx2() {
                return unsafe { super::q4k_avx2::gemv(w, a) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        if isa.is_neon() {
            // SAFETY: as above for `Isa::Neon` / `Isa::NeonDot` (the
            // `sdot` kernel only for the latter).
            return unsafe {
                if isa == Isa::NeonDot {
                    super::q4k_neon::q4kx16_gemv_dot(w, a)
                } else {
                    super::q4k_neon::q4kx16_gemv(w, a)
                }
            };
        }
        let _ = isa;
        gemv_scalar(w, a)
    }
}

/// The 16 rows' dot products with one Q8_K activation row: per super-block
/// `d·Σ_j sc_j·Σ q·a − dmin·Σ_j m_j·bsum_j` in exact integers, then the
/// float steps of [`crate::dot::scalar::q4k_q8k`] in its order, so the
/// results equal it bit for bit.
pub fn gemv_scalar(w: &[BlockQ4Kx16], a: &[BlockQ8K]) -> [f32; ROWS] {
    let mut out = [0f32; ROWS];
    for (r, o) in out.iter_mut().enumerate() {
        let mut sumf = 0f32;
        for (x, y) in w.iter().zip(a) {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..8 {
                let mut s = 0i32;
                for i in 0..32 {
                    s += x.level(r, 32 * j + i) as i32 * y.qs[32 * j + i] as i32;
                }
                let (sc, m) = x.scale_min(r, j);
                sumi += sc as i32 * s;
                let bsum = y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32;
                summ += m as i32 * bsum;
            }
            sumf = step_kmin(sumf, y.d, (x.d[r], x.dmin[r]), (sumi, summ));
        }
        *o = sumf;
    }
    out
}
