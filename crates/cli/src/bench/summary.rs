//! Markdown summary of a `bench` report relative to F16: how each type's
//! speed and memory compare with the F16 file's (same kernels and threads), and
//! how the native kernels compare with candle's on the same file.

use std::fmt::Write as _;

use super::report::{human_bytes, ModelResult, TestKind};

fn tps(r: &ModelResult, kind: TestKind) -> Option<f64> {
    r.tests.iter().find(|t| t.kind == kind).map(|t| t.mean_tps)
}

fn cell(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The F16 result with the same kernels and threads as `r` (dense or MoE alike).
fn f16_of<'a>(results: &'a [ModelResult], r: &ModelResult) -> Option<&'a ModelResult> {
    let mut f16 = results.iter().filter(|b| {
        b.ftype == "F16"
            && b.kernels == r.kernels
            && b.threads == r.threads
            && b.n_expert == r.n_expert
    });
    let first = f16.next()?;
    // Ambiguous when several F16 files would match.
    f16.next().is_none().then_some(first)
}

/// Tables (Markdown) and one sentence per quantized type.
pub fn markdown(results: &[ModelResult]) -> String {
    let mut s = String::new();
    s.push_str("| model | kernels | threads | pp t/s | pp × F16 | tg t/s | tg × F16 | weights | weights / F16 | peak RSS | peak RSS / F16 |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut sentences = Vec::new();
    for r in results {
        let base = f16_of(results, r);
        let (pp, tg) = (tps(r, TestKind::Pp), tps(r, TestKind::Tg));
        let b_pp = base.and_then(|b| tps(b, TestKind::Pp));
        let b_tg = base.and_then(|b| tps(b, TestKind::Tg));
        let w_ratio = base.map(|b| r.weight_bytes as f64 / b.weight_bytes.max(1) as f64);
        let rss_ratio = base.and_then(|b| {
            ratio(
                r.peak_rss_bytes.map(|x| x as f64),
                b.peak_rss_bytes.map(|x| x as f64),
            )
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            r.kernels,
            r.threads,
            cell(pp, |v| format!("{v:.1}")),
            cell(ratio(pp, b_pp), |v| format!("{v:.2}×")),
            cell(tg, |v| format!("{v:.1}")),
            cell(ratio(tg, b_tg), |v| format!("{v:.2}×")),
            human_bytes(r.weight_bytes),
            cell(w_ratio, |v| format!("{:.0}%", 100.0 * v)),
            cell(r.peak_rss_bytes.map(|b| b as f64), |v| human_bytes(
                v as u64
            )),
            cell(rss_ratio, |v| format!("{:.0}%", 100.0 * v)),
        );
        if let (Some(b), true) = (base, r.ftype != "F16") {
            let mut line = format!("- {} ({} kernels): ", r.ftype, r.kernels);
            if let Some(x) = ratio(tg, b_tg) {
                let _ = write!(line, "{x:.2}× F16 decode speed");
            }
            if let Some(x) = ratio(pp, b_pp) {
                let _ = write!(line, ", {x:.2}× its prefill speed");
            }
            let _ = write!(
                line,
                ", at {:.0}% of its weight memory",
                100.0 * w_ratio.unwrap_or(0.0)
            );
            if let Some(x) = rss_ratio {
                let _ = write!(line, " ({:.0}% of its peak RSS)", 100.0 * x);
            }
            let _ = write!(line, " — {}", b.file_name);
            sentences.push(line);
        }
    }
    if !sentences.is_empty() {
        s.push('\n');
        for l in sentences {
            s.push_str(&l);
            s.push_str(".\n");
        }
    }
    // Native against candle on the same file.
    let pairs: Vec<(&ModelResult, &ModelResult)> = results
        .iter()
        .filter(|r| r.kernels == "native")
        .filter_map(|n| {
            results
                .iter()
                .find(|c| c.kernels == "candle" && c.path == n.path && c.threads == n.threads)
                .map(|c| (n, c))
        })
        .collect();
    if !pairs.is_empty() {
        s.push_str("\n| model | threads | pp native / candle | tg native / candle | peak RSS native / candle |\n|---|---:|---:|---:|---:|\n");
        for (n, c) in pairs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                n.model,
                n.threads,
                cell(
                    ratio(tps(n, TestKind::Pp), tps(c, TestKind::Pp)),
                    |v| format!("{v:.2}×")
                ),
                cell(
                    ratio(tps(n, TestKind::Tg), tps(c, TestKind::Tg)),
                    |v| format!("{v:.2}×")
                ),
                cell(
                    ratio(
                        n.peak_rss_bytes.map(|x| x as f64),
                        c.peak_rss_bytes.map(|x| x as f64)
                    ),
                    |v| format!("{v:.2}×")
                ),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::TestResult;

    fn result(ftype: &str, kernels: &str, pp: f64, tg: f64, weights: u64) -> ModelResult {
        let test = |kind: TestKind, v: f64| TestResult {
            name: kind.name(8, 0),
            kind,
            n_tokens: 8,
            n_depth: 0,
            mean_tps: v,
            stdev_tps: 0.0,
            samples_seconds: vec![8.0 / v],
        };
        ModelResult {
            path: format!("m-{ftype}.gguf"),
            file_name: format!("m-{ftype}.gguf"),
            model: format!("llama 1B {ftype}"),
            arch: "llama".into(),
            ftype: ftype.into(),
            size_bytes: weights,
            params: 1,
            n_layer: 1,
            n_embd: 1,
            n_expert: 0,
            n_expert_used: 0,
            backend: "CPU".into(),
            device: "cpu".into(),
            kernels: kernels.into(),
            isa: "avx2".into(),
            threads: 2,
            weight_bytes: weights,
            kv_cache_bytes: 0,
            kv_positions: 1,
            cache_type_k: "f16".into(),
            cache_type_v: "f16".into(),
            rss_bytes: Some(2 * weights),
            peak_rss_bytes: Some(2 * weights),
            peak_device_bytes: None,
            load_seconds: 0.1,
            load_average_1m: None,
            tests: vec![test(TestKind::Pp, pp), test(TestKind::Tg, tg)],
        }
    }

    #[test]
    fn ratios_are_against_f16_with_the_same_kernels() {
        let rs = vec![
            result("F16", "candle", 100.0, 10.0, 1000),
            result("Q4_K_M", "candle", 80.0, 30.0, 310),
            result("F16", "native", 200.0, 20.0, 1000),
            result("Q4_K_M", "native", 100.0, 50.0, 310),
        ];
        let md = markdown(&rs);
        assert!(md.contains("- Q4_K_M (candle kernels): 3.00× F16 decode speed, 0.80× its prefill speed, at 31% of its weight memory (31% of its peak RSS)"), "{md}");
        assert!(
            md.contains(
                "- Q4_K_M (native kernels): 2.50× F16 decode speed, 0.50× its prefill speed"
            ),
            "{md}"
        );
        // Native / candle on the Q4_K_M file: pp 100/80, tg 50/30.
        assert!(
            md.contains("| llama 1B Q4_K_M | 2 | 1.25× | 1.67× | 1.00× |"),
            "{md}"
        );
    }
}
