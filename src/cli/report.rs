//! `wgmoe report`: merge benchmark records from any number of machines and runs into one markdown
//! report and SVG charts. It reads what `wgmoe bench -o json|jsonl` and `wgmoe bench-kernels
//! -o json|jsonl` write, and llama-bench's `-o json|jsonl`, so wgmoe and llama.cpp numbers for
//! the same model and device land in one table.
//!
//! Model tables: one per workload (llama.cpp's model description, e.g. "qwen3moe 30B.A3B Q4_K -
//! Medium"), a row per test, a column per device and runtime; cells are tokens/s mean ± sd, with
//! the share of the bandwidth roofline where wgmoe measured one. Kernel tables: one per shape and
//! weight format, a row per kernel, a column per device; cells are GB/s and the share of that
//! device's measured copy bandwidth.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wgmoe::internals::bench::{mean, stddev};
use wgmoe::internals::record;
use wgmoe::{Error, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Record files: `wgmoe bench` / `wgmoe bench-kernels` output (-o json or jsonl) and
    /// llama-bench's (-o json or jsonl), from any machines and runs.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the markdown here instead of standard output.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Also write SVG charts into this folder: tg.svg and pp.svg (tokens/s per workload, a series
    /// per device), kernels.svg (each kernel's GB/s as a share of each device's bandwidth).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Where and how a number was measured: one column of the tables, one series of the charts.
/// Runs that differ in any of these stay apart; runs that agree pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub device: String,
    /// wgmoe or llama.cpp, with the settings that change what is measured (KV precision, a GPU
    /// memory budget, how a file's weights were loaded) where they are not the defaults.
    pub runtime: String,
    pub build: String,
}

impl Column {
    /// The column's name; with the build when the inputs hold several builds of one device and
    /// runtime.
    pub fn label(&self, with_build: bool) -> String {
        match with_build {
            true => format!("{} · {} @ {}", self.device, self.runtime, self.build),
            false => format!("{} · {}", self.device, self.runtime),
        }
    }
}

/// One model test of one column (several records of it are pooled).
#[derive(Clone, Debug, Default)]
struct TestCell {
    /// Mean and sd of each record, with its samples.
    runs: Vec<(f64, f64, Vec<f64>)>,
    roofline: Option<f64>,
}

impl TestCell {
    /// Mean ± sd: a record's own; over the pooled samples of several when every one has its
    /// samples; else the mean and sd of their means.
    fn stats(&self) -> (f64, f64) {
        if let [(mean, sd, _)] = self.runs.as_slice() {
            return (*mean, *sd);
        }
        if self.runs.iter().all(|r| !r.2.is_empty()) {
            let samples: Vec<f64> = self.runs.iter().flat_map(|r| r.2.iter().copied()).collect();
            return (mean(&samples), stddev(&samples));
        }
        let means: Vec<f64> = self.runs.iter().map(|r| r.0).collect();
        (mean(&means), stddev(&means))
    }
}

/// The cells of `key`'s row; a new row goes at the end, so rows keep the order first seen.
fn row_of<K: PartialEq, C: Default>(rows: &mut Vec<(K, C)>, key: K) -> &mut C {
    let i = match rows.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            rows.push((key, C::default()));
            rows.len() - 1
        }
    };
    &mut rows[i].1
}

/// Several runs of one kernel on one column: mean GB/s and share, the worst NMSE, and passed only
/// if every run passed.
fn kernel_summary(runs: &[KernelCell]) -> KernelCell {
    let gbs: Vec<f64> = runs.iter().map(|k| k.gbs).collect();
    let fractions: Option<Vec<f64>> = runs.iter().map(|k| k.fraction).collect();
    KernelCell {
        gbs: mean(&gbs),
        fraction: fractions.map(|f| mean(&f)),
        nmse: runs.iter().filter_map(|k| k.nmse).reduce(f64::max),
        passed: runs
            .iter()
            .map(|k| k.passed)
            .collect::<Option<Vec<bool>>>()
            .map(|p| p.iter().all(|&x| x)),
    }
}

