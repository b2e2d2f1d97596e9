//! The node-loss controller's Prometheus counters (docs/metrics.md), kept in prometheus-client's
//! types like `crate::metrics` and served by `crate::server::metrics::serve`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::LazyLock;

/// What was done to one lost volume (labelled by `ACTIONS`, in this order).
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

const ACTIONS: [&str; 3] = ["reported", "recreated", "left"];

type ByAction = Family<Vec<(&'static str, &'static str)>, Counter>;

static VOLUMES: LazyLock<ByAction> = LazyLock::new(|| {
    let volumes = ByAction::default();
    // Every action is served from the start, 0 until it happens.
    for action in ACTIONS {
        drop(volumes.get_or_create(&vec![("action", action)]));
    }
    volumes
});
pub(super) static ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);

pub fn count(outcome: Outcome) {
    let action = ACTIONS[outcome as usize];
    VOLUMES.get_or_create(&vec![("action", action)]).inc();
}

pub fn render() -> String {
    crate::metrics::text("ferrovol_node_loss", |r| {
        r.register(
            "volumes",
            "Local volumes found pinned to a deleted node, by what was done",
            VOLUMES.clone(),
        );
        r.register(
            "errors",
            "Reconciles of a volume that failed (retried)",
            ERRORS.clone(),
        );
    })
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
        assert!(
            text.contains("ferrovol_node_loss_volumes_total{action=\"recreated\"} 1"),
            "{text}"
        );
        assert!(text.contains("ferrovol_node_loss_errors_total 0"), "{text}");
    }
}
