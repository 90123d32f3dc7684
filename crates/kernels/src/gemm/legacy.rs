//! 32-value block weights × Q8_0 activations, register-tiled (AVX2).
//!
//! Per 32-value block, with unsigned levels `q` (0..16 or 0..32: Q4_0, Q4_1,
//! Q5_0, Q5_1):
//!
//! ```text
//! dot = d_w·d_a · (Σ q·a − off·Σ a)  +  m_w · d_a·Σ a
//! ```
//!
//! (`off` 8 / 16 for Q4_0 / Q5_0, `m_w` the min of Q4_1 / Q5_1). Signed
//! weights (Q8_0, and IQ4_NL's table values) are multiplied as `|q|` times
//! the activations with `q`'s sign (`vpsignb`), which keeps `vpmaddubsw`'s
//! first operand unsigned (|q| ≤ 128 as a byte) and its pair sums within
//! i16 (2·128·127); those are widened at once. As in
//! [`super::kquant`], weights are expanded once per call ([`WeightBlock`]),
//! activations are interleaved 8 rows per [`ActBlock`], and a tile of `R`
//! weight rows × `H` panels broadcasts 4 weight bytes per `vpmaddubsw`
//! against 8 activation rows, summing a block's products in i16 (bounded:
//! see `matmul`). The float steps differ from the row-at-a-time kernels (one
//! fused multiply-add per block and row), so results agree with them to
//! f32 rounding, not bit for bit.

use super::{row_block_size, store_tile, with_panels, PANEL};
use crate::blocks::*;
use crate::dot::avx2;
use crate::shared::{OutPtr, Pool};
use mistral_gguf::GgmlType;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows per microkernel tile.
const R: usize = 4;
/// Panels per microkernel tile.
const H: usize = 1;
/// Most weight rows per row block.
const RB_MAX: usize = 24;

/// One block of one weight row, expanded (also the starting point of the
/// AVX-512 kernel's own form, [`super::legacy_avx512`]).
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct WeightBlock {
    /// Unsigned levels, in order (signed types: the magnitudes).
    pub(super) qs: [u8; 32],
    /// Signed types: the values themselves (their signs are applied to the
    /// activations).
    pub(super) sgn: [i8; 32],
    pub(super) d: f32,
    /// The min (Q4_1 / Q5_1), else unused.
    pub(super) m: f32,
}

pub(super) const WEIGHT_ZERO: WeightBlock = WeightBlock {
    qs: [0; 32],
    sgn: [0; 32],
    d: 0.0,
    m: 0.0,
};

/// One block of 8 activation rows.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct ActBlock {
    /// 4-value group `j`: row `c`'s values `4j..4j+4` in bytes `4c..4c+4`.
    qs: [[i8; 32]; 8],
    /// Per row: the sum of its quants.
    sum: [i32; PANEL],
    /// Per row: its scale.
    d: [f32; PANEL],
    /// Per row: scale × sum.
    sd: [f32; PANEL],
}

const ACT_ZERO: ActBlock = ActBlock {
    qs: [[0; 32]; 8],
    sum: [0; PANEL],
    d: [0.0; PANEL],
    sd: [0.0; PANEL],
};

/// The activation panels of one call, reused across calls.
static PANELS: Pool<Vec<ActBlock>> = Pool::new();

thread_local! {
    static WEIGHTS: RefCell<Vec<WeightBlock>> = const { RefCell::new(Vec::new()) };
}

/// How a weight type maps onto the microkernel: its compile-time options.
///
/// `DEPTH`: `vpmaddubsw` results summed in i16 before widening: 8 per block
/// for 16 levels (16 products · 15 · 127 = 30480), 4 for 32 levels, 1 for
/// signed bytes. `SHIFT`: `off = 1 << SHIFT` subtracted per activation (0:
/// none). `MIN`: add the weight min term. `SIGNED`: signed weights.
trait Form {
    const DEPTH: usize;
    const SHIFT: i32;
    const MIN: bool;
    const SIGNED: bool;
}

