//! The block computation of the SIMD paths, written once over [`Simd`] (a
//! vector of `LANES` f32 and the few operations the kernels need) and
//! instantiated by `avx2` (8 lanes), `avx512` (16 lanes) and `neon` (4
//! lanes) inside their `#[target_feature]` entry points.
//!
//! A unit's keys are taken a block ([`BLOCK_KEYS`]) at a time: the block's
//! positions are scanned first (a block no query of the tile sees is
//! skipped, one every query sees fully needs no mask), its key and value
//! rows are converted to f32 once into L1-sized buffers (f16 by F16C, Q8_0
//! as the int8 values times the block scale), and every query row of the
//! tile (tile tokens × the KV head's group of query heads) uses them. Scores
//! are in log2 units (queries are multiplied by `scale · log2(e)` once per
//! unit) so the online softmax takes `2^x` ([`Simd::exp2`]).
//!
//! Two layouts, chosen by the tile's query rows `R`:
//!
//! - **wide** (`R ≥ 2·LANES`, prefill): query rows across the lanes. The
//!   tile's queries are stored transposed (`[dim][row]`), so scores
//!   `S[key][row]` come from a register-tiled `MR × NR` microkernel that
//!   broadcasts `MR` key values and multiplies `NR` vectors of rows (no
//!   horizontal sums); the softmax maximum, rescale and sums are lane-wise;
//!   and `O[dim][row] += V[key][dim] · P[key][row]` is the same microkernel
//!   with value elements broadcast.
//! - **narrow** (`R < 2·LANES`, decode): head dimensions across the lanes.
//!   Each score is a dot product of one query row and one key row; `LANES`
//!   of them are accumulated side by side and reduced together
//!   ([`Simd::dots`]), and `O[row][dim] += P[row][key] · V[key][dim]` takes
//!   up to 4 rows × 4 vectors of dimensions per pass over the block's values.

use super::{KvType, Unit, BLOCK_KEYS};

/// The vector operations the kernels use; implementations exist only for
/// CPUs that have the instructions, and every method's caller guarantees
/// that the CPU has them (all methods are `unsafe` for that reason, and for
/// the raw pointers, which must be valid for the lanes read or written).
pub(super) trait Simd {
    type V: Copy;
    /// A lane mask.
    type M: Copy;
    const LANES: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `*p` in every lane.
    unsafe fn bcast(p: *const f32) -> Self::V;
    /// `a · b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn hmax(v: Self::V) -> f32;
    unsafe fn hsum(v: Self::V) -> f32;
    /// `2^x` for `x ≤ 0` to a few ulp; exactly 1 at 0 and exactly 0 below
    /// [`EXP2_FLOOR`] and at `−∞`.
    unsafe fn exp2(x: Self::V) -> Self::V;
    /// Whether every lane is exactly 1.
    unsafe fn all_one(v: Self::V) -> bool;
    /// `v` with `−∞` lanes replaced by 0.
    unsafe fn finite_or_zero(v: Self::V) -> Self::V;
    /// Lanes `i` where `lo[i] ≤ kp ≤ hi[i]`.
    unsafe fn visible_rows(lo: *const u32, hi: *const u32, kp: u32) -> Self::M;
    /// Lanes `i < n` where `lo ≤ pos[i] ≤ hi` (`pos` readable for `LANES`).
    unsafe fn visible_keys(pos: *const u32, n: usize, lo: u32, hi: u32) -> Self::M;
    /// `v` in the lanes of `m`, `−∞` elsewhere.
    unsafe fn keep(m: Self::M, v: Self::V) -> Self::V;
    /// Lane `i`: the dot product of the `nv` vectors at `q` with the `nv`
    /// vectors at `k + i · ks`.
    unsafe fn dots(q: *const f32, k: *const f32, ks: usize, nv: usize) -> Self::V;
    /// Asks for the cache line at `p` (any address: never faults).
    unsafe fn prefetch(p: *const u8);
    /// Converts `rows` stored rows of `d` values of type `ty` (`row_bytes`
    /// apart in `src`) to f32 rows `ds` apart at `dst`, values `d..ds` of
    /// each row set to zero.
    unsafe fn convert(
        ty: KvType,
        src: &[u8],
        row_bytes: usize,
        rows: usize,
        dst: *mut f32,
        ds: usize,
        d: usize,
    );
}

