//! Virtual keys: made by the admin API or `proxima keys create`, stored only as a SHA-256 hash
//! with a short prefix for people to recognise them. Revoking keeps the row (the ledger points
//! at it) and stamps `revoked_at`; every change bumps `updated_at`, which replicas poll.

use serde::{Deserialize, Serialize};
use sqlx::query::Query;

use super::{col, db_error, json_column, Row, Store};
use crate::clock::now_ms;
use crate::config::{BudgetConfig, PiiOverride};
use crate::error::{Error, Result};
use crate::pricing;

/// A key as stored, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the secret; never shown.
    #[serde(skip)]
    pub hash: String,
    pub team: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<BudgetConfig>,
    /// Regions whose providers may serve the key; absent means any.
    pub regions: Option<Vec<String>>,
    /// The key's own PII policy, over its team's and `[pii]`.
    pub pii: Option<PiiOverride>,
    /// Tools of `/mcp` the key may list and call, as globs; absent means all.
    pub mcp_tools: Option<Vec<String>>,
    /// Epoch milliseconds; the key stops working then.
    pub expires_at: Option<i64>,
    pub metadata: serde_json::Value,
    /// May use the admin API, like the master key.
    pub admin: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    /// Whether the key works at `now` (epoch ms).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// What `POST /admin/keys` takes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub team: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<BudgetConfig>,
    pub regions: Option<Vec<String>>,
    pub pii: Option<PiiOverride>,
    #[serde(default, deserialize_with = "mcp_globs")]
    pub mcp_tools: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// May use the admin API.
    #[serde(default)]
    pub admin: bool,
}

/// What `PATCH /admin/keys/{id}` takes: a field left out stays; `null` clears it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub team: Option<Option<String>>,
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
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<i64>>,
    pub metadata: Option<serde_json::Value>,
    pub admin: Option<bool>,
}

/// Tells a field set to `null` (`Some(None)`) from a field left out (`None`).
pub(super) fn present<'de, D, T>(de: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Reads `mcp_tools` as the admin API takes it, refusing what is no tool name glob.
pub(super) fn mcp_globs<'de, D>(de: D) -> std::result::Result<Option<Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let globs = Option::<Vec<String>>::deserialize(de)?;
    match globs
        .as_deref()
        .and_then(crate::config::validate::mcp_tools_problem)
    {
        Some(problem) => Err(serde::de::Error::custom(problem)),
        None => Ok(globs),
    }
}

/// [`mcp_globs`] for a patch, telling `null` from a field left out like [`present`].
pub(super) fn present_mcp_globs<'de, D>(
    de: D,
) -> std::result::Result<Option<Option<Vec<String>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    mcp_globs(de).map(Some)
}

/// Sets `field` to the patch's value when the patch has one.
pub(super) fn set_if<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        field.clone_from(value);
    }
}

/// Binds the grant columns shared by keys and teams — models, rpm, tpm, budget_nanos,
/// budget_period — in that order.
pub(super) fn bind_grants<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    models: &Option<Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget: Option<BudgetConfig>,
) -> Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'static str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(models.as_ref().map(|m| serde_json::json!(m).to_string()))
        .bind(to_i64(rpm))
        .bind(to_i64(tpm))
        .bind(budget.map(|b| pricing::nanos(b.usd)))
        .bind(budget.map(|b| b.period.name()))
}

/// Binds the policy columns shared by keys and teams — regions, pii, mcp_tools — in that
/// order, as JSON.
pub(super) fn bind_policy<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    regions: &Option<Vec<String>>,
    pii: &Option<PiiOverride>,
    mcp_tools: &Option<Vec<String>>,
) -> Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(regions.as_ref().map(|r| serde_json::json!(r).to_string()))
        .bind(pii.as_ref().map(|p| serde_json::json!(p).to_string()))
        .bind(mcp_tools.as_ref().map(|t| serde_json::json!(t).to_string()))
}

/// SHA-256 of a secret: what every key, static or virtual, is looked up by. High-entropy keys
/// need no slow KDF.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Hex SHA-256 of a secret: how keys are stored.
pub fn hash_secret(secret: &str) -> String {
    hex(&secret_digest(secret))
}

/// Lower-case hex of `bytes`: how key hashes are stored.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` random bytes as hex, from the operating system's generator.
fn random_hex(len: usize) -> Result<String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(hex(&bytes))
}

pub(super) fn read_budget(row: &impl Row) -> Result<Option<BudgetConfig>> {
    let nanos: Option<i64> = col(row, "budget_nanos")?;
    let period: Option<String> = col(row, "budget_period")?;
    Ok(nanos.map(|n| BudgetConfig {
        usd: pricing::usd(n),
        period: period
            .and_then(|p| serde_json::from_value(serde_json::Value::String(p)).ok())
            .unwrap_or_default(),
    }))
}

