//! StorageClass parameters, decoded with serde straight from the CSI parameter map.

use crate::error::{Error, Result};
use serde::de::value::{Error as DeError, MapDeserializer};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Keys Kubernetes sidecars add on their own (PVC/PV names with --extra-create-metadata).
pub const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

/// Decodes a backend's own parameters: the sidecars' keys and `backend` itself are skipped, an
/// unknown key is InvalidArgument naming it and the keys that are known (serde's message, with
/// `deny_unknown_fields` on the target type).
pub fn decode<T: DeserializeOwned>(backend: &str, params: &BTreeMap<String, String>) -> Result<T> {
    let own = params
        .iter()
        .filter(|(k, _)| !k.starts_with(SIDECAR_PREFIX) && k.as_str() != "backend")
        .map(|(k, v)| (k.as_str(), v.as_str()));
    T::deserialize(MapDeserializer::<_, DeError>::new(own))
        .map_err(|e| Error::invalid(format!("{backend} StorageClass parameters: {e}")))
}

/// The parameters that define a volume (compared on a repeated CreateVolume).
pub fn defining(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(k, _)| !k.starts_with(SIDECAR_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// ValidateVolumeCapabilities' parameter check, shared by the backends that record a volume's
/// defining parameters: why `parameters` (when given) do not match `recorded`, if they do not.
pub fn parameters_mismatch(
    parameters: &BTreeMap<String, String>,
    recorded: &BTreeMap<String, String>,
) -> Option<String> {
    (!parameters.is_empty() && defining(parameters) != *recorded)
        .then(|| format!("parameters differ from the volume's {recorded:?}"))
}
