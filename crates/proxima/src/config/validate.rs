//! Checks that go beyond the schema: references between sections and kind-specific fields.

use std::collections::BTreeMap;

use super::{Config, ContextStrategy, FilesConfig, Problem, ProviderKind, Strategy};

/// Every problem found, each at the line `line_of` gives its dotted path.
pub fn validate(
    config: &Config,
    origin: &str,
    line_of: &dyn Fn(&str) -> Option<usize>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| {
        problems.push(Problem::at_path(origin, line_of(&path), &path, message));
    };

    for (name, provider) in &config.providers {
        let at = |field: &str| format!("providers.{name}.{field}");
        if let Some(url) = &provider.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problem(
                    at("base_url"),
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
            // The upstream client sends no credentials from the URL (and the URL shows up in
            // messages): refused rather than dropped silently. Not quoted, being a secret.
            let authority = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.into_parts().authority);
            if authority.is_some_and(|a| a.as_str().contains('@')) {
                problem(
                    at("base_url"),
                    "has a user name or password in it: give credentials with `api_key` or `headers` instead".into(),
                );
            }
        }
        let is = |kind| provider.kind == kind;
        if provider.latency.is_some() && !is(ProviderKind::Mock) {
            problem(at("latency"), "only `mock` providers take a latency".into());
        }
        if is(ProviderKind::AzureOpenai) {
            if provider.base_url.is_none() {
                problem(at("base_url"), "azure-openai needs the resource endpoint, e.g. \"https://NAME.openai.azure.com\"".into());
            }
            if provider.api_version.is_none() {
                problem(
                    at("api_version"),
                    "azure-openai needs an api_version, e.g. \"2024-10-21\"".into(),
                );
            }
        } else if provider.api_version.is_some() {
            problem(
                at("api_version"),
                "only `azure-openai` providers take an api_version".into(),
            );
        }
        if is(ProviderKind::Local) {
            match &provider.path {
                None => problem(
                    at("path"),
                    "a `local` provider needs the path of its model folder, e.g. \"models/all-minilm-l6-v2\" (scripts/fetch-minilm fetches it)".into(),
                ),
                Some(path) if !path.is_dir() => problem(
                    at("path"),
                    format!("{} is not a folder (scripts/fetch-minilm fetches all-MiniLM-L6-v2)", path.display()),
                ),
                Some(path) => {
                    let missing = crate::providers::local::missing_files(path);
                    if !missing.is_empty() {
                        problem(
                            at("path"),
                            format!(
                                "{} lacks {}: a sentence-transformers folder holds {}",
                                path.display(),
                                missing.join(", "),
                                crate::providers::local::REQUIRED_FILES.join(", ")
                            ),
                        );
                    }
                }
            }
            for (field, set) in [
                ("base_url", provider.base_url.is_some()),
                ("api_key", provider.api_key.is_some()),
                ("headers", !provider.headers.is_empty()),
            ] {
                if set {
                    problem(
                        at(field),
                        format!("a `local` provider runs in-process: it takes no {field}"),
                    );
                }
            }
        } else if provider.path.is_some() {
            problem(at("path"), "only `local` providers take a path".into());
        }
        if provider.timeout.0.is_zero() {
            problem(at("timeout"), "must be longer than zero".into());
        }
        for (header, value) in &provider.headers {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problem(
                    at("headers"),
                    format!("`{header}` is not a valid header name"),
                );
            }
            if http::HeaderValue::from_str(value).is_err() {
                problem(
                    at("headers"),
                    format!("the value of `{header}` is not a valid header value"),
                );
            }
        }
    }

    let mut regions = std::collections::BTreeSet::new();
    for (name, provider) in &config.providers {
        if let Some(region) = &provider.region {
            if regions.insert(region.as_str()) && regions.len() > crate::router::MAX_REGIONS {
                problem(
                    format!("providers.{name}.region"),
                    format!(
                        "`{region}` is one region too many: providers may be in {} regions at most",
                        crate::router::MAX_REGIONS
                    ),
                );
            }
        }
    }

    for (name, model) in &config.models {
        let at = |field: &str| format!("models.{name}.{field}");
        if name.contains('*') && !(name.ends_with("/*") && name.matches('*').count() == 1) {
            problem(
                format!("models.{name}"),
                "a wildcard model name must end in `/*`, like \"openai/*\"".into(),
            );
        }
        if model.targets.is_empty() {
            problem(at("targets"), "a model needs at least one target".into());
        }
        for (i, target) in model.targets.iter().enumerate() {
            if !config.providers.contains_key(&target.provider) {
                problem(
                    format!("models.{name}.targets[{i}].provider"),
                    format!(
                        "no provider named `{}`; configured: {}",
                        target.provider,
                        names(&config.providers)
                    ),
                );
            }
            if target.model.is_empty() {
                problem(
                    format!("models.{name}.targets[{i}].model"),
                    "must not be empty".into(),
                );
            }
        }
        if model.strategy == Strategy::Weighted
            && !model.targets.is_empty()
            && model.targets.iter().all(|t| t.weight == 0)
        {
            problem(
                at("targets"),
                "every target has weight 0: nothing would be served".into(),
            );
        }
        let canaries = model.targets.iter().filter(|t| t.canary.is_some()).count();
        if canaries > 0 && model.strategy != Strategy::Weighted {
            problem(
                at("strategy"),
                "canary targets need the `weighted` strategy, which gives them their share".into(),
            );
        }
        if canaries > 0 && canaries == model.targets.len() {
            problem(
                at("targets"),
                "every target is a canary: a canary is judged against the model's other targets"
                    .into(),
            );
        }
        for (i, target) in model.targets.iter().enumerate() {
            if let Some(canary) = &target.canary {
                if !(0.0..=1.0).contains(&canary.max_error_rate_increase)
                    || canary.max_latency_ratio < 1.0
                {
                    problem(
                        format!("models.{name}.targets[{i}].canary"),
                        "max_error_rate_increase must be between 0 and 1, max_latency_ratio at least 1".into(),
                    );
                }
            }
        }
        for fallback in &model.fallbacks {
            if fallback == name {
                problem(
                    at("fallbacks"),
                    format!("`{name}` cannot fall back to itself"),
                );
            } else if !config.models.contains_key(fallback) {
                problem(
                    at("fallbacks"),
                    format!(
                        "no model named `{fallback}`; configured: {}",
                        names(&config.models)
                    ),
                );
            }
        }
    }

    let context = &config.context;
    for (field, model) in [
        ("embedding_model", &context.embedding_model),
        ("summarizer_model", &context.summarizer_model),
    ] {
        if let Some(model) = model {
            if !config.models.contains_key(model) {
                problem(
                    format!("context.{field}"),
                    format!(
                        "no model named `{model}`; configured: {}",
                        names(&config.models)
                    ),
                );
            }
        }
    }
    if context.default_strategy == ContextStrategy::Summarize && context.summarizer_model.is_none()
    {
        problem(
            "context.default_strategy".into(),
            "`summarize` needs a `summarizer_model` to write the summaries".into(),
        );
    }
    if context.default_window < 1024 {
        problem(
            "context.default_window".into(),
            "must be at least 1024 tokens".into(),
        );
    }

    let max_bytes = config.files.max_bytes;
    if max_bytes == 0 || max_bytes > FilesConfig::MAX_BYTES_CEILING {
        problem(
            "files.max_bytes".into(),
            format!(
                "must be from 1 to {} bytes, not {max_bytes}",
                FilesConfig::MAX_BYTES_CEILING
            ),
        );
    }

    if let Some(cache) = &config.cache {
        if cache.exact.ttl.0.is_zero() {
            problem("cache.exact.ttl".into(), "must be longer than zero".into());
        }
        if cache.max_bytes == 0 {
            problem("cache.max_bytes".into(), "must be above zero".into());
        }
        if let Some(semantic) = &cache.semantic {
            if semantic.ttl.0.is_zero() {
                problem(
                    "cache.semantic.ttl".into(),
                    "must be longer than zero".into(),
                );
            }
            if !(semantic.threshold > 0.0 && semantic.threshold <= 1.0) {
                problem(
                    "cache.semantic.threshold".into(),
                    format!(
                        "is a cosine similarity: above 0 and at most 1, not {}",
                        semantic.threshold
                    ),
                );
            }
            if !config.models.contains_key(&semantic.embedding_model) {
                problem(
                    "cache.semantic.embedding_model".into(),
                    format!(
                        "no model named `{}`; configured: {}",
                        semantic.embedding_model,
                        names(&config.models)
                    ),
                );
            }
        }
    }

    for (list, patterns) in [
        ("deny", &config.guardrails.deny),
        ("deny_output", &config.guardrails.deny_output),
    ] {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(e) = crate::guardrails::compile(pattern) {
                problem(
                    format!("guardrails.{list}[{i}]"),
                    format!("`{pattern}` is not a usable pattern: {e}"),
                );
            }
        }
    }

    let breaker = &config.routing.breaker;
    if breaker.consecutive_failures == 0
        || !(0.0..=1.0).contains(&breaker.failure_ratio)
        || breaker.failure_ratio == 0.0
    {
        problem(
            "routing.breaker".into(),
            "consecutive_failures must be at least 1 and failure_ratio in (0, 1]".into(),
        );
    }
    if breaker.window.0.as_secs() < 1
        || breaker.cooldown.0.is_zero()
        || breaker.max_cooldown < breaker.cooldown
    {
        problem(
            "routing.breaker".into(),
            "window must be at least 1s, cooldown above zero and max_cooldown at least cooldown"
                .into(),
        );
    }

    let mut seen_keys: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(master) = &config.server.master_key {
        if master.is_empty() {
            problem(
                "server.master_key".into(),
                "is empty: remove it or give it a value".into(),
            );
        }
        seen_keys.insert(master.expose(), "server.master_key");
    }
    for (name, key) in &config.keys {
        let at = |field: &str| format!("keys.{name}.{field}");
        if key.key.is_empty() {
            problem(at("key"), "is empty".into());
        } else if let Some(other) = seen_keys.insert(key.key.expose(), name) {
            problem(
                at("key"),
                format!("is the same secret as `{other}`: every key must be distinct"),
            );
        }
        if let Some(regions) = &key.regions {
            if let Some(problem_text) = regions_problem(config, regions) {
                problem(at("regions"), problem_text);
            }
        }
        if let Some(problem_text) = key.mcp_tools.as_deref().and_then(mcp_tools_problem) {
            problem(at("mcp_tools"), problem_text);
        }
        for model in key.models.iter().flatten() {
            if !config.models.contains_key(model) {
                problem(
                    at("models"),
                    format!(
                        "no model named `{model}`; configured: {}",
                        names(&config.models)
                    ),
                );
            }
        }
    }

    for (name, key) in &config.keys {
        if let Some(budget) = &key.budget {
            if !(budget.usd.is_finite() && budget.usd >= 0.0) {
                problem(
                    format!("keys.{name}.budget.usd"),
                    "must be a number of dollars, zero or more".into(),
                );
            }
        }
    }

    let database = config.storage.database.expose();
    if !(database.starts_with("sqlite:")
        || database.starts_with("postgres://")
        || database.starts_with("postgresql://"))
    {
        problem(
            "storage.database".into(),
            "must be \"sqlite://FILE\", \"sqlite::memory:\" or \"postgres://user@host/db\"".into(),
        );
    }
    if let Some(redis) = &config.storage.redis {
        if !(redis.expose().starts_with("redis://") || redis.expose().starts_with("rediss://")) {
            problem(
                "storage.redis".into(),
                "must be a redis:// URL, like \"redis://127.0.0.1:6379\"".into(),
            );
        }
    }
    let ledger = &config.storage.ledger;
    if ledger.batch_size == 0 || ledger.flush_interval.0.is_zero() || ledger.max_buffered == 0 {
        problem(
            "storage.ledger".into(),
            "batch_size, flush_interval and max_buffered must be above zero".into(),
        );
    }
    if config.storage.sync_interval.0.is_zero() {
        problem(
            "storage.sync_interval".into(),
            "must be longer than zero".into(),
        );
    }
    if let Some(retention) = config.storage.log_retention {
        if retention.0 < std::time::Duration::from_secs(86_400) {
            problem(
                "storage.log_retention".into(),
                "must be at least 1d: raw rows are purged by whole days".into(),
            );
        }
    }
    if let Some(jwt) = &config.auth.jwt {
        if jwt.jwks_url.is_some() == jwt.public_key.is_some() {
            problem(
                "auth.jwt".into(),
                "set exactly one of jwks_url and public_key".into(),
            );
        }
        if let Some(url) = &jwt.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problem(
                    "auth.jwt.jwks_url".into(),
                    format!("`{url}` is not an http:// or https:// URL"),
                );
            }
        }
        for alg in &jwt.algorithms {
            if !matches!(
                alg.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                problem(
                    "auth.jwt.algorithms".into(),
                    format!("`{alg}` is not supported: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
                );
            }
        }
    }

    let telemetry = &config.telemetry;
    if let Some(url) = &telemetry.otlp_endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.parse::<http::Uri>().is_err()
        {
            problem(
                "telemetry.otlp_endpoint".into(),
                format!(
                    "`{url}` is not an http:// or https:// URL, like \"http://127.0.0.1:4318\""
                ),
            );
        }
    }
    for (header, value) in &telemetry.otlp_headers {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err()
            || http::HeaderValue::from_str(value.expose()).is_err()
        {
            problem(
                "telemetry.otlp_headers".into(),
                format!(
                    "`{header}` is not a valid header name, or its value not a valid header value"
                ),
            );
        }
    }
    if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
        problem(
            "telemetry.sample_ratio".into(),
            "must be between 0 and 1".into(),
        );
    }
    if telemetry.service_name.is_empty() {
        problem("telemetry.service_name".into(), "must not be empty".into());
    }

    for (name, server) in &config.mcp.servers {
        let at = |field: &str| format!("mcp.servers.{name}.{field}");
        if !mcp_server_name_ok(name) {
            problem(
                format!("mcp.servers.{name}"),
                "a server name takes letters, digits, `-` and single `_` (its tools are named `NAME__TOOL`)".into(),
            );
        }
        match (&server.url, &server.command) {
            (Some(_), Some(_)) => problem(
                format!("mcp.servers.{name}"),
                "give a `url` or a `command`, not both".into(),
            ),
            (None, None) => problem(
                format!("mcp.servers.{name}"),
                "needs a `url` (streamable HTTP) or a `command` (stdio)".into(),
            ),
            (Some(url), None) => {
                if let Some(text) = mcp_url_problem(url) {
                    problem(at("url"), text);
                }
                if !server.args.is_empty() || !server.env.is_empty() {
                    problem(at("args"), "`args` and `env` go with a `command`".into());
                }
            }
            (None, Some(command)) => {
                if command.trim().is_empty() {
                    problem(at("command"), "is empty".into());
                }
                if !server.headers.is_empty() {
                    problem(at("headers"), "`headers` go with a `url`".into());
                }
                if let Some(var) = server
                    .env
                    .keys()
                    .find(|v| v.is_empty() || v.contains(['=', '\0']))
                {
                    problem(
                        at("env"),
                        format!("`{var}` is not an environment variable name"),
                    );
                }
            }
        }
        for (header, value) in &server.headers {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err()
                || http::HeaderValue::from_str(value.expose()).is_err()
            {
                problem(
                    at("headers"),
                    format!(
                        "`{header}` is not a valid header name, or its value not a valid header value"
                    ),
                );
            }
        }
    }

    let has_keys = config.server.master_key.is_some() || !config.keys.is_empty();
    if !has_keys && !config.server.listen.ip().is_loopback() {
        problem(
            "server.listen".into(),
            format!(
                "{} is reachable from other machines, but no key is configured, so anyone could use it: add [keys.NAME] or server.master_key, or listen on 127.0.0.1",
                config.server.listen
            ),
        );
    }
    problems
}

