//! The config file: its schema (the doc comments are the reference), loading with `${VAR}`
//! interpolation, the built-in default, and validation that reports every problem with its place.

mod document;
mod duration;
mod interpolate;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use duration::ConfigDuration;

use crate::pricing::Price;

/// The complete example printed by `proxima config example`; a test keeps it passing `check`.
pub const EXAMPLE: &str = include_str!("config/example.toml");

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Upstream providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Public models by the name clients send as `model`. A name ending in `/*` serves any
    /// model under that prefix; its targets' `*` is replaced by the rest of the name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Static client keys by name.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub context: ContextConfig,
    #[serde(default)]
    pub files: FilesConfig,
    /// Answers served again without calling the model; off when the section is absent.
    pub cache: Option<CacheConfig>,
    #[serde(default)]
    pub pii: PiiConfig,
    #[serde(default)]
    pub guardrails: GuardrailsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub mcp: McpConfig,
}

/// Personal data in prompts (SPEC `[pii]`): what is looked for, and what happens to it. Keys and
/// teams may override it ([`PiiOverride`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    #[serde(default)]
    pub mode: PiiMode,
    /// The kinds of values looked for; all of them by default.
    #[serde(default = "defaults::pii_entities")]
    pub entities: Vec<PiiEntity>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            mode: PiiMode::Off,
            entities: PiiEntity::ALL.to_vec(),
        }
    }
}

impl PiiConfig {
    /// The mode and kinds of this policy with each of `overrides`' fields, in order, where it
    /// sets them. Borrowed, not copied: every call asks.
    pub fn with_overrides<'a>(
        &'a self,
        overrides: impl IntoIterator<Item = &'a PiiOverride>,
    ) -> (PiiMode, &'a [PiiEntity]) {
        overrides
            .into_iter()
            .fold((self.mode, &self.entities[..]), |(mode, entities), over| {
                (
                    over.mode.unwrap_or(mode),
                    over.entities.as_deref().unwrap_or(entities),
                )
            })
    }
}

/// What happens to personal data found in a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiMode {
    /// Not looked for.
    #[default]
    Off,
    /// Removed before the prompt leaves, for good.
    Redact,
    /// Replaced by placeholders upstream, and restored in the answer.
    Mask,
    /// The request is refused (`400 pii_blocked`).
    Block,
}

/// A kind of personal or secret value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiEntity {
    Email,
    Phone,
    /// Payment card numbers (Luhn-checked).
    Card,
    /// International bank account numbers (mod-97-checked).
    Iban,
    /// US social security numbers.
    Ssn,
    /// IPv4 and IPv6 addresses.
    Ip,
    /// API keys, tokens, private keys.
    Secret,
}

impl PiiEntity {
    pub const ALL: [PiiEntity; 7] = [
        PiiEntity::Email,
        PiiEntity::Phone,
        PiiEntity::Card,
        PiiEntity::Iban,
        PiiEntity::Ssn,
        PiiEntity::Ip,
        PiiEntity::Secret,
    ];

    /// The name used in config and errors.
    pub fn name(self) -> &'static str {
        match self {
            PiiEntity::Email => "email",
            PiiEntity::Phone => "phone",
            PiiEntity::Card => "card",
            PiiEntity::Iban => "iban",
            PiiEntity::Ssn => "ssn",
            PiiEntity::Ip => "ip",
            PiiEntity::Secret => "secret",
        }
    }
}

/// A key's or team's own PII policy: each field set replaces the global one (`[pii]`); the key's
/// wins over its team's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PiiMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<PiiEntity>>,
}

