//! One model shared by several threads, each with a session of its own: the
//! weights are loaded once (`Model` is an `Arc` inside, `Send + Sync`), every
//! thread holds only its KV cache.
//!
//! ```text
//! cargo run --release -p mistral-transformer --example shared_threads -- MODEL.gguf
//! ```

use mistral_transformer::{LoadOptions, Message, Model, SamplingParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: shared_threads MODEL.gguf");
        std::process::exit(2);
    };
    let model = Model::load(&path, LoadOptions::default())?;
    let questions = [
        "What is the capital of France?",
        "Name a primary colour.",
        "What is 2 + 2?",
    ];
    let params = SamplingParams {
        max_tokens: Some(32),
        ..SamplingParams::greedy()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let model = model.clone();
                let params = params.clone();
                s.spawn(move || -> Result<String, mistral_transformer::ModelError> {
                    let mut session = model.new_session();
                    session.chat(&[Message::user(*q)], &params)?.collect_text()
                })
            })
            .collect();
        for (q, h) in questions.iter().zip(handles) {
            match h.join() {
                Ok(Ok(answer)) => println!("{q}\n  -> {}", answer.trim()),
                Ok(Err(e)) => eprintln!("{q}: error: {e}"),
                Err(_) => eprintln!("{q}: the thread panicked"),
            }
        }
    });
    Ok(())
}
