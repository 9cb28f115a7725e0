//! `GET /metrics`: the server's counters in Prometheus' text format.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Prometheus histogram of seconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

const SECONDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

impl Histogram {
    fn new() -> Self {
        Self {
            bounds: SECONDS,
            counts: SECONDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Everything `/metrics` reports that the server counts itself.
pub struct Metrics {
    /// Requests by (endpoint, HTTP status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    cached_prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Tokens of finished generations' decode phases and its microseconds (mean decode speed).
    decode_tokens: AtomicU64,
    decode_us: AtomicU64,
    /// When recent tokens came out, for the aggregate rate over the last [`WINDOW`].
    recent: Mutex<VecDeque<Instant>>,
    pub ttft: Histogram,
}

/// The window of `wgmoe_tokens_per_second`.
const WINDOW: Duration = Duration::from_secs(10);

impl Metrics {
    pub fn new() -> Self {
        Self {
            // The main series exist from the start, so a scrape before any request reads 0.
            requests: Mutex::new(BTreeMap::from([
                (("/v1/chat/completions", 200), 0),
                (("/v1/completions", 200), 0),
            ])),
            prompt_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            decode_tokens: AtomicU64::new(0),
            decode_us: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            ttft: Histogram::new(),
        }
    }

    pub fn request(&self, endpoint: &'static str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((endpoint, status)).or_default() += 1;
    }

    pub fn add_prompt(&self, tokens: usize, cached: usize) {
        self.prompt_tokens.fetch_add(tokens as u64, Relaxed);
        self.cached_prompt_tokens.fetch_add(cached as u64, Relaxed);
    }

    pub fn add_completion(&self, tokens: usize) {
        self.completion_tokens.fetch_add(tokens as u64, Relaxed);
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.extend(std::iter::repeat_n(now, tokens));
        while r.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            r.pop_front();
        }
    }

    pub fn add_decode(&self, stats: &wgmoe::Stats) {
        self.decode_tokens
            .fetch_add(stats.generated_tokens.saturating_sub(1) as u64, Relaxed);
        self.decode_us.fetch_add((stats.decode_seconds * 1e6) as u64, Relaxed);
    }

    /// The text of `/metrics`, with the gauges the caller reads at the time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP wgmoe_requests_total Requests by endpoint and HTTP status.\n# TYPE wgmoe_requests_total counter"
        );
        for ((endpoint, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "wgmoe_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "wgmoe_prompt_tokens_total",
                "Prompt tokens of all requests.",
                &self.prompt_tokens,
            ),
            (
                "wgmoe_prompt_tokens_cached_total",
                "Prompt tokens found in a worker's KV cache (not run again).",
                &self.cached_prompt_tokens,
            ),
            (
                "wgmoe_completion_tokens_total",
                "Tokens generated.",
                &self.completion_tokens,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let now = Instant::now();
        let recent = {
            let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            r.iter().filter(|t| now.duration_since(**t) <= WINDOW).count()
        };
        let decode_s = self.decode_us.load(Relaxed) as f64 / 1e6;
        let mean = if decode_s > 0.0 {
            self.decode_tokens.load(Relaxed) as f64 / decode_s
        } else {
            0.0
        };
        let mut all: Vec<(&str, &str, f64)> = vec![
            (
                "wgmoe_tokens_per_second",
                "Tokens generated per second over the last 10 s, all sequences together.",
                recent as f64 / WINDOW.as_secs_f64(),
            ),
            (
                "wgmoe_decode_tokens_per_second_mean",
                "Mean decode speed of one sequence over finished generations.",
                mean,
            ),
        ];
        all.extend_from_slice(gauges);
        for (name, help, v) in all {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.ttft.write(
            &mut out,
            "wgmoe_time_to_first_token_seconds",
            "From a request's arrival in the queue to its first token.",
        );
        out
    }
}
