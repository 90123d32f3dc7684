//! A batch of prompts through the continuous-batching scheduler: the
//! requests decode together, one forward pass per step for all of them, and
//! each streams its own tokens.
//!
//! ```text
//! cargo run --release -p mistral-transformer --example batch -- MODEL.gguf
//! ```

use mistral_transformer::{
    Event, LoadOptions, Message, Model, Request, SamplingParams, Scheduler, SchedulerOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: batch MODEL.gguf");
        std::process::exit(2);
    };
    let model = Model::load(&path, LoadOptions::default())?;
    let mut scheduler = Scheduler::new(
        model.clone(),
        SchedulerOptions {
            max_sessions: 4,
            ..SchedulerOptions::default()
        },
    )?;
    let questions = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three fruits.",
        "What is the boiling point of water?",
        "Say hello in Spanish.",
    ];
    let handles: Vec<_> = questions
        .iter()
        .map(|q| {
            let prompt = model.encode_chat(&[Message::user(*q)])?;
            Ok(scheduler.submit(Request {
                prompt,
                params: SamplingParams {
                    max_tokens: Some(48),
                    ..SamplingParams::greedy()
                },
                ..Request::default()
            }))
        })
        .collect::<Result<_, mistral_transformer::ModelError>>()?;
    let mut steps = 0;
    while !scheduler.is_idle() {
        scheduler.step()?;
        steps += 1;
    }
    for (q, h) in questions.iter().zip(handles) {
        let mut answer = String::new();
        for event in h.try_iter() {
            match event {
                Event::Token(t) => answer.push_str(&t.text),
                Event::Done { reason, stats } => answer.push_str(&format!(
                    "  [{reason:?}, {} tokens]",
                    stats.generated_tokens
                )),
                Event::Error(e) => answer.push_str(&format!("  [error: {e}]")),
                Event::ContextShift(_) => {}
            }
        }
        println!("{q}\n  -> {}", answer.trim());
    }
    eprintln!("{} requests in {steps} batched steps", questions.len());
    Ok(())
}
