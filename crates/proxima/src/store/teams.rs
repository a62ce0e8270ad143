//! Teams: limits and budgets shared by all of a team's keys, on top of each key's own.
//! A key names its team; the team need not exist (then it is only a label in the ledger).

use serde::{Deserialize, Serialize};

use super::keys::{
    bind_grants, bind_policy, mcp_globs, present, present_mcp_globs, read_budget, set_if, to_u64,
};
use super::{col, db_error, json_column, Row, Store};
use crate::clock::now_ms;
use crate::config::{BudgetConfig, PiiOverride};
use crate::error::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamRecord {
    pub name: String,
    /// Public models the team's keys may use; absent means all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Regions whose providers may serve the team's keys; absent means any.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// The team's own PII policy, over `[pii]` (its keys' own win over it).
    #[serde(default)]
    pub pii: Option<PiiOverride>,
    /// Tools of `/mcp` the team's keys may list and call, as globs; absent means all.
    #[serde(default, deserialize_with = "mcp_globs")]
    pub mcp_tools: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    /// Set when deleted: replicas polling for changes see it and drop the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// What `PATCH /admin/teams/{name}` takes: a field left out stays; `null` clears it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    #[serde(default, deserialize_with = "present")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub budget: Option<Option<BudgetConfig>>,
    #[serde(default, deserialize_with = "present")]
    pub regions: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub pii: Option<Option<PiiOverride>>,
    #[serde(default, deserialize_with = "present_mcp_globs")]
    pub mcp_tools: Option<Option<Vec<String>>>,
    pub metadata: Option<serde_json::Value>,
}

fn team_from_row(row: &impl Row) -> Result<TeamRecord> {
    Ok(TeamRecord {
        name: col(row, "name")?,
        models: json_column(col(row, "models")?),
        rpm: to_u64(col(row, "rpm")?),
        tpm: to_u64(col(row, "tpm")?),
        budget: read_budget(row)?,
        regions: json_column(col(row, "regions")?),
        pii: json_column(col(row, "pii")?),
        mcp_tools: json_column(col(row, "mcp_tools")?),
        metadata: json_column(col(row, "metadata")?).unwrap_or(serde_json::Value::Null),
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        deleted_at: col(row, "deleted_at")?,
    })
}

const TEAM_COLUMNS: &str = "name, models, rpm, tpm, budget_nanos, budget_period, metadata, \
    created_at, updated_at, deleted_at, regions, pii, mcp_tools";

impl Store {
    /// Creates a team, or brings back a deleted one of the same name. `Ok(None)` when a live
    /// team has that name already.
    pub async fn create_team(&self, team: &TeamRecord) -> Result<Option<TeamRecord>> {
        let existing = self.get_team(&team.name).await?;
        if existing.as_ref().is_some_and(|t| t.deleted_at.is_none()) {
            return Ok(None);
        }
        let now = now_ms();
        let mut team = team.clone();
        team.created_at = now;
        // A team brought back gets a newer version than its deletion, whatever the clock says.
        team.updated_at = existing.map_or(now, |t| now.max(t.updated_at + 1));
        team.deleted_at = None;
        if team.metadata.is_null() {
            team.metadata = serde_json::json!({});
        }
        let sql = sql!(
            "INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12) \
             ON CONFLICT (name) DO UPDATE SET models = $2, rpm = $3, tpm = $4, budget_nanos = $5, \
             budget_period = $6, metadata = $7, created_at = $8, updated_at = $9, deleted_at = NULL, \
             regions = $10, pii = $11, mcp_tools = $12"
        );
        let t = &team;
        on_pool!(self, |pool| {
            let query = sqlx::query(sql).bind(&t.name);
            let query = bind_grants(query, &t.models, t.rpm, t.tpm, t.budget)
                .bind(t.metadata.to_string())
                .bind(t.created_at)
                .bind(t.updated_at);
            bind_policy(query, &t.regions, &t.pii, &t.mcp_tools)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(db_error)?;
        Ok(Some(team))
    }

    /// A team by name, deleted or not.
    pub async fn get_team(&self, name: &str) -> Result<Option<TeamRecord>> {
        let sql = sql!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1");
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(team_from_row).transpose()
        })
    }

