//! k-quant weights (and IQ4_XS) × Q8_K activations, register-tiled (AVX2).
//!
//! Every k-quant dot product has the same shape once the weight levels are
//! unpacked to bytes: per super-block of 256 values and per 16-value group
//! `g`,
//!
//! ```text
//! dot = (d_a·d_w) · Σ_g sc_g · Σ_{k∈g} q_k·a_k  −  (d_a·dm_w) · Σ_g m_g · bsum_g(a)
//! ```
//!
//! with unsigned levels `q`, integer group scales `sc` and offsets `m`
//! (Q4_K/Q5_K/Q2_K: the mins; Q6_K/Q3_K: 32·sc / 4·sc with `dm = d`, folded
//! into the integer sum as the scalar kernels do). So each call first expands
//! a block of weight rows once into [`WeightSb`] (levels as bytes, scales as
//! i16) and the activations into [`ActPanel`]s of 8 rows interleaved in
//! groups of 4 values; the microkernel then broadcasts 4 weight bytes against
//! 8 activation rows per `vpmaddubsw`, sums up to four of those in i16
//! (bounded: see [`Form`]), and applies the group scale with one `vpmaddwd`.
//! A tile of `R` weight rows × `H` panels reuses each load `H` / `R` times.
//!
//! IQ4_XS takes the same form with signed levels (its table values) and no
//! offsets: the activations take the weights' signs ([`Form`]'s `SIGNED`).
//!
//! The integer sums are exact and the float steps are the scalar kernel's
//! own (`d·sumi − dmin·summ` per super-block, summed in order), so results
//! are bit-identical to [`crate::dot::scalar`].

use super::tiles::{self, run_tile, KBlockOps, Micro, Sums};
use super::{row_block_size, store_tile, with_panels, PANEL};
use crate::blocks::*;
use crate::dot::avx2;
use crate::packed::{BlockQ2Kx8, BlockQ4Kx16, GroupBlock, PackedQ2K, PackedQ4K, GROUP};
use crate::quant::quantize_block_q8k;
use crate::shared::{OutPtr, Pool};
use mistral_gguf::GgmlType;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::marker::PhantomData;

/// Weight rows per microkernel tile.
const R: usize = 3;
/// Panels per microkernel tile.
const H: usize = 2;
/// Super-blocks per k-block (the expanded weights of a row block and the
/// activation panels of a tile stay in L2 across one k-block).
const KC: usize = 8;
/// Most weight rows per row block (their expanded k-block stays in L2).
const RB_MAX: usize = 60;

/// One super-block of one weight row, expanded (also the starting point of
/// the AVX-512 kernel's own form, [`super::kquant_avx512`]).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct WeightSb {
    /// Unsigned levels, in order.
    pub(super) qs: [u8; QK_K],
    /// Scale per 16-value group, in both halves of an i32.
    pub(super) sc2: [i32; 16],
    /// Q2_K / Q3_K: offset multiplier per 16-value group (applied to the
    /// activations' group sums).
    pub(super) m: [i16; 16],
    /// Q4_K / Q5_K: the same per 32-value sub-block (Q6_K's offset is folded
    /// into the integer sums and needs neither).
    pub(super) m32: [i16; 8],
    pub(super) d: f32,
    /// The offsets' scale (`dmin`; the symmetric types use `d`).
    pub(super) dm: f32,
}

pub(super) const WEIGHT_ZERO: WeightSb = WeightSb {
    qs: [0; QK_K],
    sc2: [0; 16],
    m: [0; 16],
    m32: [0; 8],
    d: 0.0,
    dm: 0.0,
};

/// One super-block of 8 activation rows.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct ActPanel {
    /// 4-value group `j`: row `c`'s values `4j..4j+4` in bytes `4c..4c+4`.
    qs: [[i8; 32]; QK_K / 4],
    /// Group pair `p`: lanes `2c`, `2c+1` = row `c`'s sums of groups `2p`, `2p+1`.
    bsums: [[i16; 16]; 8],
    /// The same for 32-value sub-blocks (pair `q`: sub-blocks `2q`, `2q+1`).
    bsums32: [[i16; 16]; 4],
    /// Q6_K's level offset per 16-value group `g`, laid out as the
    /// `vpmaddubsw` sums it corrects: lanes `2c`, `2c+1` = 32 · row `c`'s sums
    /// of values `4j, 4j+1` and `4j+2, 4j+3` over the group's `j = 4g..4g+4`.
    off32: [[i16; 16]; 16],
    /// Row scales.
    d: [f32; PANEL],
}