/// Below this (in log2 units) [`Simd::exp2`] gives exactly 0. A softmax
/// weight under `2⁻⁶⁴` of the largest (which is 1) cannot change an f32
/// sum, but `2^x` down to `2⁻¹⁴⁹`, and its products with values and
/// rescaled outputs, are subnormal numbers, which x86 CPUs multiply far
/// more slowly; far-apart scores (random-weight models) produce many
/// (measurements: the lab journal, 2026-12-07 second session).
pub(super) const EXP2_FLOOR: f32 = -64.0;

/// Each thread's buffers (grown to the largest shape seen, reused).
#[derive(Default)]
pub(crate) struct Scratch {
    q: Vec<f32>,
    kf: Vec<f32>,
    vf: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    lo: Vec<u32>,
    hi: Vec<u32>,
    kpos: Vec<u32>,
    /// A job's state where it has one unit, or the merge of its units.
    pub(crate) state: Vec<f32>,
}

impl Scratch {
    /// The scalar reference's buffers: the scaled queries and one key and
    /// one value row.
    pub(super) fn rows(&mut self, q: usize, d: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
        (
            aligned(&mut self.q, q),
            aligned(&mut self.kf, d),
            aligned(&mut self.vf, d),
        )
    }
}

/// `n` values of `buf` starting on a 64-byte boundary (grows `buf`).
fn aligned<T: Copy + Default>(buf: &mut Vec<T>, n: usize) -> &mut [T] {
    let pad = 64 / std::mem::size_of::<T>();
    if buf.len() < n + pad {
        buf.resize(n + pad, T::default());
    }
    let off = buf.as_ptr().align_offset(64).min(pad);
    &mut buf[off..off + n]
}

/// Key and value dimensions padded for whole vectors of 16 lanes (a
/// multiple of every microkernel's `MR`).
fn padded_dim(d: usize) -> usize {
    d.next_multiple_of(16)
}

/// Walks the next block's key and value bytes a cache line at a time,
/// asking for a few lines per step of the current block's work, so that
/// memory reads overlap the arithmetic instead of stalling the next
/// conversion.
struct Prefetch<'a> {
    parts: [&'a [u8]; 2],
    at: usize,
}

impl<'a> Prefetch<'a> {
    const LINE: usize = 64;

