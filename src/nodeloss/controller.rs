//! The kube-runtime controller over PersistentVolumes. A PV is reconciled when it, its Node or
//! its claim changes (a late opt-in annotation takes effect at once), every resync period, and
//! once at start, which finds nodes deleted while the controller was down.
//!
//! Whether a node exists is always asked of the API server (a metadata GET), never of a cache:
//! acting on a stale "gone" would delete live volumes, and a GET per local PV is cheap.

use super::act::{claim_name, err, Error};
use super::decide::{
    claim_state, decide, mark, opt_in, pinned_node, ClaimState, Decision, NodeState, OptIn, Options,
};
use super::metrics::{self, Outcome};
use super::CONTROLLER_NAME;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Wait after a failed reconcile before trying that PV again.
const RETRY: Duration = Duration::from_secs(10);

pub struct Context {
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    opts: Options,
    /// Re-check PVs of live nodes this often: a Node deleted while the watch was reconnecting
    /// sends no event.
    resync: Duration,
    /// When each missing node was first seen missing (the grace period counts from here; a
    /// restart starts it again, which only ever delays).
    missing_since: Mutex<HashMap<String, Instant>>,
    /// PVs already logged and counted as left alone, so each is counted once.
    left: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(client: Client, opts: Options, resync: Duration) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            opts,
            resync,
            missing_since: Mutex::default(),
            left: Mutex::default(),
        }
    }

    async fn node_state(&self, pv: &str, node: &str) -> Result<NodeState, Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let found = (nodes.get_metadata_opt(node).await)
            .map_err(err(pv, format!("looking up node {node}")))?;
        let mut missing = self.missing_since.lock().expect("node-loss lock poisoned");
        if found.is_some() {
            missing.remove(node);
            return Ok(NodeState::Present);
        }
        let since = *missing.entry(node.to_string()).or_insert_with(Instant::now);
        Ok(NodeState::Missing(since.elapsed()))
    }

    async fn claim_of(
        &self,
        pv: &PersistentVolume,
    ) -> Result<Option<PersistentVolumeClaim>, Error> {
        let cref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let Some((ns, name)) = cref.and_then(|c| c.namespace.as_deref().zip(c.name.as_deref()))
        else {
            return Ok(None);
        };
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns);
        let found = claims.get_opt(name).await;
        found.map_err(err(&pv.name_any(), format!("reading claim {ns}/{name}")))
    }

    fn left_alone(&self) -> MutexGuard<'_, HashSet<String>> {
        self.left.lock().expect("node-loss lock poisoned")
    }

    /// Counts and logs a lost volume left alone, once per PV and process.
    fn leave(&self, pv: &str, node: &str, why: &str) {
        if self.left_alone().insert(pv.to_string()) {
            metrics::count(Outcome::Left);
            tracing::info!(
                pv,
                node,
                why,
                policy = self.opts.policy.as_str(),
                "volume pinned to a deleted node left as is"
            );
        }
    }
}

async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(node) = pinned_node(&pv) else {
        return Ok(Action::await_change());
    };
    let name = pv.name_any();
    let state = ctx.node_state(&name, node).await?;
    // The cached PV may predate our own last write (a claim event can reconcile it before the
    // PV's own event arrives): a lost volume is decided on a fresh read, so it is marked,
    // evented and counted once.
    let pv = if state == NodeState::Present {
        pv
    } else {
        let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
        let fresh = (pvs.get_opt(&name).await).map_err(err(&name, "reading the PV"))?;
        let Some(fresh) = fresh else {
            return Ok(Action::await_change());
        };
        Arc::new(fresh)
    };
    let Some(node) = pinned_node(&pv) else {
        return Ok(Action::await_change());
    };
    // The claim matters for a lost node, and for a present one only to clear a mark.
    let found = if state != NodeState::Present || mark(&*pv).is_some() {
        ctx.claim_of(&pv).await?
    } else {
        None
    };
    let claim = claim_state(&pv, found.as_ref());
    let bound = found
        .as_ref()
        .filter(|_| matches!(claim, ClaimState::Bound(_)));
    if let Some(OptIn::Invalid(v)) = bound.map(opt_in) {
        tracing::warn!(pv = %name, claim = %claim_name(bound.unwrap()), value = %v,
            "unknown ferrovol.io/node-loss value (recreate, report or ignore): treated as report");
    }
    let decision = decide(&ctx.opts, &pv, state, claim);
    tracing::debug!(pv = %name, node, ?state, ?decision, "reconciled");
    match decision {
        Decision::NotOurs => return Ok(Action::await_change()),
        Decision::Wait(left) => {
            tracing::info!(pv = %name, node, wait = ?left, "the volume's node is deleted; acting after the grace period");
            return Ok(Action::requeue(left));
        }
        Decision::NodePresent { unmark } => {
            if unmark {
                ctx.unmark(&pv, bound).await?;
            }
            ctx.left_alone().remove(&name);
        }
        Decision::Leave(why) => ctx.leave(&name, node, why),
        Decision::Report => drop(ctx.report(&pv, bound, node).await?),
        Decision::Recreate { claim } => {
            let claim = bound.filter(|_| claim);
            ctx.recreate(&pv, claim, node).await?
        }
    }
    Ok(Action::requeue(ctx.resync))
}

fn error_policy(pv: Arc<PersistentVolume>, e: &Error, _ctx: Arc<Context>) -> Action {
    metrics::ERRORS.inc();
    tracing::error!(pv = %pv.name_any(), error = %e, retry = ?RETRY, "node-loss reconcile failed");
    Action::requeue(RETRY)
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(ctx: Context) {
    let client = ctx.client.clone();
    tracing::info!(
        policy = ctx.opts.policy.as_str(),
        recreate_all = ctx.opts.recreate_all,
        grace = ?ctx.opts.grace,
        resync = ?ctx.resync,
        "node-loss controller starting"
    );
    let controller = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(4));
    let on_node = controller.store();
    let controller = controller
        // A Node event (its deletion above all) reconciles the PVs pinned to it.
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |node: Node| {
                let node = node.name_any();
                let pinned = |pv: &Arc<PersistentVolume>| pinned_node(pv) == Some(node.as_str());
                let pvs = on_node.state().into_iter().filter(pinned);
                pvs.map(|pv| ObjectRef::from_obj(&*pv)).collect::<Vec<_>>()
            },
        )
        // A claim event reconciles its PV, so an opt-in annotation added late takes effect.
        .watches(
            Api::<PersistentVolumeClaim>::all(client),
            watcher::Config::default(),
            |pvc: PersistentVolumeClaim| {
                pvc.spec
                    .and_then(|s| s.volume_name)
                    .filter(|v| !v.is_empty())
                    .map(|v| ObjectRef::<PersistentVolume>::new(&v))
            },
        )
        .shutdown_on_signal();
    let mut results = std::pin::pin!(controller.run(reconcile, error_policy, Arc::new(ctx)));
    while let Some(res) = results.next().await {
        match res {
            Ok(_) => {}
            // Reconcile errors were logged by error_policy with the PV and the cause.
            Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
            Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                tracing::debug!(object = %r, "reconcile of a PV that is gone skipped")
            }
            Err(e) => tracing::warn!(error = %e, "node-loss controller: watch or queue error"),
        }
    }
    tracing::info!("node-loss controller stopped");
}
