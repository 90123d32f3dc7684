//! Continuous batching: many requests over one [`Model`], their tokens run
//! together in batched steps.
//!
//! A [`Request`] goes in ([`Scheduler::submit`]) and a stream of [`Event`]s
//! comes out (a [`RequestHandle`], or a callback of the caller's). Each
//! [`Scheduler::step`] admits waiting requests while the session limit and the
//! KV-cache budget allow, then runs one forward pass over one token of every
//! decoding request plus chunks of the prompts being prefilled, up to the
//! step's token budget (decoding first, so a long prompt never stalls the
//! others: vLLM's chunked prefill), samples, and streams what each request
//! produced. Requests join and leave between steps; a cancelled request
//! (its [`CancelToken`], a dropped handle, or a callback returning `false`)
//! stops at the next step, also in the middle of its prompt.
//!
//! Finished requests leave their session idle, with its context: a new
//! request whose prompt extends an idle session's context (the next turn of a
//! chat) reuses it and runs only the new tokens.
//!
//! [`Engine`] runs a scheduler on a thread of its own, for servers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::Model;
use crate::config::MAX_UBATCH;
use crate::error::ModelError;
use crate::generate::{
    CancelToken, Decoding, FinishReason, GenerateOptions, GeneratedToken, GenerationStats,
};
use crate::kv_cache::ContextShift;
use crate::model::SeqStep;
use crate::sampling::SamplingParams;
use crate::session::Session;

/// A generation request: prompt ids, sampling parameters and options.
#[derive(Debug, Default)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub options: GenerateOptions,
}

/// What a request's stream carries, in order; [`Event::Done`] or
/// [`Event::Error`] comes last.
#[derive(Debug)]
pub enum Event {
    /// A sampled token and the text it completes.
    Token(GeneratedToken),
    /// The session's context was full: the older half was dropped.
    ContextShift(ContextShift),
    /// The request ended.
    Done {
        reason: FinishReason,
        stats: GenerationStats,
    },
    /// The request failed.
    Error(ModelError),
}

/// The receiving end of one request: its events, and a way to cancel it.
/// Dropping the handle cancels the request.
#[derive(Debug)]
pub struct RequestHandle {
    pub id: u64,
    events: mpsc::Receiver<Event>,
    cancel: CancelToken,
}

impl RequestHandle {
    /// Stops the request at the next step.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this request.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// The next event, waiting for it (`None` once the stream has ended).
    pub fn recv(&self) -> Option<Event> {
        self.events.recv().ok()
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The events that are ready, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.try_iter()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }
}

