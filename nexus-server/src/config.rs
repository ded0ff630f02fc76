//! Server configuration: command line, then environment, then `--config` file, then defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The SQLite file.
    pub db: PathBuf,
    /// Largest accepted request body (default 8 MiB).
    pub body_limit: usize,
    /// `stream` when a request does not say (OpenAI: false; the original system: true).
    pub default_stream: bool,
    /// Allowed CORS origins; empty means CORS is closed.
    pub cors_origins: Vec<String>,
    /// How long open streams may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// How long a request head may take to arrive: from the accept for the first request, from
    /// its first byte on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keep_alive_idle_timeout: Duration,
    /// How long a request body may take to arrive once its head is in.
    pub body_read_timeout: Duration,
    /// Open connections at most; over it a connection gets a 503 and is closed.
    pub max_connections: usize,
    /// Requests in flight at most (streams count until they end); over it a 503 `overloaded`.
    pub max_inflight_requests: usize,
    /// When set, `/metrics` needs `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// Core settings.
    pub hub: nexus::HubOptions,
    /// The file's `[[providers]]`, `[[groups]]` and `[[keys]]`, applied to the registry at start.
    pub declared: nexus::config_as_code::DeclaredConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            db: PathBuf::from("nexus.db"),
            // 8 MiB, not the 16 MiB of earlier releases: the body is parsed into a JSON tree that
            // is many times its size (audit H2), so the limit bounds memory per request. 8 MiB
            // still holds a few base64 images; raise `body_limit_bytes` if clients need more.
            body_limit: 8 * 1024 * 1024,
            default_stream: false,
            cors_origins: vec![],
            shutdown_grace: Duration::from_secs(30),
            log_json: false,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle_timeout: Duration::from_secs(60),
            // 8 MiB in 60 s is about 1.1 Mbit/s: slow links still get a whole body through.
            body_read_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_inflight_requests: 1024,
            metrics_token: None,
            hub: {
                // A server looks after its providers: the probes run every minute unless the
                // file says otherwise (`health_check_interval_seconds = 0` turns them off).
                let mut h = nexus::HubOptions::default();
                h.health_checks.scheduled = true;
                h
            },
            declared: nexus::config_as_code::DeclaredConfig::default(),
        }
    }
}

/// The `--config` file (TOML). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "127.0.0.1:8000"`
    pub listen: Option<String>,
    /// `db = "./nexus.db"`
    pub db: Option<PathBuf>,
    /// `body_limit_bytes = 8388608`
    pub body_limit_bytes: Option<usize>,
    /// `default_stream = false`
    pub default_stream: Option<bool>,
    /// `cors_origins = ["http://localhost:3000"]`
    pub cors_origins: Option<Vec<String>>,
    /// `shutdown_grace_seconds = 30`
    pub shutdown_grace_seconds: Option<u64>,
    /// `log_json = false`
    pub log_json: Option<bool>,
    /// `header_read_timeout_seconds = 10`
    pub header_read_timeout_seconds: Option<u64>,
    /// `keep_alive_idle_timeout_seconds = 60`
    pub keep_alive_idle_timeout_seconds: Option<u64>,
    /// `body_read_timeout_seconds = 60`
    pub body_read_timeout_seconds: Option<u64>,
    /// `max_connections = 4096`
    pub max_connections: Option<usize>,
    /// `max_inflight_requests = 1024`
    pub max_inflight_requests: Option<usize>,
    /// `metrics_token = "..."` (unset: `/metrics` is open)
    pub metrics_token: Option<String>,
}

/// What the command line asked for.
#[derive(Debug, Default)]
pub struct Cli {
    /// `--listen`
    pub listen: Option<String>,
    /// `--db`
    pub db: Option<PathBuf>,
    /// `--config`
    pub config: Option<PathBuf>,
    /// `rotate-master-key` subcommand.
    pub rotate_master_key: bool,
    /// `apply FILE`: apply the file's providers, models and keys, print the changes, exit.
    pub apply: Option<PathBuf>,
    /// `export`: print the registry as a configuration file, exit.
    pub export: bool,
    /// `--dry-run` (with `apply`): print the changes without making them.
    pub dry_run: bool,
}