const PANEL_ZERO: ActPanel = ActPanel {
    qs: [[0; 32]; QK_K / 4],
    bsums: [[0; 16]; 8],
    bsums32: [[0; 16]; 4],
    off32: [[0; 16]; 16],
    d: [0.0; PANEL],
};

/// The activation panels of one call, reused across calls.
static PANELS: Pool<Vec<ActPanel>> = Pool::new();

/// A worker's buffers: expanded weight rows and running sums.
#[derive(Default)]
struct Scratch {
    wbuf: Vec<WeightSb>,
    acc: Vec<__m256>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// How a weight type maps onto the common form: the microkernel's
/// compile-time options.
///
/// `DEPTH`: `vpmaddubsw` results summed in i16 before a `vpmaddwd` with the
/// scale. Each adds 8 products `q·a` per lane (|a| ≤ 127), so the sum of 4
/// stays within i16 for levels below 32 (8·31·127 = 31496); Q4_K's 16 levels
/// allow 8, over its 32-value sub-blocks (8·16·15·127 = 30480). Q6_K's
/// levels `q` (0..64) stand for `q − 32`: each lane of a 16-value group holds
/// 8 products, and subtracting the panel's `32·Σa` (`off32`) in the same
/// lanes leaves `Σ (q − 32)·a`, at most 8·32·127 = 32512 in magnitude. The
/// adds wrap (two's complement, no saturation; each single `vpmaddubsw` pair
/// sum is at most 2·63·127 and does not saturate), so the result is exact
/// even where the partial sums of `q·a` left the i16 range.
trait Form {
    const DEPTH: usize;
    /// The weights are signed (IQ4_NL's table values, −127..113, stored as
    /// they are): each `vpmaddubsw` takes their magnitudes and the
    /// activations with their signs (`vpsignb`), its pair sums (at most
    /// 2·127·127) widened at once (`DEPTH` 1), and there are no offsets.
    const SIGNED: bool;
    /// `d·(sumi − summ)` (Q3_K, Q6_K), else `d·sumi − dmin·summ`.
    const SYM: bool;
    /// Offsets per 32-value sub-block (Q4_K, Q5_K), else per 16-value group.
    const M32: bool;
    /// The level offset is subtracted inside the i16 sums (Q6_K).
    const FOLD: bool;
}

macro_rules! form {
    ($name:ident, $depth:expr, $sym:expr, $m32:expr, $fold:expr) => {
        form!($name, $depth, $sym, $m32, $fold, false);
    };
    ($name:ident, $depth:expr, $sym:expr, $m32:expr, $fold:expr, $signed:expr) => {
        struct $name;
        impl Form for $name {
            const DEPTH: usize = $depth;
            const SIGNED: bool = $signed;
            const SYM: bool = $sym;
            const M32: bool = $m32;
            const FOLD: bool = $fold;
        }
    };
}
form!(FormQ2K, 4, false, false, false);
form!(FormQ3K, 4, true, false, false);
form!(FormQ4K, 8, false, true, false);
form!(FormQ5K, 4, false, true, false);
form!(FormQ6K, 4, true, false, true);
form!(FormIq4Xs, 1, true, false, false, true);

/// An i16 in both halves of an i32 (a `vpmaddwd` operand).
#[inline(always)]
fn pair(v: i16) -> i32 {
    let u = v as u16 as u32;
    (u | (u << 16)) as i32
}

/// Expands super-block `b` of a row (`row`: its bytes) into `out`.
///
/// # Safety
/// AVX2 must be available; `row` holds at least `b + 1` blocks of `ty`.
#[inline(always)]
unsafe fn expand(ty: GgmlType, row: &[u8], b: usize, out: &mut WeightSb) {
    macro_rules! block {
        ($B:ty) => {{
            let size = std::mem::size_of::<$B>();
            // SAFETY: the caller guarantees the block is inside `row`;
            // block structs have alignment 1 and any bit pattern is valid.
            &*(row.as_ptr().add(b * size) as *const $B)
        }};
    }
    let levels = match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (levels, d, dmin, scales) = if ty == GgmlType::Q4_K {
                let x: &BlockQ4K = block!(BlockQ4K);
                (avx2::levels_q4k(x), x.d, x.dmin, &x.scales)
            } else {
                let x: &BlockQ5K = block!(BlockQ5K);
                (avx2::levels_q5k(x), x.d, x.dmin, &x.scales)
            };
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                out.sc2[2 * j] = pair(sc as i16);
                out.sc2[2 * j + 1] = pair(sc as i16);
                out.m32[j] = m as i16;
            }
            out.d = avx2::f16(d);
            out.dm = avx2::f16(dmin);
            levels
        }
        GgmlType::Q2_K => {
            let x: &BlockQ2K = block!(BlockQ2K);
            for g in 0..16 {
                out.sc2[g] = pair((x.scales[g] & 0xF) as i16);
                out.m[g] = (x.scales[g] >> 4) as i16;
            }
            out.d = avx2::f16(x.d);
            out.dm = avx2::f16(x.dmin);
            avx2::levels_q2k(x)
        }
        GgmlType::Q3_K => {
            let x: &BlockQ3K = block!(BlockQ3K);
            let sc = q3k_scales(&x.scales);
            for g in 0..16 {
                out.sc2[g] = pair(sc[g] as i16);
                out.m[g] = 4 * sc[g] as i16;
            }
            out.d = avx2::f16(x.d);
            avx2::levels_q3k(x)
        }
        GgmlType::IQ4_XS => {
            // Signed values in order (see `Form::SIGNED`); the sub-block's
            // scale less 32 for both its 16-value groups.
            let x: &BlockIQ4XS = block!(BlockIQ4XS);
            for g in 0..16 {
                out.sc2[g] = pair(x.sub_scale(g / 2) as i16);
            }
            out.d = avx2::f16(x.d);
            let sub = |ib: usize| &*(x.qs.as_ptr().add(16 * ib) as *const [u8; 16]);
            let mut lv = [_mm256_setzero_si256(); 8];
            for (ib, lv) in lv.iter_mut().enumerate() {
                *lv = avx2::values_iq4nl_32(sub(ib));
            }
            lv
        }
        _ => {
            // Q6_K (the only other type `matmul` lets through).
            let x: &BlockQ6K = block!(BlockQ6K);
            for g in 0..16 {
                out.sc2[g] = pair(x.scales[g] as i16);
            }
            out.d = avx2::f16(x.d);
            avx2::levels_q6k(x)
        }
    };
    for (i, v) in levels.iter().enumerate() {
        _mm256_store_si256(out.qs.as_mut_ptr().add(32 * i) as *mut __m256i, *v);
    }
}