macro_rules! form {
    ($name:ident, $depth:expr, $shift:expr, $min:expr, $signed:expr) => {
        struct $name;
        impl Form for $name {
            const DEPTH: usize = $depth;
            const SHIFT: i32 = $shift;
            const MIN: bool = $min;
            const SIGNED: bool = $signed;
        }
    };
}
form!(FormQ4_0, 8, 3, false, false);
form!(FormQ4_1, 8, 0, true, false);
form!(FormQ5_0, 4, 4, false, false);
form!(FormQ5_1, 4, 0, true, false);
form!(FormSigned, 1, 0, false, true);

/// Expands block `b` of a row of `ty`.
///
/// # Safety
/// AVX2 available; `row` holds at least `b + 1` blocks of `ty`.
#[inline(always)]
unsafe fn expand(ty: GgmlType, row: &[u8], b: usize, out: &mut WeightBlock) {
    macro_rules! block {
        ($B:ty) => {{
            let size = std::mem::size_of::<$B>();
            // SAFETY: the caller guarantees the block is inside `row`;
            // block structs have alignment 1 and any bit pattern is valid.
            &*(row.as_ptr().add(b * size) as *const $B)
        }};
    }
    if ty == GgmlType::Q8_0 {
        let x: &BlockQ8_0 = block!(BlockQ8_0);
        out.d = avx2::f16(x.d);
        let v = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        _mm256_storeu_si256(out.sgn.as_mut_ptr() as *mut __m256i, v);
        // |-128| is 0x80: 128 read as unsigned.
        _mm256_storeu_si256(out.qs.as_mut_ptr() as *mut __m256i, _mm256_abs_epi8(v));
        return;
    }
    let none = F16Le([0, 0]);
    let parts = match ty {
        GgmlType::Q4_0 => {
            let x: &BlockQ4_0 = block!(BlockQ4_0);
            (x.d, none, [0; 4], &x.qs)
        }
        GgmlType::Q4_1 => {
            let x: &BlockQ4_1 = block!(BlockQ4_1);
            (x.d, x.m, [0; 4], &x.qs)
        }
        GgmlType::Q5_0 => {
            let x: &BlockQ5_0 = block!(BlockQ5_0);
            (x.d, none, x.qh, &x.qs)
        }
        GgmlType::IQ4_NL => {
            let x: &BlockIQ4NL = block!(BlockIQ4NL);
            (x.d, none, [0; 4], &x.qs)
        }
        _ => {
            // Q5_1 (the only other type `matmul` lets through).
            let x: &BlockQ5_1 = block!(BlockQ5_1);
            (x.d, x.m, x.qh, &x.qs)
        }
    };
    expand_parts(ty, parts, out);
}

/// [`expand`] of a block of one of the 4-bit 32-value types given by its
/// fields: scale, min (zero where the type has none), fifth bits, nibbles.
///
/// # Safety
/// AVX2 available; `ty` is Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL.
#[inline(always)]
unsafe fn expand_parts(
    ty: GgmlType,
    (d, m, qh, qs): (F16Le, F16Le, [u8; 4], &[u8; 16]),
    out: &mut WeightBlock,
) {
    out.d = avx2::f16(d);
    out.m = avx2::f16(m);
    let levels = match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => avx2::levels_q4_32(qs),
        GgmlType::Q5_0 | GgmlType::Q5_1 => avx2::levels_q5_32(qs, qh),
        _ => {
            // IQ4_NL: signed values, their signs applied to the activations.
            let v = avx2::values_iq4nl_32(qs);
            _mm256_storeu_si256(out.sgn.as_mut_ptr() as *mut __m256i, v);
            _mm256_abs_epi8(v)
        }
    };
    _mm256_storeu_si256(out.qs.as_mut_ptr() as *mut __m256i, levels);
}

/// Quantizes activation rows `8p..8p+8` (zeros past `n`) into panel row `p`.
fn fill_panels(x: &[f32], cols: usize, n: usize, p: usize, out: &mut [ActBlock]) {
    for (b, blk) in out.iter_mut().enumerate() {
        *blk = ACT_ZERO;
        for c in 0..PANEL {
            let t = p * PANEL + c;
            if t >= n {
                break;
            }
            let q =
                crate::quant::quantize_block_q8_0(&x[t * cols + b * QK..t * cols + (b + 1) * QK]);
            for j in 0..8 {
                blk.qs[j][4 * c..4 * c + 4].copy_from_slice(&q.qs[4 * j..4 * j + 4]);
            }
            let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
            let d = q.d.to_f32();
            blk.sum[c] = sum;
            blk.d[c] = d;
            blk.sd[c] = d * sum as f32;
        }
    }
}