/// Usage text.
pub const USAGE: &str = "\
usage: nexus-server [--listen 127.0.0.1:8000] [--db ./nexus.db] [--config nexus.toml]
       nexus-server rotate-master-key [--db ./nexus.db]
       nexus-server apply nexus.toml [--db ./nexus.db] [--dry-run]
       nexus-server export [--db ./nexus.db] > nexus.toml

environment: NEXUS_LISTEN, NEXUS_DB, NEXUS_CONFIG, NEXUS_ADMIN_TOKEN, NEXUS_MASTER_KEY (base64, 32 bytes),
             NEXUS_NEW_MASTER_KEY (for rotate-master-key), NEXUS_DEFAULT_STREAM, NEXUS_CORS_ORIGINS (comma separated),
             NEXUS_LOG (tracing filter, e.g. info or nexus=debug), NEXUS_LOG_JSON=1,
             NEXUS_METRICS_TOKEN, NEXUS_MAX_CONNECTIONS, NEXUS_MAX_INFLIGHT_REQUESTS";

/// Parses arguments (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
    let mut cli = Cli::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => cli.listen = Some(value("--listen")?),
            "--db" => cli.db = Some(PathBuf::from(value("--db")?)),
            "--config" => cli.config = Some(PathBuf::from(value("--config")?)),
            "rotate-master-key" => cli.rotate_master_key = true,
            "apply" => {
                let file = it
                    .next()
                    .ok_or("apply needs a file: nexus-server apply nexus.toml")?;
                // The file is also the configuration (its db, its settings).
                cli.apply = Some(PathBuf::from(&file));
                cli.config = Some(PathBuf::from(file));
            }
            "export" => cli.export = true,
            "--dry-run" => cli.dry_run = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(cli)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Zero would mean "close every connection at once" or "shed every request": refuse it.
fn at_least_1<T: PartialOrd + From<u8>>(name: &str, v: T) -> Result<T, String> {
    if v < T::from(1) {
        return Err(format!("{name} must be at least 1"));
    }
    Ok(v)
}

fn parse_count(name: &str, v: &str) -> Result<usize, String> {
    let n = v
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("{name}={v:?}: {e}"))?;
    at_least_1(name, n)
}

