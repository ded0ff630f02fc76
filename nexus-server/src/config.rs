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
    /// Largest accepted request body.
    pub body_limit: usize,
    /// `stream` when a request does not say (OpenAI: false; the original system: true).
    pub default_stream: bool,
    /// Allowed CORS origins; empty means CORS is closed.
    pub cors_origins: Vec<String>,
    /// How long open streams may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Core settings.
    pub hub: nexus::HubOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            db: PathBuf::from("nexus.db"),
            body_limit: 16 * 1024 * 1024,
            default_stream: false,
            cors_origins: vec![],
            shutdown_grace: Duration::from_secs(30),
            log_json: false,
            hub: nexus::HubOptions::default(),
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
    /// `body_limit_bytes = 16777216`
    pub body_limit_bytes: Option<usize>,
    /// `default_stream = false`
    pub default_stream: Option<bool>,
    /// `cors_origins = ["http://localhost:3000"]`
    pub cors_origins: Option<Vec<String>>,
    /// `shutdown_grace_seconds = 30`
    pub shutdown_grace_seconds: Option<u64>,
    /// `log_json = false`
    pub log_json: Option<bool>,
    /// `record_messages = true`
    pub record_messages: Option<bool>,
    /// `cache_ttl_seconds = 0` (0 = cache off)
    pub cache_ttl_seconds: Option<u64>,
    /// `cache_max_entries = 1000`
    pub cache_max_entries: Option<usize>,
    /// `max_attempts = 3`
    pub max_attempts: Option<u32>,
    /// `first_byte_timeout_seconds = 120`
    pub first_byte_timeout_seconds: Option<u64>,
    /// `idle_timeout_seconds = 60`
    pub idle_timeout_seconds: Option<u64>,
    /// `connect_timeout_seconds = 10`
    pub connect_timeout_seconds: Option<u64>,
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
}

/// Usage text.
pub const USAGE: &str = "\
usage: nexus-server [--listen 127.0.0.1:8000] [--db ./nexus.db] [--config nexus.toml]
       nexus-server rotate-master-key [--db ./nexus.db]

environment: NEXUS_LISTEN, NEXUS_DB, NEXUS_CONFIG, NEXUS_ADMIN_TOKEN, NEXUS_MASTER_KEY (base64, 32 bytes),
             NEXUS_NEW_MASTER_KEY (for rotate-master-key), NEXUS_DEFAULT_STREAM, NEXUS_CORS_ORIGINS (comma separated),
             NEXUS_LOG (tracing filter, e.g. info or nexus=debug), NEXUS_LOG_JSON=1";

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
        let f: FileConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
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
        if let Some(v) = f.record_messages {
            c.hub.record_messages = v;
        }
        if let Some(ttl) = f.cache_ttl_seconds.filter(|t| *t > 0) {
            c.hub.cache = Some(nexus::resilience::CacheConfig {
                ttl: Duration::from_secs(ttl),
                max_entries: f.cache_max_entries.unwrap_or(1000),
            });
        }
        if let Some(v) = f.max_attempts {
            c.hub.retry.max_attempts = v.max(1);
        }
        if let Some(v) = f.first_byte_timeout_seconds {
            c.hub.first_byte_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.idle_timeout_seconds {
            c.hub.idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = f.connect_timeout_seconds {
            c.hub.connect_timeout = Duration::from_secs(v);
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
}