    fn new(next: Option<&super::Block<'a>>) -> Prefetch<'a> {
        Prefetch {
            parts: next.map_or([&[][..], &[][..]], |b| [b.k, b.v]),
            at: 0,
        }
    }

    /// Lines still to ask for.
    fn lines(&self) -> usize {
        (self.parts[0].len().div_ceil(Self::LINE) + self.parts[1].len().div_ceil(Self::LINE))
            .saturating_sub(self.at)
    }

    /// Asks for the next `n` lines.
    ///
    /// # Safety
    /// The CPU has `S`'s instructions.
    #[inline(always)]
    unsafe fn step<S: Simd>(&mut self, n: usize) {
        let k_lines = self.parts[0].len().div_ceil(Self::LINE);
        for _ in 0..n {
            let (part, line) = if self.at < k_lines {
                (self.parts[0], self.at)
            } else {
                (self.parts[1], self.at - k_lines)
            };
            let Some(p) = part.get(line * Self::LINE) else {
                return;
            };
            // SAFETY: a prefetch never faults; the address is inside `part`.
            unsafe { S::prefetch(p) };
            self.at += 1;
        }
    }
}

/// The smallest and largest position of a block.
fn span(pos: &[u32]) -> (u32, u32) {
    pos.iter()
        .fold((u32::MAX, 0), |(a, b), &p| (a.min(p), b.max(p)))
}

/// The unit's final state into `state` (see `super::run_unit`), choosing the
/// layout by the tile's rows; `MR × NR` is the wide microkernel's tile
/// (`MR` divides 16, `NR ≤ 4`).
///
/// # Safety
/// The CPU has the instructions of `S`; `state` holds `u.rows()` rows of
/// `head_dim + 2`.
#[inline(always)]
pub(super) unsafe fn run_unit<S: Simd, const MR: usize, const NR: usize>(
    u: &Unit<'_>,
    sc: &mut Scratch,
    state: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe {
        if u.rows() >= 2 * S::LANES {
            wide::<S, MR, NR>(u, sc, state)
        } else {
            narrow::<S>(u, sc, state)
        }
    }
}

/// How a microkernel's accumulators start.
#[derive(Clone, Copy)]
enum Init {
    Zero,
    /// The stored tile.
    Load,
    /// The stored tile times the vectors at the pointer (one per column).
    Scale(*const f32),
}

/// `C[m][v] (+)= Σ_k A(m, k) · B[k][v]` for an `M × N` tile of vectors:
/// `A(m, k)` at `a + m·am + k·ak` (broadcast), vector `B[k][v]` at
/// `b + k·bk + v·LANES`, vector `C[m][v]` at `c + m·cm + v·LANES`.
///
/// # Safety
/// The CPU has `S`'s instructions; every address named above is readable
/// (and `C` writable) for `k` steps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro<S: Simd, const M: usize, const N: usize>(
    (a, am, ak): (*const f32, usize, usize),
    (b, bk): (*const f32, usize),
    k: usize,
    (c, cm): (*mut f32, usize),
    init: Init,
) {
    let l = S::LANES;
    // SAFETY: the caller's contract covers every address formed here.
    unsafe {
        let mut acc = [[S::zero(); N]; M];
        match init {
            Init::Zero => {}
            Init::Load => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::load(c.add(i * cm + v * l));
                    }
                }
            }
            Init::Scale(s) => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::mul(S::load(c.add(i * cm + v * l)), S::load(s.add(v * l)));
                    }
                }
            }
        }
        for kk in 0..k {
            let mut bv = [S::zero(); N];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = S::load(b.add(kk * bk + v * l));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = S::bcast(a.add(i * am + kk * ak));
                for (x, bv) in row.iter_mut().zip(bv) {
                    *x = S::fma(av, bv, *x);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                S::store(c.add(i * cm + v * l), *x);
            }
        }
    }
}

/// [`micro`] with `M` rows and `n` (1 to 4) vector columns.
///
/// # Safety
/// As [`micro`].
#[inline(always)]
unsafe fn micro_n<S: Simd, const M: usize>(
    n: usize,
    a: (*const f32, usize, usize),
    b: (*const f32, usize),
    k: usize,
    c: (*mut f32, usize),
    init: Init,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match n {
            1 => micro::<S, M, 1>(a, b, k, c, init),
            2 => micro::<S, M, 2>(a, b, k, c, init),
            3 => micro::<S, M, 3>(a, b, k, c, init),
            _ => micro::<S, M, 4>(a, b, k, c, init),
        }
    }
}

/// [`micro`] with `m` (1 to 4) rows and `n` (1 to 4) vector columns.
///
/// # Safety
/// As [`micro`].
#[inline(always)]
unsafe fn micro_mn<S: Simd>(
    m: usize,
    n: usize,
    a: (*const f32, usize, usize),
    b: (*const f32, usize),
    k: usize,
    c: (*mut f32, usize),
    init: Init,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match m {
            1 => micro_n::<S, 1>(n, a, b, k, c, init),
            2 => micro_n::<S, 2>(n, a, b, k, c, init),
            3 => micro_n::<S, 3>(n, a, b, k, c, init),
            _ => micro_n::<S, 4>(n, a, b, k, c, init),
        }
    }
}

/// Per tile: the positions each query row sees (`lo..=hi`, rows past the
/// tile see nothing) and the range of the real rows' bounds.
struct Reach {
    /// Smallest `lo` and largest `hi`: a block outside sees nothing.
    lo_min: u32,
    hi_max: u32,
    /// Largest `lo` and smallest `hi`: a block inside is seen whole.
    lo_max: u32,
    hi_min: u32,
}