/// `y` for rows `r0..r0 + TR` and panels `p0..p0 + TH`, over every block,
/// for weights of form `F`.
///
/// # Safety
/// AVX2 + FMA available; `w[r]` and `a[h]` valid for `nb` blocks; the rows
/// are this worker's.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const TR: usize, const TH: usize, F: Form>(
    w: [*const WeightBlock; TR],
    a: [*const ActBlock; TH],
    nb: usize,
    (rows, n): (usize, usize),
    (r0, p0): (usize, usize),
    y: OutPtr,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); TH]; TR];
    for b in 0..nb {
        let mut isum = [[_mm256_setzero_si256(); TH]; TR];
        let mut acc16 = [[_mm256_setzero_si256(); TH]; TR];
        for j in 0..8 {
            let mut av = [_mm256_setzero_si256(); TH];
            for h in 0..TH {
                av[h] = _mm256_load_si256((*a[h].add(b)).qs[j].as_ptr() as *const __m256i);
            }
            for r in 0..TR {
                let wb = &*w[r].add(b);
                let word =
                    |p: *const u8| _mm256_set1_epi32((p.add(4 * j) as *const i32).read_unaligned());
                let wv = word(wb.qs.as_ptr());
                let sv = if F::SIGNED {
                    word(wb.sgn.as_ptr() as *const u8)
                } else {
                    wv
                };
                for h in 0..TH {
                    let p = if F::SIGNED {
                        _mm256_maddubs_epi16(wv, _mm256_sign_epi8(av[h], sv))
                    } else {
                        _mm256_maddubs_epi16(wv, av[h])
                    };
                    acc16[r][h] = if j % F::DEPTH == 0 {
                        p
                    } else {
                        _mm256_add_epi16(acc16[r][h], p)
                    };
                }
            }
            if (j + 1) % F::DEPTH == 0 {
                for r in 0..TR {
                    for h in 0..TH {
                        isum[r][h] =
                            _mm256_add_epi32(isum[r][h], _mm256_madd_epi16(acc16[r][h], ones));
                    }
                }
            }
        }
        for h in 0..TH {
            let ab = &*a[h].add(b);
            let da = _mm256_load_ps(ab.d.as_ptr());
            let off = _mm256_sll_epi32(
                _mm256_load_si256(ab.sum.as_ptr() as *const __m256i),
                _mm_cvtsi32_si128(F::SHIFT),
            );
            let sd = _mm256_load_ps(ab.sd.as_ptr());
            for r in 0..TR {
                let wb = &*w[r].add(b);
                let iv = if F::SHIFT > 0 {
                    _mm256_sub_epi32(isum[r][h], off)
                } else {
                    isum[r][h]
                };
                let dd = _mm256_mul_ps(_mm256_set1_ps(wb.d), da);
                acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), dd, acc[r][h]);
                if F::MIN {
                    acc[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(wb.m), sd, acc[r][h]);
                }
            }
        }
    }
    store_tile(&acc, y, (rows, n), (r0, p0));
}

/// Every tile of the row block `rb0..rb1` (expanded in `wbuf`, `nb` blocks
/// per row).
///
/// # Safety
/// As [`tile`]; `panels` holds `nb` blocks for each of the `ceil(n / 8)` panels.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_block<F: Form>(
    wbuf: &[WeightBlock],
    (rb0, rb1): (usize, usize),
    panels: &[ActBlock],
    (rows, n, nb): (usize, usize, usize),
    y: OutPtr,
) {
    let np = n.div_ceil(PANEL);
    let w = |r: usize| wbuf.as_ptr().add((r - rb0) * nb);
    let a = |p: usize| panels.as_ptr().add(p * nb);
    let mut p0 = 0;
    while p0 < np {
        let wide = p0 + H <= np;
        let mut r0 = rb0;
        while r0 < rb1 {
            let tall = r0 + R <= rb1;
            let dims = (rows, n);
            let at = (r0, p0);
            match (tall, wide) {
                (true, true) => tile::<R, H, F>(
                    std::array::from_fn(|i| w(r0 + i)),
                    std::array::from_fn(|i| a(p0 + i)),
                    nb,
                    dims,
                    at,
                    y,
                ),
                (true, false) => {
                    tile::<R, 1, F>(std::array::from_fn(|i| w(r0 + i)), [a(p0)], nb, dims, at, y)
                }
                (false, true) => {
                    tile::<1, H, F>([w(r0)], std::array::from_fn(|i| a(p0 + i)), nb, dims, at, y)
                }
                (false, false) => tile::<1, 1, F>([w(r0)], [a(p0)], nb, dims, at, y),
            }
            r0 += if tall { R } else { 1 };
        }
        p0 += if wide { H } else { 1 };
    }
}

