//! `include/nexus.h` must be exactly what cbindgen (pinned in Cargo.toml) generates from the
//! crate. Set `NEXUS_BLESS=1` to rewrite it after changing the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed")
        .write(&mut generated);
    let path = crate_dir.join("../include/nexus.h");
    if std::env::var_os("NEXUS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/nexus.h is stale: run `NEXUS_BLESS=1 cargo test -p nexus-ffi --test header` and commit it"
    );
}
