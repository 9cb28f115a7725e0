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

/// What the engine reports about a job, in order: any number of `Text`, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Out {
    /// New text of the reply.
    Text(String),
    Done { reason: StopReason, stats: Stats },
    Failed(Error),
}

/// The queue full: the job comes back.
pub struct QueueFull;

/// What handlers see of the engine.
pub struct Pool {
    jobs: Sender<Job>,
    /// Jobs sent but not yet taken by the engine, and the batch's waiting and running counts as
    /// of its last step.
    in_channel: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    parallel: usize,
    queue_cap: usize,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Start the engine with a batch of `parallel` sequences of `context` tokens and a queue of
    /// at most `queue_cap` waiting jobs.
    pub fn start(model: &Model, parallel: usize, queue_cap: usize, context: usize, metrics: Arc<Metrics>) -> wgmoe::Result<Pool> {
        // Made here so that a batch too big for the GPU fails the start.
        let batch = model.batch(&BatchOptions {
            sequences: parallel,
            context: Some(context),
            kv_cache: None,
        })?;
        let (jobs, rx) = channel();
        let in_channel = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let engine = Engine {
            batch,
            rx,
            jobs: HashMap::new(),
            in_channel: in_channel.clone(),
            waiting: waiting.clone(),
            running: running.clone(),
            stop: stop.clone(),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("wgmoe-engine".into())
            .spawn(move || engine.run())
            .map_err(|e| Error::Device(format!("cannot start the engine thread: {e}")))?;
        Ok(Pool {
            jobs,
            in_channel,
            waiting,
            running,
            parallel,
            queue_cap,
            stop,
            thread: Some(thread),
        })
    }

    /// Queue a job, or refuse it when the sequences are busy and `queue_cap` jobs already wait.
    pub fn submit(&self, job: Job) -> Result<(), QueueFull> {
        let (waiting, running) = self.load();
        if waiting + running >= self.parallel + self.queue_cap {
            return Err(QueueFull);
        }
        self.in_channel.fetch_add(1, SeqCst);
        if self.jobs.send(job).is_err() {
            self.in_channel.fetch_sub(1, SeqCst);
            return Err(QueueFull);
        }
        Ok(())
    }

    /// (jobs waiting, jobs running).
    pub fn load(&self) -> (usize, usize) {
        (
            self.in_channel.load(SeqCst) + self.waiting.load(SeqCst),
            self.running.load(SeqCst),
        )
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
    in_channel: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
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
    fn run(mut self) {
        loop {
            if self.stop.load(SeqCst) {
                break;
            }
            if self.batch.is_idle() {
                // Nothing to step: sleep until a job comes (or every sender is gone).
                match self.rx.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => break,
                }
            }
            while let Ok(job) = self.rx.try_recv() {
                self.take(job);
            }
            for (id, event) in self.batch.step() {
                self.route(id, event);
            }
            self.waiting.store(self.batch.waiting(), SeqCst);
            self.running.store(self.batch.running(), SeqCst);
        }
        for (_, job) in self.jobs.drain() {
            let _ = job.events.send(Out::Failed(Error::Cancelled));
        }
    }

    fn take(&mut self, job: Job) {
        self.in_channel.fetch_sub(1, SeqCst);
        match self.batch.add(job.prompt.clone(), &job.options) {
            Ok(id) => {
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
                let _ = job.events.send(Out::Failed(e));
            }
        }
        self.waiting.store(self.batch.waiting(), SeqCst);
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
                self.metrics.add_prompt(job.prompt, job.prompt - stats.prompt_tokens.min(job.prompt));
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
        } else if gone {
            self.batch.cancel(id);
        }
    }
}
