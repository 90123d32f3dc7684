//! Scalar dot products of one weight row with one quantized activation row:
//! the reference the SIMD paths are tested against. Integer sums per scale
//! group, then the block's float scales, as llama.cpp's `ggml_vec_dot_*`
//! generic code does.

use crate::blocks::*;

/// The float step of the 32-value types: `sumf + sumi·(d_w·d_a)`. Shared
/// with the SIMD kernels that keep the scalar results bit for bit.
#[inline(always)]
pub(crate) fn step_d(sumf: f32, sumi: i32, dw: F16Le, da: F16Le) -> f32 {
    sumf + sumi as f32 * (dw.to_f32() * da.to_f32())
}

/// The float step of Q4_1 / Q5_1 (`qsum`: the activation quants' sum).
#[inline(always)]
pub(crate) fn step_dm(sumf: f32, sumi: i32, qsum: i32, (dw, mw): (F16Le, F16Le), da: F16Le) -> f32 {
    let da = da.to_f32();
    sumf + (sumi as f32 * (dw.to_f32() * da) + mw.to_f32() * (da * qsum as f32))
}

/// The float step of the k-quants with mins: `sumf + (d_a·d)·sumi − (d_a·dmin)·summ`.
#[inline(always)]
pub(crate) fn step_kmin(
    sumf: f32,
    da: f32,
    (d, dmin): (F16Le, F16Le),
    (sumi, summ): (i32, i32),
) -> f32 {
    let d = da * d.to_f32();
    let dmin = da * dmin.to_f32();
    sumf + (d * sumi as f32 - dmin * summ as f32)
}

/// The float step of the symmetric k-quants: `sumf + d_a·d·sumi`.
#[inline(always)]
pub(crate) fn step_ksym(sumf: f32, da: f32, d: F16Le, sumi: i32) -> f32 {
    sumf + da * d.to_f32() * sumi as f32
}

#[inline(always)]
fn dot_i8(a: impl Iterator<Item = i32>, b: &[i8]) -> i32 {
    a.zip(b).map(|(x, &y)| x * y as i32).sum()
}

pub fn q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let lo = x.qs.iter().map(|&q| (q & 0xF) as i32 - 8);
        let hi = x.qs.iter().map(|&q| (q >> 4) as i32 - 8);
        let sumi = dot_i8(lo, &y.qs[..16]) + dot_i8(hi, &y.qs[16..]);
        sumf = step_d(sumf, sumi, x.d, y.d);
    }
    sumf
}

pub fn q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let lo = x.qs.iter().map(|&q| (q & 0xF) as i32);
        let hi = x.qs.iter().map(|&q| (q >> 4) as i32);
        let sumi = dot_i8(lo, &y.qs[..16]) + dot_i8(hi, &y.qs[16..]);
        sumf = step_dm(sumf, sumi, q8_sum(y), (x.d, x.m), y.d);
    }
    sumf
}

/// Exact sum of a Q8_1 block's quants (used instead of its f16-rounded `s`).
#[inline(always)]
pub fn q8_sum(y: &BlockQ8_1) -> i32 {
    y.qs.iter().map(|&q| q as i32).sum()
}

#[inline(always)]
fn q5_values(qs: &[u8; 16], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut v = [0i32; 32];
    for j in 0..16 {
        v[j] = ((qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4)) as i32;
        v[j + 16] = ((qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32;
    }
    v
}

pub fn q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let v = q5_values(&x.qs, x.qh);
        let sumi = dot_i8(v.iter().map(|&q| q - 16), &y.qs);
        sumf = step_d(sumf, sumi, x.d, y.d);
    }
    sumf
}

pub fn q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let v = q5_values(&x.qs, x.qh);
        let sumi = dot_i8(v.iter().copied(), &y.qs);
        sumf = step_dm(sumf, sumi, q8_sum(y), (x.d, x.m), y.d);
    }
    sumf
}

pub fn q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = dot_i8(x.qs.iter().map(|&q| q as i32), &y.qs);
        sumf = step_d(sumf, sumi, x.d, y.d);
    }
    sumf
}

pub fn iq4_nl_q8_0(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let lo =
            x.qs.iter()
                .map(|&q| KVALUES_IQ4NL[(q & 0xF) as usize] as i32);
        let hi =
            x.qs.iter()
                .map(|&q| KVALUES_IQ4NL[(q >> 4) as usize] as i32);
        let sumi = dot_i8(lo, &y.qs[..16]) + dot_i8(hi, &y.qs[16..]);
        sumf = step_d(sumf, sumi, x.d, y.d);
    }
    sumf
}

/// Sum over the 16 groups of 16: `sc[g] * dot(q[g], y[g])` with unsigned
/// quants `q` given by `val(element)`.
#[inline(always)]
fn grouped16(val: impl Fn(usize) -> i32, sc: impl Fn(usize) -> i32, y: &BlockQ8K) -> i32 {
    let mut sumi = 0i32;
    for g in 0..16 {
        let mut s = 0i32;
        for l in 0..16 {
            let e = 16 * g + l;
            s += val(e) * y.qs[e] as i32;
        }
        sumi += sc(g) * s;
    }
    sumi
}