/// Quantizes activation rows `8p..8p+8` (zeros past `n`) of `x` into the
/// `kb` panels of panel row `p`.
fn fill_panels(x: &[f32], cols: usize, n: usize, p: usize, out: &mut [ActPanel]) {
    let mut q = BlockQ8K::ZERO;
    for (b, panel) in out.iter_mut().enumerate() {
        *panel = PANEL_ZERO;
        for c in 0..PANEL {
            let t = p * PANEL + c;
            if t >= n {
                break;
            }
            quantize_block_q8k(&x[t * cols + b * QK_K..t * cols + (b + 1) * QK_K], &mut q);
            for j in 0..QK_K / 4 {
                panel.qs[j][4 * c..4 * c + 4].copy_from_slice(&q.qs[4 * j..4 * j + 4]);
            }
            for pair in 0..8 {
                panel.bsums[pair][2 * c] = q.bsums[2 * pair];
                panel.bsums[pair][2 * c + 1] = q.bsums[2 * pair + 1];
            }
            // Each sum of 32 is at most 32·127 in magnitude: fits i16.
            for pair in 0..4 {
                let b = &q.bsums[4 * pair..4 * pair + 4];
                panel.bsums32[pair][2 * c] = b[0] + b[1];
                panel.bsums32[pair][2 * c + 1] = b[2] + b[3];
            }
            // 32 · (a sum of 8 values) ≤ 32·8·127 = 32512: fits i16.
            for g in 0..16 {
                let v = &q.qs[16 * g..16 * g + 16];
                let (mut even, mut odd) = (0i16, 0i16);
                for j in 0..4 {
                    even += v[4 * j] as i16 + v[4 * j + 1] as i16;
                    odd += v[4 * j + 2] as i16 + v[4 * j + 3] as i16;
                }
                panel.off32[g][2 * c] = 32 * even;
                panel.off32[g][2 * c + 1] = 32 * odd;
            }
            panel.d[c] = q.d;
        }
    }
}

