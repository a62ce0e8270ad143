//! Prompt templates, in versions (`/admin/prompts`; see [`crate::prompts`]). A version is
//! never changed once written: saving a prompt under a name that exists makes the next version.
//! Deleting a prompt marks its versions deleted and keeps them, so that a number is never used
//! twice for different templates (ledger rows name the version a call ran).
//!
//! Prompts are the gateway's, like its models — made by admins, run by any key that may use
//! their model — so they have no tenant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{col, db_error, Row, Store};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::prompts::Template;

/// One version of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptRecord {
    pub name: String,
    /// 1 for a new name, then one more for each save.
    pub version: i64,
    /// The public model a run calls.
    pub model: String,
    pub template: Template,
    /// Chat parameters a run sends unless it overrides them (`temperature`, `max_tokens`, ...).
    pub parameters: Map<String, Value>,
    /// Epoch ms.
    pub created_at: i64,
}

/// What `POST /admin/prompts` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrompt {
    pub name: String,
    pub model: String,
    pub template: Template,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

const COLUMNS: &str = "name, version, template, model, parameters, created_at";

/// Saving retries this often when another save of the same name took the version first.
const SAVE_ATTEMPTS: usize = 20;

fn prompt_from(row: &impl Row) -> Result<PromptRecord> {
    let name: String = col(row, "name")?;
    let unreadable =
        |what: &str| Error::internal(format!("the stored {what} of prompt `{name}` is not valid"));
    let template = serde_json::from_str(&col::<String>(row, "template")?)
        .map_err(|_| unreadable("template"))?;
    let parameters = serde_json::from_str(&col::<String>(row, "parameters")?)
        .map_err(|_| unreadable("parameters"))?;
    Ok(PromptRecord {
        version: col(row, "version")?,
        model: col(row, "model")?,
        template,
        parameters,
        created_at: col(row, "created_at")?,
        name,
    })
}

impl Store {
    /// Saves `new` as the next version of its name (1 for a new name, or one deleted before).
    pub async fn create_prompt(&self, new: &NewPrompt) -> Result<PromptRecord> {
        let template = serde_json::to_string(&new.template)
            .map_err(|e| Error::internal(format!("cannot store the template: {e}")))?;
        let parameters = Value::Object(new.parameters.clone()).to_string();
        let created_at = now_ms();
        // The next number and the row in one statement; two saves at once may still pick the
        // same number, and the one that loses tries again.
        let sql = "INSERT INTO prompts (name, version, template, model, parameters, created_at) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM prompts WHERE name = $1 \
             ON CONFLICT (name, version) DO NOTHING RETURNING version";
        for _attempt in 0..SAVE_ATTEMPTS {
            let version: Option<i64> = on_pool!(self, |pool| {
                let row = sqlx::query(sql)
                    .bind(&new.name)
                    .bind(&template)
                    .bind(&new.model)
                    .bind(&parameters)
                    .bind(created_at)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(|r| col(r, "version")).transpose()
            })?;
            if let Some(version) = version {
                return Ok(PromptRecord {
                    name: new.name.clone(),
                    version,
                    model: new.model.clone(),
                    template: new.template.clone(),
                    parameters: new.parameters.clone(),
                    created_at,
                });
            }
        }
        Err(Error::new(
            crate::error::ErrorKind::Unavailable,
            format!(
                "prompt `{}` is being saved by others at the same time: try again",
                new.name
            ),
        ))
    }