/// Guardrails (SPEC `[guardrails]`): checks on what goes to the model and what comes back. A
/// refusal is `400 guardrail_blocked` naming its rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsConfig {
    /// Built-in rules against instructions injected into user messages and tool results
    /// ("ignore previous instructions", "reveal your system prompt", role-play jailbreaks):
    /// `off`, `flag` (the call goes through, its ledger row names the rule) or `block`.
    pub prompt_injection: GuardMode,
    /// Regexes refused anywhere in a prompt as sent (system prompt, history and retrieved
    /// passages included).
    pub deny: Vec<String>,
    /// Regexes refused in answers: text, reasoning and tool-call arguments. A stream is cut
    /// before the matching text goes out.
    pub deny_output: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    #[default]
    Off,
    Flag,
    Block,
}

/// Metrics (`GET /metrics`) and traces (OTLP/HTTP). Read once at start: a change takes effect
/// at the next restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Prometheus metrics at `GET /metrics`; `false` turns the endpoint and the counting off.
    pub metrics: bool,
    /// Traces go to `{otlp_endpoint}/v1/traces` (OTLP/HTTP, protobuf), e.g.
    /// "http://127.0.0.1:4318"; no traces are exported without it (`traceparent` is still
    /// passed on).
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export, e.g. the collector's credential.
    pub otlp_headers: BTreeMap<String, Secret>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1; a caller's `traceparent` decides for its own.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            service_name: "proxima".into(),
            sample_ratio: 1.0,
        }
    }
}

/// The response cache (SPEC `[cache]`): a call that repeats an earlier one exactly — same
/// model, messages, tools and parameters — is answered with the stored answer; with `semantic`,
/// also one whose last user message says the same in other words after the very same earlier
/// turns. Entries live in Redis when `[storage] redis` is set (every replica shares them), else
/// in this replica's memory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default)]
    pub exact: ExactCacheConfig,
    /// Off when absent.
    pub semantic: Option<SemanticCacheConfig>,
    /// Who shares answers: `team` (the caller's team, or the key when it has none), `key`, or
    /// `global` (every caller: only for models whose answers no tenant must keep private).
    #[serde(default)]
    pub scope: CacheScope,
    /// Bytes of entries this replica keeps in memory at most (when not in Redis); the oldest
    /// go first.
    #[serde(default = "defaults::cache_max_bytes")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactCacheConfig {
    /// How long an answer is served again.
    pub ttl: ConfigDuration,
}

impl Default for ExactCacheConfig {
    fn default() -> Self {
        ExactCacheConfig {
            ttl: defaults::cache_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheConfig {
    /// How long an answer is served to reworded questions.
    #[serde(default = "defaults::cache_ttl")]
    pub ttl: ConfigDuration,
    /// Cosine similarity of the last user messages' embeddings at least this (0 to 1) is a hit.
    #[serde(default = "defaults::cache_threshold")]
    pub threshold: f32,
    /// Public model that embeds the last user message.
    pub embedding_model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    #[default]
    Team,
    Key,
    Global,
}

/// Uploaded files (`/v1/files`), the documents vector stores are built from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file accepted, in bytes; a larger upload gets 413 `request_too_large`. Uploads
    /// take this limit instead of `server.max_body_bytes`.
    pub max_bytes: usize,
}

impl FilesConfig {
    /// The most `max_bytes` may be: a file is held in memory whole and stored as one database
    /// value, and both databases refuse values near 1 GB.
    pub const MAX_BYTES_CEILING: usize = 500_000_000;
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_bytes: 25_000_000,
        }
    }
}

/// Server-side conversation context: the conversation store and how prompts are assembled.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Public model that embeds items for recall and retrieval; recall is full-text only
    /// without it.
    pub embedding_model: Option<String>,
    /// Public model that folds turns leaving the window into a running summary.
    pub summarizer_model: Option<String>,
    /// What happens to turns that no longer fit: dropped (`window`) or summarised
    /// (`summarize`, which needs `summarizer_model`). A conversation's metadata
    /// `context_strategy` overrides it.
    pub default_strategy: ContextStrategy,
    /// Earlier turns relevant to the new message brought back into the prompt (0: off).
    pub recall: u32,
    /// Conversations (and stored responses) unused this long are deleted; kept forever when
    /// absent.
    pub retention: Option<ConfigDuration>,
    /// Tokens kept free below the target's window besides the answer's `max_tokens`: token
    /// counts of other tokenizers are estimates.
    pub safety_margin: u64,
    /// Window assumed for a model whose `context_window` is not configured.
    pub default_window: u64,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            embedding_model: None,
            summarizer_model: None,
            default_strategy: ContextStrategy::Window,
            recall: 4,
            retention: None,
            safety_margin: 512,
            default_window: 128_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextStrategy {
    #[default]
    Window,
    Summarize,
}

