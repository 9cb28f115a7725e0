//! Models larger than the GPU: routed experts kept in host memory and a GPU cache of expert slots.
//!
//! Attention, norms, routers, shared experts, the embedding, the logits head and the KV cache stay
//! resident. An offloaded MoE layer's routed experts live in host memory ([`HostPart`], in the
//! GPU's formats, so an upload is a copy) and the layer binds a pool of `slots` experts on the GPU
//! (followed by its folded shared experts, always resident). The expert kernels are unchanged:
//! they read whichever pool slot the ids name.
//!
//! A forward pass stops after each offloaded layer's router (one CPU/GPU round trip per layer):
//! the CPU reads the router's expert ids, [`ExpertCache::route`] places the experts the batch
//! needs in slots (uploading the misses, evicting by [`Policy`]) and rewrites the ids as slot
//! indices. A batch that needs more experts than the pool holds (prefill) runs the layer's expert
//! kernels in rounds of at most `slots` experts; each round writes only its own (token, slot)
//! rows and the reduction over the slots runs once, after the last round, so results are the
//! resident model's bit for bit. README.md "Models larger than the GPU" compares this with the
//! alternatives.

use super::config::{Ffn, ModelConfig};
use super::layout::{Layout, Spec};
use super::weights::{FfnWeights, ModelWeights};
use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Format, Weight};
use std::sync::Mutex;

/// An id the expert kernels skip: a (token, slot) pair that is not in the current round.
pub const SKIP: u32 = u32::MAX;

/// Where the rows of a stacked weight are written while it is filled: a GPU [`Weight`], or host
/// memory ([`HostRows`]) for experts that live there.
pub trait RowSink {
    fn cols(&self) -> usize;
    fn group_rows(&self) -> usize;
    /// The format of row `row`.
    fn dtype_at(&self, row: usize) -> DType;
    /// Whole unpadded rows of the format at `first_row` (as [`Weight::write_rows`] takes them).
    fn write_rows(&self, ctx: &Context, first_row: usize, bytes: &[u8]) -> Result<()>;
}

impl RowSink for Weight {
    fn cols(&self) -> usize {
        self.cols
    }
    fn group_rows(&self) -> usize {
        self.group_rows
    }
    fn dtype_at(&self, row: usize) -> DType {
        Weight::dtype_at(self, row)
    }
    fn write_rows(&self, ctx: &Context, first_row: usize, bytes: &[u8]) -> Result<()> {
        Weight::write_rows(self, ctx, first_row, bytes)
    }
}

/// A stacked weight's rows in host memory, unpadded, in parts of one format each (routed experts
/// in one, folded shared experts possibly in another).
pub struct HostRows {
    cols: usize,
    group_rows: usize,
    /// (first row, rows, format, byte offset)
    parts: Vec<(usize, usize, DType, usize)>,
    bytes: Mutex<Vec<u8>>,
}