/// `Σ_p m[2p]·bs[p][2c] + m[2p+1]·bs[p][2c+1]` in lane `c`: a weight row's
/// offsets against 8 activation rows' group sums (laid out in pairs, as
/// [`ActPanel::bsums`]).
///
/// # Safety
/// AVX2 available; `m.len() == 2 * bs.len()`.
#[inline(always)]
unsafe fn offset_sum(m: &[i16], bs: &[[i16; 16]]) -> __m256i {
    let mut corr = _mm256_setzero_si256();
    for (p, b) in bs.iter().enumerate() {
        let mp = (m.as_ptr().add(2 * p) as *const i32).read_unaligned();
        let bv = _mm256_loadu_si256(b.as_ptr() as *const __m256i);
        corr = _mm256_add_epi32(corr, _mm256_madd_epi16(bv, _mm256_set1_epi32(mp)));
    }
    corr
}

/// The microkernel: `acc[r][h] += dot(weight row r, panel h)` over `nsb`
/// super-blocks (`w[r]`, `a[h]` point at the first), the float steps per
/// super-block in the scalar kernels' order.
///
/// # Safety
/// AVX2 + FMA available; `w[r]` and `a[h]` valid for `nsb` elements.
#[inline(always)]
unsafe fn tile<const TR: usize, const TH: usize, F: Form>(
    w: [*const WeightSb; TR],
    a: [*const ActPanel; TH],
    nsb: usize,
    acc: &mut [[__m256; TH]; TR],
) {
    for s in 0..nsb {
        let mut isum = [[_mm256_setzero_si256(); TH]; TR];
        // Chunks of F::DEPTH 4-value groups share one scale (a 16-value group,
        // or for Q4_K's 32-value sub-blocks two of them).
        for c in 0..QK_K / 4 / F::DEPTH {
            let mut acc16 = [[_mm256_setzero_si256(); TH]; TR];
            for q in 0..F::DEPTH {
                let j = F::DEPTH * c + q;
                let mut av = [_mm256_setzero_si256(); TH];
                for h in 0..TH {
                    av[h] = _mm256_load_si256((*a[h].add(s)).qs[j].as_ptr() as *const __m256i);
                }
                for r in 0..TR {
                    let wp = (*w[r].add(s)).qs.as_ptr().add(4 * j) as *const i32;
                    let wv = _mm256_set1_epi32(wp.read_unaligned());
                    let wm = if F::SIGNED { _mm256_abs_epi8(wv) } else { wv };
                    for h in 0..TH {
                        let p = if F::SIGNED {
                            _mm256_maddubs_epi16(wm, _mm256_sign_epi8(av[h], wv))
                        } else {
                            _mm256_maddubs_epi16(wv, av[h])
                        };
                        acc16[r][h] = if q == 0 {
                            p
                        } else {
                            _mm256_add_epi16(acc16[r][h], p)
                        };
                    }
                }
            }
            if F::FOLD {
                // Σ (q − 32)·a over the group, exact: see [`Form`].
                for h in 0..TH {
                    let off = _mm256_load_si256((*a[h].add(s)).off32[c].as_ptr() as *const __m256i);
                    for r in 0..TR {
                        acc16[r][h] = _mm256_sub_epi16(acc16[r][h], off);
                    }
                }
            }
            for r in 0..TR {
                let sc = _mm256_set1_epi32((*w[r].add(s)).sc2[F::DEPTH * c / 4]);
                for h in 0..TH {
                    isum[r][h] = _mm256_add_epi32(isum[r][h], _mm256_madd_epi16(acc16[r][h], sc));
                }
            }
        }
        for r in 0..TR {
            let ws = &*w[r].add(s);
            for h in 0..TH {
                let ap = &*a[h].add(s);
                let corr = if F::FOLD || F::SIGNED {
                    // Already in the integer sums, or none.
                    _mm256_setzero_si256()
                } else if F::M32 {
                    // Offsets per 32-value sub-block: half the products.
                    offset_sum(&ws.m32, &ap.bsums32)
                } else {
                    offset_sum(&ws.m, &ap.bsums)
                };
                let da = _mm256_load_ps(ap.d.as_ptr());
                let d = _mm256_mul_ps(da, _mm256_set1_ps(ws.d));
                let t = if F::SYM {
                    _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[r][h], corr)))
                } else {
                    let dm = _mm256_mul_ps(da, _mm256_set1_ps(ws.dm));
                    _mm256_sub_ps(
                        _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum[r][h])),
                        _mm256_mul_ps(dm, _mm256_cvtepi32_ps(corr)),
                    )
                };
                acc[r][h] = _mm256_add_ps(acc[r][h], t);
            }
        }
    }
}