impl Reach {
    /// Fills `lo`/`hi` for `rows` rows (then `u32::MAX`/0 up to their
    /// length) from the tile's positions.
    fn new(u: &Unit<'_>, lo: &mut [u32], hi: &mut [u32]) -> Reach {
        let g = u.shape.group();
        let mut r = Reach {
            lo_min: u32::MAX,
            hi_max: 0,
            lo_max: 0,
            hi_min: u32::MAX,
        };
        lo.fill(u32::MAX);
        hi.fill(0);
        for (t, &qp) in u.qpos.iter().enumerate() {
            let (a, b) = u.bounds(qp);
            lo[t * g..(t + 1) * g].fill(a);
            hi[t * g..(t + 1) * g].fill(b);
            r.lo_min = r.lo_min.min(a);
            r.lo_max = r.lo_max.max(a);
            r.hi_min = r.hi_min.min(b);
            r.hi_max = r.hi_max.max(b);
        }
        r
    }

    /// The keys of a block some row may see: `None` if no row sees any;
    /// else a range of the block (all of it, or where its positions
    /// ascend, the part between the smallest and largest position any row
    /// sees) and whether every row sees all of that range.
    fn classify(&self, pos: &[u32]) -> Option<(std::ops::Range<usize>, bool)> {
        let (kmin, kmax) = span(pos);
        if kmin > self.hi_max || kmax < self.lo_min {
            return None;
        }
        let (range, kmin, kmax) = if pos.is_sorted() {
            let a = pos.partition_point(|&p| p < self.lo_min);
            let e = pos.partition_point(|&p| p <= self.hi_max);
            (a..e, pos[a], pos[e - 1])
        } else {
            (0..pos.len(), kmin, kmax)
        };
        Some((range, kmin >= self.lo_max && kmax <= self.hi_min))
    }
}

