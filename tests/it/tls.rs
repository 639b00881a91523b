//! TLS to PostgreSQL, as managed databases require it: a throwaway cluster serving TLS only
//! (`hostssl` in pg_hba.conf) with a server certificate for 127.0.0.1 signed by a CA this test
//! makes with openssl. `sslmode=verify-full` with that CA connects; a wrong CA, or no TLS at
//! all, is refused with exit 2 and a message naming the cause; a password never shows.

use crate::helpers::ThrowawayCluster;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.crt`, `{name}.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

fn lethe(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("LETHE_LOG", "warn")
        .output()
        .unwrap();
    crate::helpers::outcome(out)
}

#[test]
fn verify_full_connects_and_a_wrong_ca_or_plain_text_is_refused() {
    let c = ThrowawayCluster::start();
    let certs = c.dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca(&certs, "ca");
    ca(&certs, "other-ca");
    std::fs::write(
        certs.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &certs,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    let data = c.dir.join("data");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.join(f), data.join(f)).unwrap();
    }
    let owner = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chmod 600 {d}/server.key && (id -u | grep -qx 0 && chown postgres:postgres {d}/server.crt {d}/server.key || true)",
            d = data.display()
        ))
        .status()
        .unwrap();
    assert!(owner.success());
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    std::fs::write(data.join("postgresql.conf"), conf).unwrap();
    // Over TCP, TLS only: a client that does not encrypt finds no pg_hba.conf entry.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    c.ctl("restart");

    let base = format!("postgres://postgres:s3cret@127.0.0.1:{}/postgres", c.port);
    let root = |name: &str| certs.join(format!("{name}.crt")).display().to_string();
    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", root("ca"));
    let (code, out, err) = lethe(&verified, &["migrate"]);
    assert_eq!(code, 0, "verify-full with the right CA: {out}{err}");
    let (code, out, err) = lethe(&verified, &["hold", "list"]);
    assert_eq!(code, 0, "{out}{err}");

    let wrong = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        root("other-ca")
    );
    let (code, out, err) = lethe(&wrong, &["hold", "list"]);
    assert_eq!(code, 2, "a certificate the CA did not sign: {out}{err}");
    assert!(
        err.to_lowercase().contains("certificate") && err.contains("sslrootcert"),
        "{err}"
    );
    let plain = format!("{base}?sslmode=disable&password=s3cret");
    let (code, out, err) = lethe(&plain, &["hold", "list"]);
    assert_eq!(
        code, 2,
        "no TLS against a server that requires it: {out}{err}"
    );
    assert!(
        err.contains("no encryption") && err.contains("sslmode=require"),
        "{err}"
    );
    for (what, err) in [
        ("wrong CA", &lethe(&wrong, &["hold", "list"]).2),
        ("plain", &err),
    ] {
        assert!(!err.contains("s3cret"), "{what}: the password shows: {err}");
    }
    // The daemon too: a certificate it cannot trust will not mend itself, so it exits 2 (and
    // systemd's RestartPreventExitStatus=2 leaves it down) instead of retrying forever.
    let dir = c.dir.join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("daemon")
        .env("DATABASE_URL", &wrong)
        .env("LETHE_JOBS_DIR", &dir)
        .env("LETHE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(30) {
            let _ = daemon.kill();
            panic!("the daemon kept retrying a certificate it cannot trust");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("sslrootcert") && !err.contains("s3cret"),
        "{err}"
    );
}