impl HostRows {
    /// Zeroed rows of `parts` (rows, format) of `cols` columns, in groups of `group_rows`.
    pub fn new(label: &str, parts: &[(usize, DType)], cols: usize, group_rows: usize) -> Result<Self> {
        let mut out = Vec::new();
        let (mut row, mut offset) = (0, 0);
        for &(rows, dtype) in parts {
            let row_bytes = Format::of(dtype).row_bytes(cols).ok_or_else(|| {
                Error::unsupported(format!(
                    "{label}: rows of {cols} elements are not whole {} blocks",
                    dtype.name()
                ))
            })?;
            out.push((row, rows, dtype, offset));
            row += rows;
            offset += rows * row_bytes;
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(offset).map_err(|_| Error::OutOfMemory {
            what: format!("{label}: no host memory for {offset} bytes of offloaded experts"),
            needed: Some(offset as u64),
            available: None,
        })?;
        bytes.resize(offset, 0);
        Ok(Self {
            cols,
            group_rows,
            parts: out,
            bytes: Mutex::new(bytes),
        })
    }

    fn part_at(&self, row: usize) -> Option<&(usize, usize, DType, usize)> {
        self.parts.iter().find(|p| (p.0..p.0 + p.1).contains(&row))
    }

    /// The bytes of rows `first..first + n` (within one part).
    fn rows(&self, first: usize, n: usize) -> Result<Vec<u8>> {
        let &(p0, _, dtype, off) = self
            .part_at(first)
            .ok_or_else(|| Error::bad_input(format!("row {first} is in no part")))?;
        let rb = Format::of(dtype).row_bytes(self.cols).unwrap_or(0);
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(bytes[off + (first - p0) * rb..][..n * rb].to_vec())
    }
}

impl RowSink for HostRows {
    fn cols(&self) -> usize {
        self.cols
    }
    fn group_rows(&self) -> usize {
        self.group_rows
    }
    fn dtype_at(&self, row: usize) -> DType {
        self.part_at(row).map_or(DType::F32, |p| p.2)
    }
    fn write_rows(&self, _: &Context, first_row: usize, bytes: &[u8]) -> Result<()> {
        let &(p0, rows, dtype, off) = self
            .part_at(first_row)
            .ok_or_else(|| Error::bad_input(format!("row {first_row} is in no part")))?;
        let rb = Format::of(dtype).row_bytes(self.cols).unwrap_or(0);
        if rb == 0 || !bytes.len().is_multiple_of(rb) || first_row + bytes.len() / rb > p0 + rows {
            return Err(Error::bad_input(format!(
                "{} bytes are not whole rows of {rb} bytes fitting at row {first_row}",
                bytes.len()
            )));
        }
        let mut all = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        all[off + (first_row - p0) * rb..][..bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// One weight of an offloaded layer's experts (gate|up, down, or a bias) as it lives in host
/// memory: the routed experts' groups, back to back.
pub struct HostPart {
    bytes: Vec<u8>,
    group_rows: usize,
    group_bytes: usize,
}

impl HostPart {
    /// Host bytes of the routed experts.
    pub fn bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Split a weight made in host memory (`experts` routed groups, then any folded shared experts)
/// into its pool on the GPU (`slots` empty groups, then the shared experts' groups, uploaded) and
/// the routed groups, kept on the host.
pub fn offload(ctx: &Context, spec: &Spec, host: HostRows, experts: usize, slots: usize) -> Result<(Weight, HostPart)> {
    let g = host.group_rows;
    let routed_rows = experts * g;
    let routed_dtype = host.dtype_at(0);
    let mut pool_parts = vec![(slots * g, routed_dtype)];
    // The folded shared experts' rows (in a part of their own, or the tail of the routed part).
    let mut shared = Vec::new();
    for &(first, rows, dtype, _) in &host.parts {
        let from = first.max(routed_rows);
        if from < first + rows {
            pool_parts.push((first + rows - from, dtype));
            shared.push((from, first + rows - from));
        }
    }
    // One part when the shared experts share the routed experts' format.
    if pool_parts.len() == 2 && pool_parts[1].1 == routed_dtype {
        pool_parts = vec![(pool_parts[0].0 + pool_parts[1].0, routed_dtype)];
    }
    let limit = ctx.caps.max_storage_binding;
    let pool = if pool_parts.len() == 1 {
        Weight::alloc(ctx, &spec.label, routed_dtype, pool_parts[0].0, host.cols, g, limit)?
    } else {
        Weight::alloc_grouped(ctx, &spec.label, &pool_parts, host.cols, g, limit)?
    };
    for (first, rows) in shared {
        pool.write_rows(ctx, first - routed_rows + slots * g, &host.rows(first, rows)?)?;
    }
    let row_bytes = Format::of(routed_dtype).row_bytes(host.cols).unwrap_or(0);
    let mut bytes = host.bytes.into_inner().unwrap_or_else(|e| e.into_inner());
    bytes.truncate(routed_rows * row_bytes);
    bytes.shrink_to_fit();
    Ok((
        pool,
        HostPart {
            bytes,
            group_rows: g,
            group_bytes: g * row_bytes,
        },
    ))
}

/// Which experts to evict when a slot is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// The least recently used.
    Lru,
    /// The least frequently used, counts decaying by half every [`LFU_HALF_LIFE`] lookups of the
    /// layer, so the cache follows a changing topic. The default: measured best on skewed routing
    /// (README "Models larger than the GPU").
    #[default]
    Lfu,
}

/// Lookups of a layer after which an expert's use count has halved ([`Policy::Lfu`]).
pub const LFU_HALF_LIFE: f64 = 64.0;

impl Policy {
    pub const ALL: [Policy; 2] = [Policy::Lru, Policy::Lfu];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::bad_input(format!("unknown cache policy {s:?}: use lru or lfu")))
    }
}

/// One round of a layer's expert kernels: the pairs' ids as slot indices ([`SKIP`] for pairs of
/// other rounds) and the (expert, slot) uploads that must land before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub ids: Vec<u32>,
    pub uploads: Vec<(u32, u32)>,
}

/// An expert placed for a round: (expert, slot, whether it must be uploaded).
pub type Placement = (u32, u32, bool);

/// One layer's slots: which expert each holds, and what the policy remembers.
#[derive(Clone, Debug)]
pub struct SlotTable {
    policy: Policy,
    slot_of: Vec<u32>,
    holds: Vec<u32>,
    last_use: Vec<u64>,
    /// Decayed use count per expert and the lookup it was last brought up to date at.
    freq: Vec<(f64, u64)>,
    clock: u64,
}

impl SlotTable {
    pub fn new(experts: usize, slots: usize, policy: Policy) -> Self {
        Self {
            policy,
            slot_of: vec![SKIP; experts],
            holds: vec![SKIP; slots],
            last_use: vec![0; slots],
            freq: vec![(0.0, 0); experts],
            clock: 0,
        }
    }

