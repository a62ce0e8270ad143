//! `proxima migrate`, `proxima keys create/list/revoke` and `proxima usage`: they work on the
//! database the config names, directly, so they work with the gateway stopped too. A key
//! revoked here stops working on running gateways within `storage.sync_interval`. Key changes
//! are recorded in the audit log with the actor `cli`.

use std::future::Future;
use std::process::ExitCode;

use clap::Subcommand;

use super::{load, ConfigArg};
use crate::audit::{self, Actor, Target};
use crate::clock;
use crate::config::{BudgetConfig, BudgetPeriod};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{GroupBy, KeyRecord, NewKey, Store};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key; its secret is printed this once.
    Create(CreateKey),
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Revoked keys too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key for good.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's id (`key_...`).
        id: String,
    },
}

#[derive(clap::Args)]
pub struct CreateKey {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    name: String,
    #[arg(long)]
    team: Option<String>,
    /// Public models the key may use, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Regions whose providers may serve the key, comma separated (default: any).
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// Tools of /mcp the key may list and call, as globs, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    mcp_tools: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Budget in US dollars per `--budget-period`.
    #[arg(long)]
    budget_usd: Option<f64>,
    /// 1d, 1w, 1mo or total.
    #[arg(long, default_value = "total", value_parser = parse_period)]
    budget_period: BudgetPeriod,
    /// When the key stops working: a time (2026-12-31, RFC 3339) or a lifetime (30d).
    #[arg(long)]
    expires: Option<String>,
    /// The key may use the admin API, like the master key.
    #[arg(long)]
    admin: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct UsageArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long, value_enum, default_value = "model")]
    by: GroupBy,
    /// Start: a date, RFC 3339 time, or an age like 7d (default 30d).
    #[arg(long, default_value = "30d")]
    since: String,
    /// End (default: now).
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    json: bool,
}

fn parse_period(text: &str) -> std::result::Result<BudgetPeriod, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("`{text}` is not a budget period: use 1d, 1w, 1mo or total"))
}

/// Opens the configured database and runs `work` on it, printing a failure.
fn with_store<F, Fut>(config: ConfigArg, work: F) -> ExitCode
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let (config, _) = match load(config) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = super::runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let store = Store::open(config.storage.database.expose()).await?;
        let result = work(store.clone()).await;
        store.close().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxima: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

pub fn migrate(config: ConfigArg) -> ExitCode {
    with_store(config, |store| async move {
        // `open` has applied what was pending; say where the schema stands.
        let pending = store.migrate().await?;
        println!(
            "database is up to date{}",
            if pending.is_empty() {
                ""
            } else {
                " (migrations applied)"
            }
        );
        Ok(())
    })
}

pub fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Create(args) => {
            let json = args.json;
            let new = match new_key(&args) {
                Ok(new) => new,
                Err(e) => {
                    eprintln!("proxima: {}", e.message);
                    return ExitCode::FAILURE;
                }
            };
            with_store(args.config, |store| async move {
                let (record, secret) = audit::record(
                    &store,
                    &Actor::cli(),
                    "key.create",
                    Target::Made(|(record, _): &(KeyRecord, String)| record.id.clone()),
                    audit::detail(&serde_json::to_value(&new).unwrap_or_default()),
                    store.create_key(&new),
                )
                .await?;
                if json {
                    let mut value = serde_json::to_value(&record).unwrap_or_default();
                    value["key"] = secret.into();
                    println!("{value:#}");
                } else {
                    println!("created key {} ({})", record.id, record.name);
                    println!("secret (shown once, store it now): {secret}");
                }
                Ok(())
            })
        }
        KeysCommand::List { config, all, json } => with_store(config, |store| async move {
            let keys = store.list_keys(all).await?;
            if json {
                println!("{:#}", serde_json::json!(keys));
            } else {
                print_keys(&keys);
            }
            Ok(())
        }),
        KeysCommand::Revoke { config, id } => with_store(config, |store| async move {
            audit::record(
                &store,
                &Actor::cli(),
                "key.revoke",
                Target::Known(&id),
                serde_json::json!({}),
                async {
                    match store.revoke_key(&id).await? {
                        Some(_) => Ok(()),
                        None => Err(Error::new(
                            ErrorKind::NotFound,
                            format!("there is no key `{id}`"),
                        )),
                    }
                },
            )
            .await?;
            println!("revoked {id}");
            Ok(())
        }),
    }
}

