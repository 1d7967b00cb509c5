//! A fresh PostgreSQL database per test, on the server at 127.0.0.1:5432
//! that `.ci/services` starts (user `postgres`, trust auth), dropped —
//! connections and all — when the test ends, passed or not, or on demand to
//! cut payroute off its journal. One helper for payroute's unit tests (the
//! journal's and the outbox's) and its end-to-end tests.

use std::time::Duration;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test.
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    /// `None` only when `PAYROUTE_SKIP_POSTGRES=1`.
    ///
    /// # Panics
    /// When the server does not answer: the test cannot go on, and says how
    /// to get one.
    pub async fn create() -> Option<PgDatabase> {
        if std::env::var("PAYROUTE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("PAYROUTE_SKIP_POSTGRES=1: PostgreSQL tests skipped");
            return None;
        }
        let admin = tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(PG_ADMIN))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) does not answer ({e}). \
                     Run .ci/run, which installs and starts one, or set PAYROUTE_SKIP_POSTGRES=1 to skip."
                )
            });
        let name = format!("payroute_test_{:016x}", fastrand::u64(..));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        Some(PgDatabase { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL (no password: trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The `[journal]` table's body for payroute on this database.
    pub fn journal(&self) -> String {
        format!("backend = \"postgres\"\nurl = \"{}\"", self.url())
    }

    /// The database goes away under whoever uses it now: every connection is cut.
    ///
    /// # Panics
    /// When the server does not answer.
    pub async fn drop_now(&self) {
        drop_database(&self.name).await.expect("drop the test database");
    }

    /// Every connection to the database is cut, as a server restart cuts
    /// them; the database stays.
    ///
    /// # Panics
    /// When the server does not answer.
    pub async fn cut_connections(&self) {
        let admin = sqlx::PgPool::connect(PG_ADMIN).await.expect("connect as admin");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&admin)
            .await
            .expect("cut the test database's connections");
        admin.close().await;
    }
}

async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let admin = sqlx::PgPool::connect(PG_ADMIN).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(())
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: a thread of its own may block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(drop_database(&name)).map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
