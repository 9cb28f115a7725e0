//! Continuous batching for servers: many generations decoded together, one token each per step.

use super::generation::Reply;
use super::{Event, GenerateOptions, KvDtype, Model, Prompt, Stats, StopReason};
use crate::error::{Error, Result};
use crate::generate::TokenConstraint;
use crate::kernels::sampling::SampleSpec;
use crate::model::batch::{self as raw, Row};
use std::collections::VecDeque;
use std::time::Instant;

/// How a [`Batch`] is sized. `BatchOptions::default()`: 4 sequences of the model's context.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Generations decoded together (each has its own slot of the KV cache).
    pub sequences: usize,
    /// Tokens each sequence holds (prompt and reply); `None`: the model's default context.
    pub context: Option<usize>,
    /// How the cache stores keys and values; `None`: the model's default.
    pub kv_cache: Option<KvDtype>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            sequences: 4,
            context: None,
            kv_cache: None,
        }
    }
}

/// Names one generation of a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u64);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Generations decoded together (continuous batching), for a server: [`Batch::add`] queues one,
/// [`Batch::step`] moves every running one on by a token in one pass over the weights (and runs a
/// chunk of a joining prompt), returning each one's [`Event`]s. A generation joins when a
/// sequence slot is free and leaves when it stops; the others never wait for it. Greedy output is
/// the same as the generation would give alone.
///
/// A free slot keeps the tokens of its last generation in its cache: a new prompt that starts the
/// same way (the next turn of a conversation) goes to the slot sharing the longest start and
/// skips it (prompt caching).
///
/// ```no_run
/// # fn run(model: &wgmoe::Model) -> wgmoe::Result<()> {
/// use wgmoe::{BatchOptions, Event, GenerateOptions};
/// let mut batch = model.batch(&BatchOptions::default())?;
/// let a = batch.add("The capital of France is", &GenerateOptions::max_tokens(16))?;
/// let b = batch.add("The capital of Italy is", &GenerateOptions::max_tokens(16))?;
/// while !batch.is_idle() {
///     for (id, event) in batch.step() {
///         if let Event::Token { text, .. } | Event::Text(text) = event? {
///             println!("{id}: {text}");
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Batch {
    model: Model,
    raw: raw::Batch,
    /// What each slot's cache holds, and the generation using it.
    slots: Vec<Slot>,
    waiting: VecDeque<Seq>,
    next_id: u64,
}

#[derive(Default)]
struct Slot {
    /// The tokens in the slot's cache (positions 0..len).
    held: Vec<u32>,
    seq: Option<Seq>,
}

/// One generation.
struct Seq {
    id: SeqId,
    prompt: Vec<u32>,
    reply: Reply,
    spec: SampleSpec,
    constraint: Option<Box<dyn TokenConstraint>>,
    /// Prompt tokens in the slot's cache (found there or run since); it decodes once all but the
    /// last are.
    fed: usize,
    cached: usize,
    /// The position of `next`, the token the next step feeds.
    pos: usize,
    next: u32,
    emitted: Vec<u32>,
    added: Instant,
    joined: Option<Instant>,
    first: Option<Instant>,
}

impl Seq {
    fn decoding(&self) -> bool {
        self.fed + 1 >= self.prompt.len()
    }

    fn stats(&self) -> Stats {
        let now = Instant::now();
        let start = self.joined.unwrap_or(self.added);
        Stats {
            prompt_tokens: self.prompt.len() - self.cached,
            prompt_seconds: self.first.unwrap_or(now).duration_since(start).as_secs_f64(),
            generated_tokens: self.emitted.len(),
            decode_seconds: self.first.map_or(0.0, |f| now.duration_since(f).as_secs_f64()),
        }
    }
}

impl Model {
    /// A batch of generations decoded together (a server's engine): see [`Batch`].
    pub fn batch(&self, options: &BatchOptions) -> Result<Batch> {
        if options.sequences == 0 {
            return Err(Error::bad_input("a batch of 0 sequences"));
        }
        let context = options
            .context
            .unwrap_or(self.options().context)
            .min(self.info().max_context.max(1));
        let kv = options.kv_cache.unwrap_or(self.options().kv_cache);
        let chunk = self.options().prefill_chunk;
        let raw = raw::Batch::new(self.internals(), options.sequences, context, kv, chunk)?;
        Ok(Batch {
            model: self.clone(),
            raw,
            slots: (0..options.sequences).map(|_| Slot::default()).collect(),
            waiting: VecDeque::new(),
            next_id: 0,
        })
    }
}

