//! The dashboard: requests, errors, latency, tokens, cost and the cache's hit rate over a
//! chosen window, as charts, for everything or one model, team or key — read from the ledger
//! in time buckets ([`crate::store::Store::usage_series`]).

use std::sync::Arc;

use axum::extract::{Extension, RawQuery};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{self, Chart, Kind, Series};
use super::{error_page, filled, layout, Nav, Session};
use crate::clock;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{SeriesFilter, UsageBucket};

/// The windows offered: name, length and bucket width, in ms.
const WINDOWS: [(&str, i64, i64); 4] = [
    ("1h", 3_600_000, 60_000),
    ("6h", 6 * 3_600_000, 5 * 60_000),
    ("24h", 24 * 3_600_000, 30 * 60_000),
    ("7d", 7 * 24 * 3_600_000, 2 * 3_600_000),
];

#[derive(Deserialize, Default)]
struct DashboardQuery {
    window: Option<String>,
    model: Option<String>,
    team: Option<String>,
    key: Option<String>,
}

/// `GET /ui/dashboard?window=1h|6h|24h|7d&model=&team=&key=`.
pub async fn page(
    Extension(state): Extension<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    match render(&state, raw.as_deref().unwrap_or_default()).await {
        Ok(body) => layout(&session, Nav::Dashboard, "Dashboard", body),
        Err(e) => error_page(&session, Nav::Dashboard, &e),
    }
}

async fn render(state: &AppState, raw: &str) -> Result<Markup> {
    let query: DashboardQuery = crate::surface::query(Some(raw))?;
    let window = filled(&query.window).unwrap_or("24h");
    let &(window, length, bucket) = WINDOWS
        .iter()
        .find(|(name, ..)| *name == window)
        .ok_or_else(|| {
            Error::invalid_request(format!("`{window}` is not a window: 1h, 6h, 24h or 7d"))
        })?;
    let filter = SeriesFilter {
        model: filled(&query.model).map(str::to_owned),
        team: filled(&query.team).map(str::to_owned),
        key: filled(&query.key).map(str::to_owned),
    };
    // Buckets end with the current one.
    let to = (clock::now_ms() / bucket + 1) * bucket;
    let store = &state.services().store;
    let series = store.usage_series(to - length, to, bucket, &filter).await?;
    let teams = store.list_teams().await?;
    let keys = store.list_keys(true).await?;
    let gateway = state.gateway();
    let models = gateway.router.public_names();
    let labels: Vec<String> = series
        .iter()
        .map(|b| bucket_label(b.start, length))
        .collect();
    let total = |f: fn(&UsageBucket) -> i64| series.iter().map(f).sum::<i64>();
    let requests = total(|b| b.requests);
    let errors = total(|b| b.errors);
    let cost: f64 = series.iter().map(|b| b.cost_usd).sum();
    let lookups = total(|b| b.cache_lookups);
    let hits = total(|b| b.cache_hits);
    let values = |f: fn(&UsageBucket) -> Option<f64>| series.iter().map(f).collect::<Vec<_>>();
    let charts = [
        Chart {
            title: "Requests and errors",
            kind: Kind::Bars,
            series: vec![
                Series {
                    name: "requests",
                    values: values(|b| counted(b.requests)),
                },
                Series {
                    name: "errors",
                    values: values(|b| counted(b.errors)),
                },
            ],
            labels: &labels,
            format: charts::count,
            min_top: 4.0,
        },
        Chart {
            title: "Latency",
            kind: Kind::Lines,
            series: vec![
                Series {
                    name: "p50",
                    values: values(|b| b.p50_ms.map(|v| v as f64)),
                },
                Series {
                    name: "p99",
                    values: values(|b| b.p99_ms.map(|v| v as f64)),
                },
            ],
            labels: &labels,
            format: charts::millis,
            min_top: 10.0,
        },
        Chart {
            title: "Tokens",
            kind: Kind::Bars,
            series: vec![
                Series {
                    name: "input",
                    values: values(|b| counted(b.input_tokens)),
                },
                Series {
                    name: "output",
                    values: values(|b| counted(b.output_tokens)),
                },
            ],
            labels: &labels,
            format: charts::count,
            min_top: 4.0,
        },
        Chart {
            title: "Cost",
            kind: Kind::Bars,
            series: vec![Series {
                name: "cost",
                values: values(|b| Some(b.cost_usd)),
            }],
            labels: &labels,
            format: charts::usd,
            min_top: 0.01,
        },
        Chart {
            title: "Cache hit rate",
            kind: Kind::Lines,
            series: vec![Series {
                name: "hit rate",
                values: values(UsageBucket::cache_hit_rate),
            }],
            labels: &labels,
            format: charts::percent,
            min_top: 1.0,
        },
    ];
    Ok(html! {
        form.filters method="get" action="/ui/dashboard" {
            label { "Window "
                select name="window" {
                    @for (name, ..) in WINDOWS {
                        option value=(name) selected[name == window] { (name) }
                    }
                }
            }
            label { "Model "
                select name="model" {
                    option value="" { "all" }
                    @for model in &models {
                        option value=(model) selected[filter.model.as_deref() == Some(*model)] { (model) }
                    }
                }
            }
            label { "Team "
                select name="team" {
                    option value="" { "all" }
                    @for team in teams.iter().filter(|t| t.deleted_at.is_none()) {
                        option value=(team.name) selected[filter.team.as_deref() == Some(team.name.as_str())] { (team.name) }
                    }
                }
            }
            label { "Key "
                select name="key" {
                    option value="" { "all" }
                    @for key in &keys {
                        option value=(key.id) selected[filter.key.as_deref() == Some(key.id.as_str())] { (key.name) " (" (key.prefix) ")" }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        div.stats {
            div.stat { span.value { (requests) } span.label { "requests" } }
            div.stat { span.value { (errors) } span.label { "errors" } }
            div.stat { span.value { (super::dollars(cost)) } span.label { "cost" } }
            div.stat {
                span.value { @if lookups > 0 { (charts::percent(hits as f64 / lookups as f64)) } @else { "–" } }
                span.label { "cache hit rate" }
            }
        }
        div.charts {
            @for chart in &charts { (chart.render()) }
        }
        p.muted { "Times in UTC. Latency percentiles are read from classes about 25% wide." }
    })
}

/// A count as a chart value.
fn counted(v: i64) -> Option<f64> {
    Some(v as f64)
}

/// A bucket's label: the time of day in short windows, the day and hour in long ones.
fn bucket_label(start: i64, window: i64) -> String {
    let text = super::when(start);
    if window > 24 * 3_600_000 {
        // `2026-11-27 10:00:00` → `11-27 10h`
        format!(
            "{} {}h",
            text.get(5..10).unwrap_or_default(),
            text.get(11..13).unwrap_or_default()
        )
    } else {
        text.get(11..16).unwrap_or_default().to_owned()
    }
}
