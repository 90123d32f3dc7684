//! Reference quantizers of the 32-element types (`quantize_row_q4_0_ref` ...,
//! and `quantize_iq4_nl` as llama-quantize runs it).

use super::search::{best_index_int8, GROUP_MAX_EPS};
use super::QuantizeBlock;
use crate::blocks::*;

/// `(max by absolute value, its absolute value)` of a block.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl QuantizeBlock for BlockQ4_0 {
    fn quantize(x: &[f32]) -> Self {
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let x0 = (x[j] * id + 8.5) as i8;
            let x1 = (x[j + 16] * id + 8.5) as i8;
            qs[j] = (x0.min(15) as u8) | ((x1.min(15) as u8) << 4);
        }
        BlockQ4_0 {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ4_1 {
    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let x0 = ((x[j] - min) * id + 0.5) as i8;
            let x1 = ((x[j + 16] - min) * id + 0.5) as i8;
            qs[j] = (x0.min(15) as u8) | ((x1.min(15) as u8) << 4);
        }
        BlockQ4_1 {
            d: F16Le::from_f32(d),
            m: F16Le::from_f32(min),
            qs,
        }
    }
}

fn pack5(l0: u8, l1: u8, j: usize, qs: &mut [u8; 16], qh: &mut u32) {
    qs[j] = (l0 & 0x0F) | ((l1 & 0x0F) << 4);
    *qh |= (((l0 & 0x10) >> 4) as u32) << j;
    *qh |= (((l1 & 0x10) >> 4) as u32) << (j + 16);
}

impl QuantizeBlock for BlockQ5_0 {
    fn quantize(x: &[f32]) -> Self {
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            let x0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let x1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            pack5(x0, x1, j, &mut qs, &mut qh);
        }
        BlockQ5_0 {
            d: F16Le::from_f32(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ5_1 {
    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            let x0 = ((x[j] - min) * id + 0.5) as u8;
            let x1 = ((x[j + 16] - min) * id + 0.5) as u8;
            pack5(x0, x1, j, &mut qs, &mut qh);
        }
        BlockQ5_1 {
            d: F16Le::from_f32(d),
            m: F16Le::from_f32(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 {
            d: F16Le::from_f32(d),
            qs,
        }
    }
}

/// The activation format of the 32-value block dot products
/// (`x.len() == 32`): [`BlockQ8_0`]'s reference quantizer, run by its AVX2
/// version where the CPU has it (bit-identical; the tiled kernels quantize
/// their activation blocks with the AVX-512 form).
#[inline]
pub fn quantize_block_q8_0(x: &[f32]) -> BlockQ8_0 {
    #[cfg(target_arch = "x86_64")]
    if x.len() == QK && crate::Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked above) and `x` holds exactly
        // the 32 values the kernel reads.
        if let Some(b) = unsafe { super::q8_0_avx2::quantize_block_q8_0(x) } {
            return b;
        }
    }
    BlockQ8_0::quantize(x)
}

/// [`quantize_block_q8_0`] on a given path (`Avx512` / `Amx`: the AVX-512
/// form; `Avx2`: the AVX2 one; else the scalar code), for tests that hold
/// each against the reference; the scalar code where `isa` is not
/// available here.
pub fn quantize_block_q8_0_on(isa: crate::Isa, x: &[f32]) -> BlockQ8_0 {
    #[cfg(target_arch = "x86_64")]
    if x.len() == QK && isa.available() {
        if isa.has_avx512() {
            // SAFETY: AVX-512 F/BW/VL with AVX2 available (checked just
            // above); `x` holds exactly the 32 values the kernel reads.
            if let Some((qs, d)) = unsafe { super::q8_0_avx512::quantize_q8_0_regs(x.as_ptr()) } {
                let mut out = BlockQ8_0 {
                    d: F16Le::from_f32(d),
                    qs: [0; QK],
                };
                // SAFETY: 32 bytes into `out.qs`; AVX available as above.
                unsafe { std::arch::x86_64::_mm256_storeu_si256(out.qs.as_mut_ptr().cast(), qs) };
                return out;
            }
        } else if isa.has_avx2() {
            // SAFETY: AVX2 is available (checked above) and `x` holds
            // exactly the 32 values the kernel reads.
            if let Some(b) = unsafe { super::q8_0_avx2::quantize_block_q8_0(x) } {
                return b;
            }
        }
    }
    let _ = isa;
    BlockQ8_0::quantize(x)
}

impl QuantizeBlock for BlockQ8_1 {
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        BlockQ8_1 {
            d: F16Le::from_f32(d),
            s: F16Le::from_f32(sum as f32 * d),
            qs,
        }
    }
}

/// IQ4_NL as llama-quantize makes it (`quantize_iq4_nl` without an importance
/// matrix: weights `x²`, 7 refinement tries each way).
impl QuantizeBlock for BlockIQ4NL {
    fn quantize(x: &[f32]) -> Self {
        const NTRY: i32 = 7;
        let values = &KVALUES_IQ4NL;
        let (max, amax) = signed_absmax(x);
        let mut l = [0u8; 32];
        let mut scale = 0f32;
        if amax >= GROUP_MAX_EPS {
            let mut d = -max / values[0] as f32;
            let mut id = 1.0 / d;
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for &v in x {
                let q = values[best_index_int8(values, id * v)] as f32;
                let w = v * v;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
            d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
            let mut best = d * sumqx;
            for itry in -NTRY..=NTRY {
                id = (itry as f32 + values[0] as f32) / max;
                sumqx = 0.0;
                sumq2 = 0.0;
                for &v in x {
                    let q = values[best_index_int8(values, id * v)] as f32;
                    let w = v * v;
                    sumqx += w * q * v;
                    sumq2 += w * q * q;
                }
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scale = d;
        }
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (li, &v) in l.iter_mut().zip(x) {
            *li = best_index_int8(values, id * v) as u8;
        }
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = l[j] | (l[j + 16] << 4);
        }
        BlockIQ4NL {
            d: F16Le::from_f32(scale),
            qs,
        }
    }
}