/// Where keys, teams and the usage ledger live, and the Redis that shares counters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://FILE` (created if missing; `sqlite::memory:` keeps nothing) or
    /// `postgres://user@host/db`.
    #[serde(default = "defaults::database")]
    pub database: Secret,
    /// Optional `redis://host:port`: rate limits and budgets shared by every replica.
    pub redis: Option<Secret>,
    /// How often each replica reads key and team changes made elsewhere (revocations).
    #[serde(default = "defaults::sync_interval")]
    pub sync_interval: ConfigDuration,
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Raw usage-ledger rows are kept at least this long (at least `1d`), then purged by whole
    /// UTC days into daily rollups per key, team and model that reports and budgets read;
    /// kept forever when absent.
    pub log_retention: Option<ConfigDuration>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database: defaults::database(),
            redis: None,
            sync_interval: defaults::sync_interval(),
            ledger: LedgerConfig::default(),
            log_retention: None,
        }
    }
}

/// How usage records reach the database: in batches, off the request path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Records written per database round trip, at most.
    pub batch_size: usize,
    /// Longest a record waits before its batch is written.
    pub flush_interval: ConfigDuration,
    /// Records held in memory while the database is unreachable; more go to `spill_file`.
    pub max_buffered: usize,
    /// Where records wait when the buffer is full or at shutdown without a database; written
    /// to the database when it is back. Default: `FILE.ledger.spill` beside an SQLite database
    /// `FILE`, else `proxima-ledger.spill` in the working directory.
    pub spill_file: Option<std::path::PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            batch_size: 500,
            flush_interval: ConfigDuration(std::time::Duration::from_millis(200)),
            max_buffered: 100_000,
            spill_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept JSON Web Tokens from an identity provider as well as keys.
    pub jwt: Option<JwtConfig>,
}

/// JWT / OIDC bearer tokens: verified against a JWKS (or one public key), then mapped to a
/// caller through claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of them, when the token has several).
    pub audience: String,
    /// Where the signing keys are published; fetched at start, refreshed on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Or one PEM public key (RSA or EC), for issuers without a JWKS.
    pub public_key: Option<String>,
    /// Accepted signature algorithms.
    #[serde(default = "defaults::jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim naming the caller's team.
    #[serde(default = "defaults::team_claim")]
    pub team_claim: String,
    /// Claim listing the public models the caller may use (absent claim: all).
    #[serde(default = "defaults::models_claim")]
    pub models_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "defaults::jwt_leeway")]
    pub leeway: ConfigDuration,
    /// How often the JWKS is fetched again even without an unknown `kid`.
    #[serde(default = "defaults::jwks_refresh")]
    pub jwks_refresh: ConfigDuration,
}

impl BudgetPeriod {
    /// As written in config: `1d`, `1w`, `1mo` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "1d",
            BudgetPeriod::Week => "1w",
            BudgetPeriod::Month => "1mo",
            BudgetPeriod::Total => "total",
        }
    }
}

/// A spending limit in US dollars over a calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub usd: f64,
    #[serde(default)]
    pub period: BudgetPeriod,
}