/// Query rows across the lanes (see the module docs).
///
/// # Safety
/// As [`run_unit`].
#[inline(always)]
unsafe fn wide<S: Simd, const MR: usize, const NR: usize>(
    u: &Unit<'_>,
    sc: &mut Scratch,
    state: &mut [f32],
) {
    let sh = u.shape;
    let (d, g, r) = (sh.head_dim, sh.group(), u.rows());
    let l = S::LANES;
    let rp = r.next_multiple_of(l);
    let nv = rp / l;
    let ds = padded_dim(d);
    let scale = sh.scale * std::f32::consts::LOG2_E;

    // Queries, transposed: qt[dim][row], zero rows past r.
    let qt = aligned(&mut sc.q, d * rp);
    for t in 0..u.qpos.len() {
        for j in 0..g {
            let row = t * g + j;
            for (x, &v) in u.q_row(t, j).iter().enumerate() {
                qt[x * rp + row] = v * scale;
            }
        }
    }
    for x in 0..d {
        qt[x * rp + r..(x + 1) * rp].fill(0.0);
    }
    let qt = qt.as_ptr();
    let lo = aligned(&mut sc.lo, rp);
    let hi = aligned(&mut sc.hi, rp);
    let reach = Reach::new(u, lo, hi);
    let (lo, hi) = (lo.as_ptr(), hi.as_ptr());
    let m = aligned(&mut sc.m, rp);
    m.fill(f32::NEG_INFINITY);
    let m = m.as_mut_ptr();
    let lsum = aligned(&mut sc.l, rp);
    lsum.fill(0.0);
    let lsum = lsum.as_mut_ptr();
    let alpha = aligned(&mut sc.alpha, rp).as_mut_ptr();
    let ot = aligned(&mut sc.o, ds * rp);
    ot.fill(0.0);
    let ot = ot.as_mut_ptr();
    let kf = aligned(&mut sc.kf, BLOCK_KEYS * ds).as_mut_ptr();
    let vf = aligned(&mut sc.vf, BLOCK_KEYS * ds).as_mut_ptr();
    let st = aligned(&mut sc.s, BLOCK_KEYS * rp).as_mut_ptr();

    for blk in u.blocks() {
        let Some((keys, full)) = reach.classify(blk.pos) else {
            continue;
        };
        let blk = blk.slice(keys, u);
        let b = blk.pos.len();
        // SAFETY: the CPU has `S`'s instructions (the caller's contract).
        // Buffers: kf and vf hold BLOCK_KEYS ≥ b.next_multiple_of(MR) rows
        // of ds values (MR divides BLOCK_KEYS); qt d × rp; st BLOCK_KEYS ×
        // rp; ot ds × rp, and dimension tiles x0..x0 + MR end by ds (MR
        // divides 16, which divides ds); m, lsum, alpha, lo, hi rp; every
        // column group v0..v0 + n stays below nv = rp / LANES.
        unsafe {
            S::convert(sh.k_type, blk.k, u.k_row, b, kf, ds, d);
            S::convert(sh.v_type, blk.v, u.v_row, b, vf, ds, d);
            // Scores st[key][row] (keys past b are never read).
            for j0 in (0..b).step_by(MR) {
                for v0 in (0..nv).step_by(NR) {
                    micro_n::<S, MR>(
                        (nv - v0).min(NR),
                        (kf.add(j0 * ds), ds, 1),
                        (qt.add(v0 * l), rp),
                        d,
                        (st.add(j0 * rp + v0 * l), rp),
                        Init::Zero,
                    );
                }
            }
            if !full {
                for (j, &kp) in blk.pos.iter().enumerate() {
                    for v in 0..nv {
                        let p = st.add(j * rp + v * l);
                        let vis = S::visible_rows(lo.add(v * l), hi.add(v * l), kp);
                        S::store(p, S::keep(vis, S::load(p)));
                    }
                }
            }
            // Online softmax, lane-wise over the rows.
            let mut rescale = false;
            for v in 0..nv {
                let col = st.add(v * l);
                let mut bm = S::splat(f32::NEG_INFINITY);
                for j in 0..b {
                    bm = S::max(bm, S::load(col.add(j * rp)));
                }
                let mo = S::load(m.add(v * l));
                let mn = S::max(mo, bm);
                let mu = S::finite_or_zero(mn);
                let al = S::exp2(S::sub(mo, mu));
                let mut sum = S::zero();
                for j in 0..b {
                    let p = S::exp2(S::sub(S::load(col.add(j * rp)), mu));
                    S::store(col.add(j * rp), p);
                    sum = S::add(sum, p);
                }
                S::store(lsum.add(v * l), S::fma(S::load(lsum.add(v * l)), al, sum));
                S::store(m.add(v * l), mn);
                S::store(alpha.add(v * l), al);
                rescale |= !S::all_one(al);
            }
            // ot[dim][row] = alpha · ot + Σ_key vf[key][dim] · p[key][row].
            for x0 in (0..d).step_by(MR) {
                for v0 in (0..nv).step_by(NR) {
                    let init = if rescale {
                        Init::Scale(alpha.add(v0 * l))
                    } else {
                        Init::Load
                    };
                    micro_n::<S, MR>(
                        (nv - v0).min(NR),
                        (vf.add(x0), 1, ds),
                        (st.add(v0 * l), rp),
                        b,
                        (ot.add(x0 * rp + v0 * l), rp),
                        init,
                    );
                }
            }
        }
    }

    // SAFETY: m, lsum hold rp ≥ r values and ot ds × rp.
    unsafe {
        for (row, out) in state.chunks_exact_mut(d + 2).take(r).enumerate() {
            out[0] = *m.add(row);
            out[1] = *lsum.add(row);
            for (x, o) in out[2..].iter_mut().enumerate() {
                *o = *ot.add(x * rp + row);
            }
        }
    }
}

