//! `mistral-run bench-plot REPORT.json... -o chart.png`: the chart of a `bench`
//! run: prompt processing and text generation tok/s (mean with ± stdev whiskers)
//! and memory (weights, peak resident set) per model, one bar per kernel choice;
//! with `--summary`, the same figures relative to F16 as Markdown.
//!
//! Text is drawn with a TrueType font read at run time (`--font`, else DejaVu
//! Sans / Liberation Sans / Arial from the usual system folders), so building the
//! binary needs no font libraries.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::report::{BenchReport, ModelResult, TestKind, SCHEMA_VERSION};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON reports of `mistral-run bench --json` / `--save-json` (results are merged).
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(short = 'o', long, value_name = "FILE", default_value = "bench.png")]
    pub output: PathBuf,
    /// Chart title (default: the models' shared name and the run's settings).
    #[arg(long)]
    pub title: Option<String>,
    /// TrueType/OpenType font for the text.
    #[arg(long, value_name = "FILE")]
    pub font: Option<PathBuf>,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u32).range(400..=8000))]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 700, value_parser = clap::value_parser!(u32).range(300..=8000))]
    pub height: u32,
    /// Also print a Markdown summary: each type's speed and memory relative to
    /// F16, and native kernels relative to candle.
    #[arg(long)]
    pub summary: bool,
}

/// Fonts tried when `--font` is not given.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

const FONT: &str = "sans-serif";

/// Bar colours, one per series (colour-blind-safe Okabe-Ito hues).
const PALETTE: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

pub fn run(args: Args) -> Result<()> {
    let mut results: Vec<ModelResult> = Vec::new();
    let mut settings = Vec::new();
    for p in &args.reports {
        let r = read_report(p)?;
        let mut threads: Vec<String> = r.results.iter().map(|m| m.threads.to_string()).collect();
        threads.dedup();
        settings.push(format!(
            "{} ({} logical cores), {} thread(s), {}, measured {}",
            r.machine.cpu,
            r.machine.logical_cores,
            threads.join("/"),
            test_names(&r),
            r.date_utc.get(..10).unwrap_or(&r.date_utc),
        ));
        results.extend(r.results);
    }
    if results.is_empty() {
        bail!("the report(s) hold no results to plot");
    }
    load_font(args.font.as_deref())?;
    settings.dedup();
    let chart = Chart::new(&results);
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| "mistral-run bench".to_string());
    draw(
        &chart,
        &title,
        &settings.join("; "),
        &args.output,
        (args.width, args.height),
    )
    .with_context(|| format!("cannot draw {}", args.output.display()))?;
    if args.summary {
        print!("{}", crate::bench::summary::markdown(&results));
    } else {
        println!("{}", args.output.display());
    }
    Ok(())
}

fn read_report(p: &Path) -> Result<BenchReport> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    let r: BenchReport = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a `mistral-run bench` JSON report", p.display()))?;
    if r.schema_version != SCHEMA_VERSION {
        bail!(
            "{}: report schema version {} (this program reads {SCHEMA_VERSION})",
            p.display(),
            r.schema_version
        );
    }
    Ok(r)
}

fn test_names(r: &BenchReport) -> String {
    let mut v = Vec::new();
    if r.n_prompt > 0 {
        v.push(TestKind::Pp.name(r.n_prompt, 0));
    }
    if r.n_gen > 0 {
        v.push(TestKind::Tg.name(r.n_gen, 0));
    }
    format!("{}, {} runs each", v.join(" / "), r.repetitions)
}

fn load_font(path: Option<&Path>) -> Result<()> {
    let bytes = match path {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read font {}", p.display()))?,
        None => match FONT_CANDIDATES.iter().find_map(|c| std::fs::read(c).ok()) {
            Some(b) => b,
            None => bail!(
                "no font found in the usual places ({}); pass one with --font FILE.ttf",
                FONT_CANDIDATES[0]
            ),
        },
    };
    // plotters keeps registered fonts for the life of the program.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("the font file is not a TrueType/OpenType font"))?;
    Ok(())
}

/// One bar: value and whisker.
#[derive(Clone, Copy)]
struct Bar {
    value: f64,
    stdev: f64,
}

/// A named series of bars, one (or none) per category.
struct Series {
    name: String,
    bars: Vec<Option<Bar>>,
}

/// The data of the three panels.
struct Chart {
    labels: Vec<String>,
    pp: Vec<Series>,
    tg: Vec<Series>,
    memory: Vec<Series>,
    /// Unit of the memory panel.
    memory_unit: &'static str,
    /// The F16 model every bar is compared with (`2.4×`), when there is exactly one.
    baseline: Option<usize>,
    /// Experts per category (ratios only compare models of the same kind).
    n_expert: Vec<usize>,
    pp_name: String,
    tg_name: String,
}

