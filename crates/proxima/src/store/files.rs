//! Uploaded files (`/v1/files`): their bytes and what they are, for the vector stores that
//! index them. Every function takes the owner (the tenant, see
//! [`RequestContext::tenant`](crate::pipeline::RequestContext::tenant)) first and names it in
//! its query, so another tenant's file reads as unknown.
//!
//! Metadata and content are read apart: a listing or a `get_file` never reads the bytes.

use super::{col, db_error, Order, Row, Store};
use crate::error::Result;

/// A stored file, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// `file-` and 32 hex digits.
    pub id: String,
    pub owner: String,
    /// As uploaded, without any directory part.
    pub filename: String,
    /// One of OpenAI's purposes (`assistants`, `user_data`, ...), checked by the surface.
    pub purpose: String,
    /// The content's length.
    pub bytes: u64,
    /// Epoch milliseconds.
    pub created_at: i64,
}

const FILE_COLUMNS: &str = "id, owner, filename, purpose, bytes, created_at";

fn file_from_row(row: &impl Row) -> Result<FileRecord> {
    Ok(FileRecord {
        id: col(row, "id")?,
        owner: col(row, "owner")?,
        filename: col(row, "filename")?,
        purpose: col(row, "purpose")?,
        bytes: u64::try_from(col::<i64>(row, "bytes")?).unwrap_or(0),
        created_at: col(row, "created_at")?,
    })
}

/// A fresh file id, as OpenAI spells them (`file-...`). Found by it and its owner, so it only
/// has to be unique.
pub fn file_id() -> String {
    format!("file-{:032x}", fastrand::u128(..))
}

impl Store {
    /// Stores `content` as a new file of `owner`, made at `now` (epoch ms), and returns it.
    pub async fn create_file(
        &self,
        owner: &str,
        filename: &str,
        purpose: &str,
        content: &[u8],
        now: i64,
    ) -> Result<FileRecord> {
        let record = FileRecord {
            id: file_id(),
            owner: owner.to_owned(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            bytes: content.len() as u64,
            created_at: now,
        };
        let sql =
            sql!("INSERT INTO files ({FILE_COLUMNS}, content) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(&record.id)
            .bind(owner)
            .bind(filename)
            .bind(purpose)
            .bind(i64::try_from(content.len()).unwrap_or(i64::MAX))
            .bind(now)
            .bind(content)
            .execute(pool)
            .await
            .map(drop))
        .map_err(db_error)?;
        Ok(record)
    }

    /// The owner's file `id`, without its bytes; `None` when the owner has no such file.
    pub async fn get_file(&self, owner: &str, id: &str) -> Result<Option<FileRecord>> {
        let sql = sql!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND owner = $2");
        fetch_owned!(self, sql, id, owner, file_from_row)
    }

    /// The bytes of the owner's file `id`, exactly as uploaded; `None` when the owner has no
    /// such file.
    pub async fn file_content(&self, owner: &str, id: &str) -> Result<Option<Vec<u8>>> {
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT content FROM files WHERE id = $1 AND owner = $2"
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(pool)
        .await)
        .map_err(db_error)
    }

    /// A page of the owner's files in `order` of creation (ties by id), only those of
    /// `purpose` when given, starting after the file `after` (the previous page's last), at
    /// most `limit`.
    pub async fn list_files(
        &self,
        owner: &str,
        purpose: Option<&str>,
        after: Option<&FileRecord>,
        order: Order,
        limit: u32,
    ) -> Result<Vec<FileRecord>> {
        let (direction, beyond) = match order {
            Order::Asc => ("ASC", ">"),
            Order::Desc => ("DESC", "<"),
        };
        // $1 owner, $2 limit, $3 and $4 the cursor, $5 the purpose; absent ones are not named.
        let mut conditions = vec!["owner = $1".to_owned()];
        if after.is_some() {
            conditions.push(format!(
                "(created_at {beyond} $3 OR (created_at = $3 AND id {beyond} $4))"
            ));
        }
        if purpose.is_some() {
            let n = if after.is_some() { 5 } else { 3 };
            conditions.push(format!("purpose = ${n}"));
        }
        let sql = sql!(
            "SELECT {FILE_COLUMNS} FROM files WHERE {} \
             ORDER BY created_at {direction}, id {direction} LIMIT $2",
            conditions.join(" AND ")
        );
        on_pool!(self, |pool| {
            let mut query = sqlx::query(sql).bind(owner).bind(i64::from(limit));
            if let Some(after) = after {
                query = query.bind(after.created_at).bind(after.id.as_str());
            }
            if let Some(purpose) = purpose {
                query = query.bind(purpose);
            }
            let rows = query.fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(file_from_row).collect()
        })
    }

