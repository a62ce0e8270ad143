//! Azure OpenAI: the OpenAI wire format at deployment URLs, versioned by `api-version`,
//! authenticated with an `api-key` header. The target's model is the deployment name.

use super::openai::Operation;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};

pub struct Azure {
    api_version: String,
}

impl Azure {
    pub fn from_config(config: &ProviderConfig) -> Result<Azure> {
        let api_version = config
            .api_version
            .clone()
            .ok_or_else(|| Error::internal("azure-openai provider without api_version"))?;
        Ok(Azure { api_version })
    }

    /// `{endpoint}/openai/deployments/{deployment}/{operation}?api-version={version}`.
    pub fn url(&self, base_url: &str, op: Operation, deployment: &str) -> String {
        format!(
            "{base_url}/openai/deployments/{deployment}/{}?api-version={}",
            op.path(),
            self.api_version
        )
    }
}
