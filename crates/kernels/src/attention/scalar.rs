//! The portable reference: one key at a time, one query row at a time, with
//! the online softmax in log2 units as the SIMD kernels keep it (scores
//! times `scale · log2(e)`, weights `2^(score − max)`).

use super::kernel::Scratch;
use super::{KvType, Unit};
use crate::blocks::{cast_blocks, BlockQ8_0};
use half::f16;

/// Reads one stored row (lengths checked by the caller).
pub(super) fn load_row(ty: KvType, src: &[u8], dst: &mut [f32]) {
    match ty {
        KvType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        KvType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        KvType::Q8_0 => {
            // Row lengths are whole blocks (checked by the caller).
            if let Ok(blocks) = cast_blocks::<BlockQ8_0>(src) {
                for (d, b) in dst.chunks_exact_mut(32).zip(blocks) {
                    let s = b.d.to_f32();
                    for (x, q) in d.iter_mut().zip(&b.qs) {
                        *x = *q as f32 * s;
                    }
                }
            }
        }
    }
}

/// The unit's final state into `state` (`rows × (head_dim + 2)`: maximum,
/// sum, weighted values).
pub(super) fn run_unit(u: &Unit<'_>, sc: &mut Scratch, state: &mut [f32]) {
    let sh = u.shape;
    let (d, g, r) = (sh.head_dim, sh.group(), u.rows());
    let scale = sh.scale * std::f32::consts::LOG2_E;
    let (qs, k, v) = sc.rows(r * d, d);
    for t in 0..u.qpos.len() {
        for j in 0..g {
            for (x, &y) in qs[(t * g + j) * d..].iter_mut().zip(u.q_row(t, j)) {
                *x = y * scale;
            }
        }
    }
    for row in state.chunks_exact_mut(d + 2) {
        row[0] = f32::NEG_INFINITY;
        row.iter_mut().skip(1).for_each(|x| *x = 0.0);
    }
    let bounds: Vec<(u32, u32)> = u.qpos.iter().map(|&p| u.bounds(p)).collect();
    for blk in u.blocks() {
        for (i, &kp) in blk.pos.iter().enumerate() {
            if !bounds.iter().any(|&(lo, hi)| lo <= kp && kp <= hi) {
                continue;
            }
            load_row(sh.k_type, &blk.k[i * u.k_row..(i + 1) * u.k_row], k);
            load_row(sh.v_type, &blk.v[i * u.v_row..(i + 1) * u.v_row], v);
            for (t, &(lo, hi)) in bounds.iter().enumerate() {
                if kp < lo || kp > hi {
                    continue;
                }
                for j in 0..g {
                    let row = t * g + j;
                    let q = &qs[row * d..(row + 1) * d];
                    let s: f32 = q.iter().zip(&*k).map(|(a, b)| a * b).sum();
                    let st = &mut state[row * (d + 2)..(row + 1) * (d + 2)];
                    if s > st[0] {
                        let c = (st[0] - s).exp2();
                        st[1..].iter_mut().for_each(|x| *x *= c);
                        st[0] = s;
                    }
                    let p = (s - st[0]).exp2();
                    st[1] += p;
                    for (a, x) in st[2..].iter_mut().zip(&*v) {
                        *a += p * x;
                    }
                }
            }
        }
    }
}