impl Batch {
    /// Queue a generation after `prompt` (text gets the begin-of-sequence token where the model
    /// wants one). Errors for bad options or a prompt that does not fit a sequence come here;
    /// everything later comes from [`Batch::step`].
    pub fn add(&mut self, prompt: impl Into<Prompt>, options: &GenerateOptions) -> Result<SeqId> {
        let prompt = match prompt.into() {
            Prompt::Text(t) => self.model.tokenize(&t, true)?,
            Prompt::Tokens(t) => t,
        };
        let vocab = self.model.internals().config.vocab;
        if prompt.is_empty() {
            return Err(Error::bad_input("the prompt has no tokens"));
        }
        crate::model::check_ids(&prompt, vocab)?;
        let context = self.raw.context();
        if prompt.len() > context {
            return Err(Error::ContextFull {
                needed: prompt.len(),
                free: context,
                capacity: context,
            });
        }
        let sampling = options.sampling.unwrap_or(self.model.default_sampling());
        sampling.validate()?;
        let reply = Reply::new(&self.model, options)?;
        let constraint = options
            .constraint
            .as_ref()
            .map(|c| self.model.constraint(c))
            .transpose()?;
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let next = prompt[prompt.len() - 1];
        self.waiting.push_back(Seq {
            id,
            spec: SampleSpec {
                vocab,
                row: 0,
                temperature: sampling.temperature,
                top_k: sampling.top_k,
                top_p: sampling.top_p,
                seed: options.seed,
            },
            pos: prompt.len() - 1,
            prompt,
            reply,
            constraint,
            fed: 0,
            cached: 0,
            next,
            emitted: Vec::new(),
            added: Instant::now(),
            joined: None,
            first: None,
        });
        Ok(id)
    }

