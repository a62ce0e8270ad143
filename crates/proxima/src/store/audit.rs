//! The audit log table: one row per admin action, written before the change is made and
//! completed with its outcome after (see [`crate::audit`]), and read newest first by
//! `GET /admin/audit`.

use serde::Serialize;

use super::ledger::time_id;
use super::{col, db_error, Page, Param, Query, Row, Store};
use crate::error::Result;

/// One admin action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: String,
    /// When it was made, epoch ms.
    pub at: i64,
    /// Who made it: `master`, an admin key's id, `cli` (the command line) or `system` (a
    /// reload on SIGHUP or a changed config file).
    pub actor_id: String,
    /// The key's name; for `system`, what triggered it.
    pub actor_name: String,
    /// What was done: `key.create`, `key.update`, `key.revoke`, `team.create`, `team.update`,
    /// `team.delete`, `config.reload`, `prompt.create`, `prompt.delete`.
    pub action: String,
    /// The key id, team name or config file acted on; `null` when a creation failed.
    pub target: Option<String>,
    /// The fields the action set, with their values; never a secret.
    pub detail: serde_json::Value,
    pub request_id: Option<String>,
    /// `ok`; `error` (with the `status` and `error_code` the caller got: the change was
    /// refused, nothing changed); or `pending`: the outcome was never recorded (the gateway stopped, or the
    /// database failed, while the change was being made).
    pub outcome: String,
    pub status: Option<i64>,
    pub error_code: Option<String>,
}

/// Filters of `GET /admin/audit`, times in epoch ms.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// An actor's id or name.
    pub actor: Option<String>,
    /// An action (`key.create`), or a kind of target (`key`: every `key.*`).
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

const COLUMNS: &str = "id, at, actor_id, actor_name, action, target, detail, request_id, \
    outcome, status, error_code";

fn entry_from(row: &impl Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: col(row, "id")?,
        at: col(row, "at")?,
        actor_id: col(row, "actor_id")?,
        actor_name: col(row, "actor_name")?,
        action: col(row, "action")?,
        target: col(row, "target")?,
        detail: super::json_column(col(row, "detail")?).unwrap_or_default(),
        request_id: col(row, "request_id")?,
        outcome: col(row, "outcome")?,
        status: col(row, "status")?,
        error_code: col(row, "error_code")?,
    })
}

impl AuditEntry {
    /// A new entry's id, at `at` (epoch ms): ids sort by time.
    pub fn new_id(at: i64) -> String {
        time_id(*b"a_", at).to_string()
    }
}

impl Store {
    /// Writes a new audit entry.
    pub async fn insert_audit(&self, entry: &AuditEntry) -> Result<()> {
        let sql = sql!("INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(&entry.id)
            .bind(entry.at)
            .bind(&entry.actor_id)
            .bind(&entry.actor_name)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(entry.detail.to_string())
            .bind(&entry.request_id)
            .bind(&entry.outcome)
            .bind(entry.status)
            .bind(&entry.error_code)
            .execute(pool)
            .await
            .map(drop))
        .map_err(db_error)
    }