    pub fn slots(&self) -> usize {
        self.holds.len()
    }

    fn score(&self, e: u32) -> f64 {
        let (f, at) = self.freq[e as usize];
        f * 0.5f64.powf((self.clock - at) as f64 / LFU_HALF_LIFE)
    }

    /// Which slot to give up next among `free`: an empty one, else the policy's choice.
    fn victim(&self, free: &[usize]) -> usize {
        let key = |&s: &usize| -> (bool, f64, u64) {
            let e = self.holds[s];
            let score = match self.policy {
                Policy::Lru => self.last_use[s] as f64,
                Policy::Lfu if e != SKIP => self.score(e),
                Policy::Lfu => 0.0,
            };
            (e != SKIP, score, self.last_use[s])
        };
        *free
            .iter()
            .min_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
            .expect("a round has a free slot")
    }

    /// Place `needed` (distinct experts, in first-use order) in slots: rounds of (expert, slot,
    /// upload?) where the first round holds every expert already resident, and `hits` the count
    /// of those.
    pub fn place(&mut self, needed: &[u32]) -> (Vec<Vec<Placement>>, usize) {
        self.clock += 1;
        for &e in needed {
            let s = self.score(e);
            self.freq[e as usize] = (s + 1.0, self.clock);
        }
        let mut round: Vec<(u32, u32, bool)> = needed
            .iter()
            .filter(|&&e| self.slot_of[e as usize] != SKIP)
            .map(|&e| (e, self.slot_of[e as usize], false))
            .collect();
        let hits = round.len();
        let mut misses: std::collections::VecDeque<u32> = needed
            .iter()
            .filter(|&&e| self.slot_of[e as usize] == SKIP)
            .copied()
            .collect();
        let mut rounds = Vec::new();
        loop {
            let mut free: Vec<usize> = (0..self.slots())
                .filter(|&s| round.iter().all(|r| r.1 as usize != s))
                .collect();
            while !free.is_empty() {
                let Some(e) = misses.pop_front() else { break };
                let s = self.victim(&free);
                free.retain(|&f| f != s);
                let old = self.holds[s];
                if old != SKIP {
                    self.slot_of[old as usize] = SKIP;
                }
                self.holds[s] = e;
                self.slot_of[e as usize] = s as u32;
                round.push((e, s as u32, true));
            }
            for &(_, s, _) in &round {
                self.last_use[s as usize] = self.clock;
            }
            rounds.push(std::mem::take(&mut round));
            // The pool is full: the rest wait for the next round, which may take any slot.
            if misses.is_empty() {
                break;
            }
        }
        (rounds, hits)
    }
}

/// Hit rate of `policy` with `slots` per layer on a routing trace (each entry: a layer and the
/// distinct experts one forward pass needed there), as the cache would have run it.
pub fn simulate(trace: &[TraceEntry], experts: usize, slots: usize, policy: Policy) -> f64 {
    let mut tables: Vec<Option<SlotTable>> = Vec::new();
    let (mut lookups, mut hits) = (0usize, 0usize);
    for t in trace {
        if tables.len() <= t.layer {
            tables.resize(t.layer + 1, None);
        }
        let table = tables[t.layer].get_or_insert_with(|| SlotTable::new(experts, slots, policy));
        lookups += t.experts.len();
        hits += table.place(&t.experts).1;
    }
    hits as f64 / lookups.max(1) as f64
}

/// The best hit rate any policy could reach with `slots` per layer (Belady's: evict the expert
/// needed again furthest in the future), the bound the policies are measured against.
pub fn simulate_optimal(trace: &[TraceEntry], slots: usize) -> f64 {
    let layers = trace.iter().map(|t| t.layer + 1).max().unwrap_or(0);
    let (mut lookups, mut hits) = (0usize, 0usize);
    for layer in 0..layers {
        let seq: Vec<&Vec<u32>> = trace.iter().filter(|t| t.layer == layer).map(|t| &t.experts).collect();
        let mut resident: Vec<u32> = Vec::new();
        for (i, need) in seq.iter().enumerate() {
            lookups += need.len();
            hits += need.iter().filter(|e| resident.contains(e)).count();
            let next_use = |e: u32| seq[i + 1..].iter().position(|n| n.contains(&e)).unwrap_or(usize::MAX);
            for &e in need.iter() {
                if resident.contains(&e) {
                    continue;
                }
                if resident.len() < slots {
                    resident.push(e);
                    continue;
                }
                // Evict the furthest-needed expert that this step does not need.
                if let Some((j, _)) = resident
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !need.contains(r))
                    .max_by_key(|(_, &r)| next_use(r))
                {
                    resident[j] = e;
                }
            }
        }
    }
    hits as f64 / lookups.max(1) as f64
}