/// Builds the configuration: command line over environment over file over defaults.
pub fn resolve(cli: &Cli) -> Result<ServerConfig, String> {
    let mut c = ServerConfig::default();
    let file_path = cli
        .config
        .clone()
        .or_else(|| env("NEXUS_CONFIG").map(PathBuf::from));
    if let Some(p) = file_path {
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        // The core's keys (`nexus::HubSettings`, one schema with the C and Python options) and the
        // server's own share the file's top level; each part refuses keys it does not know.
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut core = toml::Table::new();
        for k in nexus::HubSettings::KEYS {
            if let Some(v) = table.remove(k) {
                core.insert(k.to_owned(), v);
            }
        }
        // The catalogue part (config as code) is the core's too.
        c.declared = nexus::config_as_code::DeclaredConfig::from_toml(&text)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        for k in ["providers", "groups", "keys"] {
            table.remove(k);
        }
        let settings: nexus::HubSettings = core
            .try_into()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        settings
            .apply(&mut c.hub)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let f: FileConfig = table
            .try_into()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(v) = f.listen {
            c.listen = v.parse().map_err(|e| format!("listen = {v:?}: {e}"))?;
        }
        if let Some(v) = f.db {
            c.db = v;
        }
        if let Some(v) = f.body_limit_bytes {
            c.body_limit = v;
        }
        if let Some(v) = f.default_stream {
            c.default_stream = v;
        }
        if let Some(v) = f.cors_origins {
            c.cors_origins = v;
        }
        if let Some(v) = f.shutdown_grace_seconds {
            c.shutdown_grace = Duration::from_secs(v);
        }
        if let Some(v) = f.log_json {
            c.log_json = v;
        }
        if let Some(v) = f.header_read_timeout_seconds {
            c.header_read_timeout =
                Duration::from_secs(at_least_1("header_read_timeout_seconds", v)?);
        }
        if let Some(v) = f.keep_alive_idle_timeout_seconds {
            c.keep_alive_idle_timeout =
                Duration::from_secs(at_least_1("keep_alive_idle_timeout_seconds", v)?);
        }
        if let Some(v) = f.body_read_timeout_seconds {
            c.body_read_timeout = Duration::from_secs(at_least_1("body_read_timeout_seconds", v)?);
        }
        if let Some(v) = f.max_connections {
            c.max_connections = at_least_1("max_connections", v)?;
        }
        if let Some(v) = f.max_inflight_requests {
            c.max_inflight_requests = at_least_1("max_inflight_requests", v)?;
        }
        if let Some(v) = f.metrics_token {
            if v.trim().is_empty() {
                return Err(
                    "metrics_token must not be empty (omit it to leave /metrics open)".into(),
                );
            }
            c.metrics_token = Some(v);
        }
    }
    if let Some(v) = env("NEXUS_DEFAULT_STREAM") {
        c.default_stream = truthy(&v);
    }
    if let Some(v) = env("NEXUS_CORS_ORIGINS") {
        c.cors_origins = v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if let Some(v) = env("NEXUS_LOG_JSON") {
        c.log_json = truthy(&v);
    }
    if let Some(v) = env("NEXUS_METRICS_TOKEN") {
        c.metrics_token = Some(v);
    }
    if let Some(v) = env("NEXUS_MAX_CONNECTIONS") {
        c.max_connections = parse_count("NEXUS_MAX_CONNECTIONS", &v)?;
    }
    if let Some(v) = env("NEXUS_MAX_INFLIGHT_REQUESTS") {
        c.max_inflight_requests = parse_count("NEXUS_MAX_INFLIGHT_REQUESTS", &v)?;
    }
    if let Some(v) = cli.listen.clone().or_else(|| env("NEXUS_LISTEN")) {
        c.listen = v
            .parse()
            .map_err(|e| format!("listen address {v:?}: {e}"))?;
    }
    if let Some(v) = cli
        .db
        .clone()
        .or_else(|| env("NEXUS_DB").map(PathBuf::from))
    {
        c.db = v;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_both_ways() {
        let c =
            parse_args(["--listen", "127.0.0.1:9", "--db=/tmp/x.db"].map(String::from)).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(c.db, Some(PathBuf::from("/tmp/x.db")));
        assert!(parse_args(["--bogus".to_owned()]).is_err());
        assert!(parse_args(["--db".to_owned()]).is_err());
    }

    #[test]
    fn file_config_is_strict() {
        assert!(
            toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\ndefault_stream = true").is_ok()
        );
        assert!(toml::from_str::<FileConfig>("typo = 1").is_err());
    }

    #[test]
    fn the_file_mixes_server_keys_with_the_core_settings_schema() {
        let dir = std::env::temp_dir().join(format!("nexus-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nexus.toml");
        std::fs::write(
            &f,
            "default_stream = true\ncache_ttl_seconds = 9\nmax_messages = 50\nrecord_messages = false\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(f.clone()),
            ..Cli::default()
        };
        let c = resolve(&cli).unwrap();
        assert!(c.default_stream && !c.hub.record_messages);
        assert_eq!(c.hub.request_limits.max_messages, 50);
        assert_eq!(c.hub.cache.map(|c| c.ttl), Some(Duration::from_secs(9)));
        std::fs::write(&f, "max_mesages = 50\n").unwrap();
        assert!(resolve(&cli).is_err(), "a typo in either part is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_have_safe_defaults_and_refuse_zero() {
        let d = ServerConfig::default();
        assert_eq!(d.body_limit, 8 * 1024 * 1024);
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.keep_alive_idle_timeout, Duration::from_secs(60));
        assert_eq!(d.body_read_timeout, Duration::from_secs(60));
        assert_eq!(d.max_connections, 4096);
        assert_eq!(d.max_inflight_requests, 1024);
        assert_eq!(d.metrics_token, None);
        assert!(at_least_1("max_connections", 0usize).is_err());
        assert_eq!(at_least_1("max_connections", 3usize), Ok(3));
        assert!(parse_count("X", "0").is_err());
        assert!(parse_count("X", "x").is_err());
        assert_eq!(parse_count("X", " 7 "), Ok(7));
    }
}
