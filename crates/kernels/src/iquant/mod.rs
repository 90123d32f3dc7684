//! The i-quants on lattices (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
//! IQ1_S): their blocks decoded to small integers, the one definition that
//! dequantization ([`crate::dequant`]) and the scalar dot products
//! ([`crate::dot::scalar`]) share and the SIMD kernels are tested against.
//!
//! A block's weights are groups of 8 (4 for the 3-bit types) values read
//! from a table ([`grids`]) by index, each value's sign from a sign byte
//! (7 stored bits and an even-parity eighth for IQ2_XXS, IQ2_XS and
//! IQ3_XXS), and an odd integer scale per 16 or 32 values. Decoded, weight
//! `j` of a block is `d · FACTOR · sc[j / 16] · q[j]` with integer `q` and
//! `sc`; IQ1_S's ±1/8 shift is folded into `q` as `8·g ± 1`. The SIMD
//! kernels read the same groups ([`IqBlock::group`]) and sum the same
//! integers.

pub(crate) mod grids;

use crate::blocks::*;
use grids::*;

/// A super-block decoded to integers: weight `j` is
/// `d · FACTOR · sc[j / 16] · q[j]`.
#[derive(Clone, Copy)]
pub struct Decoded {
    pub q: [i8; QK_K],
    pub sc: [i32; QK_K / 16],
}

impl Decoded {
    pub const ZERO: Decoded = Decoded {
        q: [0; QK_K],
        sc: [0; QK_K / 16],
    };
}

/// An i-quant block. Its 32-value sub-block `ib` is 4 groups of 8 values,
/// group `l` given by [`IqBlock::group`] as 8 magnitudes and 8 signs, and
/// two scales (values 0..16 and 16..32). Weight `j` of group `l` is
/// `d · FACTOR · scale · (MUL · magnitude_j · sign_j + δ)`, with `δ`
/// nonzero only for IQ1_S ([`IqBlock::delta`]).
pub trait IqBlock: ByteBlock {
    /// The float factor of every weight (a power of two).
    const FACTOR: f32;
    /// The integer factor of every grid value (8 for IQ1_S, whose ±1/8
    /// shift is then an integer).
    const MUL: i32 = 1;
    /// The super-block scale.
    fn d(&self) -> F16Le;
    /// Group `l` (0..4) of sub-block `ib` (0..8): 8 unsigned magnitudes
    /// and 8 signs (bytes of ±1), little-endian.
    fn group(&self, ib: usize, l: usize) -> (u64, u64);
    /// The scales of sub-block `ib`'s two halves of 16 values.
    fn scales(&self, ib: usize) -> [i32; 2];
    /// Where the signs are stored whole (IQ2_S, IQ3_S): sub-block `ib`'s 4
    /// sign bytes, little-endian (group `l`'s in byte `l`), which the SIMD
    /// kernels expand themselves instead of reading [`IqBlock::group`]'s.
    #[inline(always)]
    fn sign_bytes(&self, ib: usize) -> Option<u32> {
        let _ = ib;
        None
    }
    /// Where the grid has 4-value entries (IQ3_XXS, IQ3_S): sub-block `ib`'s
    /// 8 entries in order, which the SIMD kernels load directly instead of
    /// [`IqBlock::group`]'s pairs.
    #[inline(always)]
    fn grid4(&self, ib: usize) -> Option<[u32; 8]> {
        let _ = ib;
        None
    }
    /// The shift `δ` of sub-block `ib`'s values (IQ1_S: ±1; else 0).
    #[inline(always)]
    fn delta(&self, ib: usize) -> i32 {
        let _ = ib;
        0
    }
    /// `Σ_ib scale · δ · Σ a` over the block's sub-blocks, with the sums of
    /// the activations by 16 (`bsums`): the part of a dot product that the
    /// shifts add (zero, folded away, where [`IqBlock::delta`] is).
    #[inline(always)]
    fn delta_sum(&self, bsums: &[i16; QK_K / 16]) -> i32 {
        (0..8)
            .map(|ib| {
                let a = bsums[2 * ib] as i32 + bsums[2 * ib + 1] as i32;
                self.scales(ib)[0] * self.delta(ib) * a
            })
            .sum()
    }
    /// Decodes the block's 256 weights into `out`.
    fn decode(&self, out: &mut Decoded) {
        for ib in 0..8 {
            let [s0, s1] = self.scales(ib);
            out.sc[2 * ib] = s0;
            out.sc[2 * ib + 1] = s1;
            let delta = self.delta(ib);
            for l in 0..4 {
                let (g, s) = self.group(ib, l);
                for j in 0..8 {
                    let m = (g >> (8 * j)) as u8 as i32;
                    let sign = (s >> (8 * j)) as u8 as i8 as i32;
                    out.q[32 * ib + 8 * l + j] = (Self::MUL * m * sign + delta) as i8;
                }
            }
        }
    }
}

