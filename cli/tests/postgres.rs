//! The `sealkv` binary on PostgreSQL: URLs wherever a path goes, a store moved there
//! and back with `backup`, server errors as exit 2 with a hint, several importers at
//! once, and importers killed mid-import (all or nothing). Needs the server that
//! `scripts/test` starts (`SEALKV_TEST_PG`); without it the tests pass vacuously unless
//! `SEALKV_REQUIRE_PG` is set, as it is in CI.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use assert_cmd::Command;
use predicates::prelude::*;

const PASS: &str = "pg-cli-passphrase-do-not-print";

/// The server's URL split into a password-free base and its password.
struct Server {
    base: String,
    password: String,
    prefix: String,
}

fn server() -> Option<Server> {
    let url = match std::env::var("SEALKV_TEST_PG") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("SEALKV_REQUIRE_PG").is_none(),
                "SEALKV_REQUIRE_PG is set but SEALKV_TEST_PG names no server"
            );
            return None;
        }
    };
    let config: postgres::Config = url.parse().unwrap();
    let password = String::from_utf8(config.get_password().unwrap().to_vec()).unwrap();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    Some(Server {
        base: url.replace(&format!(":{password}@"), "@"),
        password,
        prefix: format!(
            "cli{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    })
}

impl Server {
    /// A store URL without the password (the binary reads it from PGPASSWORD).
    fn url(&self, store: &str) -> String {
        format!("{}?store={}_{store}", self.base, self.prefix)
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sealkv").unwrap();
        c.env_remove("SEALKV_MASTER_KEY")
            .env("SEALKV_PASSPHRASE", PASS)
            .env("PGPASSWORD", &self.password);
        c
    }
    fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("sealkv"));
        c.env_remove("SEALKV_MASTER_KEY")
            .env("SEALKV_PASSPHRASE", PASS)
            .env("PGPASSWORD", &self.password);
        c
    }
    fn keys(&self, url: &str, session: &str, ns: &str) -> usize {
        let out = self
            .cmd()
            .args(["ls", "--session", session, url, ns])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().lines().count()
    }
}

fn no_secret(s: &Server) -> impl Predicate<[u8]> + use<> {
    predicate::str::contains(PASS)
        .not()
        .and(predicate::str::contains(s.password.clone()).not())
        .from_utf8()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// JSON lines as `sealkv export` writes them: `n` values in namespace `ns`.
fn lines(ns: &str, n: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for i in 0..n {
        // "dmFsdWU=" is base64 of "value".
        writeln!(
            out,
            r#"{{"namespace":"{ns}","key":"k{i}","value":"dmFsdWU="}}"#
        )
        .unwrap();
    }
    out
}

#[test]
fn urls_work_everywhere_and_backup_moves_a_store_there_and_back() {
    let Some(srv) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bot.sealkv");
    srv.cmd().args(["init", s(&file)]).assert().success();
    srv.cmd()
        .args(["put", "--session", "4915550001", s(&file), "creds", "me"])
        .write_stdin("the creds")
        .assert()
        .success();
    let url = srv.url("moved");
    srv.cmd()
        .args(["backup", s(&file), &url])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("wrote {url}")))
        .stderr(no_secret(&srv));
    srv.cmd()
        .args(["get", "--session", "4915550001", &url, "creds", "me"])
        .assert()
        .success()
        .stdout("the creds");
    srv.cmd()
        .args(["sessions", &url])
        .assert()
        .success()
        .stdout("4915550001\n");
    srv.cmd()
        .args(["put", &url, "pre-key", "1"])
        .write_stdin("one")
        .assert()
        .success();
    for args in [
        vec!["verify", &url],
        vec!["stats", &url],
        vec!["rotate", &url],
    ] {
        srv.cmd()
            .args(&args)
            .assert()
            .success()
            .stderr(no_secret(&srv));
    }
    let back = dir.path().join("back.sealkv");
    srv.cmd()
        .args(["backup", &url, s(&back)])
        .assert()
        .success();
    srv.cmd()
        .args(["get", s(&back), "pre-key", "1"])
        .assert()
        .success()
        .stdout("one");
    // A password in the URL works too, and is never printed.
    let with_password = url.replacen("sealkv@", &format!("sealkv:{}@", srv.password), 1);
    srv.cmd()
        .env_remove("PGPASSWORD")
        .args(["get", &with_password, "pre-key", "1"])
        .assert()
        .success()
        .stdout("one");
    srv.cmd()
        .env_remove("PGPASSWORD")
        .args(["init", &with_password])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"))
        .stderr(no_secret(&srv));
}

