//! A fresh PostgreSQL database per test (the server at 127.0.0.1:5432 that
//! `.ci/services` starts), dropped when the test ends, or on demand to cut
//! payroute off its journal.

use std::time::Duration;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database for one test, dropped when it ends.
pub(crate) struct PgDatabase {
    name: String,
}

impl PgDatabase {
    /// `None` when `PAYROUTE_SKIP_POSTGRES=1`; a server that does not
    /// answer otherwise fails the test.
    pub(crate) async fn create() -> Option<PgDatabase> {
        if std::env::var("PAYROUTE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("PAYROUTE_SKIP_POSTGRES=1: skipped");
            return None;
        }
        let admin = tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(PG_ADMIN))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("PostgreSQL at 127.0.0.1:5432 does not answer ({e}); .ci/run starts one"));
        let name = format!("payroute_fleet_{:016x}", fastrand::u64(..));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        Some(PgDatabase { name })
    }

    pub(crate) fn journal(&self) -> String {
        format!(
            "backend = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"",
            self.name
        )
    }
}

impl PgDatabase {
    /// The database goes away under payroute now: every connection is cut.
    pub(crate) async fn drop_now(&self) {
        let admin = sqlx::PgPool::connect(PG_ADMIN).await.expect("PostgreSQL answers");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&admin)
            .await
            .expect("drop database");
        admin.close().await;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the runtime: a thread of its own may block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let admin = sqlx::PgPool::connect(PG_ADMIN).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                Ok::<_, sqlx::Error>(())
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
