//! The node-loss controller's Prometheus counters (docs/metrics.md), served by
//! `crate::server::metrics::serve`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

static REPORTED: AtomicU64 = AtomicU64::new(0);
static RECREATED: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// What was done to one lost volume.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Marked and reported (counted once, when the mark is first written).
    Reported,
    /// Its claim and PV were deleted.
    Recreated,
    /// Lost, but the policy (off) or the claim (ignore) said to write nothing; counted once
    /// per volume and process.
    Left,
}

pub fn count(outcome: Outcome) {
    let c = match outcome {
        Outcome::Reported => &REPORTED,
        Outcome::Recreated => &RECREATED,
        Outcome::Left => &LEFT,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn count_error() {
    ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// The Prometheus text exposition of the counters.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP ferrovol_node_loss_volumes_total Local volumes found pinned to a deleted node, by what was done.\n",
    );
    out.push_str("# TYPE ferrovol_node_loss_volumes_total counter\n");
    for (action, c) in [
        ("reported", &REPORTED),
        ("recreated", &RECREATED),
        ("left", &LEFT),
    ] {
        let _ = writeln!(
            out,
            "ferrovol_node_loss_volumes_total{{action=\"{action}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    out.push_str(
        "# HELP ferrovol_node_loss_errors_total Reconciles of a volume that failed (retried).\n",
    );
    out.push_str("# TYPE ferrovol_node_loss_errors_total counter\n");
    let _ = writeln!(
        out,
        "ferrovol_node_loss_errors_total {}",
        ERRORS.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_every_action() {
        super::count(super::Outcome::Recreated);
        let text = super::render();
        for action in ["reported", "recreated", "left"] {
            assert!(
                text.contains(&format!(
                    "ferrovol_node_loss_volumes_total{{action=\"{action}\"}}"
                )),
                "{text}"
            );
        }
        assert!(text.contains("ferrovol_node_loss_errors_total "), "{text}");
    }
}
