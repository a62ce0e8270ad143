//! The gateway built from one config: providers, the router, the static keys (and JWT
//! verifier), the compiled guardrails and the upstream MCP servers. Immutable;
//! a reload builds a new one and swaps it in, while requests in flight keep the one they began on.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::guardrails::Guardrails;
use crate::http_client::HttpClient;
use crate::policy::jwt::JwtVerifier;
use crate::policy::Auth;
use crate::providers::Provider;
use crate::router::health::HealthRegistry;
use crate::router::Router;
use crate::telemetry::Telemetry;

pub struct Gateway {
    pub config: Config,
    pub auth: Auth,
    pub router: Router,
    pub guardrails: Guardrails,
    /// `[mcp.servers]`, with their tool lists (asked again after a reload).
    pub mcp: crate::mcp::Upstreams,
}

impl Gateway {
    pub fn build(
        config: Config,
        http: &Arc<HttpClient>,
        health: &HealthRegistry,
        telemetry: &Telemetry,
    ) -> Result<Gateway> {
        let providers = config
            .providers
            .iter()
            .map(|(name, p)| {
                Ok((
                    name.clone(),
                    Arc::new(Provider::from_config(name, p, http)?),
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let jwt = config
            .auth
            .jwt
            .as_ref()
            .map(|jwt| JwtVerifier::new(jwt, http.clone()))
            .transpose()?;
        // Checked by `proxima check` before a config is used: an error here is a bug.
        let guardrails = Guardrails::new(&config.guardrails)
            .map_err(|e| Error::internal(format!("guardrails: {e}")))?;
        if config.counts_tokens() {
            crate::tokenizer::warm_up();
        }
        Ok(Gateway {
            mcp: crate::mcp::Upstreams::new(&config.mcp, http)?,
            auth: Auth::from_config(&config, jwt),
            guardrails,
            router: Router::new(&config, &providers, health, telemetry),
            config,
        })
    }
}
