//! What all requests share: the current [`Gateway`] (swapped on reload) and the
//! [`Services`] that outlive reloads. The server builds it; handlers (the admin API) read it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::{self, Actor, Target};
use crate::config::Config;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::http_client::HttpClient;
use crate::router::health::HealthRegistry;
use crate::services::Services;

/// Shared by all requests.
pub struct AppState {
    pub(crate) gateway: ArcSwap<Gateway>,
    /// Database, key directory, shared counters and ledger: these outlive reloads.
    pub(crate) services: Arc<Services>,
    /// False once shutdown begins, so load balancers stop sending traffic.
    pub(crate) ready: AtomicBool,
    pub(crate) http: Arc<HttpClient>,
    /// Target health, kept across reloads.
    pub(crate) health: HealthRegistry,
    /// The file the config came from; `None` for the built-in default (nothing to reload).
    pub(crate) config_path: Option<PathBuf>,
    /// Serialises reloads, so two at once cannot interleave.
    pub(crate) reloading: tokio::sync::Mutex<()>,
}

impl AppState {
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Reads the config file again and, if it is valid, swaps in a gateway built from it.
    /// Requests in flight finish on the gateway they started with. An invalid config is
    /// refused with its problems, and the running one stays. Recorded in the audit log as
    /// `config.reload` by `actor`.
    pub async fn reload(&self, actor: &Actor) -> Result<(), Error> {
        let path = self.config_path.as_ref().map(|p| p.display().to_string());
        let target = path.as_deref().map_or(Target::None, Target::Known);
        audit::record(
            &self.services.store,
            actor,
            "config.reload",
            target,
            serde_json::json!({}),
            async {
                self.reload_config().await.map_err(|problems| {
                    Error::invalid_request(format!(
                        "the new config was refused, the running one stays: {}",
                        problems.join("; ")
                    ))
                })
            },
        )
        .await
    }

    async fn reload_config(&self) -> Result<(), Vec<String>> {
        let _guard = self.reloading.lock().await;
        let Some(path) = &self.config_path else {
            return Err(vec![
                "proxima runs on the built-in default config: there is no file to reload".into(),
            ]);
        };
        let config = Config::load(path)
            .map_err(|p| p.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let current = self.gateway.load();
        if config.server.listen != current.config.server.listen {
            tracing::warn!("server.listen changed: it takes effect at the next restart");
        }
        if config.storage.database != self.services.storage.database
            || config.storage.redis != self.services.storage.redis
        {
            tracing::warn!("storage changed: it takes effect at the next restart");
        }
        if config.telemetry != self.services.telemetry.config {
            tracing::warn!("telemetry changed: it takes effect at the next restart");
        }
        let gateway = Gateway::build(config, &self.http, &self.health, &self.services.telemetry)
            .map_err(|e| vec![e.message])?;
        // A reload can add or remove the keys that make anonymous access end: say where it stands.
        gateway.auth.log_access(&self.services.directory);
        self.gateway.store(Arc::new(gateway));
        tracing::info!(config = %path.display(), "config reloaded");
        Ok(())
    }
}