/// Hit rates of every policy and of the optimum on `trace` at several slot counts per layer (from
/// top-k to every expert): markdown, for `wgmoe bench`.
pub fn policy_table(trace: &[TraceEntry], experts: usize, top_k: usize) -> String {
    let mut counts: Vec<usize> = [top_k, experts / 4, experts / 2, 3 * experts / 4, experts]
        .into_iter()
        .filter(|&s| s >= top_k && s <= experts)
        .collect();
    counts.dedup();
    let mut out = String::from("| slots per layer | lru | lfu | optimal |\n| ---: | ---: | ---: | ---: |\n");
    for s in counts {
        let pct = |h: f64| format!("{:.1}%", 100.0 * h);
        out.push_str(&format!(
            "| {s} of {experts} | {} | {} | {} |\n",
            pct(simulate(trace, experts, s, Policy::Lru)),
            pct(simulate(trace, experts, s, Policy::Lfu)),
            pct(simulate_optimal(trace, s))
        ));
    }
    out
}

/// The distinct experts one forward pass needed at one layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceEntry {
    pub layer: usize,
    pub experts: Vec<u32>,
}

/// What the cache has done since it was made.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Experts looked up (distinct per layer and forward pass) and found resident.
    pub lookups: u64,
    pub hits: u64,
    pub uploaded_bytes: u64,
    /// Token rows run through the model.
    pub tokens: u64,
    /// Extra rounds run because a batch needed more experts than a pool holds.
    pub extra_rounds: u64,
}

impl CacheStats {
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.lookups.max(1) as f64
    }

    pub fn mib_per_token(&self) -> f64 {
        self.uploaded_bytes as f64 / self.tokens.max(1) as f64 / (1u64 << 20) as f64
    }
}

struct LayerCache {
    experts: usize,
    table: SlotTable,
    /// gate|up, down, then the biases where the model has them.
    parts: Vec<HostPart>,
}

/// The expert cache of a model whose routed experts do not all fit the GPU.
pub struct ExpertCache {
    layers: Vec<Option<LayerCache>>,
    top_k: usize,
    pub stats: CacheStats,
    trace: Option<Vec<TraceEntry>>,
}

/// Per layer, the pool slots of an offloaded MoE layer (`None`: resident).
#[derive(Clone, Debug, PartialEq)]
pub struct Offload {
    pub slots: Vec<Option<usize>>,
    pub policy: Policy,
}

impl Offload {
    pub fn slots(&self, layer: usize) -> Option<usize> {
        self.slots.get(layer).copied().flatten()
    }
}

