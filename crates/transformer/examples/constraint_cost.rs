//! What a structured-output constraint costs per generated token, against
//! the forward pass: generates with a JSON Schema constraint (temperature
//! 0.8, fixed seeds) and times the constraint's logits processor apart from
//! the whole decode step; then the same prompts unconstrained.
//!
//! `cargo run --release -p mistral-transformer --example constraint_cost -- MODEL.gguf [RUNS]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistral_transformer::{
    Constraint, GenerateOptions, LoadOptions, LogitsProcessor, Message, Model, SamplingParams,
};

/// Times the processor it wraps.
struct Timed<P> {
    inner: P,
    spent: Arc<Mutex<(Duration, usize)>>,
}

impl<P: LogitsProcessor> LogitsProcessor for Timed<P> {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        let t = Instant::now();
        self.inner.process(generated, logits);
        let mut s = self.spent.lock().unwrap();
        s.0 += t.elapsed();
        s.1 += 1;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: constraint_cost MODEL.gguf [RUNS]");
    let runs: u64 = args.next().map_or(5, |r| r.parse().unwrap());
    let model = Model::load(&path, LoadOptions::default()).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 4},
            "address": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 16},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
            }, "required": ["city", "zip"], "additionalProperties": false}
        },
        "required": ["name", "age", "email", "tags", "address"],
        "additionalProperties": false
    });
    let c = Constraint::JsonSchema(schema);
    let t = Instant::now();
    model.constraint(&c).unwrap();
    println!(
        "first constraint (token trie + grammar): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    model.constraint(&c).unwrap();
    println!(
        "next constraint (grammar only): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let ids = model
        .encode_chat(&[Message::user("Describe a person as JSON.")])
        .unwrap();
    let params = |seed| SamplingParams {
        temperature: 0.8,
        seed: Some(seed),
        max_tokens: Some(96),
        ..SamplingParams::default()
    };
    for constrained in [true, false] {
        let spent = Arc::new(Mutex::new((Duration::ZERO, 0usize)));
        let (mut decode, mut steps) = (Duration::ZERO, 0usize);
        for seed in 0..runs {
            let mut opts = GenerateOptions::default();
            if constrained {
                opts.processor = Some(Box::new(Timed {
                    inner: model.constraint(&c).unwrap(),
                    spent: spent.clone(),
                }));
            }
            let mut s = model.new_session();
            let mut g = s.generate_with(&ids, &params(seed), opts).unwrap();
            for t in g.by_ref() {
                t.unwrap();
            }
            let st = g.stats();
            decode += st.decode_time + st.sample_time;
            steps += st.generated_tokens;
        }
        let per_token = decode.as_secs_f64() * 1e3 / steps.max(1) as f64;
        if constrained {
            let (mask, n) = *spent.lock().unwrap();
            let mask_ms = mask.as_secs_f64() * 1e3 / n.max(1) as f64;
            println!(
                "constrained:   {steps} tokens, {per_token:.3} ms/token (decode + sampling), mask {mask_ms:.3} ms/token = {:.1}% of it",
                100.0 * mask_ms / per_token
            );
        } else {
            println!("unconstrained: {steps} tokens, {per_token:.3} ms/token (decode + sampling)");
        }
    }
}
