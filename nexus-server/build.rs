//! Embeds the admin UI (`ui/src/**` plus the vendored npm files it loads) into the binary.
//!
//! Writes `$OUT_DIR/ui_assets.rs` with `UI_ASSETS: &[(path, content type, bytes)]`, each entry an
//! `include_bytes!` of an absolute path, so `src/ui.rs` serves them from memory. When
//! `ui/node_modules` is missing (no `npm ci` yet) the build still succeeds: it warns and embeds
//! a page that tells the operator how to install the UI packages.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error>;

/// npm files the UI loads, as `(path inside node_modules, served path under /assets/)`.
/// Keep in step with the `<script>`/`<link>`/`import` lines in `ui/src` and with ui/README.md.
const VENDOR: &[(&str, &str)] = &[
    ("marked/lib/marked.esm.js", "vendor/marked.esm.js"),
    ("dompurify/dist/purify.es.mjs", "vendor/purify.es.mjs"),
    ("chart.js/dist/chart.umd.min.js", "vendor/chart.umd.min.js"),
    (
        "highlight.js/styles/github.min.css",
        "vendor/hljs/github.min.css",
    ),
    (
        "highlight.js/styles/github-dark.min.css",
        "vendor/hljs/github-dark.min.css",
    ),
    (
        "@fortawesome/fontawesome-free/css/fontawesome.min.css",
        "vendor/fontawesome/css/fontawesome.min.css",
    ),
    (
        "@fortawesome/fontawesome-free/css/solid.min.css",
        "vendor/fontawesome/css/solid.min.css",
    ),
    (
        "@fortawesome/fontawesome-free/css/regular.min.css",
        "vendor/fontawesome/css/regular.min.css",
    ),
    (
        "@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2",
        "vendor/fontawesome/webfonts/fa-solid-900.woff2",
    ),
    (
        "@fortawesome/fontawesome-free/webfonts/fa-regular-400.woff2",
        "vendor/fontawesome/webfonts/fa-regular-400.woff2",
    ),
];

/// highlight.js grammars registered by `ui/src/js/markdown.js` (files under `highlight.js/es/languages/`).
const HLJS_LANGUAGES: &[&str] = &[
    "bash",
    "c",
    "cpp",
    "css",
    "diff",
    "go",
    "java",
    "javascript",
    "json",
    "markdown",
    "python",
    "rust",
    "shell",
    "sql",
    "typescript",
    "xml",
    "yaml",
];

/// highlight.js ships its core only as CommonJS (`es/core.js` re-exports `lib/core.js`), which a
/// browser cannot import. It has no `require`s, so a two-line wrapper makes it an ES module.
const HLJS_CORE: &str = "highlight.js/lib/core.js";
const HLJS_CORE_SERVED: &str = "vendor/hljs/core.mjs";

const MISSING_DEPS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>NexusAI Hub: UI packages missing</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2937}
code{background:#f3f4f6;padding:.1rem .35rem;border-radius:4px}</style></head>
<body><h1>The admin UI was built without its packages</h1>
<p>This <code>nexus-server</code> was compiled before the UI's npm packages were installed, so the
admin UI is not embedded. The API works as usual.</p>
<p>Run <code>npm ci --prefix nexus-server/ui</code> (or <code>bash scripts/serve.sh</code>, which does
it) and rebuild the server.</p></body></html>
"#;

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Every file under `dir`, recursively, as `(path relative to dir with '/' separators, absolute path)`.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), BoxError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel_name = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = e.path();
        if e.file_type()?.is_dir() {
            walk(&path, &rel_name, out)?;
        } else {
            out.push((rel_name, path));
        }
    }
    Ok(())
}

fn entry(table: &mut String, served: &str, file: &Path) -> Result<(), BoxError> {
    let abs = file.canonicalize()?;
    let abs = abs
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path: {}", abs.display()))?;
    writeln!(
        table,
        "    ({served:?}, {:?}, include_bytes!({abs:?})),",
        content_type(served)
    )?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let ui = manifest.join("ui");
    let src = ui.join("src");
    let modules = ui.join("node_modules");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        ui.join("package-lock.json").display()
    );
    // npm rewrites this file on every install, so it stands for the whole tree.
    println!(
        "cargo:rerun-if-changed={}",
        modules.join(".package-lock.json").display()
    );

    let mut table = String::from("pub static UI_ASSETS: &[(&str, &str, &[u8])] = &[\n");
    let complete = VENDOR.iter().all(|(from, _)| modules.join(from).is_file())
        && modules.join(HLJS_CORE).is_file()
        && HLJS_LANGUAGES.iter().all(|l| {
            modules
                .join(format!("highlight.js/es/languages/{l}.js"))
                .is_file()
        });

    if !complete || !src.is_dir() {
        println!(
            "cargo:warning=nexus-server/ui/node_modules is missing or incomplete: the admin UI is not embedded. Run `npm ci --prefix nexus-server/ui` (bash scripts/serve.sh does it) and rebuild."
        );
        let page = out_dir.join("ui_missing.html");
        std::fs::write(&page, MISSING_DEPS_PAGE)?;
        entry(&mut table, "index.html", &page)?;
    } else {
        let mut files = Vec::new();
        walk(&src, "", &mut files)?;
        for (rel, path) in &files {
            println!("cargo:rerun-if-changed={}", path.display());
            entry(&mut table, rel, path)?;
        }
        for (from, to) in VENDOR {
            let path = modules.join(from);
            println!("cargo:rerun-if-changed={}", path.display());
            entry(&mut table, to, &path)?;
        }
        let core = modules.join(HLJS_CORE);
        println!("cargo:rerun-if-changed={}", core.display());
        let wrapped = format!(
            "const module = {{ exports: {{}} }};\n{}\nexport default module.exports;\n",
            std::fs::read_to_string(&core)?
        );
        let wrapped_path = out_dir.join("hljs-core.mjs");
        std::fs::write(&wrapped_path, wrapped)?;
        entry(&mut table, HLJS_CORE_SERVED, &wrapped_path)?;
        for lang in HLJS_LANGUAGES {
            let path = modules.join(format!("highlight.js/es/languages/{lang}.js"));
            println!("cargo:rerun-if-changed={}", path.display());
            entry(
                &mut table,
                &format!("vendor/hljs/languages/{lang}.js"),
                &path,
            )?;
        }
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("ui_assets.rs"), table)?;
    Ok(())
}