impl ExpertCache {
    /// Forget which experts `layer`'s slots hold (after a failed upload): the next pass uploads
    /// what it needs again.
    pub fn forget(&mut self, layer: usize) {
        if let Some(Some(lc)) = self.layers.get_mut(layer) {
            let (experts, slots, policy) = (lc.experts, lc.table.slots(), lc.table.policy);
            lc.table = SlotTable::new(experts, slots, policy);
        }
    }

    /// The cache of `offload`, holding each offloaded layer's host parts (gate|up, down, biases).
    pub fn new(cfg: &ModelConfig, offload: &Offload, parts: Vec<(usize, HostPart)>) -> Self {
        let mut by_layer: Vec<Vec<HostPart>> = (0..cfg.layers.len()).map(|_| Vec::new()).collect();
        for (l, p) in parts {
            by_layer[l].push(p);
        }
        let layers = (0..cfg.layers.len())
            .map(|l| {
                let slots = offload.slots(l)?;
                let Ffn::Moe { experts, .. } = &cfg.layers[l].ffn else {
                    return None;
                };
                Some(LayerCache {
                    experts: *experts,
                    table: SlotTable::new(*experts, slots, offload.policy),
                    parts: std::mem::take(&mut by_layer[l]),
                })
            })
            .collect();
        let top_k = cfg
            .layers
            .iter()
            .map(|l| match &l.ffn {
                Ffn::Moe { top_k, .. } => *top_k,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Self {
            layers,
            top_k,
            stats: CacheStats::default(),
            trace: None,
        }
    }

    /// Whether layer `l`'s experts are offloaded.
    pub fn offloaded(&self, l: usize) -> bool {
        self.layers.get(l).is_some_and(Option::is_some)
    }

    /// Which layers are offloaded.
    pub fn offloaded_layers(&self) -> Vec<bool> {
        self.layers.iter().map(Option::is_some).collect()
    }

    /// Slots on the GPU and routed experts, summed over the offloaded layers.
    pub fn resident_of(&self) -> (usize, usize) {
        self.layers
            .iter()
            .flatten()
            .fold((0, 0), |(s, e), l| (s + l.table.slots(), e + l.experts))
    }

    /// Host bytes of the offloaded experts.
    pub fn host_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flatten()
            .flat_map(|l| &l.parts)
            .map(HostPart::bytes)
            .sum()
    }

    /// Start (or stop) recording which experts each forward pass needs.
    pub fn record_trace(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
    }

    /// Routed experts and top-k of the offloaded layers (the largest of each).
    pub fn shape(&self) -> (usize, usize) {
        let e = self.layers.iter().flatten().map(|l| l.experts).max().unwrap_or(0);
        (e, self.top_k)
    }

    pub fn take_trace(&mut self) -> Vec<TraceEntry> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Place the experts layer `layer`'s router chose (`ids`, slot indices per (token, slot) pair;
    /// ids past the routed experts are folded shared experts) in its pool: the rounds to run, each
    /// with its pairs' ids rewritten as pool slots.
    pub fn route(&mut self, layer: usize, ids: &[u32]) -> Result<Vec<Round>> {
        let lc = self.layers[layer]
            .as_mut()
            .ok_or_else(|| Error::bad_input(format!("layer {layer}'s experts are not offloaded")))?;
        let (e, s) = (lc.experts as u32, lc.table.slots() as u32);
        let mut needed: Vec<u32> = Vec::new();
        for &id in ids {
            if id < e && !needed.contains(&id) {
                needed.push(id);
            }
        }
        if let Some(t) = &mut self.trace {
            t.push(TraceEntry {
                layer,
                experts: needed.clone(),
            });
        }
        let (rounds, hits) = lc.table.place(&needed);
        self.stats.lookups += needed.len() as u64;
        self.stats.hits += hits as u64;
        self.stats.extra_rounds += rounds.len().saturating_sub(1) as u64;
        Ok(rounds
            .iter()
            .map(|round| Round {
                ids: ids
                    .iter()
                    .map(|&id| {
                        if id >= e {
                            // A folded shared expert: right after the pool's slots.
                            s + (id - e)
                        } else {
                            round.iter().find(|r| r.0 == id).map_or(SKIP, |r| r.1)
                        }
                    })
                    .collect(),
                uploads: round.iter().filter(|r| r.2).map(|r| (r.0, r.1)).collect(),
            })
            .collect())
    }

    /// Copy `uploads` (expert, slot) of layer `layer` from host memory into its pools.
    pub fn upload(
        &mut self,
        ctx: &Context,
        weights: &ModelWeights,
        layer: usize,
        uploads: &[(u32, u32)],
    ) -> Result<()> {
        let lc = self.layers[layer]
            .as_ref()
            .ok_or_else(|| Error::bad_input(format!("layer {layer}'s experts are not offloaded")))?;
        let FfnWeights::Moe {
            gate_up,
            down,
            gate_up_bias,
            down_bias,
            ..
        } = &weights.layers[layer].ffn
        else {
            return Err(Error::bad_input(format!("layer {layer} has no experts")));
        };
        let pools: Vec<&Weight> = [Some(gate_up), Some(down), gate_up_bias.as_ref(), down_bias.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let mut written = 0u64;
        let result = uploads.iter().try_for_each(|&(expert, slot)| {
            for (part, pool) in lc.parts.iter().zip(&pools) {
                let bytes = &part.bytes[expert as usize * part.group_bytes..][..part.group_bytes];
                pool.write_rows(ctx, slot as usize * part.group_rows, bytes)?;
                written += bytes.len() as u64;
            }
            Ok(())
        });
        self.stats.uploaded_bytes += written;
        if let Err(e) = result {
            // The table already counts these experts as resident: forget the layer's slots so
            // that nothing reads a slot whose upload failed.
            self.forget(layer);
            return Err(e);
        }
        Ok(())
    }

    /// `expert cache: S of E experts resident` (what a load chose).
    pub fn resident_line(&self) -> String {
        let (s, e) = self.resident_of();
        format!("expert cache: {s} of {e} experts resident")
    }

    /// `expert cache: S of E experts resident, hit rate H%, U MiB uploaded per token`.
    pub fn line(&self) -> String {
        format!(
            "{}, hit rate {:.1}%, {:.2} MiB uploaded per token",
            self.resident_line(),
            100.0 * self.stats.hit_rate(),
            self.stats.mib_per_token()
        )
    }
}

/// How much GPU memory a model may take and how its expert cache runs (see [`plan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheOptions {
    /// Bytes wgmoe may allocate on the adapter. Routed experts that do not fit stay in host memory
    /// with a GPU cache of them. `None`: the adapter's own memory less [`HEADROOM`] where wgmoe
    /// can read it (Vulkan), else no cap.
    pub gpu_memory: Option<u64>,
    /// Cache exactly this many experts per MoE layer, whatever the budget (top-k at least).
    pub expert_slots: Option<usize>,
    pub policy: Policy,
    /// The sessions the model is loaded for: what is kept free for their KV cache and activations
    /// when the cache is sized.
    pub session: SessionNeeds,
}

pub use super::plan::SessionNeeds;

/// What a model takes on the GPU, split the way the cache decides by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Needs {
    /// Everything but the routed experts of MoE layers (that cannot be offloaded).
    pub resident: u64,
    /// One routed expert of every MoE layer (one slot per layer).
    pub per_slot: u64,
    /// Routed experts per MoE layer and the most any one needs in one slot set (top_k).
    pub experts: usize,
    pub top_k: usize,
    /// The KV cache and the activations of the session the model is loaded for.
    pub session: u64,
}

