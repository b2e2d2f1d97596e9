//! CSI Identity service.

use super::{rpc, Driver};
use crate::error::Result;
use crate::proto as csi;
use csi::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct IdentityService {
    driver: Arc<Driver>,
    controller: bool,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>, controller: bool) -> Self {
        IdentityService { driver, controller }
    }
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
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.driver.name.clone(),
            vendor_version: self.driver.version.clone(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![
            service_cap(service::Type::VolumeAccessibilityConstraints),
            csi::PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ];
        if self.controller {
            capabilities.insert(0, service_cap(service::Type::ControllerService));
        }
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _req: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let driver = self.driver.clone();
        rpc(
            "Probe",
            String::new(),
            move || -> Result<csi::ProbeResponse> {
                for b in &driver.backends {
                    b.check_ready()?;
                }
                Ok(csi::ProbeResponse { ready: Some(true) })
            },
        )
        .await
    }
}