/// When a budget starts again: `1d` at 00:00 UTC, `1w` on Monday, `1mo` on the 1st, or never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum BudgetPeriod {
    #[serde(rename = "1d", alias = "day", alias = "daily")]
    Day,
    #[serde(rename = "1w", alias = "7d", alias = "week", alias = "weekly")]
    Week,
    #[serde(rename = "1mo", alias = "30d", alias = "month", alias = "monthly")]
    Month,
    #[default]
    #[serde(rename = "total", alias = "lifetime")]
    Total,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// First wait before retrying the same target; doubles with each retry, with jitter.
    #[serde(default = "defaults::retry_backoff")]
    pub retry_backoff: ConfigDuration,
    /// Longest wait between two attempts, whatever an upstream's `retry-after` asks for.
    #[serde(default = "defaults::max_retry_wait")]
    pub max_retry_wait: ConfigDuration,
    #[serde(default)]
    pub breaker: BreakerConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            retry_backoff: defaults::retry_backoff(),
            max_retry_wait: defaults::max_retry_wait(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// When a target's circuit opens (it gets no traffic) and how it recovers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this share of the requests in `window` failed ...
    pub failure_ratio: f64,
    /// ... once the window holds at least this many requests.
    pub min_requests: u32,
    pub window: ConfigDuration,
    /// How long a circuit stays open before one probe request may test the target; doubles
    /// after each failed probe, up to `max_cooldown`.
    pub cooldown: ConfigDuration,
    pub max_cooldown: ConfigDuration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: ConfigDuration::secs(30),
            cooldown: ConfigDuration::secs(5),
            max_cooldown: ConfigDuration::secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Full admin rights; also accepted as a client key for every model.
    pub master_key: Option<Secret>,
    /// Larger request bodies get 413 `request_too_large`.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests and streams may take to finish.
    #[serde(default = "defaults::shutdown_grace")]
    pub shutdown_grace: ConfigDuration,
    /// A stream silent this long gets an SSE comment so proxies and clients keep it open.
    #[serde(default = "defaults::stream_keepalive")]
    pub stream_keepalive: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: defaults::listen(),
            master_key: None,
            max_body_bytes: defaults::max_body_bytes(),
            shutdown_grace: defaults::shutdown_grace(),
            stream_keepalive: defaults::stream_keepalive(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines. Filter with `PROXIMA_LOG`.
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// The API root, e.g. `https://api.openai.com/v1` or any OpenAI-compatible server
    /// (vLLM, Ollama, llama.cpp ...). For `azure-openai`, the resource endpoint
    /// (`https://NAME.openai.azure.com`). For `gemini`, the versioned root
    /// (`https://generativelanguage.googleapis.com/v1beta`).
    pub base_url: Option<String>,
    /// Sent as the provider expects it. Empty or absent: no credentials are sent.
    pub api_key: Option<Secret>,
    /// `azure-openai` only: the `api-version` query parameter.
    pub api_version: Option<String>,
    /// Where the provider processes data, for residency rules.
    pub region: Option<String>,
    /// Per attempt: the whole answer, or for streams the first byte and every silence after it.
    #[serde(default = "defaults::provider_timeout")]
    pub timeout: ConfigDuration,
    /// `mock` only: delay before answering and between streamed chunks.
    pub latency: Option<ConfigDuration>,
    /// `local` only: the sentence-transformers folder (`model.safetensors`, `tokenizer.json`,
    /// `config.json`), relative to the working directory.
    pub path: Option<std::path::PathBuf>,
    /// Extra headers sent with every upstream request (e.g. an organisation id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI or any server speaking its chat completions API.
    Openai,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    AzureOpenai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`), `x-goog-api-key` header. Default base URL
    /// `https://generativelanguage.googleapis.com/v1beta`.
    Gemini,
    /// Built in: echoes the last user message, no network.
    Mock,
    /// Built in: a BERT sentence embedder (all-MiniLM-L6-v2) run in-process from `path`;
    /// serves embeddings only.
    Local,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// How a target is chosen among `targets`.
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<TargetConfig>,
    /// Other public models tried, in order, after every target failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// More attempts on errors worth retrying, after every target had one (and before the
    /// fallbacks): the targets again in strategy order, each after a backoff.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Overrides the built-in price table for every target of this model.
    pub price: Option<Price>,
    /// Tokens the model accepts; a request too long for one target moves to a larger one.
    pub context_window: Option<u64>,
    /// Time limit of each attempt (a stream: until its first chunk); past it the next target
    /// is tried, and after the last attempt the client gets 504 `upstream_timeout`.
    pub timeout: Option<ConfigDuration>,
    /// The model's total capacity across all callers: requests per minute.
    pub rpm: Option<u64>,
    /// The model's total capacity across all callers: tokens per minute.
    pub tpm: Option<u64>,
    /// `false` keeps this model's answers out of the cache (`[cache]`).
    #[serde(default = "defaults::cache")]
    pub cache: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// A provider name from `[providers]`.
    pub provider: String,
    /// The model name the provider knows (Azure: the deployment name).
    pub model: String,
    /// Share of traffic under the `weighted` strategy (for a canary, its share).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// This target's price, over the model's and the built-in table.
    pub price: Option<Price>,
    /// This target's context window, over the model's.
    pub context_window: Option<u64>,
    /// Marks the target as a canary, rolled back automatically when its guards trip.
    pub canary: Option<CanaryConfig>,
}

/// Guards of a canary target, judged against the model's other targets. A tripped guard, or the
/// canary's circuit breaker opening, takes the canary's traffic to zero until its config
/// changes; promote it by removing `canary`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryConfig {
    /// Error rate allowed above the other targets' (0.05: five percentage points).
    pub max_error_rate_increase: f64,
    /// Latency allowed as a multiple of the other targets'.
    pub max_latency_ratio: f64,
    /// Canary requests before the guards are judged.
    pub min_requests: u32,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            max_error_rate_increase: 0.05,
            max_latency_ratio: 2.0,
            min_requests: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random, in proportion to `weight`.
    #[default]
    Weighted,
    /// Each target in turn.
    RoundRobin,
    /// The first target; the next only when earlier ones fail.
    Priority,
    /// The faster of two random targets (decaying latency; time to first token for streams).
    LeastLatency,
    /// The cheapest target for the request's estimated tokens.
    LeastCost,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The secret clients send as `Authorization: Bearer ...` or `x-api-key`.
    pub key: Secret,
    pub team: Option<String>,
    /// Public models this key may use; absent means all.
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt and completion) per minute.
    pub tpm: Option<u64>,
    pub budget: Option<BudgetConfig>,
    /// Regions whose providers may serve this key (residency); absent means any.
    pub regions: Option<Vec<String>>,
    /// This key's own PII policy, over the team's and `[pii]`.
    pub pii: Option<PiiOverride>,
    /// Tools of `/mcp` this key may list and call, as globs (`github__*`); absent means all.
    pub mcp_tools: Option<Vec<String>>,
}

