//! Workspace-level tests for syncgen. The tests live in `tests/` and `fixtures/` holds
//! the model sources shared by several of them. The `trybuild` cases of
//! `#[derive(Syncable)]` live in the `ui-tests` crate.

/// The PostgreSQL server tests run against: `SYNC_TEST_POSTGRES_URL`, or `None` (the
/// test then says it skipped).
pub fn postgres_url() -> Option<String> {
    std::env::var("SYNC_TEST_POSTGRES_URL").ok()
}

/// A fresh PostgreSQL schema; returns the URL that uses it.
pub async fn fresh_schema(base: &str) -> (String, String) {
    use sqlx::Connection;
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap()
    );
    let mut c = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut c)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        schema,
    )
}