    /// Deletes the owner's file `id`; `false` when the owner has no such file.
    pub async fn delete_file(&self, owner: &str, id: &str) -> Result<bool> {
        self.delete_owned("files", id, owner).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::testing::on_both;

    on_both!(files_belong_to_their_owner, |store: Store| async move {
        let content: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let made = store
            .create_file("team:a", "notes.bin", "assistants", &content, 1_000)
            .await
            .unwrap();
        assert!(made.id.starts_with("file-") && made.id.len() == 37);
        assert_eq!((made.bytes, made.created_at), (70_000, 1_000));

        assert_eq!(
            store.get_file("team:a", &made.id).await.unwrap(),
            Some(made.clone())
        );
        assert_eq!(
            store.file_content("team:a", &made.id).await.unwrap(),
            Some(content)
        );
        // Another tenant sees nothing and deletes nothing.
        assert_eq!(store.get_file("team:b", &made.id).await.unwrap(), None);
        assert_eq!(store.file_content("team:b", &made.id).await.unwrap(), None);
        assert!(!store.delete_file("team:b", &made.id).await.unwrap());
        assert!(store
            .list_files("team:b", None, None, Order::Desc, 10)
            .await
            .unwrap()
            .is_empty());

        assert!(store.delete_file("team:a", &made.id).await.unwrap());
        assert!(!store.delete_file("team:a", &made.id).await.unwrap());
        assert_eq!(store.get_file("team:a", &made.id).await.unwrap(), None);
        assert_eq!(store.file_content("team:a", &made.id).await.unwrap(), None);
    });

    on_both!(files_page_in_order_of_creation, |store: Store| async move {
        let mut made = Vec::new();
        // Two files share each millisecond: the id breaks the tie, and no page repeats or
        // skips one.
        for n in 0..7i64 {
            let purpose = if n % 2 == 0 {
                "assistants"
            } else {
                "user_data"
            };
            let file = store
                .create_file("key:k", &format!("f{n}.txt"), purpose, b"x", 10 + n / 2)
                .await
                .unwrap();
            made.push(file);
        }
        let mut ascending = made.clone();
        ascending.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

        let mut seen = Vec::new();
        let mut after: Option<FileRecord> = None;
        loop {
            let page = store
                .list_files("key:k", None, after.as_ref(), Order::Asc, 3)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            seen.extend(page);
        }
        assert_eq!(seen, ascending);

        let newest = store
            .list_files("key:k", None, None, Order::Desc, 2)
            .await
            .unwrap();
        assert_eq!(newest, [ascending[6].clone(), ascending[5].clone()]);
        let next = store
            .list_files("key:k", None, Some(&newest[1]), Order::Desc, 100)
            .await
            .unwrap();
        assert_eq!(next.len(), 5);
        assert_eq!(next[0], ascending[4]);

        let user_data = store
            .list_files("key:k", Some("user_data"), None, Order::Asc, 100)
            .await
            .unwrap();
        let names: Vec<&str> = user_data.iter().map(|f| f.filename.as_str()).collect();
        let mut expected: Vec<&str> = ascending
            .iter()
            .filter(|f| f.purpose == "user_data")
            .map(|f| f.filename.as_str())
            .collect();
        assert_eq!(names, expected);
        let after_first = store
            .list_files(
                "key:k",
                Some("user_data"),
                Some(&user_data[0]),
                Order::Asc,
                100,
            )
            .await
            .unwrap();
        expected.remove(0);
        let names: Vec<&str> = after_first.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(names, expected);
    });
}
