//! Streams a chat answer from a GGUF model using the library API.
//!
//! ```text
//! cargo run --release -p mistral-transformer --example generate -- MODEL.gguf "What is the capital of France?"
//! ```

use std::io::Write;

use mistral_transformer::{LoadOptions, Message, Model, SamplingParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(question)) = (args.next(), args.next()) else {
        eprintln!("usage: generate MODEL.gguf QUESTION");
        std::process::exit(2);
    };
    let model = Model::load(&path, LoadOptions::default())?;
    let mut session = model.new_session();
    let params = SamplingParams {
        max_tokens: Some(128),
        ..SamplingParams::greedy()
    };
    let mut answer = session.chat(&[Message::user(question)], &params)?;
    let mut out = std::io::stdout();
    for token in answer.by_ref() {
        out.write_all(token?.text.as_bytes())?;
        out.flush()?;
    }
    let stats = answer.stats();
    println!();
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s",
        stats.prompt_tokens,
        stats.prefill_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second()
    );
    Ok(())
}
