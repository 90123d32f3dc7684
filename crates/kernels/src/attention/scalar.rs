//! The portable reference: one key at a time, one query row at a time.

use super::{AttnSeq, AttnShape, KvPage, KvType, State};
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

/// Folds the keys of `pages` into `states` (`[token][group]`) for query
/// tokens `tokens` of `seq` and KV head `head`.
pub(super) fn attend(
    shape: &AttnShape,
    q: &[f32],
    seq: &AttnSeq<'_>,
    head: usize,
    tokens: std::ops::Range<usize>,
    pages: &[KvPage<'_>],
    states: &mut [State],
) {
    let hd = shape.head_dim;
    let group = shape.group();
    let width = shape.q_width();
    let k_row = shape.k_type.row_bytes(hd).unwrap_or(0);
    let v_row = shape.v_type.row_bytes(hd).unwrap_or(0);
    let mut k = vec![0f32; hd];
    let mut v = vec![0f32; hd];
    for page in pages {
        for (slot, &kp) in page.pos.iter().enumerate() {
            let (ka, va) = (
                (head * page.stride + slot) * k_row,
                (head * page.stride + slot) * v_row,
            );
            let mut loaded = false;
            for (ti, t) in tokens.clone().enumerate() {
                let qp = seq.qpos[t];
                if !shape.visible(qp, kp) {
                    continue;
                }
                if !loaded {
                    load_row(shape.k_type, &page.k[ka..ka + k_row], &mut k);
                    load_row(shape.v_type, &page.v[va..va + v_row], &mut v);
                    loaded = true;
                }
                for j in 0..group {
                    let h = head * group + j;
                    let qr = &q[(seq.row + t) * width + h * hd..][..hd];
                    let score = qr.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>() * shape.scale;
                    let st = &mut states[ti * group + j];
                    if score > st.max {
                        let c = (st.max - score).exp();
                        st.sum *= c;
                        for a in st.acc.iter_mut() {
                            *a *= c;
                        }
                        st.max = score;
                    }
                    let p = (score - st.max).exp();
                    st.sum += p;
                    for (a, x) in st.acc.iter_mut().zip(&v) {
                        *a += p * x;
                    }
                }
            }
        }
    }
}