    /// Generations running (in a slot).
    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.seq.is_some()).count()
    }

    /// Generations waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing to run.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running() == 0
    }

    /// Sequences decoded together at most.
    pub fn sequences(&self) -> usize {
        self.slots.len()
    }

    /// End a generation now: its `Done` (reason `Cancelled`) comes with the next step. False if
    /// it is not in the batch (any more).
    pub fn cancel(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            let mut seq = self.waiting.remove(i).expect("found");
            seq.reply.ending = Some(StopReason::Cancelled);
            // A waiting generation ends in the next step's events through a slot-less path.
            self.waiting.push_front(seq);
            return true;
        }
        for slot in &mut self.slots {
            if let Some(seq) = slot.seq.as_mut().filter(|s| s.id == id) {
                seq.reply.ending.get_or_insert(StopReason::Cancelled);
                return true;
            }
        }
        false
    }

    /// One step: admit waiting generations to free slots, run one chunk of a joining prompt, then
    /// one token of every decoding generation. Returns this step's events in order; a generation's
    /// last is `Done` (or an error, after which it is gone).
    pub fn step(&mut self) -> Vec<(SeqId, Result<Event>)> {
        let mut out = Vec::new();
        // Generations cancelled while waiting end without a slot.
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for mut seq in self.waiting.drain(..) {
            if seq.reply.ending.is_none() {
                seq.reply.ending = seq.reply.must_end().filter(|r| *r == StopReason::Cancelled);
            }
            if seq.reply.ending.is_some() {
                finish(&mut seq, &mut out);
            } else {
                kept.push_back(seq);
            }
        }
        self.waiting = kept;
        self.admit();
        self.prefill_one(&mut out);
        self.decode(&mut out);
        out
    }

    /// Give free slots to waiting generations, oldest first, each to the free slot whose cache
    /// shares the longest start with its prompt.
    fn admit(&mut self) {
        while let Some(seq) = self.waiting.front() {
            let known = &seq.prompt[..seq.prompt.len() - 1];
            // The longest shared start; between equals, the slot holding the least (keep other
            // conversations' caches while an emptier slot will do).
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.seq.is_none())
                .max_by_key(|(i, s)| {
                    let shared = common_prefix(&s.held, known);
                    (shared, std::cmp::Reverse(s.held.len() - shared), std::cmp::Reverse(*i))
                })
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let mut seq = self.waiting.pop_front().expect("front");
            let slot = &mut self.slots[i];
            seq.cached = common_prefix(&slot.held, &seq.prompt[..seq.prompt.len() - 1]);
            seq.fed = seq.cached;
            seq.joined = Some(Instant::now());
            slot.held.truncate(seq.cached);
            slot.seq = Some(seq);
        }
    }

    /// Run the next chunk of the oldest joining prompt: one chunk per step, so a long prompt
    /// delays the running generations' next token by one chunk's time at most.
    fn prefill_one(&mut self, out: &mut Vec<(SeqId, Result<Event>)>) {
        let joining = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.seq.as_ref().filter(|q| !q.decoding()).map(|q| (q.joined, i)))
            .min();
        let Some((_, i)) = joining else { return };
        let chunk = self.model.options().prefill_chunk.max(1);
        let slot = &mut self.slots[i];
        let seq = slot.seq.as_mut().expect("joining");
        // A cancelled prompt stops here; its slot keeps what was run of it.
        if seq.reply.must_end() == Some(StopReason::Cancelled) || seq.reply.ending.is_some() {
            let mut seq = slot.seq.take().expect("joining");
            seq.reply.ending.get_or_insert(StopReason::Cancelled);
            finish(&mut seq, out);
            return;
        }
        let end = (seq.fed + chunk).min(seq.prompt.len() - 1);
        match self.raw.prefill(i, seq.fed, &seq.prompt[seq.fed..end]) {
            Ok(()) => {
                slot.held.extend_from_slice(&seq.prompt[seq.fed..end]);
                seq.fed = end;
            }
            Err(e) => {
                let seq = slot.seq.take().expect("joining");
                slot.held.clear();
                out.push((seq.id, Err(e)));
            }
        }
    }

    /// One token of every decoding generation, in one pass.
    fn decode(&mut self, out: &mut Vec<(SeqId, Result<Event>)>) {
        // Generations that must end before another token (cancelled, out of budget or room).
        let context = self.raw.context();
        for slot in &mut self.slots {
            let Some(seq) = slot.seq.as_mut().filter(|s| s.decoding()) else {
                continue;
            };
            if seq.reply.ending.is_none() {
                seq.reply.ending = seq.reply.must_end();
            }
            if seq.reply.ending.is_none() && seq.pos + 1 > context {
                seq.reply.ending = Some(StopReason::ContextFull);
            }
            if seq.reply.ending.is_some() {
                let mut seq = slot.seq.take().expect("checked");
                finish(&mut seq, out);
            }
        }
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].seq.as_ref().is_some_and(Seq::decoding))
            .collect();
        if live.is_empty() {
            return;
        }
        let mut masks: Vec<Option<Vec<u32>>> = Vec::with_capacity(live.len());
        for &i in &live {
            let seq = self.slots[i].seq.as_mut().expect("live");
            masks.push(match seq.constraint.as_mut().map(|c| c.mask()).transpose() {
                Ok(m) => m,
                Err(e) => {
                    self.slots[i].held.clear();
                    let seq = self.slots[i].seq.take().expect("live");
                    out.push((seq.id, Err(e)));
                    None
                }
            });
        }
        let live: Vec<(usize, Option<Vec<u32>>)> = live
            .into_iter()
            .zip(masks)
            .filter(|(i, _)| self.slots[*i].seq.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let rows: Vec<Row<'_>> = live
            .iter()
            .map(|(i, mask)| {
                let seq = self.slots[*i].seq.as_ref().expect("live");
                Row {
                    slot: *i,
                    pos: seq.pos,
                    token: seq.next,
                    sample: seq.spec,
                    mask: mask.as_deref(),
                }
            })
            .collect();
        let sampled = match self.raw.step(&rows) {
            Ok(t) => t,
            Err(e) => {
                // The cache's state is unknown: every generation of the step fails.
                let msg = e.to_string();
                let mut first = Some(e);
                for (i, _) in &live {
                    let slot = &mut self.slots[*i];
                    slot.held.clear();
                    let seq = slot.seq.take().expect("live");
                    let err = first.take().unwrap_or_else(|| Error::Device(msg.clone()));
                    out.push((seq.id, Err(err)));
                }
                return;
            }
        };
        let now = Instant::now();
        for ((i, _), id) in live.iter().zip(sampled) {
            let slot = &mut self.slots[*i];
            let seq = slot.seq.as_mut().expect("live");
            // The fed token is in the cache now.
            slot.held.push(seq.next);
            seq.pos += 1;
            seq.first.get_or_insert(now);
            // A row that went wrong (non-finite logits, nothing allowed) fails alone.
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    slot.held.clear();
                    let seq = slot.seq.take().expect("live");
                    out.push((seq.id, Err(e)));
                    continue;
                }
            };
            if let Some(c) = seq.constraint.as_mut() {
                if let Err(e) = c.accept(id) {
                    let seq = slot.seq.take().expect("live");
                    out.push((seq.id, Err(e)));
                    continue;
                }
            }
            match seq.reply.push(id) {
                Ok(Ok(event)) => {
                    seq.emitted.push(id);
                    seq.next = id;
                    out.push((seq.id, Ok(event)));
                    if seq.reply.ending.is_none() {
                        seq.reply.ending = seq.reply.must_end();
                    }
                    if seq.reply.ending.is_some() {
                        let mut seq = slot.seq.take().expect("live");
                        finish(&mut seq, out);
                    }
                }
                Ok(Err(reason)) => {
                    seq.reply.ending = Some(reason);
                    let mut seq = slot.seq.take().expect("live");
                    finish(&mut seq, out);
                }
                Err(e) => {
                    let seq = slot.seq.take().expect("live");
                    out.push((seq.id, Err(e)));
                }
            }
        }
    }
}

/// The last events of an ended generation: held text, then `Done`.
fn finish(seq: &mut Seq, out: &mut Vec<(SeqId, Result<Event>)>) {
    match seq.reply.tail() {
        Ok(Some(text)) => out.push((seq.id, Ok(Event::Text(text)))),
        Ok(None) => {}
        Err(e) => {
            out.push((seq.id, Err(e)));
            return;
        }
    }
    let stop_reason = seq.reply.ending.take().unwrap_or(StopReason::MaxTokens);
    out.push((
        seq.id,
        Ok(Event::Done {
            stop_reason,
            stats: seq.stats(),
        }),
    ));
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
