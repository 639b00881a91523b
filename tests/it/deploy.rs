//! The deploy files that can be exercised against the real services: the least-privilege role
//! script. (Units, manifests and JSON are linted by `scripts/lint-deploy.sh`.)

use crate::helpers::{DAY, World, admin_url, unique};
use lethe::storage::Versioning;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_role_can_purge_and_nothing_more() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(8 * DAY)).await;
    w.run_row(2, 1, None).await;
    w.sql("CREATE TABLE unrelated (id int); INSERT INTO unrelated VALUES (1)")
        .await;
    let role = unique("lethe_runner_");
    let script = crate::helpers::repo().join("deploy/postgres/lethe-role.sql");
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(format!("role={role}"))
        .arg("-f")
        .arg(&script)
        .arg(&w.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (scheme, rest) = w.url.split_once("://").unwrap();
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let as_runner = format!("{scheme}://{role}@{host_and_db}");

    let run = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["run", "--all"])
        .env("DATABASE_URL", &as_runner)
        .env("LETHE_JOBS_DIR", &w.jobs_dir)
        .env("LETHE_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(w.rows_of_run(1).await, 0, "purged as the runner role");
    assert_eq!(w.rows_of_run(2).await, 7);

    let runner = sqlx::PgPool::connect(&as_runner).await.unwrap();
    for (sql, what) in [
        (
            "UPDATE lethe.audit_log SET event = 'x'",
            "rewrite the audit log",
        ),
        ("DELETE FROM lethe.audit_log", "delete from the audit log"),
        ("DELETE FROM unrelated", "delete from a table no spec names"),
        ("UPDATE runs SET name = 'x'", "update platform rows"),
        (
            "INSERT INTO lethe.holds (job, reason, placed_by) VALUES ('deleted-runs', 'x', 'x')",
            "place holds",
        ),
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&runner)
            .await
            .expect_err(&format!("the runner role could {what}"));
        assert!(
            err.to_string().contains("permission denied"),
            "{what}: {err}"
        );
    }
    runner.close().await;
    w.sql(&format!("DROP OWNED BY {role}")).await;
    w.cleanup().await;
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&admin)
        .await
        .unwrap();
}
