//! CSI Identity service.

use super::{rpc, rpc_inline, Driver};
use crate::backend::Expansion;
use crate::error::Result;
use crate::proto as csi;
use csi::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct IdentityService {
    pub driver: Arc<Driver>,
    /// Whether this process serves the Controller service.
    pub controller: bool,
}

fn service_cap(t: service::Type) -> csi::PluginCapability {
    csi::PluginCapability {
        r#type: Some(Type::Service(Service { r#type: t as i32 })),
    }
}

#[tonic::async_trait]
impl csi::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _req: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        rpc_inline("GetPluginInfo", || {
            Ok(csi::GetPluginInfoResponse {
                name: self.driver.name.clone(),
                vendor_version: env!("CARGO_PKG_VERSION").to_string(),
                manifest: Default::default(),
            })
        })
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        let d = &self.driver;
        rpc_inline("GetPluginCapabilities", || {
            let mut capabilities = Vec::new();
            if self.controller {
                capabilities.push(service_cap(service::Type::ControllerService));
            }
            if d.any(|c| c.reach == crate::backend::Reach::NodeLocal) {
                capabilities.push(service_cap(service::Type::VolumeAccessibilityConstraints));
            }
            if d.any(|c| c.expansion != Expansion::None) {
                let t = if d.any(|c| c.expansion == Expansion::Online) {
                    volume_expansion::Type::Online
                } else {
                    volume_expansion::Type::Offline
                };
                capabilities.push(csi::PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion { r#type: t as i32 })),
                });
            }
            Ok(csi::GetPluginCapabilitiesResponse { capabilities })
        })
    }

    async fn probe(
        &self,
        _req: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let driver = self.driver.clone();
        rpc("Probe", String::new(), move || {
            driver.backends.iter().try_for_each(|b| b.check_ready())?;
            Ok(csi::ProbeResponse { ready: Some(true) })
        })
        .await
    }
}