#[test]
fn server_errors_exit_2_with_a_hint_and_a_wrong_key_exits_3() {
    let Some(srv) = server() else { return };
    let url = srv.url("errors");
    srv.cmd().args(["init", &url]).assert().success();
    let hint = predicate::str::contains("hint:");
    srv.cmd()
        .args(["ls", "postgres://sealkv@127.0.0.1:1/x?store=a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot reach").and(hint.clone()));
    srv.cmd()
        .env("PGPASSWORD", "wrong-password")
        .args(["ls", &url])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("password authentication failed").and(hint.clone()))
        .stderr(predicate::str::contains("wrong-password").not());
    srv.cmd()
        .args(["ls", &srv.url("absent")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no sealkv store named").and(hint.clone()));
    srv.cmd()
        .args(["ls", &format!("{}?store=", srv.base)])
        .assert()
        .code(2)
        .stderr(hint.clone());
    srv.cmd()
        .env("SEALKV_PASSPHRASE", "not the passphrase")
        .args(["ls", &url])
        .assert()
        .code(3);
    // The test server has no standby: a write that asks for one is refused, by name,
    // and nothing is written; as a flag or in the URL.
    for (flag, url) in [
        (Some("--sync-replicas=1"), url.clone()),
        (None, format!("{url}&sync_replicas=1")),
    ] {
        srv.cmd()
            .args(flag)
            .args(["put", &url, "n", "k"])
            .write_stdin("v")
            .assert()
            .code(2)
            .stderr(predicate::str::contains("synchronous_standby_names").and(hint.clone()));
    }
    srv.cmd().args(["get", &url, "n", "k"]).assert().code(1);
    srv.cmd()
        .args(["--sync-replicas=65", "ls", &url])
        .assert()
        .code(2);
    // A healthy store on the server, as a HEALTHCHECK sees it.
    srv.cmd()
        .args(["health", &url])
        .assert()
        .success()
        .stdout(predicate::str::contains("engine: postgres"));
}

#[test]
fn importers_at_once_and_killed_importers_lose_or_half_apply_nothing() {
    let Some(srv) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = srv.url("farm");
    srv.cmd().args(["init", &url]).assert().success();

    // Four processes import into four sessions of one store at once.
    let input = dir.path().join("small.jsonl");
    std::fs::write(&input, lines("pre-key", 400)).unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            srv.std_cmd()
                .args(["import", "--session", &format!("bot{i}"), &url, s(&input)])
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for i in 0..4 {
        assert_eq!(srv.keys(&url, &format!("bot{i}"), "pre-key"), 400);
    }

    // A big import, timed, then killed at points through it: each ends with all of it
    // or none of it.
    let n = 20_000;
    let input = dir.path().join("big.jsonl");
    std::fs::write(&input, lines("pre-key", n)).unwrap();
    let started = Instant::now();
    srv.cmd()
        .args(["import", "--session", "timed", &url, s(&input)])
        .assert()
        .success();
    let full = started.elapsed();
    let mut killed = 0;
    for (i, share) in [0.3, 0.5, 0.7, 0.8, 0.9, 0.95].into_iter().enumerate() {
        let session = format!("killed{i}");
        let mut child = srv
            .std_cmd()
            .args(["import", "--session", &session, &url, s(&input)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(share));
        let _ = child.kill();
        let status = child.wait().unwrap();
        killed += usize::from(!status.success());
        let found = srv.keys(&url, &session, "pre-key");
        assert!(
            found == 0 || found == n,
            "killed at {share} of the import: {found} of {n} values"
        );
    }
    assert!(killed > 0, "no import was killed before it finished");
    srv.cmd().args(["verify", &url]).assert().success();
}
