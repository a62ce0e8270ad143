//! Usage over time: the ledger's rows in a window cut into equal time buckets, each with its
//! requests, errors, tokens, cost, cache verdicts and latency percentiles — what the admin
//! UI's dashboard draws.
//!
//! Percentiles are not portable SQL (SQLite has none), so the query groups each bucket's rows
//! by latency class too — classes on a fixed log scale, [`LATENCY_CLASSES`] — and p50/p99 are
//! read from those counts: exact to the class (about 20%), in one query, however many rows.
//! Only raw rows are read: the window is days, and rows are rolled up after `log_retention`.

use serde::Serialize;

use super::ledger::id_floor;
use super::{col, Param, Query, Store};
use crate::error::Result;
use crate::pricing::{self, Nanos};

/// Upper bounds (ms, inclusive) of the latency classes; a last class holds slower ones.
/// Steps of about 25%, from 1 ms to 5 minutes.
pub const LATENCY_CLASSES: [i64; 48] = [
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400,
    500, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10_000, 12_000,
    15_000, 20_000, 25_000, 30_000, 40_000, 60_000, 90_000, 120_000, 300_000,
];

/// Which rows a series counts: all in the window, or those of one model, team or key.
#[derive(Debug, Clone, Default)]
pub struct SeriesFilter {
    pub model: Option<String>,
    pub team: Option<String>,
    /// A key id.
    pub key: Option<String>,
}

/// One time bucket of a usage series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageBucket {
    /// When the bucket begins, epoch ms.
    pub start: i64,
    pub requests: i64,
    /// Answered with a status of 400 or more.
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// Requests with a cache verdict (caching on for their model), and the hits among them.
    pub cache_lookups: i64,
    pub cache_hits: i64,
    /// Latency percentiles in ms (the upper bound of the class they fall in); `None` without
    /// requests.
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
}

impl UsageBucket {
    /// Hits per lookup, 0 to 1; `None` when nothing was looked up.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        (self.cache_lookups > 0).then(|| self.cache_hits as f64 / self.cache_lookups as f64)
    }
}

/// The latency class expression: the index of the first bound at or above `latency_ms`.
fn latency_class_sql() -> String {
    let mut sql = String::from("CASE");
    for (i, bound) in LATENCY_CLASSES.iter().enumerate() {
        sql.push_str(&format!(" WHEN latency_ms <= {bound} THEN {i}"));
    }
    sql.push_str(&format!(" ELSE {} END", LATENCY_CLASSES.len()));
    sql
}

/// The latency of class `class`: its upper bound (the last class: twice the last bound).
fn class_ms(class: usize) -> i64 {
    LATENCY_CLASSES
        .get(class)
        .copied()
        .unwrap_or(LATENCY_CLASSES[LATENCY_CLASSES.len() - 1] * 2)
}

/// The `q` quantile (0 to 1) of a histogram of counts by class.
fn quantile(histogram: &[i64], q: f64) -> Option<i64> {
    let total: i64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest count reaching q of the total.
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (class, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(class_ms(class));
        }
    }
    Some(class_ms(histogram.len() - 1))
}

