//! `mistral-run`: the command-line front end. Each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod batched_bench;
mod bench;
mod chat;
mod info;
mod memory;
mod model_args;
mod perplexity;
mod plot;
mod pull;
mod quantize;
mod run;
mod serve;
mod synth;
mod tokenize;

#[derive(Parser)]
#[command(
    name = "mistral-run",
    version,
    about = "Local inference for Mistral and Mixtral GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete a prompt (or answer it with --chat) and stream the text, with timings.
    Run(run::Args),
    /// Chat with a model interactively (Ctrl-C stops an answer, Ctrl-D exits).
    Chat(chat::Args),
    /// Show a GGUF file's architecture, sizes, tokenizer and tensors, or (--plan) the memory a run needs.
    Info(info::Args),
    /// Measure prompt and generation tok/s and memory per model, like llama-bench.
    Bench(bench::Args),
    /// Aggregate tok/s of several sessions decoding together, like llama-batched-bench.
    BatchedBench(batched_bench::Args),
    /// Draw the chart (PNG) of `bench --json` reports: tok/s and memory per model.
    BenchPlot(plot::Args),
    /// Perplexity of a model over a text file, computed like llama.cpp's llama-perplexity.
    Perplexity(perplexity::Args),
    /// Download a GGUF file from a Hugging Face repository into the local cache.
    Pull(pull::Args),
    /// Requantize a GGUF file (f16, q8_0, q4_k_m, q4_k_s, q2_k, q6_k) with llama.cpp's per-tensor mix.
    Quantize(quantize::Args),
    /// Serve the model over HTTP: OpenAI- and Mistral-compatible API, metrics and a chat page.
    Serve(serve::Args),
    /// Write a random-weight Mistral / Mixtral GGUF with real tensor names, shapes and type mix.
    Synth(synth::Args),
    /// Tokenize text with a GGUF file's tokenizer and print the ids and pieces.
    Tokenize(tokenize::Args),
}

fn main() -> ExitCode {
    // Before any thread exists; the bench workers inherit it.
    model_args::limit_candle_spinning();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BatchedBench(a) => batched_bench::run(a),
        Command::BenchPlot(a) => plot::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Tokenize(a) => tokenize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
