//! The deploy files, exercised where they can be: the ConfigMap is generated from `jobs/` and
//! its specs, exactly as shipped, pass `lethe check` against the reference schema; every
//! `LETHE_*` name the manifests and units set is one lethe knows; the least-privilege role
//! script. (The rest of deploy/ is linted by `scripts/lint-deploy.sh`.)

use crate::helpers::{DAY, World, admin_url, outcome, repo, unique};
use lethe::storage::Versioning;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIGMAP: &str = "deploy/kubernetes/configmap.yaml";

#[test]
fn the_configmap_is_generated_from_the_shipped_specs() {
    let script = repo().join("scripts/deploy-manifests.sh");
    let (code, out, err) = outcome(Command::new(&script).arg("--check").output().unwrap());
    assert_eq!(code, 0, "{out}{err}");

    // Negative control: a ConfigMap edited by hand is named as stale.
    let edited = std::env::temp_dir().join(unique("lethe-configmap-") + ".yaml");
    let text = std::fs::read_to_string(repo().join(CONFIGMAP)).unwrap();
    assert!(text.contains("deadline = \"30d\""));
    std::fs::write(
        &edited,
        text.replacen("deadline = \"30d\"", "deadline = \"31d\"", 1),
    )
    .unwrap();
    let (code, _, err) = outcome(
        Command::new(&script)
            .args(["--check", "--out"])
            .arg(&edited)
            .output()
            .unwrap(),
    );
    std::fs::remove_file(&edited).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(edited.to_str().unwrap()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_configmap_passes_check_against_the_reference_schema() {
    let specs = configmap_specs();
    // The YAML carries each spec byte for byte.
    let mut shipped = BTreeMap::new();
    for e in std::fs::read_dir(repo().join("jobs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            shipped.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    assert_eq!(specs, shipped, "{CONFIGMAP} is not jobs/*.toml");

    let w = World::new(Versioning::Unversioned).await;
    let dir = mount_like_kubelet(&specs);
    let (code, out, err) = w.cli_env(&["check"], &[("LETHE_JOBS_DIR", dir.to_str().unwrap())]);
    assert_eq!(code, 0, "{out}{err}");
    for name in specs.keys() {
        let job = name.trim_end_matches(".toml");
        assert!(
            out.contains(&format!("\njob {job} (")),
            "{job} not checked:\n{out}"
        );
    }

    // Negative control: the same ConfigMap with one table name mangled is refused, naming it.
    let mut mangled = specs.clone();
    let runs = mangled.get_mut("deleted-runs.toml").unwrap();
    assert!(runs.contains("table = \"runs\""));
    *runs = runs.replacen("table = \"runs\"", "table = \"runs_mangled\"", 1);
    let bad = mount_like_kubelet(&mangled);
    let (code, out, err) = w.cli_env(&["check"], &[("LETHE_JOBS_DIR", bad.to_str().unwrap())]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("runs_mangled"), "{err}");

    for d in [dir, bad] {
        std::fs::remove_dir_all(d).unwrap();
    }
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lethe_setting_in_deploy_is_one_lethe_knows() {
    // The names `lethe check` prints in its effective configuration, not a copy of them.
    let w = World::new(Versioning::Unversioned).await;
    let (code, out, err) = w.cli(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    w.cleanup().await;
    let (_, config) = out
        .split_once("effective configuration")
        .expect("check prints the effective configuration");
    let line = regex_lite::Regex::new(r"(?m)^\s+([A-Z][A-Z0-9_]*)=").unwrap();
    let known: BTreeSet<String> = line
        .captures_iter(config)
        .map(|c| c[1].to_string())
        .collect();
    assert!(known.contains("LETHE_JOBS_DIR"), "{config}");

    let mut files: Vec<PathBuf> = vec![repo().join("deploy/Dockerfile")];
    for dir in ["deploy/kubernetes", "deploy/systemd"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    let mut used = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        used += lethe_names(&text).len();
        let unknown: Vec<_> = lethe_names(&text)
            .into_iter()
            .filter(|n| !known.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{} names settings lethe does not know: {unknown:?} (known: {known:?})",
            f.display()
        );
    }
    assert!(used >= 5, "only {used} LETHE_* names found in deploy/");

    // Negative control: a misspelt setting in a unit is caught.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/lethe.service")).unwrap();
    let typo = unit.replace("LETHE_JOBS_DIR=", "LETHE_JOB_DIR=");
    assert!(lethe_names(&typo).iter().any(|n| !known.contains(n)));
}

/// Every `LETHE_*` name in a file, comments included (an operator copies from them too).
fn lethe_names(text: &str) -> BTreeSet<String> {
    let name = regex_lite::Regex::new(r"\bLETHE_[A-Z0-9][A-Z0-9_]*").unwrap();
    name.find_iter(text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The ConfigMap's `data`, parsed as YAML (by PyYAML: no YAML crate in the tree for a test).
fn configmap_specs() -> BTreeMap<String, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d['kind'] == 'ConfigMap']\n\
             assert len(docs) == 1, docs\n\
             json.dump(docs[0]['data'], sys.stdout)",
        ])
        .arg(repo().join(CONFIGMAP))
        .output()
        .unwrap();
    let (code, out, err) = outcome(out);
    assert_eq!(
        code, 0,
        "parsing {CONFIGMAP} needs python3 with PyYAML (eval \"$(scripts/services.sh env)\" puts it on PATH): {err}"
    );
    serde_json::from_str(&out).unwrap()
}

/// A directory laid out as the kubelet mounts a ConfigMap: each key a symlink through `..data`
/// to a timestamped directory, so lethe reads the specs as a pod does.
fn mount_like_kubelet(specs: &BTreeMap<String, String>) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("lethe-configmap-"));
    let stamp = "..2026_12_04_03_15_00.000000001";
    std::fs::create_dir_all(dir.join(stamp)).unwrap();
    for (name, text) in specs {
        std::fs::write(dir.join(stamp).join(name), text).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(stamp, dir.join("..data")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_role_can_purge_and_nothing_more() {
    let w = World::new(Versioning::Unversioned).await;
    w.account(1, "free", None).await;
    w.run_row(1, 1, Some(8 * DAY)).await;
    w.run_row(2, 1, None).await;
    w.sql("CREATE TABLE unrelated (id int); INSERT INTO unrelated VALUES (1)")
        .await;
    let role = unique("lethe_runner_");
    let script = repo().join("deploy/postgres/lethe-role.sql");
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
