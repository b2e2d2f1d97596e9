//! The kubelet registration flags of `ferrovol serve`.

use crate::server::registration::Registration;
use crate::server::{BoxResult, Endpoint};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RegistrationArgs {
    /// Register the driver with the kubelet: serve the kubelet's plugin registration API on
    /// <DIR>/<driver name>-reg.sock, DIR being the kubelet's plugins_registry directory (e.g.
    /// /var/lib/kubelet/plugins_registry). Off when unset (node-driver-registrar's job then).
    #[arg(long, value_name = "DIR")]
    pub kubelet_registration_dir: Option<PathBuf>,

    /// The CSI socket path as the kubelet sees it, told to the kubelet at registration (like
    /// node-driver-registrar's --kubelet-registration-path). Default: the --endpoint path, right
    /// when the driver sees the host's paths.
    #[arg(long, value_name = "PATH", requires = "kubelet_registration_dir")]
    pub kubelet_csi_endpoint: Option<PathBuf>,
}

impl RegistrationArgs {
    /// What to register, or None when registration is off. The kubelet reaches drivers only
    /// over Unix sockets.
    pub fn registration(
        &self,
        driver_name: &str,
        endpoint: &Endpoint,
    ) -> BoxResult<Option<Registration>> {
        let Some(dir) = &self.kubelet_registration_dir else {
            return Ok(None);
        };
        let kubelet_csi_endpoint = match (&self.kubelet_csi_endpoint, endpoint) {
            (Some(path), _) | (None, Endpoint::Unix(path)) => path.clone(),
            (None, Endpoint::Tcp(_)) => {
                return Err("--kubelet-registration-dir needs a unix:// endpoint or \
                            --kubelet-csi-endpoint: the kubelet reaches drivers over Unix sockets"
                    .into())
            }
        };
        if !kubelet_csi_endpoint.is_absolute() {
            let path = kubelet_csi_endpoint.display();
            return Err(format!("--kubelet-csi-endpoint {path}: must be an absolute path").into());
        }
        Ok(Some(Registration {
            dir: super::absolute(dir),
            driver_name: driver_name.to_string(),
            kubelet_csi_endpoint,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: Option<&str>, csi: Option<&str>) -> RegistrationArgs {
        RegistrationArgs {
            kubelet_registration_dir: dir.map(PathBuf::from),
            kubelet_csi_endpoint: csi.map(PathBuf::from),
        }
    }

    #[test]
    fn the_kubelet_is_told_a_unix_socket_path() {
        let unix: Endpoint = "unix:///csi/csi.sock".parse().unwrap();
        let tcp: Endpoint = "tcp://127.0.0.1:10000".parse().unwrap();
        assert!(args(None, None).registration("d", &unix).unwrap().is_none());
        let reg = args(Some("/reg"), None)
            .registration("d", &unix)
            .unwrap()
            .unwrap();
        assert_eq!(reg.kubelet_csi_endpoint, PathBuf::from("/csi/csi.sock"));
        assert_eq!(reg.socket(), PathBuf::from("/reg/d-reg.sock"));
        let reg = args(Some("/reg"), Some("/var/lib/kubelet/plugins/d/csi.sock"))
            .registration("d", &tcp)
            .unwrap()
            .unwrap();
        assert_eq!(
            reg.kubelet_csi_endpoint,
            PathBuf::from("/var/lib/kubelet/plugins/d/csi.sock")
        );
        assert!(args(Some("/reg"), None).registration("d", &tcp).is_err());
        assert!(args(Some("/reg"), Some("csi.sock"))
            .registration("d", &unix)
            .is_err());
    }
}