/// Shape of one call.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    n: usize,
    /// Super-blocks per row.
    kb: usize,
}

/// The operands of one k-block of one row block: the microkernel's
/// [`Micro`] for the form `F` (weight units are rows, activation units
/// panels).
struct Kernel<'a, F> {
    /// Super-blocks of the expanded weights and of the panels.
    ops: KBlockOps<'a, WeightSb, ActPanel>,
    dims: Dims,
    y: OutPtr,
    form: PhantomData<F>,
}

impl<F: Form> Micro for Kernel<'_, F> {
    type Acc = __m256;
    type WPtr = *const WeightSb;
    type APtr = *const ActPanel;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }

    #[inline(always)]
    unsafe fn weights(&self, r: usize) -> *const WeightSb {
        self.ops.weights(r)
    }

    #[inline(always)]
    unsafe fn acts(&self, p: usize) -> *const ActPanel {
        self.ops.acts(p)
    }

    #[inline(always)]
    unsafe fn tile<const TR: usize, const TH: usize>(
        &self,
        w: [*const WeightSb; TR],
        a: [*const ActPanel; TH],
        acc: &mut [[__m256; TH]; TR],
    ) {
        tile::<TR, TH, F>(w, a, self.ops.nk, acc);
    }

    #[inline(always)]
    unsafe fn store<const TR: usize, const TH: usize>(
        &self,
        at: (usize, usize),
        acc: &[[__m256; TH]; TR],
    ) {
        store_tile(acc, self.y, (self.dims.rows, self.dims.n), at);
    }
}

/// Every tile of one k-block of the row block `rb0..rb1`.
///
/// # Safety
/// AVX2 + FMA available; `k` and `sums` describe buffers that cover the row
/// block (see [`run_blocks`]), whose outputs belong to this worker.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_block<F: Form>(
    k: &Kernel<'_, F>,
    sums: &mut Sums<'_, __m256>,
    (rb0, rb1): (usize, usize),
) {
    let np = k.dims.n.div_ceil(PANEL);
    // Panels outer: a pair of activation panels stays in L1/L2 while the
    // row block's expanded weights (L2) stream past it.
    let mut p0 = 0;
    while p0 < np {
        let wide = p0 + H <= np;
        let mut r0 = rb0;
        while r0 < rb1 {
            let tall = r0 + R <= rb1;
            match (tall, wide) {
                (true, true) => run_tile::<_, R, H>(k, sums, r0, p0),
                (true, false) => run_tile::<_, R, 1>(k, sums, r0, p0),
                (false, true) => run_tile::<_, 1, H>(k, sums, r0, p0),
                (false, false) => run_tile::<_, 1, 1>(k, sums, r0, p0),
            }
            r0 += if tall { R } else { 1 };
        }
        p0 += if wide { H } else { 1 };
    }
}