impl Iterator for RequestHandle {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Limits of a scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Requests running at once (llama-server's `--parallel`).
    pub max_sessions: usize,
    /// Tokens of one step, all requests together (decoding ones first, then
    /// prompt chunks).
    pub max_batch_tokens: usize,
    /// KV-cache bytes the running (and idle) sessions may hold; a request is
    /// admitted when what its prompt and `max_tokens` can take fits. `None`:
    /// `max_sessions` full contexts.
    pub kv_budget_bytes: Option<usize>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_sessions: 4,
            max_batch_tokens: MAX_UBATCH,
            kv_budget_bytes: None,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepReport {
    /// Prompt tokens run.
    pub prefill_tokens: usize,
    /// Requests that decoded a token.
    pub decode_tokens: usize,
    /// Tokens sampled (a request's first token comes after its prompt).
    pub sampled_tokens: usize,
    /// Requests running after the step.
    pub running: usize,
    /// Requests waiting after the step.
    pub waiting: usize,
    /// Time of the forward pass and sampling.
    pub elapsed: Duration,
}

type Sink = Box<dyn FnMut(Event) -> bool + Send>;

struct Pending {
    request: Request,
    sink: Sink,
    cancel: CancelToken,
}

struct Active {
    session: Session,
    decoding: Decoding,
    sink: Sink,
    cancel: CancelToken,
    prompt: Vec<u32>,
    /// Prompt tokens in the context so far.
    fed: usize,
    to_feed: Option<u32>,
    reserved: usize,
    started: Instant,
    first_token: Option<Instant>,
    shifts: usize,
}

/// Continuous batching over one model (see the module docs). Single-threaded:
/// call [`Scheduler::step`] in a loop, or use [`Engine`].
pub struct Scheduler {
    model: Model,
    opts: SchedulerOptions,
    budget: usize,
    next_id: u64,
    waiting: VecDeque<Pending>,
    running: Vec<Active>,
    /// Sessions of finished requests, most recently used last.
    idle: Vec<Session>,
    /// Shared with an [`Engine`]: requests submitted but not yet admitted.
    queued: Option<Arc<AtomicUsize>>,
}

impl Scheduler {
    pub fn new(model: Model, opts: SchedulerOptions) -> Result<Scheduler, ModelError> {
        // Every decoding session takes a token each step: they must all fit.
        if opts.max_sessions == 0 || opts.max_batch_tokens < opts.max_sessions {
            return Err(ModelError::InvalidOption {
                name: "parallel",
                value: format!(
                    "{} sessions, {} tokens a step",
                    opts.max_sessions, opts.max_batch_tokens
                ),
                expected: "at least one session, and at least as many tokens a step as sessions",
            });
        }
        let full = model.kv_cache_bytes_for(model.config().cache.capacity());
        let budget = opts
            .kv_budget_bytes
            .unwrap_or_else(|| full.saturating_mul(opts.max_sessions));
        Ok(Scheduler {
            model,
            opts,
            budget,
            next_id: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            idle: Vec::new(),
            queued: None,
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Queues a request; its events arrive on the returned handle.
    pub fn submit(&mut self, request: Request) -> RequestHandle {
        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let id = self.submit_with(request, cancel.clone(), move |e| tx.send(e).is_ok());
        RequestHandle {
            id,
            events: rx,
            cancel,
        }
    }

    /// Queues a request whose events go to `sink` (which returns `false`
    /// when nobody listens any more: the request is then cancelled). Returns
    /// the request's id.
    pub fn submit_with(
        &mut self,
        request: Request,
        cancel: CancelToken,
        sink: impl FnMut(Event) -> bool + Send + 'static,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Pending {
            request,
            sink: Box::new(sink),
            cancel,
        });
        id
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Requests running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Requests waiting to be admitted.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Idle sessions (finished requests' contexts, kept for reuse).
    pub fn idle_sessions(&self) -> usize {
        self.idle.len()
    }

    /// KV-cache bytes held by running sessions.
    pub fn kv_cache_active_bytes(&self) -> usize {
        self.running
            .iter()
            .map(|a| a.session.kv_cache_bytes())
            .sum()
    }

    /// KV-cache bytes held by running and idle sessions.
    pub fn kv_cache_bytes(&self) -> usize {
        self.running
            .iter()
            .map(|a| a.session.kv_cache_bytes())
            .chain(self.idle.iter().map(Session::kv_cache_bytes))
            .sum()
    }

    /// Runs steps until every request has ended.
    pub fn run_until_idle(&mut self) -> Result<(), ModelError> {
        while !self.is_idle() {
            self.step()?;
        }
        Ok(())
    }

    /// Admits what fits, runs one batched forward pass, samples and streams.
    /// An error of the forward pass ends the requests of that step (each gets
    /// [`Event::Error`]) and is returned; the scheduler stays usable.
    pub fn step(&mut self) -> Result<StepReport, ModelError> {
        let start = Instant::now();
        self.drop_cancelled();
        self.admit();

        // Decoding requests first, one token each (they all fit: at most
        // max_sessions run, and max_batch_tokens >= max_sessions); then
        // prompt chunks, oldest request first.
        let mut budget = self.opts.max_batch_tokens;
        let mut plan: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (index, tokens, wants logits)
        for (i, a) in self.running.iter().enumerate() {
            if let Some(id) = a.to_feed {
                plan.push((i, vec![id], true));
                budget -= 1;
            }
        }
        let decode_tokens = plan.len();
        let mut prefill_tokens = 0;
        for (i, a) in self.running.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if a.to_feed.is_none() && a.fed < a.prompt.len() {
                let n = (a.prompt.len() - a.fed).min(budget).min(MAX_UBATCH);
                let last = a.fed + n == a.prompt.len();
                plan.push((i, a.prompt[a.fed..a.fed + n].to_vec(), last));
                budget -= n;
                prefill_tokens += n;
            }
        }
        if plan.is_empty() {
            return Ok(self.report(0, 0, 0, start));
        }
        plan.sort_by_key(|p| p.0);

        let mut refs: Vec<&mut Active> = Vec::with_capacity(plan.len());
        {
            let mut it = self.running.iter_mut().enumerate();
            for (i, _, _) in &plan {
                for (j, a) in it.by_ref() {
                    if j == *i {
                        refs.push(a);
                        break;
                    }
                }
            }
        }
        let result = self.model.run(|t| {
            let mut seqs: Vec<SeqStep<'_>> = refs
                .iter_mut()
                .zip(&plan)
                .map(|(a, (_, tokens, logits))| SeqStep {
                    cache: &mut a.session.cache,
                    tokens,
                    logits: usize::from(*logits),
                    hidden: false,
                })
                .collect();
            t.step(&mut seqs)
        });
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                // Every request of the step ends with the error.
                let failed: Vec<usize> = plan.iter().map(|p| p.0).collect();
                for &i in failed.iter().rev() {
                    let mut a = self.running.remove(i);
                    (a.sink)(Event::Error(ModelError::InvalidInput(format!(
                        "step failed: {e}"
                    ))));
                    a.session.reset();
                    self.idle.push(a.session);
                }
                return Err(e);
            }
        };

        let mut done = Vec::new();
        let mut sampled = 0;
        for ((i, tokens, _), r) in plan.iter().zip(results) {
            let a = &mut self.running[*i];
            if let Some(shift) = r.shift {
                a.shifts += 1;
                a.session.note_shift(Some(shift));
                if !(a.sink)(Event::ContextShift(shift)) {
                    a.cancel.cancel();
                }
            }
            if a.to_feed.take().is_some() {
                a.decoding.stats.decode_steps += 1;
            } else {
                a.fed += tokens.len();
            }
            if r.logits.is_empty() {
                continue;
            }
            let now = Instant::now();
            if a.first_token.is_none() {
                a.first_token = Some(now);
            }
            let full = self
                .model
                .config()
                .cache
                .max_positions()
                .is_some_and(|max| a.session.position() >= max);
            match a.decoding.sample(r.logits, full) {
                Ok(tok) => {
                    sampled += 1;
                    let id = tok.id;
                    if !(a.sink)(Event::Token(tok)) {
                        a.cancel.cancel();
                    }
                    if a.decoding.finish.is_some() {
                        done.push((*i, None));
                    } else {
                        a.to_feed = Some(id);
                    }
                }
                Err(e) => done.push((*i, Some(e))),
            }
        }
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, err) in done {
            let a = self.running.remove(i);
            self.finish(a, err);
        }
        Ok(self.report(prefill_tokens, decode_tokens, sampled, start))
    }

    fn report(
        &self,
        prefill_tokens: usize,
        decode_tokens: usize,
        sampled_tokens: usize,
        start: Instant,
    ) -> StepReport {
        StepReport {
            prefill_tokens,
            decode_tokens,
            sampled_tokens,
            running: self.running.len(),
            waiting: self.waiting.len(),
            elapsed: start.elapsed(),
        }
    }

    /// Sends the last event of a request and parks its session.
    fn finish(&mut self, mut a: Active, err: Option<ModelError>) {
        match err {
            Some(e) => {
                (a.sink)(Event::Error(e));
                a.session.reset();
            }
            None => {
                let mut stats = a.decoding.stats;
                let first = a.first_token.unwrap_or_else(Instant::now);
                stats.prefill_time = first - a.started;
                stats.decode_time = first.elapsed();
                stats.context_shifts = a.shifts;
                let reason = a.decoding.finish.unwrap_or(FinishReason::Cancelled);
                (a.sink)(Event::Done { reason, stats });
            }
        }
        // A sampled token that was never fed is not in the context: the
        // context stays a prefix of what the conversation will send next.
        self.idle.push(a.session);
        self.trim_idle();
    }

    /// Keeps at most `max_sessions` sessions in all.
    fn trim_idle(&mut self) {
        let excess = (self.idle.len() + self.running.len()).saturating_sub(self.opts.max_sessions);
        self.idle.drain(..excess.min(self.idle.len()));
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].cancel.is_cancelled() {
                if let Some(mut p) = self.waiting.remove(i) {
                    self.dequeued();
                    (p.sink)(Event::Done {
                        reason: FinishReason::Cancelled,
                        stats: GenerationStats {
                            prompt_tokens: p.request.prompt.len(),
                            ..Default::default()
                        },
                    });
                }
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            let a = &self.running[i];
            if a.cancel.is_cancelled() || a.decoding.cancelled() {
                let mut a = self.running.remove(i);
                // Text held back (a partial stop string or character) is dropped.
                a.decoding.cancel();
                // The context may end with a prompt chunk: start afresh.
                if a.fed < a.prompt.len() {
                    a.session.reset();
                }
                self.finish(a, None);
            } else {
                i += 1;
            }
        }
    }