    /// Records how the action of entry `id` ended, and its target when only known now.
    pub async fn finish_audit(
        &self,
        id: &str,
        target: Option<&str>,
        outcome: &str,
        status: Option<i64>,
        error_code: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE audit_log SET target = COALESCE($2, target), outcome = $3, status = $4, \
             error_code = $5 WHERE id = $1"
        )
        .bind(id)
        .bind(target)
        .bind(outcome)
        .bind(status)
        .bind(error_code)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// The audit log, newest first, filtered, one page at a time.
    pub async fn audit_log(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
        let limit = Page::<AuditEntry>::limit(filter.limit);
        let mut q = Query::new(
            self.backend(),
            &format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"),
        );
        if let Some(actor) = &filter.actor {
            let id = q.bind(Param::Text(actor.clone()));
            let name = q.bind(Param::Text(actor.clone()));
            q.push(&format!(" AND (actor_id = {id} OR actor_name = {name})"));
        }
        if let Some(action) = &filter.action {
            let exact = q.bind(Param::Text(action.clone()));
            let length = q.bind(Param::Int(i64::try_from(action.len() + 1).unwrap_or(0)));
            let kind = q.bind(Param::Text(format!("{action}.")));
            q.push(&format!(
                " AND (action = {exact} OR substr(action, 1, CAST({length} AS INTEGER)) = {kind})"
            ));
        }
        if let Some(target) = &filter.target {
            let p = q.bind(Param::Text(target.clone()));
            q.push(&format!(" AND target = {p}"));
        }
        if let Some(from) = filter.from {
            let p = q.bind(Param::Int(from));
            q.push(&format!(" AND at >= {p}"));
        }
        if let Some(to) = filter.to {
            let p = q.bind(Param::Int(to));
            q.push(&format!(" AND at < {p}"));
        }
        q.page(filter.after.as_deref(), "a_", limit)?;
        let rows = fetch_query!(self, q, entry_from)?;
        Ok(Page::cut(rows, limit, |e| e.id.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testing::on_both;
    use super::*;

    fn entry(at: i64, actor: (&str, &str), action: &str, target: &str) -> AuditEntry {
        AuditEntry {
            id: AuditEntry::new_id(at),
            at,
            actor_id: actor.0.into(),
            actor_name: actor.1.into(),
            action: action.into(),
            target: Some(target.into()),
            detail: serde_json::json!({"rpm": 10}),
            request_id: Some(format!("req-{at}")),
            outcome: "pending".into(),
            status: None,
            error_code: None,
        }
    }

    on_both!(audit_entries_filter_and_page, |store: Store| async move {
        let t0 = 1_795_773_600_000;
        let master = ("master", "master");
        let ops = ("key_ops", "ops");
        let made = [
            entry(t0, master, "key.create", "key_a"),
            entry(t0 + 1_000, ops, "key.update", "key_a"),
            entry(t0 + 2_000, ops, "team.create", "platform"),
            entry(t0 + 3_000, master, "keyring.rotate", "x"),
            entry(t0 + 4_000, master, "key.revoke", "key_a"),
        ];
        for e in &made {
            store.insert_audit(e).await.unwrap();
        }
        store
            .finish_audit(&made[0].id, Some("key_a"), "ok", None, None)
            .await
            .unwrap();
        store
            .finish_audit(
                &made[2].id,
                None,
                "error",
                Some(400),
                Some("invalid_request"),
            )
            .await
            .unwrap();

        let all = store.audit_log(&AuditFilter::default()).await.unwrap();
        let ids: Vec<&str> = all.data.iter().map(|e| e.id.as_str()).collect();
        let newest_first: Vec<&str> = made.iter().rev().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, newest_first);
        assert_eq!(all.next, None);
        let first = all.data.last().unwrap();
        assert_eq!(
            (
                first.outcome.as_str(),
                first.status,
                first.detail["rpm"].as_i64()
            ),
            ("ok", None, Some(10))
        );
        assert_eq!(all.data[2].error_code.as_deref(), Some("invalid_request"));
        assert_eq!(all.data[2].status, Some(400));
        assert_eq!(all.data[0].outcome, "pending");

        let find = |filter: AuditFilter| {
            let store = store.clone();
            async move {
                let page = store.audit_log(&filter).await.unwrap();
                page.data.into_iter().map(|e| e.action).collect::<Vec<_>>()
            }
        };
        // An actor by id or by name; `key` is every key action, not `keyring.*`.
        let by_ops = find(AuditFilter {
            actor: Some("ops".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(by_ops, ["team.create", "key.update"]);
        let by_id = find(AuditFilter {
            actor: Some("key_ops".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(by_id, by_ops);
        let keys = find(AuditFilter {
            action: Some("key".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(keys, ["key.revoke", "key.update", "key.create"]);
        let one = find(AuditFilter {
            action: Some("key.update".into()),
            target: Some("key_a".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(one, ["key.update"]);
        let window = find(AuditFilter {
            from: Some(t0 + 1_000),
            to: Some(t0 + 3_000),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(window, ["team.create", "key.update"]);

        // Pages of two walk everything once.
        let mut seen = Vec::new();
        let mut filter = AuditFilter {
            limit: Some(2),
            ..AuditFilter::default()
        };
        loop {
            let page = store.audit_log(&filter).await.unwrap();
            assert!(page.data.len() <= 2);
            seen.extend(page.data.into_iter().map(|e| e.id));
            match page.next {
                Some(next) => filter.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, newest_first);
        let bad = store
            .audit_log(&AuditFilter {
                after: Some("u_1".into()),
                ..AuditFilter::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.param.as_deref(), Some("after"));
    });
}