fn names<V>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is wrong with an MCP server's `url`, if anything.
fn mcp_url_problem(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok();
    if !(url.starts_with("http://") || url.starts_with("https://")) || uri.is_none() {
        return Some(format!(
            "`{url}` is not an http:// or https:// URL, like \"http://127.0.0.1:9000/mcp\""
        ));
    }
    uri.and_then(|u| u.into_parts().authority)
        .is_some_and(|a| a.as_str().contains('@'))
        .then(|| {
            "has a user name or password in it: give credentials with `headers` instead".into()
        })
}

/// Whether `name` can name an MCP server: its tools are `NAME__TOOL`, so the name holds no `__`.
pub fn mcp_server_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What is wrong with a caller's `mcp_tools` globs, if anything: each is a tool name in which
/// `*` stands for any run of characters and `?` for one.
pub fn mcp_tools_problem(globs: &[String]) -> Option<String> {
    globs
        .iter()
        .find(|g| g.is_empty() || g.len() > 256 || g.chars().any(char::is_whitespace))
        .map(|g| {
            format!("`{g}` is not a tool name glob: give names like `github__*` or `vector_store_search`, without spaces")
        })
}

/// What is wrong with a caller's `regions`, if anything: none given (nothing could serve it),
/// or none that any provider is in (a typo, most likely).
pub fn regions_problem(config: &Config, regions: &[String]) -> Option<String> {
    if regions.is_empty() {
        return Some(
            "is empty, so no model could serve this caller: remove it to allow any region".into(),
        );
    }
    let known: std::collections::BTreeSet<&str> = config
        .providers
        .values()
        .filter_map(|p| p.region.as_deref())
        .collect();
    if regions.iter().any(|r| known.contains(r.as_str())) {
        return None;
    }
    let known = if known.is_empty() {
        "no provider has a `region`".to_string()
    } else {
        format!(
            "provider regions: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    Some(format!(
        "no provider is in {}, so no model could serve this caller ({known})",
        regions.join(", ")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{Config, ProviderKind, EXAMPLE};

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        // The example requires PROXIMA_MASTER_KEY.
        let env = |name: &str| (name == "PROXIMA_MASTER_KEY").then(|| "k".repeat(32));
        Config::parse(text, "test.toml", &env)
            .map_err(|p| p.0.iter().map(ToString::to_string).collect())
    }

    /// What `check` says of `text`; nothing when it is valid.
    fn check(text: &str) -> Vec<String> {
        parse(text).err().unwrap_or_default()
    }

    #[test]
    fn example_is_valid_and_has_gemini() {
        let config = match parse(EXAMPLE) {
            Ok(config) => config,
            Err(problems) => panic!("{problems:?}"),
        };
        assert_eq!(config.providers["gemini"].kind, ProviderKind::Gemini);
        assert_eq!(config.files.max_bytes, 25_000_000);
    }

    #[test]
    fn log_retention_is_off_by_default_and_whole_days() {
        assert!(parse("").unwrap().storage.log_retention.is_none());
        let config = parse("[storage]\nlog_retention = \"90d\"\n").unwrap();
        assert_eq!(
            config.storage.log_retention.map(|d| d.0.as_secs()),
            Some(90 * 86_400)
        );
        let problems = parse("[storage]\nlog_retention = \"12h\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("test.toml:2: storage.log_retention: must be at least 1d"),
            "{problems:?}"
        );
    }

    #[test]
    fn files_max_bytes_is_checked_with_its_line() {
        assert_eq!(parse("").unwrap().files.max_bytes, 25_000_000);
        assert_eq!(
            parse("[files]\nmax_bytes = 1_000\n")
                .unwrap()
                .files
                .max_bytes,
            1_000
        );
        for bad in ["0", "600_000_000"] {
            let problems = parse(&format!("[files]\nmax_bytes = {bad}\n"))
                .err()
                .unwrap_or_default();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("test.toml:2: files.max_bytes: must be from 1 to"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn pii_is_off_by_default_and_overrides_apply_key_over_team() {
        use crate::config::{PiiEntity, PiiMode, PiiOverride};
        let config = parse("").unwrap();
        assert_eq!(config.pii.mode, PiiMode::Off);
        assert_eq!(config.pii.entities, PiiEntity::ALL.to_vec());
        let config = parse("[pii]\nmode = \"mask\"\nentities = [\"email\", \"card\"]\n").unwrap();
        let team = PiiOverride {
            mode: Some(PiiMode::Block),
            entities: Some(vec![PiiEntity::Ssn]),
        };
        let key = PiiOverride {
            mode: Some(PiiMode::Off),
            entities: None,
        };
        let (mode, entities) = config.pii.with_overrides([&team, &key]);
        assert_eq!(mode, PiiMode::Off);
        assert_eq!(entities, [PiiEntity::Ssn]);
        assert_eq!(
            config.pii.with_overrides([]).1,
            [PiiEntity::Email, PiiEntity::Card]
        );
        assert!(parse("[pii]\nmode = \"scramble\"\n").is_err());
        assert!(parse("[pii]\nentities = [\"passport\"]\n").is_err());
    }

    #[test]
    fn mcp_servers_and_tool_globs_are_checked() {
        let config = parse(
            "[mcp.servers.git-hub]\nurl = \"https://mcp.example.com/mcp\"\n\
             headers = { authorization = \"Bearer t\" }\n\
             [keys.a]\nkey = \"sk-test-aaaaaaaaaaaaaaaa\"\nmcp_tools = [\"git-hub__*\"]\n",
        )
        .unwrap();
        assert_eq!(config.mcp.servers["git-hub"].timeout.0.as_secs(), 30);
        assert_eq!(config.mcp.tools_ttl.0.as_secs(), 300);
        for (text, says) in [
            (
                "[mcp.servers.a__b]\nurl = \"http://h/mcp\"\n",
                "mcp.servers.a__b: a server name",
            ),
            (
                "[mcp.servers.a]\nurl = \"ftp://h/mcp\"\n",
                "mcp.servers.a.url: `ftp://h/mcp` is not",
            ),
            (
                "[mcp.servers.a]\nurl = \"http://u:p@h/mcp\"\n",
                "mcp.servers.a.url: has a user name",
            ),
            (
                "[mcp.servers.a]\nurl = \"http://h/mcp\"\nheaders = { \"bad header\" = \"x\" }\n",
                "mcp.servers.a.headers: `bad header`",
            ),
            (
                "[mcp.servers.a]\nurl = \"http://h/mcp\"\ncommand = \"x\"\n",
                "not both",
            ),
            ("[mcp.servers.a]\ntimeout = \"1s\"\n", "needs a `url`"),
            (
                "[mcp.servers.a]\ncommand = \"x\"\nheaders = { a = \"b\" }\n",
                "go with a `url`",
            ),
            (
                "[mcp.servers.a]\nurl = \"http://h/mcp\"\nargs = [\"x\"]\n",
                "go with a `command`",
            ),
            (
                "[keys.a]\nkey = \"sk-test-aaaaaaaaaaaaaaaa\"\nmcp_tools = [\"\"]\n",
                "keys.a.mcp_tools: `` is not a tool name glob",
            ),
        ] {
            let problems = check(text);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            assert!(problems[0].contains(says), "{text}: {problems:?}");
        }
    }

    #[test]
    fn key_regions_must_name_a_provider_region() {
        let base = "[providers.eu]\nkind = \"mock\"\nregion = \"eu\"\n\
            [keys.a]\nkey = \"sk-test-aaaaaaaaaaaaaaaa\"\n";
        assert!(parse(&format!("{base}regions = [\"eu\", \"us\"]\n")).is_ok());
        for (regions, says) in [("[]", "is empty"), ("[\"ue\"]", "no provider is in ue")] {
            let problems = parse(&format!("{base}regions = {regions}\n"))
                .err()
                .unwrap_or_default();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].contains("keys.a.regions") && problems[0].contains(says),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn cache_is_off_by_default_and_checked_with_its_lines() {
        assert!(parse("").unwrap().cache.is_none());
        let config = parse("[cache]\n").unwrap();
        let cache = config.cache.unwrap();
        assert_eq!(cache.exact.ttl.0.as_secs(), 3600);
        assert!(cache.semantic.is_none());
        assert_eq!(cache.scope, crate::config::CacheScope::Team);
        let problems = parse(
            "[cache]\nexact = { ttl = \"0s\" }\nsemantic = { threshold = 1.5, embedding_model = \"nope\" }\nscope = \"key\"\n",
        )
        .err()
        .unwrap_or_default();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("test.toml:2: cache.exact.ttl"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("cache.semantic.threshold"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("no model named `nope`"),
            "{problems:?}"
        );
        let problems = parse("[cache]\nscope = \"everyone\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn base_url_credentials_are_refused_unquoted() {
        let problems = check(
            r#"
[providers.o]
kind = "openai"
base_url = "https://user:hunter2@llm.example/v1"
"#,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("user name or password"),
            "{problems:?}"
        );
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn gemini_takes_no_api_version_or_latency() {
        let problems = check(
            r#"
[providers.g]
kind = "gemini"
api_version = "v1"
latency = "5ms"
"#,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        for field in ["providers.g.api_version", "providers.g.latency"] {
            assert!(problems.iter().any(|p| p.contains(field)), "{problems:?}");
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn local_needs_a_complete_model_folder_and_nothing_remote() {
        // A local provider without its folder but with a URL, and a path where none belongs.
        let problems = check(concat!(
            "[providers.minilm]\nkind = \"local\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
            "[providers.o]\nkind = \"openai\"\npath = \"models/x\"\n",
        ));
        assert_eq!(problems.len(), 3, "{problems:?}");
        for (field, says) in [
            (
                "providers.minilm.path",
                "needs the path of its model folder",
            ),
            ("providers.minilm.base_url", "takes no base_url"),
            ("providers.o.path", "only `local` providers take a path"),
        ] {
            let found = problems
                .iter()
                .any(|p| p.contains(field) && p.contains(says));
            assert!(found, "{field}: {problems:?}");
        }

        let dir = std::env::temp_dir().join(format!("proxima-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), "").unwrap();
        let problems = check(&format!(
            "[providers.minilm]\nkind = \"local\"\npath = \"{}\"\n",
            dir.display()
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("lacks tokenizer.json"), "{problems:?}");
    }
}