/// Expands row `i` of a packed Q4_K group block: its nibbles gathered from
/// the interleaved words, its scales and mins read as they are.
///
/// # Safety
/// AVX2 available; `i < 16`.
#[inline(always)]
unsafe fn expand_packed_q4k(x: &BlockQ4Kx16, i: usize, out: &mut WeightSb) {
    let m4 = _mm256_set1_epi8(0xF);
    // Row i's word t of chunk p is at byte 512p + 64t + 4i: a stride of 16 i32s.
    let idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    for p in 0..4 {
        let base = x.qs.as_ptr().add(512 * p + 4 * i) as *const i32;
        let q = _mm256_i32gather_epi32::<4>(base, idx);
        let dst = out.qs.as_mut_ptr().add(64 * p) as *mut __m256i;
        _mm256_store_si256(dst, _mm256_and_si256(q, m4));
        _mm256_store_si256(dst.add(1), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
    }
    for j in 0..8 {
        let (sc, m) = x.scale_min(i, j);
        let sc = pair(sc as i16);
        out.sc2[2 * j] = sc;
        out.sc2[2 * j + 1] = sc;
        out.m32[j] = m as i16;
    }
    out.d = avx2::f16(x.d[i]);
    out.dm = avx2::f16(x.dmin[i]);
}

/// Row `i` of a packed Q2_K group block in the common form: as
/// [`expand`] of the row's GGUF block, without rebuilding the block.
///
/// # Safety
/// AVX2 available; `i < GROUP`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expand_packed_q2k(x: &BlockQ2Kx8, i: usize, out: &mut WeightSb) {
    // Row i's word t of half h is at byte 256h + 32t + 4i: a stride of 8 i32s.
    let idx = _mm256_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56);
    let qs = [0, 1].map(|h| {
        let base = x.qs.as_ptr().add(256 * h + 4 * i) as *const i32;
        _mm256_i32gather_epi32::<4>(base, idx)
    });
    for (k, v) in avx2::levels_q2k_qs(qs).iter().enumerate() {
        _mm256_store_si256(out.qs.as_mut_ptr().add(32 * k) as *mut __m256i, *v);
    }
    for g in 0..16 {
        let b = x.scale_byte(i, g);
        out.sc2[g] = pair((b & 0xF) as i16);
        out.m[g] = (b >> 4) as i16;
    }
    out.d = avx2::f16(x.d[i]);
    out.dm = avx2::f16(x.dmin[i]);
}

