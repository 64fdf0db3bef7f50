//! Region discovery: `REGION_NAME`, then the IMDS compute endpoint; detected once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fic_oauth_core::authority::{Region, RegionConfig};
use fic_oauth_core::{HttpTransport, TransportRequest};
use tokio::sync::OnceCell;

/// The IMDS compute endpoint that tells the VM's region.
pub const IMDS_COMPUTE_URL: &str = "http://169.254.169.254/metadata/instance/compute";
/// The api-version asked for first.
pub const IMDS_COMPUTE_API_VERSION: &str = "2021-02-01";
/// How long region discovery waits for IMDS.
pub const IMDS_REGION_TIMEOUT: Duration = Duration::from_secs(2);

/// Detects the Azure region once and remembers the answer, failure included (as MSAL does:
/// a failed detection is not retried; the global endpoints are used).
///
/// [`RegionDetector::process_wide`] is shared by every client of the process; tests and
/// multi-tenant hosts can give each client its own.
#[derive(Debug, Default)]
pub struct RegionDetector {
    detected: OnceCell<Option<Region>>,
}

impl RegionDetector {
    /// A detector that has not detected anything yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The detector shared by the whole process.
    pub fn process_wide() -> Arc<Self> {
        static SHARED: OnceLock<Arc<RegionDetector>> = OnceLock::new();
        Arc::clone(SHARED.get_or_init(|| Arc::new(Self::new())))
    }

    /// The region, detected on the first call: `REGION_NAME` from `env` (spaces removed,
    /// lower-cased), else `GET http://169.254.169.254/metadata/instance/compute` with
    /// `Metadata: true` and a 2 s timeout (field `location`; on 400 the newest api-version IMDS
    /// names is tried once). `None` when neither works.
    pub async fn detect(
        &self,
        env: &HashMap<String, String>,
        transport: &dyn HttpTransport,
    ) -> Option<Region> {
        self.detected
            .get_or_init(|| async {
                let region = discover(env, transport).await;
                if let Some(region) = &region {
                    tracing::info!(%region, "region detected");
                } else {
                    tracing::warn!("region detection failed; the global endpoints are used");
                }
                region
            })
            .await
            .clone()
    }

    /// The remembered answer, if detection already ran.
    pub fn detected(&self) -> Option<Option<Region>> {
        self.detected.get().cloned()
    }
}

async fn discover(env: &HashMap<String, String>, transport: &dyn HttpTransport) -> Option<Region> {
    if let Some(name) = env.get("REGION_NAME").filter(|v| !v.trim().is_empty()) {
        match Region::from_region_name_variable(name) {
            Ok(region) => return Some(region),
            Err(error) => tracing::warn!(%error, "REGION_NAME is not a valid region; asking IMDS"),
        }
    }
    let first = imds_compute(transport, Some(IMDS_COMPUTE_API_VERSION)).await?;
    if first.0 == 400 {
        // IMDS answers 400 for an api-version it does not know, naming the ones it does.
        let newest = first
            .1
            .get("newest-versions")
            .and_then(|v| v.get(0))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)?;
        let second = imds_compute(transport, Some(&newest)).await?;
        return location(&second);
    }
    location(&first)
}

fn location(answer: &(u16, serde_json::Value)) -> Option<Region> {
    if answer.0 != 200 {
        tracing::debug!(
            status = answer.0,
            "IMDS compute endpoint did not answer 200"
        );
        return None;
    }
    let name = answer
        .1
        .get("location")
        .and_then(serde_json::Value::as_str)?;
    Region::from_region_name_variable(name).ok()
}

async fn imds_compute(
    transport: &dyn HttpTransport,
    api_version: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    let uri = match api_version {
        Some(version) => format!("{IMDS_COMPUTE_URL}?api-version={version}"),
        None => IMDS_COMPUTE_URL.to_string(),
    };
    let request = http::Request::get(uri)
        .header("Metadata", "true")
        .body(Bytes::new())
        .ok()?;
    let response = match transport
        .send(TransportRequest::new(request).with_timeout(IMDS_REGION_TIMEOUT))
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(code = %error.code(), "IMDS is not reachable for region discovery");
            return None;
        }
    };
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
    Some((status, body))
}

/// Resolves a configured region: explicit names are validated (an invalid one is logged and
/// ignored), auto-detection goes through `detector`.
pub(crate) async fn resolve(
    config: &RegionConfig,
    env: &HashMap<String, String>,
    detector: &RegionDetector,
    transport: &dyn HttpTransport,
) -> Option<Region> {
    match config.clone().with_environment(env) {
        RegionConfig::None => None,
        RegionConfig::Explicit(name) => match Region::parse(&name) {
            Ok(region) => Some(region),
            Err(error) => {
                tracing::error!(%error, "the configured region is invalid; the global endpoints are used");
                None
            }
        },
        RegionConfig::AutoDetect => detector.detect(env, transport).await,
    }
}