/// Head dimensions across the lanes (see the module docs).
///
/// # Safety
/// As [`run_unit`].
#[inline(always)]
unsafe fn narrow<S: Simd>(u: &Unit<'_>, sc: &mut Scratch, state: &mut [f32]) {
    let sh = u.shape;
    let (d, g, r) = (sh.head_dim, sh.group(), u.rows());
    let l = S::LANES;
    let ds = padded_dim(d);
    let nvd = ds / l;
    let scale = sh.scale * std::f32::consts::LOG2_E;

    // Queries: qs[row][dim], zero past d.
    let qs = aligned(&mut sc.q, r * ds);
    for t in 0..u.qpos.len() {
        for j in 0..g {
            let row = &mut qs[(t * g + j) * ds..(t * g + j + 1) * ds];
            for (x, &v) in row.iter_mut().zip(u.q_row(t, j)) {
                *x = v * scale;
            }
            row[d..].fill(0.0);
        }
    }
    let qs = qs.as_ptr();
    let lo = aligned(&mut sc.lo, r);
    let hi = aligned(&mut sc.hi, r);
    let reach = Reach::new(u, lo, hi);
    let (lo, hi) = (&*lo, &*hi);
    let m = aligned(&mut sc.m, r);
    m.fill(f32::NEG_INFINITY);
    let lsum = aligned(&mut sc.l, r);
    lsum.fill(0.0);
    let o = aligned(&mut sc.o, r * ds);
    o.fill(0.0);
    let o = o.as_mut_ptr();
    let kf = aligned(&mut sc.kf, BLOCK_KEYS * ds).as_mut_ptr();
    let vf = aligned(&mut sc.vf, BLOCK_KEYS * ds).as_mut_ptr();
    let s = aligned(&mut sc.s, r * BLOCK_KEYS).as_mut_ptr();
    let kpos = aligned(&mut sc.kpos, BLOCK_KEYS + 16);

    let mut blocks = u.blocks().peekable();
    while let Some(blk) = blocks.next() {
        let Some((keys, full)) = reach.classify(blk.pos) else {
            continue;
        };
        let blk = blk.slice(keys, u);
        let b = blk.pos.len();
        let mut pf = Prefetch::new(blocks.peek());
        // Spread over the block's dot products.
        let per_dots = pf.lines().div_ceil(r * b.div_ceil(l));
        kpos[..b].copy_from_slice(blk.pos);
        let kp = kpos.as_ptr();
        // SAFETY: the CPU has `S`'s instructions (the caller's contract).
        // kf and vf hold BLOCK_KEYS rows of ds values and key groups
        // j0..j0 + LANES end by BLOCK_KEYS (LANES divides it); qs and o hold
        // r rows of ds, s r rows of BLOCK_KEYS; kpos BLOCK_KEYS + 16 values;
        // row groups r0..r0 + 4 are cut at r and vector groups at nvd.
        unsafe {
            S::convert(sh.k_type, blk.k, u.k_row, b, kf, ds, d);
            S::convert(sh.v_type, blk.v, u.v_row, b, vf, ds, d);
            for row in 0..r {
                let srow = s.add(row * BLOCK_KEYS);
                let mut bm = S::splat(f32::NEG_INFINITY);
                for j0 in (0..b).step_by(l) {
                    pf.step::<S>(per_dots);
                    let mut sv = S::dots(qs.add(row * ds), kf.add(j0 * ds), ds, nvd);
                    let n = (b - j0).min(l);
                    if !full || n < l {
                        sv = S::keep(S::visible_keys(kp.add(j0), n, lo[row], hi[row]), sv);
                    }
                    S::store(srow.add(j0), sv);
                    bm = S::max(bm, sv);
                }
                let mo = m[row];
                let mn = mo.max(S::hmax(bm));
                let mu = if mn == f32::NEG_INFINITY { 0.0 } else { mn };
                // 2^(mo − mu), its two common values without the call.
                let al = if mo == mu {
                    1.0
                } else if mo == f32::NEG_INFINITY {
                    0.0
                } else {
                    (mo - mu).exp2()
                };
                let (muv, mut sum) = (S::splat(mu), S::zero());
                for j0 in (0..b).step_by(l) {
                    let p = S::exp2(S::sub(S::load(srow.add(j0)), muv));
                    S::store(srow.add(j0), p);
                    sum = S::add(sum, p);
                }
                lsum[row] = lsum[row] * al + S::hsum(sum);
                m[row] = mn;
                if al != 1.0 {
                    let alv = S::splat(al);
                    for x in 0..nvd {
                        let p = o.add(row * ds + x * l);
                        S::store(p, S::mul(S::load(p), alv));
                    }
                }
            }
            // o[row][dim] += Σ_key p[row][key] · vf[key][dim].
            for r0 in (0..r).step_by(4) {
                for x0 in (0..nvd).step_by(4) {
                    micro_mn::<S>(
                        (r - r0).min(4),
                        (nvd - x0).min(4),
                        (s.add(r0 * BLOCK_KEYS), BLOCK_KEYS, 1),
                        (vf.add(x0 * l), ds),
                        b,
                        (o.add(r0 * ds + x0 * l), ds),
                        Init::Load,
                    );
                }
            }
        }
    }

    // SAFETY: o holds r rows of ds ≥ d values.
    unsafe {
        for (row, out) in state.chunks_exact_mut(d + 2).take(r).enumerate() {
            out[0] = m[row];
            out[1] = lsum[row];
            for (x, v) in out[2..].iter_mut().enumerate() {
                *v = *o.add(row * ds + x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Simd, EXP2_FLOOR};

    /// `2^x` of every `x` by `S`, a vector at a time (`xs.len()` a multiple
    /// of `S::LANES`).
    ///
    /// # Safety
    /// The CPU has `S`'s instructions (the callers enable them).
    #[inline(always)]
    unsafe fn sweep<S: Simd>(xs: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; xs.len()];
        for (x, o) in xs
            .chunks_exact(S::LANES)
            .zip(out.chunks_exact_mut(S::LANES))
        {
            // SAFETY: the caller's CPU contract; both chunks hold LANES values.
            unsafe { S::store(o.as_mut_ptr(), S::exp2(S::load(x.as_ptr()))) };
        }
        out
    }

    /// Every `x` from −200 to 0 in steps of 1/64, the floor's neighbours
    /// and −∞: exactly 0 below [`EXP2_FLOOR`], within 4 ulp of `2^x` from
    /// it on, exactly 1 at 0, and never a subnormal number.
    fn check(name: &str, xs: &[f32], got: &[f32]) {
        for (&x, &y) in xs.iter().zip(got) {
            assert!(!y.is_subnormal(), "{name}: 2^{x} gave the subnormal {y:e}");
            if x < EXP2_FLOOR {
                assert_eq!(y, 0.0, "{name}: 2^{x} below the floor");
                continue;
            }
            let want = (x as f64).exp2();
            let ulp = f32::EPSILON as f64 * want;
            assert!(
                (y as f64 - want).abs() <= 4.0 * ulp,
                "{name}: 2^{x} = {y:e}, want {want:e}"
            );
        }
        let at0 = xs.iter().position(|&x| x == 0.0).unwrap();
        assert_eq!(got[at0], 1.0, "{name}: 2^0");
    }

    fn inputs(lanes: usize) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..=200 * 64).map(|i| -200.0 + i as f32 / 64.0).collect();
        xs.extend([
            f32::NEG_INFINITY,
            EXP2_FLOOR,
            EXP2_FLOOR.next_down(),
            EXP2_FLOOR.next_up(),
            -126.5,
            -149.0,
        ]);
        while !xs.len().is_multiple_of(lanes) {
            xs.push(-0.0);
        }
        xs
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp2_is_zero_below_the_floor_and_never_subnormal_x86() {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run(xs: &[f32]) -> Vec<f32> {
                // SAFETY: the features are enabled here and were detected.
                unsafe { sweep::<super::super::avx2::Avx2>(xs) }
            }
            let xs = inputs(8);
            // SAFETY: AVX2 and FMA detected above.
            check("avx2", &xs, &unsafe { run(&xs) });
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            unsafe fn run(xs: &[f32]) -> Vec<f32> {
                // SAFETY: the features are enabled here and were detected.
                unsafe { sweep::<super::super::avx512::Avx512>(xs) }
            }
            let xs = inputs(16);
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: the features were detected above.
                check("avx512", &xs, &unsafe { run(&xs) });
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn exp2_is_zero_below_the_floor_and_never_subnormal_neon() {
        let xs = inputs(4);
        // SAFETY: NEON is part of AArch64.
        check("neon", &xs, &unsafe {
            sweep::<super::super::neon::Neon>(&xs)
        });
    }
}
