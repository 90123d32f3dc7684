//! `mistral-run chat`: an interactive multi-turn conversation on the terminal.
//!
//! Each user line is added to the history, the whole conversation goes through
//! the model's chat template, and the answer streams back (the KV cache of the
//! previous turns is reused as far as the new prompt shares their tokens).
//! Ctrl-C stops the current answer and keeps the session; at the prompt it
//! (or Ctrl-D) exits.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use mistral_transformer::Message;

use crate::model_args::{ConstraintArgs, ModelArgs, SamplingArgs};

/// Chat with a model interactively (Ctrl-C stops an answer, Ctrl-D exits).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message that starts the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Most tokens per answer (default: until the model ends its answer or the context is full).
    #[arg(short = 'n', long = "n-predict", value_name = "N")]
    pub n_predict: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
}

/// Set while an answer is being generated.
static GENERATING: AtomicBool = AtomicBool::new(false);
/// Set by Ctrl-C during an answer; checked between tokens.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: Args) -> Result<()> {
    let params = args.sampling.params(args.n_predict)?;
    let (model, _) = args.model.load()?;
    // Checked once before the first turn; each answer gets a fresh matcher.
    args.constraint.options(&model)?;
    let mut session = model.new_session();
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C handler")?;

    let mut history = Vec::new();
    if let Some(s) = args.system {
        history.push(Message::system(s));
    }
    eprintln!("Chatting with the model; Ctrl-C stops an answer, Ctrl-D exits.");
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if input
            .read_line(&mut line)
            .context("cannot read from stdin")?
            == 0
        {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        history.push(Message::user(line));
        fit_context(&model, &mut history)?;

        INTERRUPTED.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let options = args.constraint.options(&model)?;
        let answer = answer(&mut session, &history, &params, options, &mut stdout.lock());
        GENERATING.store(false, Ordering::SeqCst);
        match answer {
            Ok(text) => history.push(Message::assistant(text)),
            Err(e) => {
                // Keep the session: the turn is dropped and the user can go on.
                history.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
}

/// Drops the oldest exchanges (keeping a system message and the new question)
/// until the conversation leaves room in the context for an answer.
fn fit_context(model: &mistral_transformer::Model, history: &mut Vec<Message>) -> Result<()> {
    let Some(max) = model.config().cache.max_prompt() else {
        return Ok(());
    };
    let first = usize::from(history.first().is_some_and(|m| m.role == "system"));
    // Leave at least a quarter of the context for the answer.
    while model.encode_chat(history)?.len() > max - max / 4 && history.len() > first + 1 {
        // A user message and its answer go together, so roles keep alternating.
        history.remove(first);
        if history.len() > first + 1 && history[first].role == "assistant" {
            history.remove(first);
        }
        eprintln!("[context full: dropped the oldest exchange]");
    }
    Ok(())
}

/// Streams one answer; returns the text shown (partial when interrupted).
fn answer(
    session: &mut mistral_transformer::Session,
    history: &[Message],
    params: &mistral_transformer::SamplingParams,
    options: mistral_transformer::GenerateOptions,
    out: &mut impl Write,
) -> Result<String> {
    // The context of the previous turns is reused as far as it agrees with
    // the new prompt (after Ctrl-C it ends with a token never shown).
    let ids = session.model().encode_chat(history)?;
    let mut generation = session.generate_with(&ids, params, options)?;
    let mut stopped = false;
    let mut shown = String::new();
    let mut shifts = 0;
    while let Some(token) = generation.next() {
        let token = token?;
        shifts = crate::run::report_shifts(shifts, generation.stats().context_shifts);
        // Checked before printing: nothing appears after Ctrl-C.
        if INTERRUPTED.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        out.write_all(token.text.as_bytes())?;
        out.flush()?;
        shown.push_str(&token.text);
    }
    writeln!(out)?;
    out.flush()?;
    if stopped {
        eprintln!("[stopped]");
    } else {
        crate::run::report_end(generation.finish_reason());
    }
    let s = generation.stats();
    eprintln!(
        "[{} tokens, {:.1} tok/s; prompt {} new tokens, {:.1} tok/s]",
        s.generated_tokens,
        s.decode_tokens_per_second(),
        s.prompt_tokens - s.reused_tokens,
        s.prefill_tokens_per_second()
    );
    // The history keeps what the user saw (a partial answer after Ctrl-C).
    Ok(shown.trim().to_string())
}