    /// Live teams by name.
    pub async fn list_teams(&self) -> Result<Vec<TeamRecord>> {
        let sql = sql!("SELECT {TEAM_COLUMNS} FROM teams WHERE deleted_at IS NULL ORDER BY name");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(team_from_row).collect()
        })
    }

    /// Teams changed at or after `since`, deletions included.
    pub async fn teams_changed_since(&self, since: i64) -> Result<Vec<TeamRecord>> {
        let sql =
            sql!("SELECT {TEAM_COLUMNS} FROM teams WHERE updated_at >= $1 ORDER BY updated_at");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(since)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(team_from_row).collect()
        })
    }

    /// Applies `patch` to a live team; `None` when there is none of that name.
    pub async fn update_team(&self, name: &str, patch: &TeamPatch) -> Result<Option<TeamRecord>> {
        let Some(mut team) = self
            .get_team(name)
            .await?
            .filter(|t| t.deleted_at.is_none())
        else {
            return Ok(None);
        };
        set_if(&mut team.models, &patch.models);
        set_if(&mut team.rpm, &patch.rpm);
        set_if(&mut team.tpm, &patch.tpm);
        set_if(&mut team.budget, &patch.budget);
        set_if(&mut team.regions, &patch.regions);
        set_if(&mut team.pii, &patch.pii);
        set_if(&mut team.mcp_tools, &patch.mcp_tools);
        set_if(&mut team.metadata, &patch.metadata);
        team.updated_at = now_ms().max(team.updated_at + 1);
        let t = &team;
        on_pool!(self, |pool| {
            let query = sqlx::query(
                "UPDATE teams SET models = $2, rpm = $3, tpm = $4, budget_nanos = $5, \
                 budget_period = $6, metadata = $7, updated_at = $8, regions = $9, pii = $10, \
                 mcp_tools = $11 WHERE name = $1",
            )
            .bind(&t.name);
            let query = bind_grants(query, &t.models, t.rpm, t.tpm, t.budget)
                .bind(t.metadata.to_string())
                .bind(t.updated_at);
            bind_policy(query, &t.regions, &t.pii, &t.mcp_tools)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(db_error)?;
        Ok(Some(team))
    }

    /// Deletes a team (its keys keep working, without the team's limits). `false` when there
    /// was no live team of that name.
    pub async fn delete_team(&self, name: &str) -> Result<bool> {
        let now = now_ms();
        let sql = "UPDATE teams SET deleted_at = $2, \
             updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END \
             WHERE name = $1 AND deleted_at IS NULL";
        let affected = on_pool!(self, |pool| sqlx::query(sql)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(db_error)?;
        Ok(affected > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testing::on_both;
    use super::*;
    use crate::config::BudgetPeriod;

    on_both!(team_lifecycle, |store: Store| async move {
        let team: TeamRecord = serde_json::from_value(serde_json::json!({
            "name": "platform", "rpm": 100,
            "budget": {"usd": 50.0, "period": "1mo"},
            "regions": ["eu"], "pii": {"mode": "mask", "entities": ["email"]},
            "mcp_tools": ["github__*"]
        }))
        .unwrap();
        let made = store.create_team(&team).await.unwrap().unwrap();
        let read = store.get_team("platform").await.unwrap().unwrap();
        assert_eq!(read.regions.as_deref(), Some(&["eu".to_string()][..]));
        assert_eq!(read.mcp_tools, Some(vec!["github__*".to_string()]));
        assert_eq!(
            read.pii.as_ref().and_then(|p| p.mode),
            Some(crate::config::PiiMode::Mask)
        );
        assert!(
            store.create_team(&team).await.unwrap().is_none(),
            "names are unique"
        );
        assert_eq!(made.budget.unwrap().period, BudgetPeriod::Month);
        let patched = store
            .update_team(
                "platform",
                &serde_json::from_value(
                    serde_json::json!({"rpm": null, "tpm": 5000, "regions": null, "mcp_tools": null}),
                )
                .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((patched.rpm, patched.tpm), (None, Some(5000)));
        let read = store.get_team("platform").await.unwrap().unwrap();
        assert_eq!(read.regions, None, "null clears the regions");
        assert_eq!(read.mcp_tools, None);
        assert!(read.pii.is_some(), "a field left out stays");
        assert_eq!(store.list_teams().await.unwrap().len(), 1);
        assert!(store.delete_team("platform").await.unwrap());
        assert!(!store.delete_team("platform").await.unwrap());
        assert!(store.list_teams().await.unwrap().is_empty());
        let changed = store.teams_changed_since(made.created_at).await.unwrap();
        assert!(changed[0].deleted_at.is_some(), "replicas see the deletion");
        assert!(
            store.create_team(&team).await.unwrap().is_some(),
            "a deleted name can be reused"
        );
    });
}