/// Where the weight rows come from.
#[derive(Clone, Copy)]
pub(crate) enum LRows<'a> {
    /// GGUF row-major blocks of type `ty`.
    Plain(&'a [u8]),
    /// Q8_0 regrouped by 16 rows.
    PackedQ8_0(&'a crate::packed::PackedQ8_0),
    /// Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL regrouped by 16 rows.
    PackedQ32(&'a crate::packed::PackedQ32),
}

/// Expands rows `rb0..rb1` into `wbuf`.
///
/// # Safety
/// AVX2 available; `w` holds the rows (`row_bytes` each when plain).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn expand_rows(
    ty: GgmlType,
    w: LRows<'_>,
    row_bytes: usize,
    (rb0, rb1): (usize, usize),
    nb: usize,
    wbuf: &mut [WeightBlock],
) {
    if let LRows::PackedQ32(p) = w {
        // SAFETY: AVX2 and F16C (this function's features); rows rb0..rb1
        // are rows of `p` and `wbuf` holds their blocks (the caller's).
        return expand_packed_q32(ty, p, (rb0, rb1), nb, wbuf);
    }
    for r in rb0..rb1 {
        let out = &mut wbuf[(r - rb0) * nb..(r - rb0 + 1) * nb];
        match w {
            LRows::Plain(w) => {
                let row = &w[r * row_bytes..(r + 1) * row_bytes];
                for (b, out) in out.iter_mut().enumerate() {
                    expand(ty, row, b, out);
                }
            }
            LRows::PackedQ8_0(p) => {
                for (b, out) in out.iter_mut().enumerate() {
                    expand(ty, blocks_as_bytes(&[p.block(r, b)]), 0, out);
                }
            }
            // Expanded above, 8 rows at a time.
            LRows::PackedQ32(_) => {}
        }
    }
}

/// [`expand_rows`] for a [`crate::packed::PackedQ32`]: each half group (8
/// rows) of a block column at once. Word `t` of the 8 rows is one 32-byte
/// load; its low and high nibbles (with the fifth bits of Q5_0 / Q5_1 or-ed
/// in) are levels `4t..` and `16 + 4t..` of each row, so an 8 × 8 transpose
/// of 32-bit lanes gives each row its 32 levels in order. Same blocks as
/// [`expand_parts`] on the GGUF bytes.
///
/// # Safety
/// AVX2 and F16C available; rows `rb0..rb1` are rows of `p`, `nb` its
/// block columns, `wbuf` holds `(rb1 − rb0)·nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expand_packed_q32(
    ty: GgmlType,
    p: &crate::packed::PackedQ32,
    (rb0, rb1): (usize, usize),
    nb: usize,
    wbuf: &mut [WeightBlock],
) {
    let low = _mm256_set1_epi8(0x0F);
    let qh = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
    let min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
    let lookup = ty == GgmlType::IQ4_NL;
    let table = avx2::iq4nl_table();
    for half in rb0 / 8..rb1.div_ceil(8) {
        let (g, h) = (half / 2, half % 2);
        let grp = p.group(g);
        let rows = (8 * half).max(rb0)..(8 * half + 8).min(rb1);
        for j in 0..nb {
            let base = grp.qs[j].0.as_ptr();
            let mut v = [_mm256_setzero_ps(); 8];
            for t in 0..4 {
                let a = _mm256_load_si256(base.add(64 * t + 32 * h) as *const __m256i);
                let mut l = _mm256_and_si256(a, low);
                let mut hn = _mm256_and_si256(_mm256_srli_epi16::<4>(a), low);
                if qh {
                    // Mask 2t + i, the 32 bits of this half's 8 rows.
                    let mask =
                        |i: usize| avx2::fifth_bits((grp.qh[j].0[2 * t + i] >> (32 * h)) as u32);
                    l = _mm256_or_si256(l, mask(0));
                    hn = _mm256_or_si256(hn, mask(1));
                }
                v[t] = _mm256_castsi256_ps(l);
                v[4 + t] = _mm256_castsi256_ps(hn);
            }
            let levels = super::f16::transpose8(v);
            let mut d = [0f32; 8];
            let mut m = [0f32; 8];
            let half8 = |x: &[F16Le; 16]| {
                _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(8 * h) as *const __m128i))
            };
            _mm256_storeu_ps(d.as_mut_ptr(), half8(&grp.d[j]));
            if min {
                _mm256_storeu_ps(m.as_mut_ptr(), half8(&grp.m[j]));
            }
            for r in rows.clone() {
                let r8 = r - 8 * half;
                let out = &mut wbuf[(r - rb0) * nb + j];
                out.d = d[r8];
                out.m = m[r8];
                let lv = _mm256_castps_si256(levels[r8]);
                let lv = if lookup {
                    // IQ4_NL: signed values, their signs applied to the activations.
                    let vals = _mm256_shuffle_epi8(table, lv);
                    _mm256_storeu_si256(out.sgn.as_mut_ptr() as *mut __m256i, vals);
                    _mm256_abs_epi8(vals)
                } else {
                    lv
                };
                _mm256_storeu_si256(out.qs.as_mut_ptr() as *mut __m256i, lv);
            }
        }
    }
}

