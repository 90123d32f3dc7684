//! `mistral-run run`: one prompt, the completion streamed to stdout, statistics to stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use mistral_transformer::{GenerationStats, Message, Model};

use crate::model_args::{mib, peak_rss_bytes, ModelArgs, SamplingArgs};

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
}

pub fn run(args: Args) -> Result<()> {
    let params = args.sampling.params(args.n_predict)?;
    let (mut model, load_time) = args.model.load()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut generation = if args.chat || args.system.is_some() {
        let mut messages = Vec::new();
        if let Some(s) = args.system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(args.prompt));
        model.chat(&messages, &params)?
    } else {
        model.generate(&args.prompt, &params)?
    };
    for token in generation.by_ref() {
        let token = token?;
        out.write_all(token.text.as_bytes())?;
        out.flush()?;
    }
    writeln!(out)?;
    out.flush()?;
    let stats = generation.stats();
    drop(generation);
    print_stats(&model, load_time, &stats);
    Ok(())
}

/// The end-of-run report on stderr, in the spirit of llama.cpp's timings.
pub fn print_stats(model: &Model, load_time: Duration, s: &GenerationStats) {
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
    eprintln!("kv cache:    {:>13}", mib(model.kv_cache_bytes() as u64));
    match peak_rss_bytes() {
        Some(b) => eprintln!("peak memory: {:>13} (VmHWM)", mib(b)),
        None => eprintln!("peak memory: unknown (no /proc/self/status)"),
    }
}
