//! `mistral-run run`: one prompt, the completion streamed to stdout, statistics to stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use mistral_transformer::{FinishReason, GenerationStats, Message, Session};

use crate::model_args::{mib, peak_rss_bytes, ConstraintArgs, ModelArgs, SamplingArgs};

/// Complete a prompt (or answer it with the chat template) and stream the text.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Number of tokens to generate (default: until the model ends its answer or the context is full).
    #[arg(short = 'n', long = "n-predict", value_name = "N")]
    pub n_predict: Option<usize>,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// System message (implies --chat).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
}

pub fn run(args: Args) -> Result<()> {
    let params = args.sampling.params(args.n_predict)?;
    let (model, load_time) = args.model.load()?;
    let options = args.constraint.options(&model)?;
    let mut session = model.new_session();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let ids = if args.chat || args.system.is_some() {
        let mut messages = Vec::new();
        if let Some(s) = args.system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(args.prompt));
        model.encode_chat(&messages)?
    } else {
        model.encode_prompt(&args.prompt)?
    };
    let mut generation = session.generate_with(&ids, &params, options)?;
    let mut shifts = 0;
    while let Some(token) = generation.next() {
        let token = token?;
        out.write_all(token.text.as_bytes())?;
        out.flush()?;
        shifts = report_shifts(shifts, generation.stats().context_shifts);
    }
    writeln!(out)?;
    out.flush()?;
    let stats = generation.stats();
    let reason = generation.finish_reason();
    drop(generation);
    report_end(reason);
    print_stats(&session, load_time, &stats);
    Ok(())
}

/// Says on stderr when the context shifted since `seen` shifts; returns the count.
pub fn report_shifts(seen: usize, now: usize) -> usize {
    if now > seen {
        eprintln!("\n[context full: dropped the older half of the context and went on]");
    }
    now
}

/// Says on stderr when generation stopped because the context is full.
pub fn report_end(reason: Option<FinishReason>) {
    if reason == Some(FinishReason::ContextFull) {
        eprintln!(
            "[context full: generation stopped (raise --ctx-size, or drop --no-context-shift)]"
        );
    }
}

/// The end-of-run report on stderr, in the spirit of llama.cpp's timings.
pub fn print_stats(session: &Session, load_time: Duration, s: &GenerationStats) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!();
    eprintln!("load time:   {:10.2} ms", ms(load_time));
    eprintln!(
        "prompt:      {:10.2} ms / {:5} tokens ({:8.2} tok/s)",
        ms(s.prefill_time),
        s.prompt_tokens - s.reused_tokens,
        s.prefill_tokens_per_second()
    );
    eprintln!(
        "generation:  {:10.2} ms / {:5} tokens ({:8.2} tok/s, {} sampled)",
        ms(s.decode_time),
        s.decode_steps,
        s.decode_tokens_per_second(),
        s.generated_tokens
    );
    let cfg = session.model().config();
    eprintln!(
        "kv cache:    {:>13} ({} positions held, K {} V {})",
        mib(session.kv_cache_bytes() as u64),
        session.position(),
        cfg.cache_type_k.name(),
        cfg.cache_type_v.name()
    );
    match peak_rss_bytes() {
        Some(b) => eprintln!("peak memory: {:>13} (VmHWM)", mib(b)),
        None => eprintln!("peak memory: unknown (no /proc/self/status)"),
    }
}
