//! The metrics flags of `ferrovol serve` and `ferrovol node-loss`.

use crate::server::metrics;
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address: IP:PORT, or [IP]:PORT for either IP family (the
    /// chart passes the pod's own address, [$(POD_IP)]:PORT); off when unset.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_address)]
    pub metrics_address: Option<SocketAddr>,

    /// Metrics: a client must send its request headers within this time (e.g. 10s, 500ms); a
    /// connection that sends nothing is closed then, and any connection at twice this time.
    #[arg(long, default_value = "10s", value_parser = super::nodeloss::positive_duration)]
    pub metrics_timeout: Duration,

    /// Metrics: most connections served at once; further clients wait in the listen queue
    /// until one ends, so idle connections cannot use up the process's file descriptors.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_max_connections: u16,
}

impl MetricsArgs {
    /// Starts serving `GET /metrics` with the text `render` makes, in the background, when an
    /// address is set. Must be called inside the tokio runtime.
    pub fn spawn(&self, render: fn() -> String) {
        let Some(addr) = self.metrics_address else {
            return;
        };
        let (timeout, max) = (self.metrics_timeout, self.metrics_max_connections);
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, render, timeout, max.into()).await {
                tracing::error!(error = %e, %addr, "metrics server stopped");
            }
        });
    }
}

/// IP:PORT, or [IP]:PORT with an IPv4 or IPv6 address in the brackets.
fn parse_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let bad = || format!("{s:?} is not an address such as 10.0.0.5:9808 or [fd00::5]:9808");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .ok_or_else(bad)?;
    let ip: IpAddr = host.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::nodeloss::positive_duration;

    #[test]
    fn addresses_of_either_family_with_or_without_brackets() {
        let v4: SocketAddr = "10.0.0.5:9808".parse().unwrap();
        assert_eq!(parse_address("10.0.0.5:9808"), Ok(v4));
        assert_eq!(parse_address("[10.0.0.5]:9808"), Ok(v4));
        let v6: SocketAddr = "[fd00::5]:9808".parse().unwrap();
        assert_eq!(parse_address("[fd00::5]:9808"), Ok(v6));
        for bad in [
            "fd00::5:9808",
            "[]:9808",
            "[10.0.0.5]",
            "10.0.0.5",
            "[x]:1",
            ":9808",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_positive() {
        assert_eq!(positive_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(positive_duration("0s").is_err());
    }
}