pub fn q2k_q8k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let summ: i32 = (0..16)
            .map(|j| (x.scales[j] >> 4) as i32 * y.bsums[j] as i32)
            .sum();
        // element e = 128n + 32k + l: bits 2k.. of qs[32n + l].
        let val = |e: usize| ((x.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
        let sumi = grouped16(val, |g| (x.scales[g] & 0xF) as i32, y);
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), (sumi, summ));
    }
    sumf
}

pub fn q3k_q8k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = q3k_scales(&x.scales);
        let corr: i32 = (0..16).map(|g| sc[g] as i32 * y.bsums[g] as i32).sum();
        // Unsigned value low2 + 4*hbit in 0..8; the real quant is that minus 4.
        let val = |e: usize| {
            let (n, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let low = (x.qs[32 * n + l] >> (2 * k)) & 3;
            let h = (x.hmask[l] >> (4 * n + k)) & 1;
            (low | (h << 2)) as i32
        };
        let sumi = grouped16(val, |g| sc[g] as i32, y) - 4 * corr;
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

pub fn q4k_q8k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &x.scales);
            summ += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
            let q = &x.qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            let s = dot_i8(
                q.iter().map(|&b| ((b >> shift) & 0xF) as i32),
                &y.qs[32 * j..32 * j + 32],
            );
            sumi += sc as i32 * s;
        }
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), (sumi, summ));
    }
    sumf
}

pub fn q5k_q8k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &x.scales);
            summ += m as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32);
            let q = &x.qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            let vals = q
                .iter()
                .zip(&x.qh)
                .map(|(&b, &h)| (((b >> shift) & 0xF) | (((h >> j) & 1) << 4)) as i32);
            sumi += sc as i32 * dot_i8(vals, &y.qs[32 * j..32 * j + 32]);
        }
        sumf = step_kmin(sumf, y.d, (x.d, x.dmin), (sumi, summ));
    }
    sumf
}

pub fn q6k_q8k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let corr: i32 = (0..16)
            .map(|g| x.scales[g] as i32 * y.bsums[g] as i32)
            .sum();
        // element e = 128n + 32k + l: nibble from ql[64n + 32(k%2) + l] (high
        // nibble for k >= 2), 2 high bits from qh[32n + l] at bit 2k.
        let val = |e: usize| {
            let (n, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let b = x.ql[64 * n + 32 * (k % 2) + l];
            let lo = if k < 2 { b & 0xF } else { b >> 4 };
            let hi = (x.qh[32 * n + l] >> (2 * k)) & 3;
            (lo | (hi << 4)) as i32
        };
        let sumi = grouped16(val, |g| x.scales[g] as i32, y) - 32 * corr;
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

pub fn iq4_xs_q8k(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for ib in 0..8 {
            let qs = &x.qs[16 * ib..16 * ib + 16];
            let lo = qs.iter().map(|&q| KVALUES_IQ4NL[(q & 0xF) as usize] as i32);
            let hi = qs.iter().map(|&q| KVALUES_IQ4NL[(q >> 4) as usize] as i32);
            let s = dot_i8(lo, &y.qs[32 * ib..32 * ib + 16])
                + dot_i8(hi, &y.qs[32 * ib + 16..32 * ib + 32]);
            sumi += x.sub_scale(ib) * s;
        }
        sumf = step_ksym(sumf, y.d, x.d, sumi);
    }
    sumf
}

/// f16 weights × f32 activations.
pub fn f16_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| F16Le([b[0], b[1]]).to_f32() * v)
        .sum()
}

/// bf16 weights × f32 activations.
pub fn bf16_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| half::bf16::from_le_bytes([b[0], b[1]]).to_f32() * v)
        .sum()
}

/// f32 weights × f32 activations.
pub fn f32_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4)
        .zip(x)
        .map(|(b, &v)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v)
        .sum()
}

/// The i-quants on lattices ([`crate::iquant`]): each block decoded to
/// integers, `Σ sc·Σ q·a` exactly, then `sumf + (FACTOR·d_a)·d·sumi`. The
/// SIMD kernels sum the same integers and take the same float step.
pub(crate) fn iq_q8k<B: crate::iquant::IqBlock>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut dec = crate::iquant::Decoded::ZERO;
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        x.decode(&mut dec);
        let mut sumi = 0i32;
        for (k, (q, a)) in dec
            .q
            .chunks_exact(16)
            .zip(y.qs.chunks_exact(16))
            .enumerate()
        {
            sumi += dec.sc[k] * dot_i8(q.iter().map(|&v| v as i32), a);
        }
        sumf = step_iq(sumf, B::FACTOR * y.d, x.d(), sumi);
    }
    sumf
}

/// The float step of the i-quants: `sumf + (FACTOR·d_a)·d·sumi`.
#[inline(always)]
pub(crate) fn step_iq(sumf: f32, factor_da: f32, d: F16Le, sumi: i32) -> f32 {
    sumf + factor_da * d.to_f32() * sumi as f32
}

pub fn iq2_xxs_q8k(w: &[BlockIQ2XXS], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
pub fn iq2_xs_q8k(w: &[BlockIQ2XS], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
pub fn iq2_s_q8k(w: &[BlockIQ2S], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
pub fn iq3_xxs_q8k(w: &[BlockIQ3XXS], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
pub fn iq3_s_q8k(w: &[BlockIQ3S], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
pub fn iq1_s_q8k(w: &[BlockIQ1S], a: &[BlockQ8K]) -> f32 {
    iq_q8k(w, a)
}