/// Where the weight rows come from.
#[derive(Clone, Copy)]
pub(crate) enum KRows<'a> {
    /// GGUF row-major blocks of type `ty`.
    Plain(&'a [u8]),
    /// Q4_K regrouped by 16 rows.
    PackedQ4K(&'a PackedQ4K),
    /// Q2_K regrouped by 8 rows.
    PackedQ2K(&'a PackedQ2K),
}

/// Expands rows `rb0..rb1`, super-blocks `s0..s0 + nsb`, into `wbuf`.
///
/// # Safety
/// AVX2 available; `src` holds `rows` rows of `row_bytes` (in GGUF layout).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn expand_rows(
    ty: GgmlType,
    src: KRows<'_>,
    row_bytes: usize,
    (rb0, rb1): (usize, usize),
    (s0, nsb): (usize, usize),
    wbuf: &mut [WeightSb],
) {
    for r in rb0..rb1 {
        for s in 0..nsb {
            let out = &mut wbuf[(r - rb0) * nsb + s];
            match src {
                KRows::Plain(w) => expand(ty, &w[r * row_bytes..(r + 1) * row_bytes], s0 + s, out),
                KRows::PackedQ4K(p) => {
                    expand_packed_q4k(p.group_block(r, s0 + s), r % BlockQ4Kx16::ROWS, out)
                }
                KRows::PackedQ2K(p) => expand_packed_q2k(p.group_block(r, s0 + s), r % GROUP, out),
            }
        }
    }
}

/// See [`super::try_matmul`]; the caller has checked AVX2 + FMA + F16C and
/// the shapes. Declines rows that are not whole super-blocks.
pub(crate) fn matmul(
    ty: GgmlType,
    w: KRows<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if cols == 0 || !cols.is_multiple_of(QK_K) {
        return false;
    }
    let kb = cols / QK_K;
    let n = x.len() / cols;
    let Ok(row_bytes) = bytes_for(ty, cols) else {
        return false;
    };
    let dims = Dims { rows, n, kb };
    let np = n.div_ceil(PANEL);

    with_panels(
        &PANELS,
        PANEL_ZERO,
        (np, kb),
        |p, out| fill_panels(x, cols, n, p, out),
        |panels| run_blocks(ty, w, row_bytes, dims, panels, y),
    );
    true
}

/// Every row block of one call, in parallel, on filled activation panels.
fn run_blocks(
    ty: GgmlType,
    w: KRows<'_>,
    row_bytes: usize,
    dims: Dims,
    panels: &[ActPanel],
    y: &mut [f32],
) {
    match ty {
        GgmlType::Q2_K => run_blocks_as::<FormQ2K>(ty, w, row_bytes, dims, panels, y),
        GgmlType::Q3_K => run_blocks_as::<FormQ3K>(ty, w, row_bytes, dims, panels, y),
        GgmlType::Q4_K => run_blocks_as::<FormQ4K>(ty, w, row_bytes, dims, panels, y),
        GgmlType::Q5_K => run_blocks_as::<FormQ5K>(ty, w, row_bytes, dims, panels, y),
        GgmlType::IQ4_XS => run_blocks_as::<FormIq4Xs>(ty, w, row_bytes, dims, panels, y),
        // Q6_K, the only other type `matmul` lets through.
        _ => run_blocks_as::<FormQ6K>(ty, w, row_bytes, dims, panels, y),
    }
}

/// [`run_blocks`] for the form `F` of `ty`.
fn run_blocks_as<F: Form>(
    ty: GgmlType,
    w: KRows<'_>,
    row_bytes: usize,
    dims: Dims,
    panels: &[ActPanel],
    y: &mut [f32],
) {
    let Dims { rows, n, kb } = dims;
    let np = n.div_ceil(PANEL);
    let rb = row_block_size(rows, R, RB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|blk| {
        let (rb0, rb1) = (blk * rb, ((blk + 1) * rb).min(rows));
        SCRATCH.with(|cell| {
            let Scratch { wbuf, acc } = &mut *cell.borrow_mut();
            let need = (rb1 - rb0) * KC.min(kb);
            if wbuf.len() < need {
                wbuf.resize(need, WEIGHT_ZERO);
            }
            // SAFETY: AVX is available (checked by the caller); this only
            // makes a zero vector.
            let zero = unsafe { _mm256_setzero_ps() };
            tiles::k_blocks(acc, zero, rb0..rb1, np, (kb, KC), |ks, sums| {
                let (s0, nsb) = (ks.start, ks.len());
                // SAFETY: the caller checked AVX2/FMA/F16C; `w` holds `rows`
                // rows of `row_bytes` (checked by `crate::matmul`), `wbuf`
                // has `(rb1 - rb0) * nsb` entries, the panels cover every
                // activation row and super-block, and rows rb0..rb1 of `y`
                // belong to this block alone.
                unsafe {
                    expand_rows(ty, w, row_bytes, (rb0, rb1), (s0, nsb), wbuf);
                    let k = Kernel::<F> {
                        ops: KBlockOps {
                            wbuf: &wbuf[..],
                            rb0,
                            panels,
                            kb,
                            s0,
                            nk: nsb,
                        },
                        dims,
                        y,
                        form: PhantomData,
                    };
                    row_block(&k, sums, (rb0, rb1));
                }
            });
        });
    });
}
