//! Config as code through the real binary: `nexus-server apply FILE` creates providers, models
//! and keys from a file and prints what it did, a second run prints "no changes", an edit is
//! reported field by field, a literal secret is refused with nothing changed, `export` writes
//! the registry back without secrets (and applying the export changes nothing), and a server
//! started with the file as `--config` serves through what it declares.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{body, client, start_with, temp_dir};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-config-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-config-abcdefghij";

fn nexus(args: &[&str], db: &Path, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus-server"));
    c.args(args)
        .arg("--db")
        .arg(db)
        .env_remove("NEXUS_MASTER_KEY")
        .env_remove("NEXUS_DB")
        .env_remove("NEXUS_CONFIG")
        .env("NEXUS_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn file(mock: &str, price: f64) -> String {
    format!(
        r#"
# server settings share the file
default_stream = false

[[providers]]
name = "openai-mock"
kind = "openai"
base_url = "{mock}"
api_key = "env:TEST_OPENAI_KEY"
[[providers.models]]
name = "gpt-4o-mini"
input_price = {price}
output_price = 0.6
[[providers.models]]
name = "smart"
upstream_name = "echo"

[[providers]]
name = "anthropic-mock"
kind = "anthropic"
base_url = "{mock}"
api_key = "env:TEST_ANTHROPIC_KEY"
[[providers.models]]
name = "claude-sonnet-4-5"

[[groups]]
name = "fast"
models = ["gpt-4o-mini", "claude-sonnet-4-5"]

[[keys]]
name = "ci"
providers = ["openai-mock"]
rpm = 600
budget_usd = 5.0
"#
    )
}

const ENVS: [(&str, &str); 2] = [
    ("TEST_OPENAI_KEY", OPENAI_KEY),
    ("TEST_ANTHROPIC_KEY", ANTHROPIC_KEY),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_export_round_trips_and_the_server_serves_it() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let path = dir.join("nexus.toml");
    std::fs::write(&path, file(&mock.base_url(), 0.15)).unwrap();
    let p = path.to_str().unwrap();

    // First run: everything is created; the new key's secret is shown once.
    let o = nexus(&["apply", p], &db, &ENVS);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    for line in [
        "+ provider openai-mock",
        "+ model openai-mock/gpt-4o-mini",
        "+ model openai-mock/smart",
        "+ provider anthropic-mock",
        "+ model anthropic-mock/claude-sonnet-4-5",
        "+ group fast",
        "+ key ci",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("key ci: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(!out.contains(OPENAI_KEY) && !out.contains(ANTHROPIC_KEY));

    // Second run: nothing to do.
    let o = nexus(&["apply", p], &db, &ENVS);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "no changes");

    // An edit (a price) and a rotated upstream key are reported by field; a dry run first
    // changes nothing.
    std::fs::write(&path, file(&mock.base_url(), 0.3)).unwrap();
    let rotated = [("TEST_OPENAI_KEY", "sk-config-openai-rotated-99"), ENVS[1]];
    let o = nexus(&["apply", p, "--dry-run"], &db, &rotated);
    assert!(o.status.success(), "{o:?}");
    let dry = stdout(&o);
    assert!(dry.contains("~ provider openai-mock: api_key"), "{dry}");
    assert!(
        dry.contains("~ model openai-mock/gpt-4o-mini: input_price"),
        "{dry}"
    );
    assert!(dry.contains("dry run"), "{dry}");
    let o = nexus(&["apply", p], &db, &rotated);
    assert_eq!(
        stdout(&o),
        dry.replace("(dry run: nothing was changed)\n", "")
    );
    let o = nexus(&["apply", p], &db, &ENVS);
    assert_eq!(stdout(&o).trim(), "~ provider openai-mock: api_key");

    // A secret written into the file is refused, unechoed, and nothing changes.
    let literal = file(&mock.base_url(), 0.3).replace("env:TEST_OPENAI_KEY", "sk-literal-in-file");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, literal).unwrap();
    let o = nexus(&["apply", bad.to_str().unwrap()], &db, &ENVS);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reference"), "{err}");
    assert!(!err.contains("sk-literal-in-file"), "{err}");
    // So is a reference to a variable that is not set, before any change is made.
    let o = nexus(&["apply", p], &db, &ENVS[1..]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("TEST_OPENAI_KEY is not set"));
    let o = nexus(&["apply", p], &db, &ENVS);
    assert_eq!(stdout(&o).trim(), "no changes");

    // Export: secrets as references; applying it with those variables set changes nothing.
    let o = nexus(&["export"], &db, &[]);
    assert!(o.status.success(), "{o:?}");
    let exported = stdout(&o);
    assert!(!exported.contains(OPENAI_KEY) && !exported.contains(ANTHROPIC_KEY));
    assert!(!exported.contains(&secret));
    assert!(
        exported.contains("api_key = \"env:OPENAI_MOCK_API_KEY\""),
        "{exported}"
    );
    assert!(exported.contains("input_price = 0.3"), "{exported}");
    let back = dir.join("exported.toml");
    std::fs::write(&back, &exported).unwrap();
    let o = nexus(
        &["apply", back.to_str().unwrap()],
        &db,
        &[
            ("OPENAI_MOCK_API_KEY", OPENAI_KEY),
            ("ANTHROPIC_MOCK_API_KEY", ANTHROPIC_KEY),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "no changes");

    // The same file as --config of a fresh server: applied at start, and served.
    let db2 = dir.join("second.db");
    let srv = start_with(&db2, Some(&file(&mock.base_url(), 0.15)), &ENVS);
    let http = client();
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let providers: Value = http
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = providers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{providers}");
    assert!(names.contains(&"openai-mock") && names.contains(&"anthropic-mock"));
    // What the file declares is marked, for the UI's "managed by the config file" notice.
    let marks: Value = http
        .get(format!("{base}/api/config/managed"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        marks["providers"],
        serde_json::json!(["anthropic-mock", "openai-mock"]),
        "{marks}"
    );
    assert_eq!(marks["groups"], serde_json::json!(["fast"]), "{marks}");
    assert_eq!(marks["keys"], serde_json::json!(["ci"]), "{marks}");
    assert!(marks["models"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"provider": "openai-mock", "name": "smart"})));
    assert!(marks["applied_at"].as_i64().unwrap() > 0);
    // The key the first database made is not this one's; make one here and chat through `smart`.
    let created: Value = http
        .post(format!("{base}/api/keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "here"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(created["key"].as_str().unwrap())
        .json(&body("smart", "hello from the file"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello from the file"),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
