//! Temporary build script (lead): emits an empty UI asset table until the UI lands.
fn main() {
    let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let _ = std::fs::write(
        format!("{out}/ui_assets.rs"),
        "pub static UI_ASSETS: &[(&str, &str, &[u8])] = &[];\n",
    );
}
