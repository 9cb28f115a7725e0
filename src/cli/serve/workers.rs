//! The engine: one thread owns a [`wgmoe::Batch`] of `--parallel` sequences and steps it while
//! there is work (continuous batching: every running request moves one token per step, new ones
//! join at step boundaries). Request handlers hand it jobs through a channel and get their events
//! back through one channel per job; a handler that goes away (its client disconnected) closes
//! its channel, and the engine cancels that generation at the next step.

use super::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use wgmoe::{Batch, BatchOptions, Error, Event, GenerateOptions, Model, SeqId, Stats, StopReason};

/// One generation to run.
pub struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub events: UnboundedSender<Out>,
    pub queued: Instant,
}

/// What the engine reports about a job, in order: `Accepted` (the batch took it: its options and
/// prompt are good) or `Failed`, then any number of `Text`, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Out {
    Accepted,
    /// New text of the reply.
    Text(String),
    Done {
        reason: StopReason,
        stats: Stats,
    },
    Failed(Error),
}

/// Why a job was not queued.
pub enum Refused {
    /// `--parallel` jobs run and `--queue` more wait.
    QueueFull,
    /// The engine stopped (it failed); nothing more will run.
    EngineDown,
}

/// What handlers see of the engine.
pub struct Pool {
    jobs: Sender<Job>,
    /// Jobs admitted and not yet finished (the queue's limit counts these), and the batch's
    /// running count as of its last step.
    outstanding: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    parallel: usize,
    queue_cap: usize,
    stop: Arc<AtomicBool>,
    /// Set when the engine thread ended by a failure.
    dead: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Start the engine with a batch of `parallel` sequences of `context` tokens and a queue of
    /// at most `queue_cap` waiting jobs.
    pub fn start(
        model: &Model,
        parallel: usize,
        queue_cap: usize,
        context: usize,
        metrics: Arc<Metrics>,
    ) -> wgmoe::Result<Pool> {
        // Made here so that a batch too big for the GPU fails the start.
        let batch = model.batch(&BatchOptions {
            sequences: parallel,
            context: Some(context),
            kv_cache: None,
        })?;
        let (jobs, rx) = channel();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(AtomicBool::new(false));
        let engine = Engine {
            batch,
            rx,
            jobs: HashMap::new(),
            outstanding: outstanding.clone(),
            running: running.clone(),
            stop: stop.clone(),
            metrics,
        };
        let died = dead.clone();
        let thread = std::thread::Builder::new()
            .name("wgmoe-engine".into())
            .spawn(move || {
                if !engine.run() {
                    died.store(true, SeqCst);
                }
            })
            .map_err(|e| Error::Device(format!("cannot start the engine thread: {e}")))?;
        Ok(Pool {
            jobs,
            outstanding,
            running,
            parallel,
            queue_cap,
            stop,
            dead,
            thread: Some(thread),
        })
    }

    /// Queue a job, or refuse it when `--parallel` jobs run and `--queue` more wait.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        if self.is_dead() {
            return Err(Refused::EngineDown);
        }
        let cap = self.parallel + self.queue_cap;
        // One atomic step: concurrent handlers cannot both take the last place.
        self.outstanding
            .fetch_update(SeqCst, SeqCst, |n| (n < cap).then_some(n + 1))
            .map_err(|_| Refused::QueueFull)?;
        if self.jobs.send(job).is_err() {
            self.outstanding.fetch_sub(1, SeqCst);
            return Err(Refused::EngineDown);
        }
        Ok(())
    }

    /// (jobs waiting, jobs running).
    pub fn load(&self) -> (usize, usize) {
        let running = self.running.load(SeqCst);
        (self.outstanding.load(SeqCst).saturating_sub(running), running)
    }

    /// Whether the engine failed and stopped.
    pub fn is_dead(&self) -> bool {
        self.dead.load(SeqCst)
    }

    /// End the engine: running and waiting jobs fail with `Cancelled`.
    pub fn stop(mut self) {
        self.stop.store(true, SeqCst);
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.jobs, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Engine {
    batch: Batch,
    rx: Receiver<Job>,
    jobs: HashMap<SeqId, Running>,
    outstanding: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

struct Running {
    events: UnboundedSender<Out>,
    queued: Instant,
    prompt: usize,
    first: bool,
}

impl Engine {
    /// Step the batch while there is work, until stopped (true) or failed (false). A panic in
    /// the batch (a bug) fails every job and stops the engine instead of taking the server down
    /// with a silent queue.
    fn run(mut self) -> bool {
        let ok = loop {
            if self.stop.load(SeqCst) {
                break true;
            }
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.round()));
            match round {
                Ok(true) => {}
                Ok(false) => break true,
                Err(_) => break false,
            }
        };
        for (_, job) in self.jobs.drain() {
            let e = if ok {
                Error::Cancelled
            } else {
                Error::Device("the engine failed (a bug: see the server's log)".into())
            };
            let _ = job.events.send(Out::Failed(e));
        }
        ok
    }

    /// Take new jobs (waiting for one when idle) and run one step; false when every sender is
    /// gone.
    fn round(&mut self) -> bool {
        if self.batch.is_idle() {
            match self.rx.recv() {
                Ok(job) => self.take(job),
                Err(_) => return false,
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.take(job);
        }
        for (id, event) in self.batch.step() {
            self.route(id, event);
        }
        self.running.store(self.batch.running(), SeqCst);
        true
    }

    fn take(&mut self, job: Job) {
        match self.batch.add(job.prompt.clone(), &job.options) {
            Ok(id) => {
                let _ = job.events.send(Out::Accepted);
                self.jobs.insert(
                    id,
                    Running {
                        events: job.events,
                        queued: job.queued,
                        prompt: job.prompt.len(),
                        first: true,
                    },
                );
            }
            Err(e) => {
                self.outstanding.fetch_sub(1, SeqCst);
                let _ = job.events.send(Out::Failed(e));
            }
        }
    }

    /// Hand one event to its job; a job whose client is gone is cancelled.
    fn route(&mut self, id: SeqId, event: wgmoe::Result<Event>) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let (out, last) = match event {
            Ok(Event::Token { text, .. }) => {
                if job.first {
                    job.first = false;
                    self.metrics.ttft.observe(job.queued.elapsed().as_secs_f64());
                }
                self.metrics.add_completion(1);
                (Out::Text(text), false)
            }
            Ok(Event::Text(text)) => (Out::Text(text), false),
            Ok(Event::Done { stop_reason, stats }) => {
                self.metrics
                    .add_prompt(job.prompt, job.prompt - stats.prompt_tokens.min(job.prompt));
                self.metrics.add_decode(&stats);
                (
                    Out::Done {
                        reason: stop_reason,
                        stats,
                    },
                    true,
                )
            }
            Err(e) => (Out::Failed(e), true),
        };
        let gone = job.events.send(out).is_err();
        if last {
            self.jobs.remove(&id);
            self.outstanding.fetch_sub(1, SeqCst);
        } else if gone {
            self.batch.cancel(id);
        }
    }
}
