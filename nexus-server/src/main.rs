//! `nexus-server`: the NexusAI Hub reference server.
//!
//! Run with `nexus-server [--listen 127.0.0.1:8000] [--db ./nexus.db] [--config nexus.toml]`.

use std::io::Write;
use std::process::ExitCode;

use nexus_server::config::{self, ServerConfig};
use nexus_server::AppState;

// The request path allocates many small buffers on both runtime threads; glibc's arenas showed up
// as lock wake-ups in profiles, mimalloc's thread-local pages do not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = match config::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            eprintln!("{}", config::USAGE);
            return if msg.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let cfg = match config::resolve(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if cli.rotate_master_key {
        rotate(&cfg)
    } else if cli.apply.is_some() {
        apply(&cfg, cli.dry_run)
    } else if cli.export {
        export(&cfg)
    } else {
        rt.block_on(run(cfg))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, as `MIMALLOC_ALLOW_THP=0` would (mimalloc
/// reads that variable before `main`, so it cannot be set from here). mimalloc asks for huge pages
/// on its arenas (`MADV_HUGEPAGE`); a 2 MiB page is resident as a whole, however little of it the
/// per-connection buffers touch. Measured with 3,000 open SSE streams: 261 MB RSS with huge pages,
/// 180 MB without (about 27 KB less per open stream). The flag covers memory faulted in from here
/// on (the kernel checks it at every fault); set `MIMALLOC_ALLOW_THP=1` to keep huge pages.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn init_logging(cfg: &ServerConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: in a log file they are noise, and they cost CPU per line.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Re-seals every sealed value under `NEXUS_NEW_MASTER_KEY` (or, in key-file mode, a fresh key
/// written to the key file). The work is in the core (`rotate_master_key_at`): it refuses while
/// any server or program has the database open, and in env mode without a new key it refuses
/// rather than generate a key nobody would ever see.
fn rotate(cfg: &ServerConfig) -> Result<(), String> {
    use nexus::crypto::MasterKey;
    use nexus::registry::{rotate_master_key_at, MasterKeySource};
    let nonempty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let current = match (&cfg.hub.master_key, nonempty("NEXUS_MASTER_KEY")) {
        (Some(k), _) => MasterKeySource::Env(k.clone()),
        (None, Some(v)) => {
            MasterKeySource::Env(MasterKey::from_base64(&v).map_err(|e| e.to_string())?)
        }
        (None, None) => MasterKeySource::File(nexus::hub::default_key_file(&cfg.db)),
    };
    let new = nonempty("NEXUS_NEW_MASTER_KEY")
        .map(|v| MasterKey::from_base64(&v).map_err(|e| format!("NEXUS_NEW_MASTER_KEY: {e}")))
        .transpose()?;
    let done = rotate_master_key_at(&cfg.db, current, new).map_err(|e| e.to_string())?;
    match &done.key_file {
        Some((file, kept)) => eprintln!(
            "re-encrypted {} sealed values; new master key written to {} (fingerprint {}); \
             the old key is kept in {} until you delete it",
            done.resealed,
            file.display(),
            done.fingerprint,
            kept.display()
        ),
        None => eprintln!(
            "re-encrypted {} sealed values under NEXUS_NEW_MASTER_KEY (fingerprint {}); \
             set NEXUS_MASTER_KEY to that value before the next start",
            done.resealed, done.fingerprint
        ),
    }
    Ok(())
}

/// `nexus-server apply FILE`: the file's providers, models and keys into the registry; prints
/// each change (or "no changes") on stdout.
fn apply(cfg: &ServerConfig, dry_run: bool) -> Result<(), String> {
    use nexus::config_as_code::plan;
    if cfg.declared.is_empty() {
        return Err("the file declares no [[providers]], [[groups]] nor [[keys]]".into());
    }
    let hub = nexus::Hub::open(&cfg.db, cfg.hub.clone())
        .map_err(|e| format!("cannot open database {}: {e}", cfg.db.display()))?;
    let plan = plan(hub.registry(), &cfg.declared).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    if dry_run {
        let changes = plan.changes();
        if changes.is_empty() {
            let _ = writeln!(out, "no changes");
        }
        for c in changes {
            let _ = writeln!(out, "{c}");
        }
        let _ = writeln!(out, "(dry run: nothing was changed)");
        return Ok(());
    }
    let report = plan.apply(hub.registry()).map_err(|e| e.to_string())?;
    let _ = write!(out, "{report}");
    Ok(())
}

/// `nexus-server export`: the registry as a configuration file on stdout, secrets as `env:`
/// references.
fn export(cfg: &ServerConfig) -> Result<(), String> {
    let hub = nexus::Hub::open(&cfg.db, cfg.hub.clone())
        .map_err(|e| format!("cannot open database {}: {e}", cfg.db.display()))?;
    let text = nexus::config_as_code::export(hub.registry())
        .and_then(|c| c.to_toml())
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# NexusAI Hub configuration (apply with: nexus-server apply FILE).\n\
         # Secrets are references: set each env: variable named here before applying.\n"
    );
    let _ = write!(out, "{text}");
    Ok(())
}

async fn run(cfg: ServerConfig) -> Result<(), String> {
    let db = cfg.db.clone();
    let hub_opts = cfg.hub.clone();
    let hub = tokio::task::spawn_blocking(move || nexus::Hub::open(&db, hub_opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open database {}: {e}", cfg.db.display()))?;
    // The --config file's providers, models and keys, before the first request.
    if !cfg.declared.is_empty() {
        let (h, declared) = (hub.clone(), cfg.declared.clone());
        let report = tokio::task::spawn_blocking(move || {
            nexus::config_as_code::plan(h.registry(), &declared).and_then(|p| p.apply(h.registry()))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the configuration file's providers: {e}"))?;
        for c in &report.changes {
            tracing::info!(change = %c, "configuration applied");
        }
        for (name, secret) in &report.created_keys {
            // Printed, not logged, as the admin token is.
            eprintln!("  key {name} created from the configuration (shown once): {secret}");
        }
    }
    hub.start_health_checks().map_err(|e| e.to_string())?;
    let configured = std::env::var("NEXUS_ADMIN_TOKEN").ok();
    let generated = hub
        .registry()
        .ensure_admin_token(configured.as_deref())
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let grace = cfg.shutdown_grace;
    // Printed, not logged: the token must reach the operator once and never a log pipeline.
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "NexusAI Hub {} listening on http://{addr}",
        nexus::VERSION
    );
    let _ = writeln!(err, "  admin UI:        http://{addr}/");
    let _ = writeln!(err, "  OpenAI base URL: http://{addr}/v1");
    let _ = writeln!(err, "  database:        {}", cfg.db.display());
    if let Some(t) = &generated {
        let _ = writeln!(err, "  admin token (shown once, stored hashed): {t}");
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    raise_open_file_limit(cfg.max_connections);
    let state = AppState::with_shutdown(hub.clone(), cfg, rx);
    let metrics = state.metrics.clone();
    let mut signal_rx = tx.subscribe();
    // Our accept loop, not axum::serve: it adds the header-read and keep-alive deadlines, the
    // connection cap and the peer address (nexus_server::serve).
    let server = nexus_server::serve::serve(listener, state, async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing open requests");
        let _ = tx.send(true);
    });
    let grace_timer = async move {
        let _ = signal_rx.wait_for(|v| *v).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = server => {}
        _ = grace_timer => {
            tracing::warn!(open_streams = metrics.active_streams(), "grace period over; closing remaining connections");
        }
    }
    let h = hub.clone();
    tokio::task::spawn_blocking(move || h.flush())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not flush stats: {e}"))?;
    tracing::info!("stats flushed; bye");
    Ok(())
}

/// Raises the soft open-file limit to the hard one: a common soft default is 1024, below the
/// default `max_connections`, and running out of descriptors fails accepts and database opens
/// alike. Warns when even the hard limit cannot hold `max_connections` plus headroom.
fn raise_open_file_limit(max_connections: usize) {
    #[cfg(target_os = "linux")]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if !got {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim = raised;
            }
        }
        let need = (max_connections as libc::rlim_t).saturating_add(256);
        if lim.rlim_cur < need {
            tracing::warn!(
                open_file_limit = lim.rlim_cur,
                max_connections,
                "the open-file limit is below max_connections plus headroom; accepts will fail before the cap is reached"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = max_connections;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