fn new_key(args: &CreateKey) -> Result<NewKey> {
    let expires_at = match &args.expires {
        None => None,
        Some(text) => {
            let now = clock::now_ms();
            // A lifetime (`30d`) counts forward; anything else is a point in time.
            let at = match crate::config::ConfigDuration::parse(text) {
                Ok(life) => now + i64::try_from(life.0.as_millis()).unwrap_or(i64::MAX / 2),
                Err(_) => clock::parse_time(text, now).map_err(Error::invalid_request)?,
            };
            Some(at)
        }
    };
    if let Some(problem) = args
        .mcp_tools
        .as_deref()
        .and_then(crate::config::validate::mcp_tools_problem)
    {
        return Err(Error::invalid_request(format!("--mcp-tools: {problem}")));
    }
    Ok(NewKey {
        name: args.name.clone(),
        team: args.team.clone(),
        models: args.models.clone(),
        rpm: args.rpm,
        tpm: args.tpm,
        budget: args.budget_usd.map(|usd| BudgetConfig {
            usd,
            period: args.budget_period,
        }),
        regions: args.regions.clone(),
        pii: None,
        mcp_tools: args.mcp_tools.clone(),
        expires_at,
        metadata: None,
        admin: args.admin,
    })
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_keys(keys: &[KeyRecord]) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.prefix.clone(),
                or_dash(k.team.clone()),
                or_dash(k.models.as_ref().map(|m| m.join(","))),
                or_dash(k.rpm.map(|v| v.to_string())),
                or_dash(k.tpm.map(|v| v.to_string())),
                or_dash(
                    k.budget
                        .map(|b| format!("${:.2}/{}", b.usd, b.period.name())),
                ),
                if k.revoked_at.is_some() {
                    "revoked".into()
                } else if !k.is_active(clock::now_ms()) {
                    "expired".into()
                } else {
                    "active".into()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "NAME", "PREFIX", "TEAM", "MODELS", "RPM", "TPM", "BUDGET", "STATE",
        ],
        &rows,
    );
}

pub fn usage(args: UsageArgs) -> ExitCode {
    let now = clock::now_ms();
    let range = clock::parse_time(&args.since, now).and_then(|from| {
        let to = match &args.until {
            Some(text) => clock::parse_time(text, now)?,
            None => now + 1,
        };
        Ok((from, to))
    });
    let (from, to) = match range {
        Ok(range) => range,
        Err(e) => {
            eprintln!("proxima: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (by, json) = (args.by, args.json);
    with_store(args.config, |store| async move {
        let groups = store.usage_report(by, from, to).await?;
        if json {
            println!(
                "{:#}",
                serde_json::json!({"by": by, "from": clock::rfc3339(from), "to": clock::rfc3339(to), "data": groups})
            );
            return Ok(());
        }
        let mut rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                let mut group = g.group.clone().unwrap_or_else(|| "-".into());
                if let Some(name) = &g.name {
                    group = format!("{group} ({name})");
                }
                vec![
                    group,
                    g.requests.to_string(),
                    g.errors.to_string(),
                    g.input_tokens.to_string(),
                    g.output_tokens.to_string(),
                    format!("{:.4}", g.cost_usd),
                ]
            })
            .collect();
        let sum =
            |f: fn(&crate::store::UsageGroup) -> i64| groups.iter().map(f).sum::<i64>().to_string();
        rows.push(vec![
            "TOTAL".into(),
            sum(|g| g.requests),
            sum(|g| g.errors),
            sum(|g| g.input_tokens),
            sum(|g| g.output_tokens),
            format!(
                "{:.4}",
                crate::pricing::usd(groups.iter().map(|g| g.cost_nanos).sum())
            ),
        ]);
        let by_name = serde_json::to_value(by)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_default();
        println!(
            "usage from {} to {}",
            clock::rfc3339(from),
            clock::rfc3339(to)
        );
        print_table(
            &[
                &by_name,
                "REQUESTS",
                "ERRORS",
                "INPUT TOKENS",
                "OUTPUT TOKENS",
                "COST USD",
            ],
            &rows,
        );
        Ok(())
    })
}