/// See [`super::try_matmul`]; the caller has checked AVX2 + FMA + F16C and
/// the shapes.
pub(crate) fn matmul(
    ty: GgmlType,
    w: LRows<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if cols == 0 || !cols.is_multiple_of(QK) {
        return false;
    }
    let nb = cols / QK;
    let n = x.len() / cols;
    let Ok(row_bytes) = bytes_for(ty, cols) else {
        return false;
    };
    let np = n.div_ceil(PANEL);
    with_panels(
        &PANELS,
        ACT_ZERO,
        (np, nb),
        |p, out| fill_panels(x, cols, n, p, out),
        |panels| run_blocks(ty, w, row_bytes, (rows, n, nb), panels, y),
    );
    true
}

/// Every row block of one call, in parallel, on filled activation panels.
fn run_blocks(
    ty: GgmlType,
    w: LRows<'_>,
    row_bytes: usize,
    (rows, n, nb): (usize, usize, usize),
    panels_ref: &[ActBlock],
    y: &mut [f32],
) {
    let rb = row_block_size(rows, R, RB_MAX);
    let y_out = OutPtr(y.as_mut_ptr());
    let ty_ = ty;
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|blk| {
        let span = (blk * rb, ((blk + 1) * rb).min(rows));
        WEIGHTS.with(|cell| {
            let mut wbuf = cell.borrow_mut();
            let need = (span.1 - span.0) * nb;
            if wbuf.len() < need {
                wbuf.resize(need, WEIGHT_ZERO);
            }
            let dims = (rows, n, nb);
            // SAFETY: the caller checked AVX2/FMA/F16C; `w` holds `rows`
            // rows of `row_bytes` (checked by `crate::matmul`), `wbuf` has
            // `nb` blocks per row of the span, the panels cover every
            // activation row and block, and the span's rows of `y` belong
            // to this block alone.
            unsafe {
                expand_rows(ty_, w, row_bytes, span, nb, &mut wbuf);
                let (w, p) = (&wbuf[..], panels_ref);
                match ty_ {
                    GgmlType::Q4_0 => row_block::<FormQ4_0>(w, span, p, dims, y_out),
                    GgmlType::Q4_1 => row_block::<FormQ4_1>(w, span, p, dims, y_out),
                    GgmlType::Q5_0 => row_block::<FormQ5_0>(w, span, p, dims, y_out),
                    GgmlType::Q5_1 => row_block::<FormQ5_1>(w, span, p, dims, y_out),
                    // Q8_0 and IQ4_NL, the only other types `matmul` lets through.
                    _ => row_block::<FormSigned>(w, span, p, dims, y_out),
                }
            }
        });
    });
}