/// The sign byte of IQ2_XXS / IQ2_XS / IQ3_XXS's 7 stored bits: the eighth
/// bit makes the number of negative values even (`ksigns_iq2xs`).
#[inline(always)]
pub const fn ksigns(bits7: u32) -> u8 {
    let b = bits7 & 127;
    (b | ((b.count_ones() & 1) << 7)) as u8
}

/// For each sign byte, 8 bytes of ±1 (`0xFF` where bit `j` is set, else
/// `0x01`), little-endian: multiplies 8 values by their signs with one
/// `vpsignb` / `mul`.
pub(crate) static SIGN_BYTES: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = 0u64;
        let mut j = 0;
        while j < 8 {
            let b: u64 = if (i >> j) & 1 == 1 { 0xFF } else { 0x01 };
            v |= b << (8 * j);
            j += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// `SIGN_BYTES` of the parity-completed 7-bit signs ([`ksigns`]).
pub(crate) static KSIGN_BYTES: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = SIGN_BYTES[ksigns(i as u32) as usize];
        i += 1;
    }
    t
};

/// All-one magnitudes (IQ1_S, whose grid values carry their own signs).
const ONES: u64 = 0x0101_0101_0101_0101;

/// Little-endian u16 number `i` of `b`.
#[inline(always)]
pub(crate) fn u16_at(b: &[u8], i: usize) -> u32 {
    u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32
}

/// Little-endian u32 at byte `o` of `b`.
#[inline(always)]
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Little-endian u64 at byte `o` of `b` (the AVX-512 kernels' sign words).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes([
        b[o],
        b[o + 1],
        b[o + 2],
        b[o + 3],
        b[o + 4],
        b[o + 5],
        b[o + 6],
        b[o + 7],
    ])
}

/// A 4-bit scale stored as `s`: `2·s + 1`.
#[inline(always)]
fn odd(s: u32) -> i32 {
    2 * (s & 0xF) as i32 + 1
}

impl IqBlock for BlockIQ2XXS {
    const FACTOR: f32 = 0.125;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let aux = u32_at(&self.qs, 8 * ib + 4);
        let g = IQ2XXS_GRID[self.qs[8 * ib + l] as usize];
        (g, KSIGN_BYTES[((aux >> (7 * l)) & 127) as usize])
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = odd(u32_at(&self.qs, 8 * ib + 4) >> 28);
        [s, s]
    }
}

impl IqBlock for BlockIQ2XS {
    const FACTOR: f32 = 0.125;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let v = u16_at(&self.qs, 4 * ib + l);
        (
            IQ2XS_GRID[(v & 511) as usize],
            KSIGN_BYTES[(v >> 9) as usize],
        )
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = self.scales[ib] as u32;
        [odd(s), odd(s >> 4)]
    }
}

impl IqBlock for BlockIQ2S {
    const FACTOR: f32 = 0.125;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let i = self.qs[4 * ib + l] as usize | (((self.qh[ib] as usize) << (8 - 2 * l)) & 0x300);
        (
            IQ2S_GRID[i],
            SIGN_BYTES[self.qs[QK_K / 8 + 4 * ib + l] as usize],
        )
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = self.scales[ib] as u32;
        [odd(s), odd(s >> 4)]
    }
    #[inline(always)]
    fn sign_bytes(&self, ib: usize) -> Option<u32> {
        Some(u32_at(&self.qs, QK_K / 8 + 4 * ib))
    }
}