/// `/mcp`, the Model Context Protocol gateway (SPEC `[mcp.servers.NAME]`): the gateway's own
/// tools, and the tools of these upstream MCP servers re-exposed as `NAME__TOOL`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Upstream MCP servers by name (letters, digits, `-` and single `_`: `__` separates a
    /// server from its tool).
    pub servers: BTreeMap<String, McpServerConfig>,
    /// How long a server's tool list is kept before it is asked again (a reload asks at once).
    pub tools_ttl: ConfigDuration,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            servers: BTreeMap::new(),
            tools_ttl: ConfigDuration::secs(300),
        }
    }
}

/// One upstream MCP server, spoken to with the gateway's own credentials: over streamable
/// HTTP (`url`), or over the stdin and stdout of a local command (`command`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Its streamable HTTP endpoint, e.g. "http://127.0.0.1:9000/mcp".
    pub url: Option<String>,
    /// Sent with every request to `url` (e.g. `authorization`); the caller's key never is.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Instead of `url`: a program speaking MCP on its stdin and stdout, started when its tools
    /// are first needed (and again if it exits), stopped with the gateway or at a reload.
    pub command: Option<String>,
    /// The command's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The command's environment: these, with `PATH` and `HOME`. Nothing else of the gateway's
    /// environment (its keys) is passed on.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Time limit of each request to it.
    #[serde(default = "defaults::mcp_timeout")]
    pub timeout: ConfigDuration,
}