impl Needs {
    /// Bytes with `slots` experts of every MoE layer on the GPU.
    pub fn with_slots(&self, slots: usize) -> u64 {
        self.resident + self.session + self.per_slot * slots as u64
    }

    /// Everything on the GPU.
    pub fn all(&self) -> u64 {
        self.with_slots(self.experts)
    }
}

/// What `layout` takes with each spec in the format `dtype_of` says, and what a session of
/// `session` needs.
pub fn needs(cfg: &ModelConfig, layout: &Layout, dtype_of: &dyn Fn(&Spec) -> DType, session: &SessionNeeds) -> Needs {
    let mut total = 0u64;
    layout.for_each(|s, leaf| total += s.gpu_bytes(dtype_of(s), leaf));
    let (mut routed, mut per_slot, mut experts, mut top_k) = (0u64, 0u64, 0usize, 0usize);
    for (l, lw) in cfg.layers.iter().zip(&layout.layers) {
        let (
            Ffn::Moe {
                experts: e, top_k: k, ..
            },
            FfnWeights::Moe {
                gate_up,
                down,
                gate_up_bias,
                down_bias,
                ..
            },
        ) = (&l.ffn, &lw.ffn)
        else {
            continue;
        };
        experts = experts.max(*e);
        top_k = top_k.max(*k);
        for s in [Some(gate_up), Some(down), gate_up_bias.as_ref(), down_bias.as_ref()]
            .into_iter()
            .flatten()
        {
            let f = Format::of(dtype_of(s));
            let group = (s.group_rows * f.row_stride(s.cols)) as u64;
            routed += group * *e as u64;
            per_slot += group;
        }
    }
    Needs {
        resident: total.saturating_sub(routed),
        per_slot,
        experts,
        top_k,
        session: super::plan::session_bytes(cfg, layout, session),
    }
}

