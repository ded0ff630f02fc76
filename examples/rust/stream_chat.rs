//! Open a Hub on a temporary database, add a provider, stream a chat.
//!
//! Run with `cargo run -p nexus-examples --example stream_chat [BASE_URL MODEL]`.
//! Without arguments it starts the bundled mock upstream on 127.0.0.1, so it runs offline.
//! With a real upstream, set `UPSTREAM_API_KEY`.

use std::io::Write;

use nexus::openai::ChatRequest;
use nexus::records::{NewModel, NewProvider};
use nexus::{Caller, Hub, HubOptions, RequestContext};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Keep the mock alive for the whole run when we use it.
    let mut _mock = None;
    let (base_url, model) = match args.as_slice() {
        [url, model, ..] => (url.clone(), model.clone()),
        _ => {
            let m = nexus::testing::MockUpstream::start().await?;
            let url = m.base_url();
            _mock = Some(m);
            (url, "gpt-4o-mini".to_owned())
        }
    };
    let dir = tempfile::tempdir()?;
    let hub = Hub::open(dir.path().join("nexus.db"), HubOptions::default())?;
    let provider = hub.registry().create_provider(NewProvider {
        name: "upstream".into(),
        base_url,
        api_key: std::env::var("UPSTREAM_API_KEY").unwrap_or_else(|_| "sk-example".into()),
        ..Default::default()
    })?;
    hub.registry().create_model(
        provider.id,
        NewModel {
            name: model.clone(),
            ..Default::default()
        },
    )?;

    let mut req = ChatRequest::user(&model, "Streaming from NexusAI Hub works fine");
    req.stream = Some(true);
    let mut stream = hub
        .chat_stream(
            Caller::Admin { provider_id: None },
            req,
            RequestContext::default(),
        )
        .await?;
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        write!(out, "{}", chunk?.delta().unwrap_or(""))?;
        out.flush()?;
    }
    writeln!(out)?;
    if let Some(s) = stream.summary() {
        writeln!(
            out,
            "usage: {} prompt + {} completion tokens ({:?}), {:.1} ms",
            s.usage.prompt_tokens, s.usage.completion_tokens, s.usage_source, s.latency_ms
        )?;
    }
    hub.flush()?;
    let summary = hub.summary()?;
    writeln!(
        out,
        "stats: {} requests, {} tokens",
        summary.requests, summary.total_tokens
    )?;
    Ok(())
}