impl Chart {
    fn new(results: &[ModelResult]) -> Chart {
        // Categories: models in order of appearance.
        let mut paths: Vec<&str> = Vec::new();
        for r in results {
            if !paths.contains(&r.path.as_str()) {
                paths.push(&r.path);
            }
        }
        let firsts: Vec<&ModelResult> = paths
            .iter()
            .filter_map(|p| results.iter().find(|r| r.path == *p))
            .collect();
        let labels = labels(&firsts);
        // Series: kernel choice (and threads when several).
        let several_threads = results.iter().any(|r| r.threads != results[0].threads);
        let series_name = |r: &ModelResult| {
            if several_threads {
                format!("{} {}t", r.kernels, r.threads)
            } else {
                r.kernels.clone()
            }
        };
        let mut names: Vec<String> = Vec::new();
        for r in results {
            let n = series_name(r);
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let find = |path: &str, name: &str| {
            results
                .iter()
                .find(|r| r.path == path && series_name(r) == name)
        };
        let speed = |kind: TestKind| -> Vec<Series> {
            names
                .iter()
                .map(|n| Series {
                    name: n.clone(),
                    bars: paths
                        .iter()
                        .map(|p| {
                            let t = find(p, n)?.tests.iter().find(|t| t.kind == kind)?;
                            Some(Bar {
                                value: t.mean_tps,
                                stdev: t.stdev_tps,
                            })
                        })
                        .collect(),
                })
                .collect()
        };
        let max_bytes = firsts
            .iter()
            .map(|r| r.peak_rss_bytes.unwrap_or(0).max(r.weight_bytes))
            .max()
            .unwrap_or(0);
        let (memory_unit, div) = if max_bytes >= 1 << 30 {
            ("GiB", (1u64 << 30) as f64)
        } else {
            ("MiB", (1u64 << 20) as f64)
        };
        let gib = |b: u64| b as f64 / div;
        let f16: Vec<usize> = firsts
            .iter()
            .enumerate()
            .filter(|(_, r)| r.ftype == "F16")
            .map(|(i, _)| i)
            .collect();
        let mut memory = vec![Series {
            name: "weights".to_string(),
            bars: firsts
                .iter()
                .map(|r| {
                    Some(Bar {
                        value: gib(r.weight_bytes),
                        stdev: 0.0,
                    })
                })
                .collect(),
        }];
        memory.extend(names.iter().map(|n| {
            Series {
                name: format!("peak RSS, {n}"),
                bars: paths
                    .iter()
                    .map(|p| {
                        let r = find(p, n)?;
                        Some(Bar {
                            value: gib(r.peak_rss_bytes.or(r.peak_device_bytes)?),
                            stdev: 0.0,
                        })
                    })
                    .collect(),
            }
        }));
        let test_name = |kind: TestKind| {
            results
                .iter()
                .flat_map(|r| &r.tests)
                .find(|t| t.kind == kind)
                .map_or_else(|| kind.name(0, 0), |t| t.name.clone())
        };
        Chart {
            labels,
            pp: speed(TestKind::Pp),
            tg: speed(TestKind::Tg),
            memory,
            memory_unit,
            baseline: (f16.len() == 1).then(|| f16[0]),
            n_expert: firsts.iter().map(|r| r.n_expert).collect(),
            pp_name: test_name(TestKind::Pp),
            tg_name: test_name(TestKind::Tg),
        }
    }
}

/// Short category labels: the file type (with "MoE" for expert models) when that
/// tells the models apart, else the file names.
fn labels(models: &[&ModelResult]) -> Vec<String> {
    let short: Vec<String> = models
        .iter()
        .map(|r| {
            if r.n_expert > 0 {
                format!("MoE {}", r.ftype)
            } else {
                r.ftype.clone()
            }
        })
        .collect();
    let unique = short
        .iter()
        .enumerate()
        .all(|(i, s)| !short[..i].contains(s));
    if unique {
        short
    } else {
        models
            .iter()
            .map(|r| r.file_name.trim_end_matches(".gguf").to_string())
            .collect()
    }
}

fn draw(chart: &Chart, title: &str, subtitle: &str, out: &Path, size: (u32, u32)) -> Result<()> {
    let full = BitMapBackend::new(out, size).into_drawing_area();
    full.fill(&WHITE)?;
    let root = full.margin(8, 0, 0, 0).titled(title, (FONT, 30))?;
    let (sub, body) = root.split_vertically(30);
    sub.draw(&Text::new(
        subtitle.to_string(),
        (size.0 as i32 / 2, 4),
        TextStyle::from((FONT, 17))
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let panels = body.split_evenly((1, 3));
    let specs: [(&str, &str, &[Series]); 3] = [
        (
            &format!("Prompt processing ({}), higher is better", chart.pp_name),
            "tokens / s",
            &chart.pp,
        ),
        (
            &format!("Text generation ({}), higher is better", chart.tg_name),
            "tokens / s",
            &chart.tg,
        ),
        ("Memory, lower is better", chart.memory_unit, &chart.memory),
    ];
    for (panel, (caption, unit, series)) in panels.iter().zip(specs) {
        bar_panel(&full, panel, caption, unit, chart, series)?;
    }
    full.present()?;
    Ok(())
}

fn bar_panel<DB: DrawingBackend>(
    full: &DrawingArea<DB, plotters::coord::Shift>,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    chart_data: &Chart,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (labels, baseline, n_expert) = (
        &chart_data.labels,
        chart_data.baseline,
        &chart_data.n_expert,
    );
    let n = labels.len();
    let top = series
        .iter()
        .flat_map(|s| s.bars.iter().flatten())
        .map(|b| b.value + b.stdev)
        .fold(0.0f64, f64::max);
    let y_max = if top > 0.0 { top * 1.18 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 19))
        .margin(12)
        .margin_bottom(44)
        .x_label_area_size(8)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..n as f64, 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(unit)
        .y_label_formatter(&|v| match y_max {
            m if m >= 20.0 => format!("{v:.0}"),
            m if m >= 2.0 => format!("{v:.1}"),
            _ => format!("{v:.2}"),
        })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let group = 0.8;
    let width = group / series.len().max(1) as f64;
    // Text sizes that fit the bars.
    let unit_px = (chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0) as f64;
    let bar_px = width * 0.92 * unit_px;
    let value_font = (bar_px / 2.6).clamp(10.0, 15.0);
    let show_ratios = bar_px >= 28.0;
    for (s_idx, s) in series.iter().enumerate() {
        let color = PALETTE[s_idx % PALETTE.len()];
        let x0 = |i: usize| i as f64 + (1.0 - group) / 2.0 + s_idx as f64 * width;
        let bars = s
            .bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|b| (i, b)));
        chart
            .draw_series(bars.clone().map(|(i, b)| {
                Rectangle::new(
                    [(x0(i), 0.0), (x0(i) + width * 0.92, b.value)],
                    color.filled(),
                )
            }))?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart.draw_series(bars.clone().filter(|(_, b)| b.stdev > 0.0).map(|(i, b)| {
            let xc = x0(i) + width * 0.46;
            PathElement::new(
                vec![(xc, (b.value - b.stdev).max(0.0)), (xc, b.value + b.stdev)],
                BLACK.stroke_width(2),
            )
        }))?;
        chart.draw_series(bars.clone().map(|(i, b)| {
            Text::new(
                value_label(b.value),
                (x0(i) + width * 0.46, b.value + b.stdev + y_max * 0.01),
                TextStyle::from((FONT, value_font)).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
        // Ratio to the F16 bar of the same series, written inside the bar.
        let base = baseline
            .and_then(|j| s.bars.get(j).copied().flatten())
            .filter(|b| b.value > 0.0);
        if let (Some(j), Some(base), true) = (baseline, base, show_ratios) {
            let same_kind = |i: usize| n_expert.get(i) == n_expert.get(j);
            chart.draw_series(
                bars.filter(|(i, b)| *i != j && same_kind(*i) && b.value > 0.12 * y_max)
                    .map(|(i, b)| {
                        Text::new(
                            format!("{:.2}×", b.value / base.value),
                            (x0(i) + width * 0.46, b.value - y_max * 0.015),
                            TextStyle::from((FONT, value_font))
                                .color(&WHITE)
                                .pos(Pos::new(HPos::Center, VPos::Top)),
                        )
                    }),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    // Category labels under the axis, in pixels of the whole image.
    for (i, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        full.draw(&Text::new(
            label.clone(),
            (x, y + 8),
            TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    Ok(())
}

/// `1234`, `56.7`, `8.90`: three significant digits or so.
fn value_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_labels_keep_three_digits() {
        assert_eq!(value_label(1234.4), "1234");
        assert_eq!(value_label(56.74), "56.7");
        assert_eq!(value_label(8.904), "8.90");
    }
}
