//! Q4_K regrouped by 8 rows ([`BlockQ4Kx8`]), and the scalar reference
//! matrix × vector on that layout, written from the layout description
//! below (not from the SIMD code).
//!
//! One [`BlockQ4Kx8`] holds super-block `s` of 8 consecutive weight rows:
//!
//! ```text
//! qs[256p + 32t + 4r + i] = row r's qs[32p + 4t + i]   p: 64-value chunk (0..4)
//!                                                       t: 4-byte word (0..8)
//! sc[8j + r]              = row r's 6-bit scale of sub-block j (0..8)
//! m[16p + 2r + e]         = row r's 6-bit min of sub-block 2p + e
//! d[r], dmin[r]           = row r's super-block scales (f16)
//! ```
//!
//! so one 32-byte load `qs[256p + 32t..]` holds 4 bytes of each of the 8
//! rows: its low nibbles are values `4t..4t+4` of sub-block `2p` for every
//! row and its high nibbles those of sub-block `2p + 1`. A kernel multiplies
//! them by 4 broadcast activation bytes and gets the 8 rows' partial sums in
//! 8 lanes, with no horizontal sums and no 6-bit scale unpacking. Nothing is
//! lost: [`GroupBlock::unpack`] gives back the GGUF blocks bit for bit.

use super::GroupBlock;
use crate::blocks::{scale_min_k4, BlockQ4K, BlockQ8K, F16Le, QK_K};
use crate::dot::scalar::step_kmin;
use crate::isa::Isa;
use crate::quant::pack_scale_min_k4;

/// Rows per group.
pub const GROUP: usize = 8;

/// Super-block `s` of 8 weight rows (see the module docs for the layout).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct BlockQ4Kx8 {
    pub qs: [u8; GROUP * QK_K / 2],
    pub sc: [u8; GROUP * 8],
    pub m: [u8; GROUP * 8],
    pub d: [F16Le; GROUP],
    pub dmin: [F16Le; GROUP],
}
// 8 GGUF blocks are 1152 bytes; the unpacked scales and mins cost 32 more.
const _: () = assert!(size_of::<BlockQ4Kx8>() == 1184);
const _: () = assert!(size_of::<BlockQ4Kx8>().is_multiple_of(32));

impl BlockQ4Kx8 {
    pub const ZERO: BlockQ4Kx8 = BlockQ4Kx8 {
        qs: [0; GROUP * QK_K / 2],
        sc: [0; GROUP * 8],
        m: [0; GROUP * 8],
        d: [F16Le([0, 0]); GROUP],
        dmin: [F16Le([0, 0]); GROUP],
    };

    /// Where row `r`'s scale of sub-block `j` is in `sc`.
    const fn sc_index(r: usize, j: usize) -> usize {
        8 * j + r
    }

    /// Where row `r`'s min of sub-block `j` is in `m`.
    const fn m_index(r: usize, j: usize) -> usize {
        16 * (j / 2) + 2 * r + j % 2
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
        let byte = self.qs[256 * p + 32 * t + 4 * r + b];
        if j % 2 == 0 {
            byte & 0xF
        } else {
            byte >> 4
        }
    }
}

impl GroupBlock for BlockQ4Kx8 {
    type Gguf = BlockQ4K;
    const ZERO_ROW: BlockQ4K = BlockQ4K {
        d: F16Le([0, 0]),
        dmin: F16Le([0, 0]),
        scales: [0; 12],
        qs: [0; QK_K / 2],
    };

    fn pack(rows: [&BlockQ4K; GROUP]) -> BlockQ4Kx8 {
        let mut out = BlockQ4Kx8::ZERO;
        for (r, x) in rows.iter().enumerate() {
            for p in 0..4 {
                for t in 0..8 {
                    let dst = 256 * p + 32 * t + 4 * r;
                    let src = 32 * p + 4 * t;
                    out.qs[dst..dst + 4].copy_from_slice(&x.qs[src..src + 4]);
                }
            }
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, &x.scales);
                out.sc[BlockQ4Kx8::sc_index(r, j)] = s;
                out.m[BlockQ4Kx8::m_index(r, j)] = m;
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
                let src = 256 * p + 32 * t + 4 * r;
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

    fn gemv4(isa: Isa, w: &[BlockQ4Kx8], a: [&[BlockQ8K]; 4]) -> [[f32; GROUP]; 4] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx512() {
            // SAFETY: as in `gemv`.
            return unsafe { super::q4k_avx512::gemv4(w, a) };
        }
        a.map(|a| Self::gemv(isa, w, a))
    }

    fn gemv(isa: Isa, w: &[BlockQ4Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
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
                    crate::dot::neon::q4kx8_gemv_dot(w, a)
                } else {
                    crate::dot::neon::q4kx8_gemv(w, a)
                }
            };
        }
        let _ = isa;
        gemv_scalar(w, a)
    }
}

/// The 8 rows' dot products with one Q8_K activation row: per super-block
/// `d·Σ_j sc_j·Σ q·a − dmin·Σ_j m_j·bsum_j` in exact integers, then the
/// float steps of [`crate::dot::scalar::q4k_q8k`] in its order, so the
/// results equal it bit for bit.
pub fn gemv_scalar(w: &[BlockQ4Kx8], a: &[BlockQ8K]) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
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
