//! `nexus-server rotate-master-key` through the real binary: key-file mode keeps every upstream
//! key and header usable, env mode without `NEXUS_NEW_MASTER_KEY` refuses and changes nothing,
//! and no rotation runs while a server has the database open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{body, client};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("nexus-rotate-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the binary on 127.0.0.1:0 (key file mode) and waits for its address.
fn start(db: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-server"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("NEXUS_MASTER_KEY")
        .env_remove("NEXUS_LISTEN")
        .env_remove("NEXUS_DB")
        .env_remove("NEXUS_CONFIG")
        .env("NEXUS_ADMIN_TOKEN", "rotate-test-admin-token-0123")
        .env("NEXUS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus-server");
    let stderr = child.stderr.take().unwrap();
    // Owned by a `Server` from here, so every exit path (a panic included) reaps the process.
    let mut srv = Server {
        child,
        addr: String::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Ok(Some(st)) = srv.child.try_wait() {
                panic!("server exited early ({st}): {seen:?}");
            }
            continue;
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            srv.addr = rest.trim().to_owned();
            return srv;
        }
        seen.push(line);
    }
    panic!("no 'listening on' line: {seen:?}");
}

fn stop(mut srv: Server) {
    let st = Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(st) = srv.child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not exit");
}

/// Runs `nexus-server rotate-master-key --db <db>` with exactly the given key variables.
fn rotate_cmd(db: &Path, vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus-server"));
    c.args(["rotate-master-key", "--db"])
        .arg(db)
        .env_remove("NEXUS_MASTER_KEY")
        .env_remove("NEXUS_NEW_MASTER_KEY")
        .env_remove("NEXUS_DB")
        .env_remove("NEXUS_CONFIG")
        .env("NEXUS_LOG", "warn");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

const UPSTREAM: &str = "sk-rotate-upstream-0123456789";
const HEADER: &str = "header-secret-rotate-abcdef";

/// A database with one provider (sealed key and header), one model and one client key.
fn seeded(db: &Path, master: Option<nexus::crypto::MasterKey>, base_url: &str) -> String {
    let hub = nexus::Hub::open(
        db,
        nexus::HubOptions {
            master_key: master,
            ..nexus::HubOptions::default()
        },
    )
    .unwrap();
    let reg = hub.registry();
    let p = reg
        .create_provider(nexus::records::NewProvider {
            name: "mock".into(),
            base_url: base_url.into(),
            api_key: UPSTREAM.into(),
            options: nexus::records::ProviderOptions {
                headers: Some([("api-key".to_owned(), HEADER.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
    reg.create_model(
        p.id,
        nexus::records::NewModel {
            name: "gpt-4o".into(),
            ..Default::default()
        },
    )
    .unwrap();
    reg.create_key(nexus::records::NewKey {
        name: "k".into(),
        ..Default::default()
    })
    .unwrap()
    .key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_in_key_file_mode_keeps_upstream_keys_and_refuses_while_served() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let key = seeded(&db, None, &mock.base_url());
    let key_file = nexus::hub::default_key_file(&db);
    let old = std::fs::read_to_string(&key_file).unwrap();

    let out = rotate_cmd(&db, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let new = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(old.trim(), new.trim(), "the key file holds the new key");
    let mut old_file = key_file.as_os_str().to_owned();
    old_file.push(".old");
    assert_eq!(
        std::fs::read_to_string(&old_file).unwrap().trim(),
        old.trim()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [key_file.as_os_str(), old_file.as_os_str()] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f:?}");
        }
    }

    // The server starts on the rotated file, and the upstream key and header still decrypt.
    let srv = start(&db);
    let r = client()
        .post(format!("http://{}/v1/chat/completions", srv.addr))
        .bearer_auth(&key)
        .json(&body("gpt-4o", "after rotation"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = mock.last_headers();
    assert!(sent
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {UPSTREAM}")));
    assert!(sent.iter().any(|(k, v)| k == "api-key" && v == HEADER));

    // While it runs, rotation is refused and changes nothing.
    let out = tokio::task::block_in_place(|| rotate_cmd(&db, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), new);
    tokio::task::block_in_place(|| stop(srv));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_in_env_mode_needs_the_new_key() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let k1 = nexus::crypto::MasterKey::from_bytes([3u8; 32]);
    let k2 = nexus::crypto::MasterKey::from_bytes([4u8; 32]);
    seeded(&db, Some(k1.clone()), "http://127.0.0.1:9");
    let before = std::fs::read(&db).unwrap();

    // Without NEXUS_NEW_MASTER_KEY: refused, nothing changed, no key was invented.
    let out = rotate_cmd(&db, &[("NEXUS_MASTER_KEY", &k1.to_base64())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("NEXUS_NEW_MASTER_KEY"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database is untouched"
    );
    assert!(!nexus::hub::default_key_file(&db).exists());
    let open = |k: &nexus::crypto::MasterKey| {
        nexus::Hub::open(
            &db,
            nexus::HubOptions {
                master_key: Some(k.clone()),
                ..nexus::HubOptions::default()
            },
        )
    };
    let hub = open(&k1).unwrap();
    assert_eq!(
        hub.registry().providers().unwrap()[0].api_key_hint,
        "sk-...6789"
    );
    drop(hub);

    // With it: done, and only the new key opens the file and its secrets.
    let out = rotate_cmd(
        &db,
        &[
            ("NEXUS_MASTER_KEY", &k1.to_base64()),
            ("NEXUS_NEW_MASTER_KEY", &k2.to_base64()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(open(&k1).is_err());
    let hub = open(&k2).unwrap();
    let p = hub.registry().providers().unwrap()[0].id;
    let e = hub.registry().provider_entry(p).unwrap();
    assert_eq!(e.api_key.expose(), UPSTREAM);
    assert_eq!(e.headers[0].1.expose(), HEADER);
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}