/// One measured kernel of one column (one record; several are averaged).
#[derive(Clone, Debug)]
struct KernelCell {
    gbs: f64,
    fraction: Option<f64>,
    nmse: Option<f64>,
    /// The correctness check's verdict (NMSE under the kernel's bound, or the exact check).
    passed: Option<bool>,
}

/// Everything the inputs hold, grouped for the tables.
#[derive(Default)]
pub struct Merged {
    /// Per column, in the order the inputs first name them: what the machine is.
    machines: Vec<(Column, Vec<(String, String)>)>,
    /// workload -> test -> column -> cell; tests keep the order first seen.
    tests: BTreeMap<String, Vec<(String, BTreeMap<Column, TestCell>)>>,
    /// (shape, weight format) -> (kernel, detail) -> column -> runs.
    kernels: BTreeMap<(String, String), Vec<((String, String), BTreeMap<Column, Vec<KernelCell>>)>>,
    /// Records read, and those that were neither kind.
    pub read: usize,
    pub skipped: usize,
}

fn text(r: &Map<String, Value>, k: &str) -> String {
    match r.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn num(r: &Map<String, Value>, k: &str) -> Option<f64> {
    match r.get(k)? {
        Value::Number(n) => n.as_f64(),
        // CSV-born JSON and some tools write numbers as strings.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

fn nums(r: &Map<String, Value>, k: &str) -> Vec<f64> {
    r.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The column of a record: wgmoe's say adapter, backend and `--portable`; llama-bench's say
/// gpu_info (cpu_info for CPU-only runs) and its backends.
fn column(r: &Map<String, Value>) -> Column {
    let build = text(r, "build_commit");
    if r.contains_key("record") {
        let portable = r.get("portable").and_then(Value::as_bool).unwrap_or(false);
        let backend = text(r, "backend");
        let device = format!(
            "{} ({backend}{})",
            text(r, "adapter"),
            if portable { ", portable" } else { "" }
        );
        Column {
            device,
            runtime: wgmoe_runtime(r),
            build,
        }
    } else {
        let gpu = text(r, "gpu_info");
        let device = if gpu.is_empty() { text(r, "cpu_info") } else { gpu };
        Column {
            device: format!("{device} ({})", text(r, "backends")),
            runtime: "llama.cpp".into(),
            build,
        }
    }
}

/// "wgmoe", with what the run changed from the defaults: "wgmoe, KV q8, 4 GiB GPU memory".
fn wgmoe_runtime(r: &Map<String, Value>) -> String {
    let mut parts = vec!["wgmoe".to_string()];
    // A model run's cache precision is a setting; a kernel record's is part of its case.
    let kv = text(r, "kv_cache");
    if text(r, "record") == record::BENCH && !kv.is_empty() && kv != "f16" {
        parts.push(format!("KV {kv}"));
    }
    let limited = [("gpu_memory_gib", " GiB GPU memory"), ("expert_slots", " expert slots")]
        .iter()
        .filter_map(|(k, what)| num(r, k).map(|v| format!("{v}{what}")))
        .collect::<Vec<_>>();
    if !limited.is_empty() {
        parts.extend(limited);
        parts.push(format!("{} cache", text(r, "cache_policy")));
    }
    if r.get("dequantize").and_then(Value::as_bool) == Some(true) {
        parts.push("dequantized".into());
    }
    if let Some(Value::String(q)) = r.get("quantize") {
        parts.push(format!("quantized to {q}"));
    }
    parts.join(", ")
}

/// llama-bench's test name: pp512, tg128, pp512+tg128, with " @ d4096" at a depth.
fn test_name(r: &Map<String, Value>) -> String {
    if let Some(Value::String(t)) = r.get("test") {
        return t.clone();
    }
    let n = |k: &str| num(r, k).unwrap_or(0.0) as u64;
    let (p, g, d) = (n("n_prompt"), n("n_gen"), n("n_depth"));
    let mut t = match (p, g) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    };
    if d > 0 {
        t += &format!(" @ d{d}");
    }
    t
}

/// The lines of the devices table that say what a column's machine is.
fn machine_facts(r: &Map<String, Value>) -> Vec<(String, String)> {
    let keys: &[&str] = if r.contains_key("record") {
        &[
            "vendor_id",
            "device_id",
            "device_type",
            "driver",
            "driver_info",
            "os",
            "cpu_info",
            "wgpu_version",
            "subgroup_min",
            "subgroup_max",
            "f16",
            "coop_matrix",
            "build_commit",
        ]
    } else {
        &["cpu_info", "build_commit", "build_number", "n_threads", "flash_attn"]
    };
    keys.iter()
        .map(|k| (k.to_string(), text(r, k)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

impl Merged {
    /// Add every record of one file.
    pub fn add(&mut self, records: Vec<Map<String, Value>>) {
        for r in records {
            self.read += 1;
            let kind = r.get("record").and_then(Value::as_str).map(str::to_string);
            let col = column(&r);
            match kind.as_deref() {
                Some(record::KERNEL) => self.add_kernel(&r, &col),
                Some(record::BENCH) | None if r.contains_key("avg_ts") && r.contains_key("model_type") => {
                    self.add_test(&r, &col)
                }
                _ => {
                    self.skipped += 1;
                    continue;
                }
            }
            if !self.machines.iter().any(|(c, _)| *c == col) {
                self.machines.push((col, machine_facts(&r)));
            }
        }
    }

    fn add_test(&mut self, r: &Map<String, Value>, col: &Column) {
        let workload = text(r, "model_type");
        let test = test_name(r);
        let run = (
            num(r, "avg_ts").unwrap_or(0.0),
            num(r, "stddev_ts").unwrap_or(0.0),
            nums(r, "samples_ts"),
        );
        let cell = row_of(self.tests.entry(workload).or_default(), test)
            .entry(col.clone())
            .or_default();
        cell.runs.push(run);
        cell.roofline = cell.roofline.or(num(r, "roofline_ts"));
    }

    fn add_kernel(&mut self, r: &Map<String, Value>, col: &Column) {
        let key = (text(r, "shape"), text(r, "weight_format"));
        let row = (text(r, "kernel"), text(r, "detail"));
        let cell = KernelCell {
            gbs: num(r, "gbs").unwrap_or(0.0),
            fraction: num(r, "bw_fraction"),
            nmse: num(r, "nmse"),
            passed: r.get("passed").and_then(Value::as_bool),
        };
        row_of(self.kernels.entry(key).or_default(), row)
            .entry(col.clone())
            .or_default()
            .push(cell);
    }

    /// Every column, in the order the inputs first name them.
    pub fn columns(&self) -> Vec<Column> {
        self.machines.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Whether the inputs hold several builds of one device and runtime (then columns say which).
    fn with_build(&self) -> bool {
        let same_but_build =
            |c: &Column, o: &Column| c.device == o.device && c.runtime == o.runtime && c.build != o.build;
        self.machines
            .iter()
            .any(|(c, _)| self.machines.iter().any(|(o, _)| same_but_build(c, o)))
    }

    /// The markdown report.
    pub fn markdown(&self, sources: &[String]) -> String {
        let columns = self.columns();
        let wb = self.with_build();
        let mut s = String::from("# wgmoe report\n\n");
        s += &format!(
            "{} records from {}{}.\n\n",
            self.read,
            sources.join(", "),
            if self.skipped > 0 {
                format!(" ({} of another kind skipped)", self.skipped)
            } else {
                String::new()
            }
        );
        s += "## Devices\n\n| device | runtime | facts |\n| --- | --- | --- |\n";
        for (c, facts) in &self.machines {
            let facts = facts
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            s += &format!("| {} | {} | {} |\n", cell_text(&c.device), c.runtime, cell_text(&facts));
        }
        for (workload, tests) in &self.tests {
            s += &format!("\n## {workload}\n\ntokens/s, mean ± sd over repetitions");
            s += " (with the share of the bandwidth roofline where wgmoe measured it)\n\n";
            s += &grid(
                tests,
                &columns,
                wb,
                &["test"],
                |t| vec![t.clone()],
                |cell| {
                    let (m, sd) = cell.stats();
                    let roof = cell
                        .roofline
                        .filter(|r| *r > 0.0)
                        .map_or(String::new(), |r| format!(" ({:.0}% of roofline)", 100.0 * m / r));
                    format!("{m:.2} ± {sd:.2}{roof}")
                },
            );
        }
        for ((shape, format), rows) in &self.kernels {
            s += &format!(
                "\n## Kernels: {shape}, {format} weights\n\nGB/s (share of the device's copy bandwidth); \
                 NMSE against the f64 CPU reference, or \"exact\" for kernels checked token for token\n\n"
            );
            let lead = |(kernel, detail): &(String, String)| vec![kernel.clone(), cell_text(detail)];
            s += &grid(rows, &columns, wb, &["kernel", "detail"], lead, |runs| {
                let k = kernel_summary(runs);
                let share = k.fraction.map_or(String::new(), |f| format!(" ({:.0}%)", 100.0 * f));
                let check = match (k.nmse, k.passed) {
                    (_, Some(false)) => ", **check failed**".to_string(),
                    (Some(e), _) => format!(", NMSE {e:.1e}"),
                    (None, Some(true)) => ", exact".to_string(),
                    (None, None) => String::new(),
                };
                format!("{:.1}{share}{check}", k.gbs)
            });
        }
        s
    }

    /// Charts into `dir`: tg.svg and pp.svg when there are such tests, kernels.svg when there are
    /// kernel records. Returns the files written.
    pub fn svgs(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let columns = self.columns();
        let mut written = Vec::new();
        for (file, title, decode) in [
            ("tg.svg", "Generation (tg), tokens/s", true),
            ("pp.svg", "Prompt processing (pp), tokens/s", false),
        ] {
            let mut categories = Vec::new();
            let mut values: Vec<Vec<Option<f64>>> = vec![vec![]; columns.len()];
            for (workload, tests) in &self.tests {
                for (test, cells) in tests {
                    if test.starts_with("tg") != decode {
                        continue;
                    }
                    categories.push(format!("{workload} {test}"));
                    for (j, c) in columns.iter().enumerate() {
                        values[j].push(cells.get(c).map(|cell| cell.stats().0));
                    }
                }
            }
            if categories.is_empty() {
                continue;
            }
            let path = dir.join(file);
            bar_chart(
                &path,
                title,
                "tokens/s",
                &categories,
                &series(&columns, values, self.with_build()),
            )?;
            written.push(path);
        }
        let mut categories = Vec::new();
        let mut values: Vec<Vec<Option<f64>>> = vec![vec![]; columns.len()];
        for ((shape, format), rows) in &self.kernels {
            for ((kernel, detail), cells) in rows {
                categories.push(format!("{shape} {format} {kernel} {detail}"));
                for (j, c) in columns.iter().enumerate() {
                    values[j].push(
                        cells
                            .get(c)
                            .and_then(|runs| kernel_summary(runs).fraction)
                            .map(|f| 100.0 * f),
                    );
                }
            }
        }
        if !categories.is_empty() {
            let path = dir.join("kernels.svg");
            let title = "Kernel bandwidth, % of each device's copy bandwidth";
            bar_chart(
                &path,
                title,
                "% of copy bandwidth",
                &categories,
                &series(&columns, values, self.with_build()),
            )?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The columns that have a value, as chart series.
fn series(columns: &[Column], values: Vec<Vec<Option<f64>>>, with_build: bool) -> Vec<(String, Vec<Option<f64>>)> {
    columns
        .iter()
        .zip(values)
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .map(|(c, v)| (c.label(with_build), v))
        .collect()
}

/// A markdown table of `rows`: the `lead` columns (`lead_cells` of each row's key), then one per
/// column of `columns` that has a cell in some row (`cell` of it, "-" where a row has none).
fn grid<K, C>(
    rows: &[(K, BTreeMap<Column, C>)],
    columns: &[Column],
    with_build: bool,
    lead: &[&str],
    lead_cells: impl Fn(&K) -> Vec<String>,
    cell: impl Fn(&C) -> String,
) -> String {
    let used: Vec<&Column> = columns
        .iter()
        .filter(|c| rows.iter().any(|(_, cells)| cells.contains_key(c)))
        .collect();
    let line = |cells: Vec<String>| format!("|{}\n", cells.iter().map(|c| format!(" {c} |")).collect::<String>());
    let header = lead.iter().map(|h| h.to_string());
    let mut s = line(
        header
            .chain(used.iter().map(|c| cell_text(&c.label(with_build))))
            .collect(),
    );
    s += &line(
        lead.iter()
            .map(|_| "---".to_string())
            .chain(used.iter().map(|_| "---:".to_string()))
            .collect(),
    );
    for (key, cells) in rows {
        let values = used.iter().map(|c| cells.get(c).map_or("-".to_string(), &cell));
        s += &line(lead_cells(key).into_iter().chain(values).collect());
    }
    s
}

/// A markdown cell's text: no bars or line breaks.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Horizontal grouped bars: a group per category, a bar (and a legend entry) per series.
fn bar_chart(
    path: &Path,
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::io(path, std::io::Error::other(e.to_string()));
    let n = categories.len();
    let k = series.len().max(1);
    let bar = 14u32;
    let group = bar * k as u32 + 12;
    let legend = 22 * k as u32 + 44;
    let height = 110 + group * n as u32 + legend;
    let label_width = categories.iter().map(|c| c.chars().count()).max().unwrap_or(10) as u32 * 7 + 20;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let root = SVGBackend::new(path, (1100 + label_width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (plot, legend_area) = root.split_vertically(height - legend);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..top, 0f64..n as f64)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(unit)
        .draw()
        .map_err(|e| fail(&e))?;
    // The category names, right-aligned left of the axis, top to bottom.
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, (n - i) as f64 - 0.5));
        plot.draw(&Text::new(name.clone(), (x - 6, y), style.clone()))
            .map_err(|e| fail(&e))?;
    }
    // Each bar takes its share of its category's height, the first series on top.
    let slot = 1.0 / (k as f64 + 0.8);
    for (j, (_, values)) in series.iter().enumerate() {
        let color = Palette99::pick(j).mix(0.9);
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            let y1 = (n - i) as f64 - 0.4 * slot - j as f64 * slot;
            Some(Rectangle::new([(0.0, y1 - slot * 0.9), (v, y1)], color.filled()))
        });
        chart.draw_series(bars).map_err(|e| fail(&e))?;
    }
    // The legend sits below the plot (over the bars it would hide some): one entry per series.
    let mut legend_chart = ChartBuilder::on(&legend_area)
        .margin(12)
        .build_cartesian_2d(0f64..1.0, 0f64..1.0)
        .map_err(|e| fail(&e))?;
    for (j, (name, _)) in series.iter().enumerate() {
        let color = Palette99::pick(j).mix(0.9);
        legend_chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(|e| fail(&e))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    legend_chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Read every file, merge, write the markdown (and the charts).
pub fn run(args: &ReportArgs) -> Result<()> {
    let mut merged = Merged::default();
    let mut sources = Vec::new();
    for f in &args.files {
        let text = wgmoe::internals::input::read_text(f, 1 << 30, "record file")?;
        merged.add(record::parse(&text, &f.display().to_string())?);
        sources.push(f.display().to_string());
    }
    if merged.read == merged.skipped {
        return Err(Error::bad_input(format!(
            "no benchmark records in {}: give files written by `wgmoe bench -o json`, `wgmoe bench-kernels -o json` or `llama-bench -o json`",
            sources.join(", ")
        )));
    }
    let md = merged.markdown(&sources);
    match &args.output {
        Some(path) => std::fs::write(path, &md).map_err(|e| Error::io(path, e))?,
        None => print!("{md}"),
    }
    if let Some(dir) = &args.svg {
        for p in merged.svgs(dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}
