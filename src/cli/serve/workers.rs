//! The sequences the server decodes: `--parallel` workers, each a thread with its own session
//! (KV cache), fed from one bounded queue. A request goes to the idle worker whose session shares
//! the longest start with its prompt, so a conversation that comes back finds its prefix cached.
//!
//! Workers are threads, not async tasks: a generation step blocks on the GPU. They talk to the
//! request handlers through unbounded channels, so a slow client never stalls a worker; a client
//! that goes away closes its channel, and the worker cancels that generation at the next token.

use super::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use wgmoe::{CancelToken, Error, Event, GenerateOptions, Model, Prompt, SessionOptions, Stats, StopReason};

/// One generation to run.
pub struct Job {
    pub prompt: Vec<u32>,
    /// Its `cancel` is set by the worker when the client is gone.
    pub options: GenerateOptions,
    pub events: UnboundedSender<Out>,
    pub queued: Instant,
}

/// What a worker reports about a job, in order: `Started`, any number of `Text`, then `Done` or
/// `Failed`.
#[derive(Debug)]
pub enum Out {
    /// The job left the queue; `cached` prompt tokens were already in the worker's cache.
    Started { cached: usize },
    /// New text of the reply.
    Text(String),
    Done { reason: StopReason, stats: Stats },
    Failed(Error),
}

struct Slot {
    /// The tokens the worker's session holds (what a new prompt can reuse).
    tokens: Vec<u32>,
    job: Option<Job>,
    busy: bool,
}

struct State {
    queue: VecDeque<Job>,
    slots: Vec<Slot>,
    stopping: bool,
}

/// The queue and the workers that drain it.
pub struct Pool {
    shared: Arc<(Mutex<State>, Condvar)>,
    queue_cap: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The job came back: the queue is full.
pub struct QueueFull;

impl Pool {
    /// Start `parallel` workers, each with a session of `context` tokens, and a queue of at most
    /// `queue_cap` waiting jobs.
    pub fn start(model: &Model, parallel: usize, queue_cap: usize, context: usize, metrics: Arc<Metrics>) -> wgmoe::Result<Pool> {
        let shared = Arc::new((
            Mutex::new(State {
                queue: VecDeque::new(),
                slots: (0..parallel).map(|_| Slot { tokens: Vec::new(), job: None, busy: false }).collect(),
                stopping: false,
            }),
            Condvar::new(),
        ));
        let mut threads = Vec::new();
        for i in 0..parallel {
            // Sessions are made here so that a context too big for the GPU fails the start.
            let session = model.session(&SessionOptions {
                context: Some(context),
                kv_cache: None,
            })?;
            let (shared, metrics) = (shared.clone(), metrics.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wgmoe-worker-{i}"))
                    .spawn(move || work(i, session, &shared, &metrics))
                    .map_err(|e| Error::Device(format!("cannot start a worker thread: {e}")))?,
            );
        }
        Ok(Pool {
            shared,
            queue_cap,
            threads,
        })
    }

    /// Queue a job, or give it back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), (Job, QueueFull)> {
        let (lock, cv) = &*self.shared;
        let mut st = lock_state(lock);
        st.queue.push_back(job);
        assign(&mut st);
        if st.queue.len() > self.queue_cap {
            let job = st.queue.pop_back().expect("just pushed");
            return Err((job, QueueFull));
        }
        cv.notify_all();
        Ok(())
    }

    /// (jobs waiting, jobs running).
    pub fn load(&self) -> (usize, usize) {
        let st = lock_state(&self.shared.0);
        (st.queue.len(), st.slots.iter().filter(|s| s.busy).count())
    }

    /// Cancel what runs, drop what waits, and join the workers.
    pub fn stop(mut self) {
        {
            let mut st = lock_state(&self.shared.0);
            st.stopping = true;
            for job in st.queue.drain(..) {
                let _ = job.events.send(Out::Failed(Error::Cancelled));
            }
            for s in &st.slots {
                if let Some(c) = s.job.as_ref().and_then(|j| j.options.cancel.as_ref()) {
                    c.cancel();
                }
            }
            self.shared.1.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A poisoned lock only means a worker panicked mid-update of plain data; go on with it.
fn lock_state(lock: &Mutex<State>) -> MutexGuard<'_, State> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hand queued jobs, oldest first, to idle workers: each to the one whose tokens share the
/// longest start with its prompt.
fn assign(st: &mut State) {
    while let Some(job) = st.queue.front() {
        let best = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy && s.job.is_none())
            .max_by_key(|(i, s)| (common_prefix(&s.tokens, &job.prompt), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let job = st.queue.pop_front().expect("front exists");
        st.slots[i].job = Some(job);
        st.slots[i].busy = true;
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn work(me: usize, mut session: wgmoe::Session, shared: &(Mutex<State>, Condvar), metrics: &Metrics) {
    let (lock, cv) = shared;
    loop {
        let job = {
            let mut st = lock_state(lock);
            loop {
                if let Some(job) = st.slots[me].job.take() {
                    break job;
                }
                if st.stopping {
                    return;
                }
                st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        run(&mut session, job, metrics);
        let mut st = lock_state(lock);
        st.slots[me].tokens = session.tokens().to_vec();
        st.slots[me].busy = false;
        assign(&mut st);
        cv.notify_all();
    }
}

/// Run one job on the session, reusing the longest cached start of its prompt (the last prompt
/// token always runs: its logits give the first new token).
fn run(session: &mut wgmoe::Session, job: Job, metrics: &Metrics) {
    let Job {
        prompt,
        mut options,
        events,
        queued,
    } = job;
    metrics.queue_wait.observe(queued.elapsed().as_secs_f64());
    let cancel = options.cancel.get_or_insert_with(CancelToken::new).clone();
    let cached = session.keep_prefix(&prompt[..prompt.len().saturating_sub(1)]);
    if events.send(Out::Started { cached }).is_err() {
        return;
    }
    metrics.add_prompt(prompt.len(), cached);
    let mut first = true;
    let generation = match session.generate(Prompt::Tokens(prompt[cached..].to_vec()), &options) {
        Ok(g) => g,
        Err(e) => {
            let _ = events.send(Out::Failed(e));
            return;
        }
    };
    for event in generation {
        let out = match event {
            Ok(Event::Token { text, .. }) => {
                if first {
                    first = false;
                    metrics.ttft.observe(queued.elapsed().as_secs_f64());
                }
                metrics.add_completion(1);
                Out::Text(text)
            }
            Ok(Event::Text(text)) => Out::Text(text),
            Ok(Event::Done { stop_reason, stats }) => {
                metrics.add_decode(&stats);
                Out::Done {
                    reason: stop_reason,
                    stats,
                }
            }
            Err(e) => Out::Failed(e),
        };
        let end = matches!(out, Out::Failed(_));
        if events.send(out).is_err() {
            // The client is gone: stop at the next step; the iterator then ends with Cancelled.
            cancel.cancel();
        }
        if end {
            break;
        }
    }
}
