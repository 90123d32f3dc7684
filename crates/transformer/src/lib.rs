//! placeholder until this crate lands

// Generation side: sampling, generation loop, public Model API.
pub mod sampling;
pub use sampling::{Sampler, SamplingError, SamplingParams};