/// A credential. Never printed: `Debug` shows only that it is set.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

mod defaults {
    use super::ConfigDuration;
    use std::net::{Ipv4Addr, SocketAddr};

    pub fn listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
    }
    pub fn max_body_bytes() -> usize {
        10_000_000
    }
    pub fn shutdown_grace() -> ConfigDuration {
        ConfigDuration::secs(30)
    }
    pub fn stream_keepalive() -> ConfigDuration {
        ConfigDuration::secs(15)
    }
    pub fn provider_timeout() -> ConfigDuration {
        ConfigDuration::secs(60)
    }
    pub fn mcp_timeout() -> ConfigDuration {
        ConfigDuration::secs(30)
    }
    pub fn retry_backoff() -> ConfigDuration {
        ConfigDuration(std::time::Duration::from_millis(50))
    }
    pub fn max_retry_wait() -> ConfigDuration {
        ConfigDuration::secs(2)
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn database() -> super::Secret {
        super::Secret::new("sqlite://proxima.db")
    }
    pub fn sync_interval() -> ConfigDuration {
        ConfigDuration::secs(1)
    }
    pub fn jwt_algorithms() -> Vec<String> {
        vec!["RS256".into(), "ES256".into()]
    }
    pub fn team_claim() -> String {
        "team".into()
    }
    pub fn models_claim() -> String {
        "models".into()
    }
    pub fn jwt_leeway() -> ConfigDuration {
        ConfigDuration::secs(60)
    }
    pub fn jwks_refresh() -> ConfigDuration {
        ConfigDuration::secs(600)
    }
    pub fn pii_entities() -> Vec<super::PiiEntity> {
        super::PiiEntity::ALL.to_vec()
    }
    pub fn cache() -> bool {
        true
    }
    pub fn cache_ttl() -> ConfigDuration {
        ConfigDuration::secs(3600)
    }
    pub fn cache_threshold() -> f32 {
        0.95
    }
    pub fn cache_max_bytes() -> usize {
        256 * 1024 * 1024
    }
}

/// One thing wrong with a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` or `file: dotted.path`.
    pub location: String,
    pub message: String,
}

impl Problem {
    pub fn at_line(origin: &str, line: usize, message: impl Into<String>) -> Problem {
        Problem {
            location: format!("{origin}:{line}"),
            message: message.into(),
        }
    }