pub(super) fn to_u64(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

pub(super) fn to_i64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn key_from_row(row: &impl Row) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        hash: col(row, "hash")?,
        team: col(row, "team")?,
        models: json_column(col(row, "models")?),
        rpm: to_u64(col(row, "rpm")?),
        tpm: to_u64(col(row, "tpm")?),
        budget: read_budget(row)?,
        regions: json_column(col(row, "regions")?),
        pii: json_column(col(row, "pii")?),
        mcp_tools: json_column(col(row, "mcp_tools")?),
        expires_at: col(row, "expires_at")?,
        metadata: json_column(col(row, "metadata")?).unwrap_or(serde_json::Value::Null),
        admin: col::<i64>(row, "admin")? != 0,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

const KEY_COLUMNS: &str = "id, name, prefix, hash, team, models, rpm, tpm, budget_nanos, \
    budget_period, expires_at, metadata, admin, created_at, updated_at, revoked_at, regions, pii, \
    mcp_tools";

impl Store {
    /// Makes a key; returns it with its secret, which is shown this once and never stored.
    pub async fn create_key(&self, new: &NewKey) -> Result<(KeyRecord, String)> {
        let secret = format!("sk-px-{}", random_hex(24)?);
        let now = now_ms();
        let record = KeyRecord {
            id: format!("key_{}", random_hex(8)?),
            name: new.name.clone(),
            prefix: format!("{}...", &secret[..12]),
            hash: hash_secret(&secret),
            team: new.team.clone(),
            models: new.models.clone(),
            rpm: new.rpm,
            tpm: new.tpm,
            budget: new.budget,
            regions: new.regions.clone(),
            pii: new.pii.clone(),
            mcp_tools: new.mcp_tools.clone(),
            expires_at: new.expires_at,
            metadata: new
                .metadata
                .clone()
                .unwrap_or_else(|| serde_json::json!({})),
            admin: new.admin,
            created_at: now,
            updated_at: now,
            revoked_at: None,
        };
        let sql = sql!(
            "INSERT INTO keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        );
        let r = &record;
        on_pool!(self, |pool| {
            let query = sqlx::query(sql)
                .bind(&r.id)
                .bind(&r.name)
                .bind(&r.prefix)
                .bind(&r.hash)
                .bind(&r.team);
            let query = bind_grants(query, &r.models, r.rpm, r.tpm, r.budget)
                .bind(r.expires_at)
                .bind(r.metadata.to_string())
                .bind(i64::from(r.admin))
                .bind(r.created_at)
                .bind(r.updated_at)
                .bind(r.revoked_at);
            bind_policy(query, &r.regions, &r.pii, &r.mcp_tools)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(db_error)?;
        Ok((record, secret))
    }

    /// Every key, newest first; revoked ones only when asked.
    pub async fn list_keys(&self, include_revoked: bool) -> Result<Vec<KeyRecord>> {
        let filter = if include_revoked {
            ""
        } else {
            "WHERE revoked_at IS NULL"
        };
        let sql = sql!("SELECT {KEY_COLUMNS} FROM keys {filter} ORDER BY created_at DESC, id");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(key_from_row).collect()
        })
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.key_where("id", id).await
    }

    /// The key whose secret hashes to `hash`, revoked or not.
    pub async fn find_key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        self.key_where("hash", hash).await
    }

    /// The key whose unique `column` (a constant) holds `value`.
    async fn key_where(&self, column: &'static str, value: &str) -> Result<Option<KeyRecord>> {
        let sql = sql!("SELECT {KEY_COLUMNS} FROM keys WHERE {column} = $1");
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(value)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(key_from_row).transpose()
        })
    }

    /// Keys changed at or after `since` (epoch ms), revocations included: what a replica
    /// polls to keep its cache current.
    pub async fn keys_changed_since(&self, since: i64) -> Result<Vec<KeyRecord>> {
        let sql = sql!("SELECT {KEY_COLUMNS} FROM keys WHERE updated_at >= $1 ORDER BY updated_at");
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(since)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(key_from_row).collect()
        })
    }

    /// Applies `patch`; `None` when there is no such key.
    pub async fn update_key(&self, id: &str, patch: &KeyPatch) -> Result<Option<KeyRecord>> {
        let Some(mut key) = self.get_key(id).await? else {
            return Ok(None);
        };
        set_if(&mut key.name, &patch.name);
        set_if(&mut key.team, &patch.team);
        set_if(&mut key.models, &patch.models);
        set_if(&mut key.rpm, &patch.rpm);
        set_if(&mut key.tpm, &patch.tpm);
        set_if(&mut key.budget, &patch.budget);
        set_if(&mut key.regions, &patch.regions);
        set_if(&mut key.pii, &patch.pii);
        set_if(&mut key.mcp_tools, &patch.mcp_tools);
        set_if(&mut key.expires_at, &patch.expires_at);
        set_if(&mut key.metadata, &patch.metadata);
        set_if(&mut key.admin, &patch.admin);
        key.updated_at = now_ms().max(key.updated_at + 1);
        let k = &key;
        on_pool!(self, |pool| {
            let query = sqlx::query(
                "UPDATE keys SET name = $2, team = $3, models = $4, rpm = $5, tpm = $6, \
                 budget_nanos = $7, budget_period = $8, expires_at = $9, metadata = $10, \
                 updated_at = $11, admin = $12, regions = $13, pii = $14, \
                 mcp_tools = $15 WHERE id = $1",
            )
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.team);
            let query = bind_grants(query, &k.models, k.rpm, k.tpm, k.budget)
                .bind(k.expires_at)
                .bind(k.metadata.to_string())
                .bind(k.updated_at)
                .bind(i64::from(k.admin));
            bind_policy(query, &k.regions, &k.pii, &k.mcp_tools)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(db_error)?;
        Ok(Some(key))
    }

    /// Revokes a key for good; `None` when there is no such key. Revoking twice keeps the
    /// first time.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let now = now_ms();
        // The version only moves forward, even past a clock that is behind the last change:
        // replicas skip rows whose version they have seen.
        let sql = "UPDATE keys SET revoked_at = COALESCE(revoked_at, $2), \
             updated_at = CASE WHEN updated_at >= $2 THEN updated_at + 1 ELSE $2 END WHERE id = $1";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(drop))
        .map_err(db_error)?;
        self.get_key(id).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::testing::on_both;
    use super::*;
    use crate::config::BudgetPeriod;

    on_both!(key_lifecycle, |store: Store| async move {
        let (key, secret) = store
            .create_key(&NewKey {
                name: "ci".into(),
                team: Some("platform".into()),
                models: Some(vec!["fast".into()]),
                rpm: Some(60),
                budget: Some(BudgetConfig {
                    usd: 5.0,
                    period: BudgetPeriod::Day,
                }),
                regions: Some(vec!["eu".into()]),
                mcp_tools: Some(vec!["github__*".into()]),
                ..NewKey::default()
            })
            .await
            .unwrap();
        assert!(
            secret.starts_with("sk-px-") && secret.len() == 54,
            "{secret}"
        );
        assert!(secret.starts_with(key.prefix.trim_end_matches("...")));
        // Only the hash is stored: no column holds the secret.
        let found = store
            .find_key_by_hash(&hash_secret(&secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, key.id);
        assert_eq!(found.budget.unwrap().usd, 5.0);
        assert_eq!(found.budget.unwrap().period, BudgetPeriod::Day);
        assert_eq!(found.models.as_deref(), Some(&["fast".to_string()][..]));
        assert_eq!(found.regions.as_deref(), Some(&["eu".to_string()][..]));
        assert_eq!(found.pii, None);
        assert_eq!(found.mcp_tools, Some(vec!["github__*".to_string()]));
        assert!(!serde_json::to_string(&found)
            .unwrap()
            .contains(&secret[6..]));

        let patched = store
            .update_key(
                &key.id,
                &serde_json::from_value(
                    serde_json::json!({"rpm": null, "tpm": 1000, "name": "ci-2"}),
                )
                .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (patched.rpm, patched.tpm, patched.name.as_str()),
            (None, Some(1000), "ci-2")
        );
        assert_eq!(
            patched.team.as_deref(),
            Some("platform"),
            "left-out fields stay"
        );
        assert!(patched.updated_at > key.updated_at);

        let before = now_ms();
        let revoked = store.revoke_key(&key.id).await.unwrap().unwrap();
        assert!(!revoked.is_active(now_ms()));
        assert!(store.list_keys(false).await.unwrap().is_empty());
        assert_eq!(store.list_keys(true).await.unwrap().len(), 1);
        let changed = store.keys_changed_since(before).await.unwrap();
        assert_eq!(changed.len(), 1);
        assert!(changed[0].revoked_at.is_some());
        assert!(store.revoke_key("key_missing").await.unwrap().is_none());
        assert!(store
            .update_key("key_missing", &KeyPatch::default())
            .await
            .unwrap()
            .is_none());
    });
}