impl Store {
    /// The ledger between `from` and `to` (epoch ms) in buckets of `bucket_ms`, oldest first,
    /// every bucket present (empty ones with zeros), filtered by `filter`.
    pub async fn usage_series(
        &self,
        from: i64,
        to: i64,
        bucket_ms: i64,
        filter: &SeriesFilter,
    ) -> Result<Vec<UsageBucket>> {
        let bucket_ms = bucket_ms.max(1000);
        let first = from.div_euclid(bucket_ms);
        let count = usize::try_from((to - 1).div_euclid(bucket_ms) - first + 1).unwrap_or(0);
        let mut q = Query::new(self.backend(), "");
        let p_width = q.bind(Param::Int(bucket_ms));
        q.push(&format!(
            "SELECT CAST(at / {p_width} AS BIGINT) AS bucket, CAST({} AS BIGINT) AS latency_class, \
             COUNT(*) AS requests, \
             CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos, \
             CAST(SUM(CASE WHEN cache IS NOT NULL AND cache <> 'bypass' THEN 1 ELSE 0 END) AS BIGINT) AS cache_lookups, \
             CAST(SUM(CASE WHEN cache IN ('hit', 'semantic-hit') AND status < 400 THEN 1 ELSE 0 END) AS BIGINT) AS cache_hits \
             FROM usage_ledger WHERE id >= ",
            latency_class_sql()
        ));
        let p_from = q.bind(Param::Text(id_floor(from)));
        q.push(&p_from);
        let p_to = q.bind(Param::Text(id_floor(to)));
        q.push(&format!(" AND id < {p_to}"));
        for (column, value) in [
            ("model", &filter.model),
            ("team", &filter.team),
            ("key_id", &filter.key),
        ] {
            if let Some(value) = value {
                let p = q.bind(Param::Text(value.clone()));
                q.push(&format!(" AND {column} = {p}"));
            }
        }
        q.push(" GROUP BY bucket, latency_class");
        let rows = fetch_query!(self, q, |row| {
            Ok((
                col::<i64>(row, "bucket")?,
                col::<i64>(row, "latency_class")?,
                [
                    col::<i64>(row, "requests")?,
                    col::<i64>(row, "errors")?,
                    col::<i64>(row, "input_tokens")?,
                    col::<i64>(row, "output_tokens")?,
                    col::<Nanos>(row, "cost_nanos")?,
                    col::<i64>(row, "cache_lookups")?,
                    col::<i64>(row, "cache_hits")?,
                ],
            ))
        })?;
        let mut sums = vec![[0i64; 7]; count];
        let mut histograms = vec![vec![0i64; LATENCY_CLASSES.len() + 1]; count];
        for (bucket, class, values) in rows {
            let Ok(index) = usize::try_from(bucket - first) else {
                continue;
            };
            let (Some(sum), Some(histogram)) = (sums.get_mut(index), histograms.get_mut(index))
            else {
                continue;
            };
            for (total, value) in sum.iter_mut().zip(values) {
                *total += value;
            }
            if let Some(slot) = usize::try_from(class)
                .ok()
                .and_then(|c| histogram.get_mut(c))
            {
                *slot += values[0];
            }
        }
        Ok(sums
            .iter()
            .zip(&histograms)
            .enumerate()
            .map(|(i, (sum, histogram))| UsageBucket {
                start: (first + i as i64) * bucket_ms,
                requests: sum[0],
                errors: sum[1],
                input_tokens: sum[2],
                output_tokens: sum[3],
                cost_usd: pricing::usd(sum[4]),
                cache_lookups: sum[5],
                cache_hits: sum[6],
                p50_ms: quantile(histogram, 0.5),
                p99_ms: quantile(histogram, 0.99),
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::ledger::tests::row;
    use super::super::testing::on_both;
    use super::*;

    #[test]
    fn quantiles_read_the_class_reached() {
        let mut histogram = vec![0; LATENCY_CLASSES.len() + 1];
        assert_eq!(quantile(&histogram, 0.5), None);
        histogram[7] = 98; // 10 ms
        histogram[27] = 2; // 1000 ms
        assert_eq!(quantile(&histogram, 0.5), Some(10));
        assert_eq!(quantile(&histogram, 0.99), Some(1000));
    }

    on_both!(series_buckets_and_filters, |store: Store| async move {
        // 30 rows one second apart from T; latencies 12 ms, one of 900 ms; one error.
        let t = 1_795_773_600_000;
        let rows: Vec<_> = (0..30)
            .map(|i| {
                let mut r = row(
                    i,
                    "k1",
                    Some("t"),
                    if i < 20 { "fast" } else { "smart" },
                    200,
                );
                if i == 5 {
                    r.latency_ms = 900;
                    r.status = 502;
                }
                if i < 10 {
                    r.cache = Some(if i < 4 { "hit" } else { "miss" }.into());
                }
                r
            })
            .collect();
        store.insert_usage(&rows).await.unwrap();
        // Buckets of 10 s over 40 s: three full, one empty.
        let series = store
            .usage_series(t, t + 40_000, 10_000, &SeriesFilter::default())
            .await
            .unwrap();
        assert_eq!(series.len(), 4);
        assert_eq!(series[0].start, t);
        assert_eq!(
            series.iter().map(|b| b.requests).collect::<Vec<_>>(),
            [10, 10, 10, 0]
        );
        assert_eq!((series[0].errors, series[1].errors), (1, 0));
        assert_eq!((series[0].cache_lookups, series[0].cache_hits), (10, 4));
        assert_eq!(series[0].cache_hit_rate(), Some(0.4));
        assert_eq!(series[0].p50_ms, Some(12));
        assert_eq!(series[0].p99_ms, Some(1000));
        assert_eq!(series[1].p99_ms, Some(12));
        assert_eq!(series[3].p50_ms, None);
        assert_eq!(series[0].input_tokens, 100);
        let smart = store
            .usage_series(
                t,
                t + 40_000,
                10_000,
                &SeriesFilter {
                    model: Some("smart".into()),
                    ..SeriesFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            smart.iter().map(|b| b.requests).collect::<Vec<_>>(),
            [0, 0, 10, 0]
        );
    });
}