    fn dequeued(&self) {
        if let Some(q) = &self.queued {
            q.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Bytes a request may come to hold.
    fn reservation(&self, r: &Request) -> usize {
        let cap = self.model.config().cache.capacity();
        let want = r
            .params
            .max_tokens
            .map_or(cap, |m| r.prompt.len().saturating_add(m));
        self.model.kv_cache_bytes_for(want.min(cap))
    }

    /// Admits waiting requests, oldest first, while they fit.
    fn admit(&mut self) {
        while let Some(p) = self.waiting.front() {
            if self.running.len() >= self.opts.max_sessions {
                return;
            }
            let need = self.reservation(&p.request);
            if need > self.budget {
                let mut p = self.waiting.pop_front().expect("front exists");
                self.dequeued();
                (p.sink)(Event::Error(ModelError::InvalidInput(format!(
                    "the request may need {need} bytes of KV cache, more than the budget of {}",
                    self.budget
                ))));
                continue;
            }
            let reserved: usize = self.running.iter().map(|a| a.reserved).sum();
            // Idle sessions give way to a waiting request.
            while reserved + need + self.idle_bytes() > self.budget && !self.idle.is_empty() {
                self.idle.remove(0);
            }
            if reserved + need > self.budget {
                return;
            }
            let Some(mut p) = self.waiting.pop_front() else {
                return;
            };
            self.dequeued();
            let tokenizer = self.model.tokenizer().clone();
            let max_prompt = self.model.config().cache.max_prompt();
            let fresh = p.request.options.fresh_context;
            let options = std::mem::take(&mut p.request.options);
            let decoding = match Decoding::new(
                &tokenizer,
                &p.request.prompt,
                &p.request.params,
                options,
                max_prompt,
            ) {
                Ok(d) => d,
                Err(e) => {
                    (p.sink)(Event::Error(e));
                    continue;
                }
            };
            let (session, reuse) = self.session_for(&p.request.prompt, fresh);
            let mut decoding = decoding;
            decoding.stats.reused_tokens = reuse;
            let finished = decoding.finish.is_some();
            let mut a = Active {
                session,
                decoding,
                sink: p.sink,
                cancel: p.cancel,
                prompt: p.request.prompt,
                fed: reuse,
                to_feed: None,
                reserved: need,
                started: Instant::now(),
                first_token: None,
                shifts: 0,
            };
            if finished {
                // max_tokens 0: nothing to run.
                a.first_token = Some(a.started);
                self.finish(a, None);
                continue;
            }
            self.running.push(a);
        }
    }

    fn idle_bytes(&self) -> usize {
        self.idle.iter().map(Session::kv_cache_bytes).sum()
    }

    /// The idle session whose context shares the longest start with
    /// `prompt` (cut back to it; none when `fresh`), else a fresh one (or the least recently
    /// used idle one, reset); with the number of prompt tokens it holds.
    fn session_for(&mut self, prompt: &[u32], fresh: bool) -> (Session, usize) {
        let best = self
            .idle
            .iter()
            .filter(|_| !fresh)
            .enumerate()
            .map(|(i, s)| (i, crate::generate::reusable(s.tokens(), prompt)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        if let Some((i, n)) = best {
            let mut s = self.idle.remove(i);
            if s.truncate(n).is_ok() {
                return (s, n);
            }
            s.reset();
            return (s, 0);
        }
        if self.idle.len() + self.running.len() >= self.opts.max_sessions && !self.idle.is_empty() {
            let mut s = self.idle.remove(0);
            s.reset();
            return (s, 0);
        }
        (self.model.new_session(), 0)
    }
}

enum Command {
    Submit(Pending),
    Shutdown,
}

/// Counters of an [`Engine`], for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStatus {
    /// Requests running (each holds a session).
    pub running: usize,
    /// Requests submitted and not yet admitted.
    pub waiting: usize,
    /// Sessions of finished requests kept for their context (a next turn reuses them).
    pub idle_sessions: usize,
    /// KV-cache bytes of running and idle sessions.
    pub kv_cache_bytes: usize,
    /// KV-cache bytes of running sessions only.
    pub kv_cache_active_bytes: usize,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub steps: u64,
}

/// A [`Scheduler`] on a thread of its own: submit from any thread, read the
/// events from the handle. Dropping the engine cancels what is running and
/// stops the thread.
pub struct Engine {
    tx: mpsc::Sender<Command>,
    queued: Arc<AtomicUsize>,
    status: Arc<Mutex<EngineStatus>>,
    next_id: AtomicUsize,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the scheduler thread.
    pub fn start(model: Model, opts: SchedulerOptions) -> Result<Engine, ModelError> {
        let mut sched = Scheduler::new(model, opts)?;
        let queued = Arc::new(AtomicUsize::new(0));
        sched.queued = Some(queued.clone());
        let status = Arc::new(Mutex::new(EngineStatus::default()));
        let (tx, rx) = mpsc::channel::<Command>();
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("mistral-run-scheduler".into())
            .spawn(move || engine_loop(sched, rx, st))
            .map_err(ModelError::Io)?;
        Ok(Engine {
            tx,
            queued,
            status,
            next_id: AtomicUsize::new(0),
            thread: Some(thread),
        })
    }

    /// Queues a request; its events arrive on the returned handle.
    pub fn submit(&self, request: Request) -> RequestHandle {
        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let id = self.submit_with(request, cancel.clone(), move |e| tx.send(e).is_ok());
        RequestHandle {
            id,
            events: rx,
            cancel,
        }
    }

    /// Queues a request whose events go to `sink` (see [`Scheduler::submit_with`]).
    pub fn submit_with(
        &self,
        request: Request,
        cancel: CancelToken,
        sink: impl FnMut(Event) -> bool + Send + 'static,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        self.queued.fetch_add(1, Ordering::Relaxed);
        let cmd = Command::Submit(Pending {
            request,
            sink: Box::new(sink),
            cancel,
        });
        if let Err(mpsc::SendError(Command::Submit(mut p))) = self.tx.send(cmd) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            (p.sink)(Event::Error(ModelError::InvalidInput(
                "the engine has stopped".into(),
            )));
        }
        id
    }

    /// Requests submitted and not yet admitted.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counters as of the last step.
    pub fn status(&self) -> EngineStatus {
        let mut s = self.status.lock().map(|s| *s).unwrap_or_default();
        s.waiting = self.queued();
        s
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn engine_loop(
    mut sched: Scheduler,
    rx: mpsc::Receiver<Command>,
    status: Arc<Mutex<EngineStatus>>,
) {
    let mut totals = EngineStatus::default();
    loop {
        let first = if sched.is_idle() {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            }
        } else {
            None
        };
        for cmd in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match cmd {
                Command::Submit(p) => {
                    sched.waiting.push_back(p);
                }
                Command::Shutdown => {
                    for a in &sched.running {
                        a.cancel.cancel();
                    }
                    for p in &sched.waiting {
                        p.cancel.cancel();
                    }
                    sched.drop_cancelled();
                    return;
                }
            }
        }
        if let Ok(r) = sched.step() {
            totals.prompt_tokens += r.prefill_tokens as u64;
            totals.generated_tokens += r.sampled_tokens as u64;
        }
        totals.steps += 1;
        totals.running = sched.running();
        totals.kv_cache_bytes = sched.kv_cache_bytes();
        totals.kv_cache_active_bytes = sched.kv_cache_active_bytes();
        totals.idle_sessions = sched.idle_sessions();
        if let Ok(mut s) = status.lock() {
            *s = totals;
        }
    }
}