    /// The live versions of prompt `name`, oldest first; empty when there is none.
    pub async fn prompt_versions(&self, name: &str) -> Result<Vec<PromptRecord>> {
        let sql = sql!(
            "SELECT {COLUMNS} FROM prompts WHERE name = $1 AND deleted_at IS NULL ORDER BY version"
        );
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(name)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(prompt_from).collect()
        })
    }

    /// The latest version of every live prompt, by name.
    pub async fn list_prompts(&self) -> Result<Vec<PromptRecord>> {
        let sql = sql!(
            "SELECT {COLUMNS} FROM prompts p WHERE deleted_at IS NULL AND version = \
             (SELECT MAX(version) FROM prompts q WHERE q.name = p.name AND q.deleted_at IS NULL) \
             ORDER BY name"
        );
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(prompt_from).collect()
        })
    }

    /// Every live version of every prompt, by name and version: what runs are served from.
    pub async fn live_prompts(&self) -> Result<Vec<PromptRecord>> {
        let sql =
            sql!("SELECT {COLUMNS} FROM prompts WHERE deleted_at IS NULL ORDER BY name, version");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(prompt_from).collect()
        })
    }

    /// How many versions the table holds, and how many of them are deleted. Rows are only ever
    /// added or marked deleted, so every save or deletion, on any replica, changes this pair.
    pub async fn prompt_counts(&self) -> Result<(i64, i64)> {
        let sql = "SELECT CAST(COUNT(*) AS BIGINT) AS saved, \
                   CAST(COUNT(deleted_at) AS BIGINT) AS deleted FROM prompts";
        on_pool!(self, |pool| {
            let row = sqlx::query(sql).fetch_one(pool).await.map_err(db_error)?;
            Ok((col(&row, "saved")?, col(&row, "deleted")?))
        })
    }

    /// Deletes prompt `name` (every version); returns how many versions it had, 0 when there
    /// was no live prompt of that name.
    pub async fn delete_prompt(&self, name: &str) -> Result<u64> {
        let sql = "UPDATE prompts SET deleted_at = $2 WHERE name = $1 AND deleted_at IS NULL";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(name)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(db_error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testing::on_both;
    use super::*;
    use serde_json::json;

    fn new(name: &str, template: Value) -> NewPrompt {
        serde_json::from_value(json!({
            "name": name, "model": "chat", "template": template,
            "parameters": {"temperature": 0.2}
        }))
        .unwrap()
    }

    on_both!(prompt_versions_and_deletion, |store: Store| async move {
        assert_eq!(store.prompt_counts().await.unwrap(), (0, 0));
        let first = store
            .create_prompt(&new("greet", json!("Hi {{name}}")))
            .await
            .unwrap();
        assert_eq!(first.version, 1);
        let second = store
            .create_prompt(&new(
                "greet",
                json!([{"role": "system", "content": "Be {{tone}}"}]),
            ))
            .await
            .unwrap();
        assert_eq!(second.version, 2);
        store
            .create_prompt(&new("other", json!("x")))
            .await
            .unwrap();

        let versions = store.prompt_versions("greet").await.unwrap();
        assert_eq!(versions, vec![first.clone(), second.clone()]);
        assert_eq!(versions[0].parameters["temperature"], json!(0.2));
        let latest: Vec<(String, i64)> = store
            .list_prompts()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        assert_eq!(latest, [("greet".into(), 2), ("other".into(), 1)]);
        assert_eq!(store.live_prompts().await.unwrap().len(), 3);
        assert_eq!(store.prompt_counts().await.unwrap(), (3, 0));

        assert_eq!(store.delete_prompt("greet").await.unwrap(), 2);
        assert_eq!(store.delete_prompt("greet").await.unwrap(), 0);
        assert!(store.prompt_versions("greet").await.unwrap().is_empty());
        assert_eq!(store.prompt_counts().await.unwrap(), (3, 2));
        // A name saved again after deletion continues its numbers.
        let again = store
            .create_prompt(&new("greet", json!("Hello")))
            .await
            .unwrap();
        assert_eq!(again.version, 3);
        assert_eq!(store.prompt_versions("greet").await.unwrap(), vec![again]);
    });

    on_both!(
        saves_at_once_get_distinct_versions,
        |store: Store| async move {
            let saves = (0..6).map(|i| {
                let store = store.clone();
                async move {
                    store
                        .create_prompt(&new("busy", json!(format!("v{i}"))))
                        .await
                        .unwrap()
                        .version
                }
            });
            let mut versions = futures_util::future::join_all(saves).await;
            versions.sort_unstable();
            assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
        }
    );
}
