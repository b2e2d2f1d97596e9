//! `ferrovol node-loss`: the controller for local volumes whose Node object is deleted
//! (src/nodeloss, docs/install.md "Node loss").

use super::serve::{init_logging, LogFormat};
use crate::nodeloss::{controller, Options, Policy};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct NodeLossArgs {
    /// What to do with the local PVs of a deleted Node: off (log only), report (annotate the
    /// PV and claim ferrovol.io/node-lost=<node>, Warning event, metric), recreate (report, and
    /// delete opted-in claims and their PVs so their workload provisions new volumes elsewhere).
    #[arg(long, value_enum, default_value = "off")]
    pub policy: Policy,

    /// With --policy recreate: also delete claims that carry no ferrovol.io/node-loss annotation
    /// (claims annotated `report` or `ignore` are still spared).
    #[arg(long)]
    pub recreate_all: bool,

    /// How long a Node must stay deleted before its volumes are touched (e.g. 60s, 5m, 0s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Re-check every local PV this often, for Node deletions the watch missed.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// Kubeconfig to use; without it the in-cluster service account (or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,

    /// Log format: text for people, json for log pipelines. Level from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub fn run(args: NodeLossArgs) -> crate::server::BoxResult<()> {
    init_logging(args.log_format);
    if args.recreate_all && args.policy != Policy::Recreate {
        return Err("--recreate-all needs --policy recreate".into());
    }
    if args.resync_period.is_zero() {
        return Err("--resync-period must be positive".into());
    }
    let opts = Options {
        policy: args.policy,
        recreate_all: args.recreate_all,
        grace: args.grace_period,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = client(args.kubeconfig.as_deref()).await?;
        args.metrics.spawn(crate::nodeloss::metrics::render);
        let ctx = controller::Context::new(client, opts, args.resync_period);
        controller::run(ctx).await;
        Ok(())
    })
}

async fn client(kubeconfig: Option<&std::path::Path>) -> crate::server::BoxResult<kube::Client> {
    let config = match kubeconfig {
        Some(path) => async {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
        }
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?,
        None => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration (in-cluster or ~/.kube/config): {e}")
        })?,
    };
    Ok(kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?)
}

/// A duration that must not be zero (a timeout).
pub(super) fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: the duration must be positive")),
        d => Ok(d),
    }
}

/// `90s`, `500ms`, `5m`, `1h`, or plain seconds; zero allowed.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 60s, 500ms, 5m or 1h");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn policy_is_off_unless_asked() {
        let cli = crate::cli::Cli::try_parse_from(["ferrovol", "node-loss"]).unwrap();
        let crate::cli::Command::NodeLoss(a) = cli.command else {
            panic!("not node-loss")
        };
        assert_eq!(a.policy, Policy::Off);
        assert!(!a.recreate_all);
        let cli =
            crate::cli::Cli::try_parse_from(["ferrovol", "node-loss", "--policy", "recreate"])
                .unwrap();
        let crate::cli::Command::NodeLoss(a) = cli.command else {
            panic!("not node-loss")
        };
        assert_eq!(a.policy, Policy::Recreate);
    }
}