/// The share of an adapter's memory wgmoe leaves to others (the desktop, other apps, the driver)
/// when it fits itself without `--gpu-memory`.
pub const HEADROOM: f64 = 0.10;

/// How to lay a model of `needs` out within `budget` bytes: `None` when everything fits; else
/// the slots per MoE layer. `forced` asks for that many slots whatever the budget (tests, or a
/// user who knows better); `experts` routed experts per layer cap it.
pub fn plan(
    cfg: &ModelConfig,
    needs: &Needs,
    budget: Option<u64>,
    forced: Option<usize>,
    policy: Policy,
) -> Result<Option<Offload>> {
    let moe: Vec<bool> = cfg.layers.iter().map(|l| matches!(l.ffn, Ffn::Moe { .. })).collect();
    if !moe.contains(&true) {
        return match forced {
            Some(_) => Err(Error::bad_input("--expert-slots: the model has no routed experts")),
            None => Ok(None),
        };
    }
    let make = |slots: usize| Offload {
        slots: moe.iter().map(|&m| m.then_some(slots)).collect(),
        policy,
    };
    if let Some(s) = forced {
        if s < needs.top_k || s > needs.experts {
            return Err(Error::bad_input(format!(
                "--expert-slots {s}: give {}..={} (top-k to the experts per layer)",
                needs.top_k, needs.experts
            )));
        }
        return Ok(Some(make(s)));
    }
    let Some(budget) = budget else { return Ok(None) };
    if needs.all() <= budget {
        return Ok(None);
    }
    let least = needs.with_slots(needs.top_k);
    if least > budget {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(Error::OutOfMemory {
            what: format!(
                "the model, which needs at least {:.3} GiB on the adapter even with its routed experts in host \
                 memory ({:.3} GiB resident weights, {:.3} GiB KV cache and activations, {} experts per layer \
                 cached), but the budget is {:.3} GiB; --kv-cache q8, a smaller quantisation (--quantize \
                 q4_k) or a larger --gpu-memory may also fit it",
                gib(least),
                gib(needs.resident),
                gib(needs.session),
                needs.top_k,
                gib(budget)
            ),
            needed: Some(least),
            available: Some(budget),
        });
    }
    let slots = ((budget - needs.with_slots(0)) / needs.per_slot.max(1)) as usize;
    Ok(Some(make(slots.clamp(needs.top_k, needs.experts))))
}

/// The GPU memory a model may take: `given`, else the adapter's own less [`HEADROOM`] where it
/// is known.
pub fn budget(ctx: &Context, given: Option<u64>) -> Option<u64> {
    given.or_else(|| ctx.device_memory().map(|m| (m as f64 * (1.0 - HEADROOM)) as u64))
}

/// [`plan`] for `layout` (each spec in the format `dtype_of` says) on `ctx` with `opts`.
pub fn plan_for(
    ctx: &Context,
    cfg: &ModelConfig,
    layout: &Layout,
    dtype_of: &dyn Fn(&Spec) -> DType,
    opts: &CacheOptions,
) -> Result<Option<Offload>> {
    let needs = needs(cfg, layout, dtype_of, &opts.session);
    plan(
        cfg,
        &needs,
        budget(ctx, opts.gpu_memory),
        opts.expert_slots,
        opts.policy,
    )
}