impl IqBlock for BlockIQ3XXS {
    const FACTOR: f32 = 0.25;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let aux = u32_at(&self.qs, QK_K / 4 + 4 * ib);
        let g0 = IQ3XXS_GRID[self.qs[8 * ib + 2 * l] as usize] as u64;
        let g1 = IQ3XXS_GRID[self.qs[8 * ib + 2 * l + 1] as usize] as u64;
        (
            g0 | g1 << 32,
            KSIGN_BYTES[((aux >> (7 * l)) & 127) as usize],
        )
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = odd(u32_at(&self.qs, QK_K / 4 + 4 * ib) >> 28);
        [s, s]
    }
    #[inline(always)]
    fn grid4(&self, ib: usize) -> Option<[u32; 8]> {
        let q = &self.qs[8 * ib..8 * ib + 8];
        Some(std::array::from_fn(|k| IQ3XXS_GRID[q[k] as usize]))
    }
}

impl IqBlock for BlockIQ3S {
    const FACTOR: f32 = 1.0;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let h = self.qh[ib] as usize;
        let i0 = self.qs[8 * ib + 2 * l] as usize | ((h << (8 - 2 * l)) & 256);
        let i1 = self.qs[8 * ib + 2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256);
        let g = IQ3S_GRID[i0] as u64 | (IQ3S_GRID[i1] as u64) << 32;
        (g, SIGN_BYTES[self.signs[4 * ib + l] as usize])
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = odd((self.scales[ib / 2] >> (4 * (ib % 2))) as u32);
        [s, s]
    }
    #[inline(always)]
    fn sign_bytes(&self, ib: usize) -> Option<u32> {
        Some(u32_at(&self.signs, 4 * ib))
    }
    #[inline(always)]
    fn grid4(&self, ib: usize) -> Option<[u32; 8]> {
        let h = (self.qh[ib] as usize) << 8;
        let q = &self.qs[8 * ib..8 * ib + 8];
        // Value k's ninth index bit is bit k of `qh[ib]`.
        Some(std::array::from_fn(|k| {
            IQ3S_GRID[q[k] as usize | ((h >> k) & 256)]
        }))
    }
}

impl IqBlock for BlockIQ1S {
    const FACTOR: f32 = 0.125;
    const MUL: i32 = 8;
    fn d(&self) -> F16Le {
        self.d
    }
    #[inline(always)]
    fn group(&self, ib: usize, l: usize) -> (u64, u64) {
        let h = u16_at(&self.qh, ib);
        let i = self.qs[4 * ib + l] as usize | ((((h >> (3 * l)) & 7) as usize) << 8);
        (ONES, IQ1S_GRID[i])
    }
    #[inline(always)]
    fn scales(&self, ib: usize) -> [i32; 2] {
        let s = 2 * ((u16_at(&self.qh, ib) >> 12) & 7) as i32 + 1;
        [s, s]
    }
    #[inline(always)]
    fn delta(&self, ib: usize) -> i32 {
        if u16_at(&self.qh, ib) & 0x8000 != 0 {
            -1
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksigns_has_even_parity_and_keeps_the_low_bits() {
        for i in 0..128u32 {
            let s = ksigns(i);
            assert_eq!(s.count_ones() % 2, 0, "{i}");
            assert_eq!(s as u32 & 127, i);
        }
        // llama.cpp's table starts 0, 129, 130, 3, 132.
        assert_eq!([0, 1, 2, 3, 4].map(ksigns), [0, 129, 130, 3, 132]);
    }

    #[test]
    fn sign_bytes_are_plus_minus_one() {
        for (i, &v) in SIGN_BYTES.iter().enumerate() {
            for j in 0..8 {
                let b = (v >> (8 * j)) as u8 as i8;
                assert_eq!(b, if (i >> j) & 1 == 1 { -1 } else { 1 });
            }
        }
    }
}
