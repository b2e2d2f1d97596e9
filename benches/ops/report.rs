//! Samples, the result rows (each a value against a baseline measured in the same run), the
//! table printed at the end and the JSON written beside it.

use serde_json::{json, Map, Value};
use std::time::Duration;

/// Completed operations over a wall-clock span, with each operation's latency; possibly the
/// sum of several interleaved rounds.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub ops: usize,
    pub elapsed: Duration,
    /// Sorted ascending.
    pub lat: Vec<Duration>,
    /// Operations per second of each round merged into this run.
    pub rounds: Vec<f64>,
}

impl Run {
    pub fn new(mut lat: Vec<Duration>, elapsed: Duration) -> Self {
        lat.sort_unstable();
        let mut run = Run {
            ops: lat.len(),
            elapsed,
            lat,
            rounds: Vec::new(),
        };
        run.rounds.push(run.rate());
        run
    }

    /// Adds one more round.
    pub fn merge(&mut self, other: Run) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.rounds.extend(other.rounds);
        self.lat.extend(other.lat);
        self.lat.sort_unstable();
    }

    /// Median of the rounds' rates: one slow spell (another process hogging the disk or the
    /// cores) moves it less than it moves the overall rate.
    pub fn median_rate(&self) -> f64 {
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    /// Slowest round's rate / fastest round's rate (1.0: perfectly steady).
    pub fn steadiness(&self) -> f64 {
        let max = self.rounds.iter().copied().fold(f64::NAN, f64::max);
        let min = self.rounds.iter().copied().fold(f64::NAN, f64::min);
        min / max
    }

    pub fn json(&self) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({
            "ops": self.ops,
            "seconds": self.elapsed.as_secs_f64(),
            "per_s": num(self.rate()),
            "median_round_per_s": num(self.median_rate()),
            "p50_us": num(self.pct_us(50.0)),
            "p95_us": num(self.pct_us(95.0)),
            "p99_us": num(self.pct_us(99.0)),
            "round_per_s": self.rounds,
        })
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in microseconds (nearest rank).
    pub fn pct_us(&self, p: f64) -> f64 {
        percentile_us(&self.lat, p)
    }
}

pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

pub fn sorted_mut(v: &mut [Duration]) -> &[Duration] {
    v.sort_unstable();
    v
}

/// One figure, the baseline it is judged against, and value / baseline.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline_label: String,
    pub baseline: f64,
    /// Whether a higher value is the better one (throughput) or a lower one (latency, memory).
    pub higher_is_better: bool,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.value / self.baseline
    }
}

#[derive(Default)]
pub struct Report {
    section: &'static str,
    pub rows: Vec<Row>,
    /// Raw measurements by name, for the JSON.
    pub series: Map<String, Value>,
    pub env: Map<String, Value>,
    pub notes: Vec<String>,
    pub goals: Vec<(String, bool, String)>,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_string()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// Rows added from now on belong to `section`.
    pub fn section(&mut self, section: &'static str) {
        self.section = section;
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        key: &str,
        label: &str,
        value: f64,
        unit: &'static str,
        baseline_label: &str,
        baseline: f64,
        higher_is_better: bool,
    ) {
        let row = Row {
            section: self.section,
            key: key.to_string(),
            label: label.to_string(),
            value,
            unit,
            baseline_label: baseline_label.to_string(),
            baseline,
            higher_is_better,
        };
        eprintln!(
            "ops:   {:<44} {:>10} {:<7} ratio {:>7} vs {}",
            row.label,
            fmt_num(row.value),
            row.unit,
            fmt_num(row.ratio()),
            row.baseline_label
        );
        self.rows.push(row);
    }

    pub fn series(&mut self, name: &str, run: &Run) {
        self.series.insert(name.to_string(), run.json());
    }

    pub fn env(&mut self, key: &str, value: impl Into<Value>) {
        self.env.insert(key.to_string(), value.into());
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn goal(&mut self, name: &str, met: bool, detail: String) {
        self.goals.push((name.to_string(), met, detail));
    }

    pub fn table(&self) -> String {
        let w_label = self
            .rows
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(10)
            .max(11);
        let w_base = self
            .rows
            .iter()
            .map(|r| r.baseline_label.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = String::new();
        let head = format!(
            "{:<w_label$}  {:>10}  {:<7}  {:<w_base$}  {:>10}  {:>8}  {}",
            "measurement", "value", "unit", "baseline", "base val", "ratio", "better"
        );
        out.push_str(&head);
        out.push('\n');
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                out.push_str(&format!("-- {section} "));
                out.push_str(&"-".repeat(head.len().saturating_sub(section.len() + 4)));
                out.push('\n');
            }
            out.push_str(&format!(
                "{:<w_label$}  {:>10}  {:<7}  {:<w_base$}  {:>10}  {:>8}  {}\n",
                r.label,
                fmt_num(r.value),
                r.unit,
                r.baseline_label,
                fmt_num(r.baseline),
                fmt_num(r.ratio()),
                if r.higher_is_better {
                    "higher"
                } else {
                    "lower"
                },
            ));
        }
        out.push_str(
            "ratio = value / baseline value, both measured in this run; rates are the median of \
             interleaved rounds, latencies are over all samples.\n",
        );
        if !self.goals.is_empty() {
            out.push('\n');
            for (name, met, detail) in &self.goals {
                out.push_str(&format!(
                    "goal {name}: {} ({detail})\n",
                    if *met { "MET" } else { "NOT MET" }
                ));
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("note: {n}\n"));
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({
            "benchmark": "ferrovol ops",
            "environment": Value::Object(self.env.clone()),
            "results": self.rows.iter().map(|r| json!({
                "section": r.section,
                "key": r.key,
                "label": r.label,
                "value": num(r.value),
                "unit": r.unit,
                "baseline": r.baseline_label,
                "baseline_value": num(r.baseline),
                "ratio": num(r.ratio()),
                "higher_is_better": r.higher_is_better,
            })).collect::<Vec<_>>(),
            "goals": self.goals.iter().map(|(n, met, d)| json!({"goal": n, "met": met, "detail": d})).collect::<Vec<_>>(),
            "notes": self.notes,
            "measurements": Value::Object(self.series.clone()),
        })
    }
}