    /// At a dotted `path`, on `line` when it is known.
    pub fn at_path(
        origin: &str,
        line: Option<usize>,
        path: &str,
        message: impl Into<String>,
    ) -> Problem {
        let location = match line {
            Some(line) => format!("{origin}:{line}: {path}"),
            None => format!("{origin}: {path}"),
        };
        Problem {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a config; loading fails with all of them, not just the first.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Whether something here limits tokens or spend (a model's `tpm`, a key's `tpm` or
    /// budget): its calls need their prompts counted, so the tokenizer is readied at start.
    pub fn counts_tokens(&self) -> bool {
        self.models.values().any(|m| m.tpm.is_some())
            || self
                .keys
                .values()
                .any(|k| k.tpm.is_some() || k.budget.is_some())
    }

    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                location: origin.clone(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Config::parse(&text, &origin, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text. `origin` names it in problems; `env` resolves `${VAR}`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        // Missing variables are reported with whatever else is wrong, so one run of `check`
        // shows as much as it can: the rest is parsed with those variables empty.
        let (text, mut problems) = match interpolate::interpolate(text, origin, env) {
            Ok(text) => (text, Vec::new()),
            Err(missing) => {
                let text = interpolate::interpolate(text, origin, &|name| {
                    env(name).or_else(|| Some(String::new()))
                })
                .unwrap_or_default();
                (text, missing)
            }
        };
        let document = match document::Document::parse(&text, origin) {
            Ok(document) => document,
            Err(problem) => {
                problems.push(problem);
                return Err(Problems(problems));
            }
        };
        let Some(config) = document.config(origin, &mut problems) else {
            return Err(Problems(problems));
        };
        problems.extend(validate::validate(&config, origin, &|path| {
            document.line_of(path)
        }));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(problems))
        }
    }

    /// The config used when no file is given: a `mock` provider and model, plus every provider
    /// whose API key is in the environment, served under `<provider>/<model>` names.
    pub fn builtin_default(env: &dyn Fn(&str) -> Option<String>) -> Config {
        let mut config = Config::default();
        config.server.master_key = env("PROXIMA_MASTER_KEY")
            .filter(|k| !k.is_empty())
            .map(Secret);
        config
            .providers
            .insert("mock".into(), ProviderConfig::new(ProviderKind::Mock));
        config
            .models
            .insert("mock".into(), ModelConfig::single("mock", "mock"));
        if let Some(key) = env("OPENAI_API_KEY").filter(|k| !k.is_empty()) {
            let mut openai = ProviderConfig::new(ProviderKind::Openai);
            openai.base_url = env("OPENAI_BASE_URL").filter(|u| !u.is_empty());
            openai.api_key = Some(Secret(key));
            config.providers.insert("openai".into(), openai);
            config
                .models
                .insert("openai/*".into(), ModelConfig::single("openai", "*"));
        }
        if let Some(key) = env("ANTHROPIC_API_KEY").filter(|k| !k.is_empty()) {
            let mut anthropic = ProviderConfig::new(ProviderKind::Anthropic);
            anthropic.base_url = env("ANTHROPIC_BASE_URL").filter(|u| !u.is_empty());
            anthropic.api_key = Some(Secret(key));
            config.providers.insert("anthropic".into(), anthropic);
            config
                .models
                .insert("anthropic/*".into(), ModelConfig::single("anthropic", "*"));
        }
        if let Some(key) = env("GEMINI_API_KEY").filter(|k| !k.is_empty()) {
            let mut gemini = ProviderConfig::new(ProviderKind::Gemini);
            gemini.api_key = Some(Secret(key));
            config.providers.insert("gemini".into(), gemini);
            config
                .models
                .insert("gemini/*".into(), ModelConfig::single("gemini", "*"));
        }
        config
    }
}

impl ProviderConfig {
    pub fn new(kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            kind,
            base_url: None,
            api_key: None,
            api_version: None,
            region: None,
            timeout: defaults::provider_timeout(),
            latency: None,
            path: None,
            headers: BTreeMap::new(),
        }
    }
}

impl ModelConfig {
    /// A model served by one target.
    pub fn single(provider: &str, model: &str) -> ModelConfig {
        ModelConfig {
            strategy: Strategy::default(),
            targets: vec![TargetConfig {
                provider: provider.into(),
                model: model.into(),
                weight: defaults::weight(),
                price: None,
                context_window: None,
                canary: None,
            }],
            fallbacks: Vec::new(),
            retries: defaults::retries(),
            price: None,
            context_window: None,
            timeout: None,
            rpm: None,
            tpm: None,
            cache: defaults::cache(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_a_missing_variable_and_a_bad_reference_in_one_run() {
        let text = "[providers.up]\nkind = \"openai\"\napi_key = \"${NOT_SET}\"\n\n[models.m]\ntargets = [{ provider = \"nowhere\", model = \"x\" }]\n";
        let problems = Config::parse(text, "p.toml", &|_| None)
            .err()
            .map(|p| p.0)
            .unwrap_or_default();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("p.toml:3: ") && shown[0].contains("NOT_SET"),
            "{shown:?}"
        );
        assert!(
            shown[1].contains("models.m.targets[0].provider") && shown[1].contains("nowhere"),
            "{shown:?}"
        );
    }
}
