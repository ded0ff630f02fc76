//! # nexus-ffi: the C ABI of NexusAI Hub
//!
//! A thin translation layer over the `nexus` core for C and C++ programs. The header
//! `include/nexus.h` is generated from this file by cbindgen (pinned); a test fails when the
//! committed header differs from what this file generates.
//!
//! ## The contract, in short
//!
//! - **Handles.** [`NexusHub`] and [`NexusStream`] are opaque. Every `_open`/`_new` has exactly
//!   one `_free`; `_free(NULL)` does nothing.
//! - **Strings.** Inputs are NUL-terminated UTF-8, borrowed for the duration of the call. Every
//!   `char *` the library returns through an out-parameter is owned by the caller and must be
//!   released with [`nexus_string_free`], never with `free()`.
//! - **Errors.** Every fallible function returns a [`NexusResult`]. Its numeric values are fixed
//!   and never renumbered. On failure, [`nexus_last_error_message`] describes the error on the
//!   calling thread; out-parameters are left NULL/zero.
//! - **Safety.** Every entry point checks its pointers for NULL, validates UTF-8 and JSON, and
//!   catches Rust panics, so bad input yields an error code, never a crash of the host.
//! - **Threads.** A [`NexusHub`] may be shared by any number of threads at once. A
//!   [`NexusStream`] belongs to one thread at a time (it may move between threads).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use nexus::openai::ChatRequest;
use nexus::stats::TimeseriesQuery;
use nexus::tokens::Method;
use nexus::{Caller, ChatStream, ErrorKind, Hub, RequestContext};
use serde::Deserialize;

/// Result codes. The numeric values are part of the ABI and are never renumbered; new codes
/// are only ever added.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexusResult {
    /// Success.
    NexusOk = 0,
    /// A required pointer argument was NULL.
    NexusNullArgument = 1,
    /// A string argument was not valid UTF-8.
    NexusInvalidUtf8 = 2,
    /// A JSON argument did not parse or had the wrong shape.
    NexusInvalidJson = 3,
    /// A bug in the library: a Rust panic was caught at the boundary.
    NexusPanic = 4,
    /// The request is invalid (OpenAI `invalid_request_error`).
    NexusInvalidRequest = 100,
    /// The request body is larger than allowed.
    NexusPayloadTooLarge = 101,
    /// Bad, expired or disabled client key.
    NexusAuthentication = 102,
    /// The key may not use that model or provider.
    NexusPermissionDenied = 103,
    /// No such model, provider, key or session.
    NexusNotFound = 104,
    /// A unique name is already taken.
    NexusConflict = 105,
    /// A rate limit was hit.
    NexusRateLimited = 106,
    /// The upstream did not answer in time.
    NexusTimeout = 107,
    /// The upstream answered with an error or a malformed response.
    NexusUpstream = 108,
    /// The upstream could not be reached or the connection broke.
    NexusTransport = 109,
    /// Every provider for the model is cooling down.
    NexusUnavailable = 110,
    /// The database failed.
    NexusStorage = 111,
    /// Configuration error (for example a wrong master key).
    NexusConfig = 112,
    /// An internal error.
    NexusInternal = 113,
    /// The client key's spending budget for its period is used up.
    NexusQuotaExceeded = 114,
}

impl From<ErrorKind> for NexusResult {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::InvalidRequest => NexusResult::NexusInvalidRequest,
            ErrorKind::PayloadTooLarge => NexusResult::NexusPayloadTooLarge,
            ErrorKind::Authentication => NexusResult::NexusAuthentication,
            ErrorKind::PermissionDenied => NexusResult::NexusPermissionDenied,
            ErrorKind::NotFound => NexusResult::NexusNotFound,
            ErrorKind::Conflict => NexusResult::NexusConflict,
            ErrorKind::RateLimited => NexusResult::NexusRateLimited,
            ErrorKind::Timeout => NexusResult::NexusTimeout,
            ErrorKind::Upstream => NexusResult::NexusUpstream,
            ErrorKind::Transport => NexusResult::NexusTransport,
            ErrorKind::Unavailable => NexusResult::NexusUnavailable,
            ErrorKind::Storage => NexusResult::NexusStorage,
            ErrorKind::Config => NexusResult::NexusConfig,
            ErrorKind::Internal => NexusResult::NexusInternal,
            ErrorKind::QuotaExceeded => NexusResult::NexusQuotaExceeded,
        }
    }
}

/// How a token count was made.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexusTokenMethod {
    /// An exact BPE count (the encoding is named).
    NexusTokensExact = 0,
    /// A fast estimate, for models whose tokenizer is not known.
    NexusTokensEstimate = 1,
}

/// A token count.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NexusTokenCount {
    /// Number of tokens.
    pub tokens: u64,
    /// Exact or estimate.
    pub method: NexusTokenMethod,
    /// The encoding name (`"cl100k_base"`, `"o200k_base"`) for exact counts, NULL for estimates.
    /// A static string: never free it.
    pub encoding: *const c_char,
}

/// An open hub: the registry, the upstream client, the token counter and the stats writer.
/// Opaque. Create with [`nexus_hub_open`], release with [`nexus_hub_free`]. Thread-safe.
pub struct NexusHub {
    rt: Arc<tokio::runtime::Runtime>,
    hub: Hub,
}

/// A streaming chat in progress. Opaque. Create with [`nexus_chat_stream_open`], read with
/// [`nexus_chat_stream_next`], release with [`nexus_chat_stream_free`] (which cancels the
/// upstream request if the stream has not ended).
pub struct NexusStream {
    rt: Arc<tokio::runtime::Runtime>,
    stream: Option<ChatStream>,
    ended: bool,
}

/// Called by [`nexus_chat_stream_each`] for every chunk: the chunk's JSON (NUL-terminated, valid
/// only during the call), its length, and the caller's `user_data`. Return 0 to go on, anything
/// else to stop (which cancels the upstream request).
///
/// The callback must return normally: it must not unwind into the library (no C++ exception may
/// escape it, no `longjmp` out of it). Unwinding through Rust frames is undefined behaviour;
/// catch exceptions inside the callback and return non-zero to stop instead.
pub type NexusChunkCallback = Option<
    unsafe extern "C" fn(chunk_json: *const c_char, len: usize, user_data: *mut c_void) -> c_int,
>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

struct Fail(NexusResult, String);

impl From<nexus::Error> for Fail {
    fn from(e: nexus::Error) -> Self {
        Fail(e.kind().into(), e.to_string())
    }
}

fn fail(code: NexusResult, msg: impl Into<String>) -> Fail {
    Fail(code, msg.into())
}

/// Runs `f`, catching panics, recording the error message and returning the code.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> NexusResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => NexusResult::NexusOk,
        Ok(Err(Fail(code, msg))) => {
            set_last_error(&msg);
            code
        }
        Err(_) => {
            set_last_error("internal error: a panic was caught at the C boundary");
            NexusResult::NexusPanic
        }
    }
}

/// Borrows a required C string as UTF-8.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives the returned borrow.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(fail(
            NexusResult::NexusNullArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        fail(
            NexusResult::NexusInvalidUtf8,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// Like [`text`], but NULL means "absent".
///
/// # Safety
/// As for [`text`].
unsafe fn opt_text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Fail> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { text(p, what) }.map(Some)
    }
}

fn json<T: for<'de> Deserialize<'de>>(s: &str, what: &str) -> Result<T, Fail> {
    serde_json::from_str(s).map_err(|e| fail(NexusResult::NexusInvalidJson, format!("{what}: {e}")))
}

fn to_json(v: &impl serde::Serialize) -> Result<String, Fail> {
    serde_json::to_string(v).map_err(|e| fail(NexusResult::NexusInternal, e.to_string()))
}

/// Stores a Rust string into a caller-owned `char *` out-parameter.
///
/// # Safety
/// `out` must be valid for a write (checked for NULL by the caller of this helper).
unsafe fn put_string(out: *mut *mut c_char, s: String) -> Result<(), Fail> {
    let c = CString::new(s)
        .map_err(|_| fail(NexusResult::NexusInternal, "result contains a NUL byte"))?;
    // SAFETY: `out` is non-NULL and writable by contract.
    unsafe { *out = c.into_raw() };
    Ok(())
}

fn need<T>(p: *const T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        Err(fail(
            NexusResult::NexusNullArgument,
            format!("{what} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// Clears an out-parameter first so that it is NULL on every failure path.
///
/// # Safety
/// `out` must be NULL or valid for a write.
unsafe fn clear<T>(out: *mut *mut T) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable by contract.
        unsafe { *out = ptr::null_mut() };
    }
}

/// # Safety
/// `hub` must be NULL or a live handle from [`nexus_hub_open`].
unsafe fn hub_ref<'a>(hub: *const NexusHub) -> Result<&'a NexusHub, Fail> {
    need(hub, "hub")?;
    // SAFETY: non-NULL live handle by contract.
    Ok(unsafe { &*hub })
}

fn caller(api_key: Option<&str>) -> Caller {
    match api_key {
        Some(k) => Caller::Key(k.to_owned()),
        None => Caller::Admin { provider_id: None },
    }
}

/// Options accepted by [`nexus_hub_open`] as JSON: `worker_threads` (the hub's runtime, default
/// 2) plus the core's one settings schema (`nexus::HubSettings`), which refuses unknown keys.
#[derive(Default)]
struct OpenOptions {
    worker_threads: Option<usize>,
    settings: nexus::HubSettings,
}

impl OpenOptions {
    fn parse(s: &str) -> Result<Self, Fail> {
        let mut map: serde_json::Map<String, serde_json::Value> = json(s, "options_json")?;
        let worker_threads = match map.remove("worker_threads") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(serde_json::from_value::<usize>(v).map_err(|e| {
                fail(
                    NexusResult::NexusInvalidJson,
                    format!("worker_threads: {e}"),
                )
            })?),
        };
        let settings = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| fail(NexusResult::NexusInvalidJson, format!("options_json: {e}")))?;
        Ok(OpenOptions {
            worker_threads,
            settings,
        })
    }
}

/// The library version, e.g. `"0.1.0"`. A static string: never free it.
#[no_mangle]
pub extern "C" fn nexus_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last error on the calling thread (empty if none). The pointer stays valid
/// until the next failing call on the same thread; do not free it.
#[no_mangle]
pub extern "C" fn nexus_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A short constant name for a result code, e.g. `"NEXUS_NOT_FOUND"`; `"NEXUS_UNKNOWN"` for a
/// value this library does not define (say, a code from a newer header). It takes an `int`, not
/// a `NexusResult`, because an out-of-range enum value would be undefined behaviour in Rust. A
/// static string: never free it.
#[no_mangle]
pub extern "C" fn nexus_result_name(code: c_int) -> *const c_char {
    use NexusResult as R;
    const NAMES: &[(NexusResult, &str)] = &[
        (R::NexusOk, "NEXUS_OK\0"),
        (R::NexusNullArgument, "NEXUS_NULL_ARGUMENT\0"),
        (R::NexusInvalidUtf8, "NEXUS_INVALID_UTF8\0"),
        (R::NexusInvalidJson, "NEXUS_INVALID_JSON\0"),
        (R::NexusPanic, "NEXUS_PANIC\0"),
        (R::NexusInvalidRequest, "NEXUS_INVALID_REQUEST\0"),
        (R::NexusPayloadTooLarge, "NEXUS_PAYLOAD_TOO_LARGE\0"),
        (R::NexusAuthentication, "NEXUS_AUTHENTICATION\0"),
        (R::NexusPermissionDenied, "NEXUS_PERMISSION_DENIED\0"),
        (R::NexusNotFound, "NEXUS_NOT_FOUND\0"),
        (R::NexusConflict, "NEXUS_CONFLICT\0"),
        (R::NexusRateLimited, "NEXUS_RATE_LIMITED\0"),
        (R::NexusTimeout, "NEXUS_TIMEOUT\0"),
        (R::NexusUpstream, "NEXUS_UPSTREAM\0"),
        (R::NexusTransport, "NEXUS_TRANSPORT\0"),
        (R::NexusUnavailable, "NEXUS_UNAVAILABLE\0"),
        (R::NexusStorage, "NEXUS_STORAGE\0"),
        (R::NexusConfig, "NEXUS_CONFIG\0"),
        (R::NexusInternal, "NEXUS_INTERNAL\0"),
    ];
    let s: &'static str = NAMES
        .iter()
        .find(|(r, _)| *r as c_int == code)
        .map_or("NEXUS_UNKNOWN\0", |(_, n)| n);
    s.as_ptr().cast()
}

/// Releases a string returned by this library. `NULL` is a no-op. Never pass a string that did
/// not come from this library.
///
/// # Safety
/// `s` must be NULL or a string returned through an out-parameter of this library, not yet
/// freed.
#[no_mangle]
pub unsafe extern "C" fn nexus_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: it came from `CString::into_raw` in `put_string`, by contract.
        let _ = catch_unwind(|| drop(unsafe { CString::from_raw(s) }));
    }
}

/// Opens (creating if needed) the hub database at `db_path`; `":memory:"` opens a private
/// in-memory hub. `options_json` may be NULL or a JSON object with `master_key` (base64 of 32
/// bytes; default: `NEXUS_MASTER_KEY`, else the key file `<db>.key`, created mode 0600),
/// `record_messages` (bool), `message_retention_days` (default 30; 0 keeps messages forever),
/// `request_retention_days` (90), `rollup_retention_days` (730), `max_db_mb`, the other keys of
/// `nexus::HubSettings`, and `worker_threads` (default 2).
///
/// On success `*out_hub` owns a new hub: release it with [`nexus_hub_free`]. On failure
/// `*out_hub` is NULL.
///
/// # Safety
/// `db_path` and `options_json` must be NULL or NUL-terminated strings; `out_hub` must be NULL
/// or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nexus_hub_open(
    db_path: *const c_char,
    options_json: *const c_char,
    out_hub: *mut *mut NexusHub,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_hub) };
    guard(|| {
        need(out_hub, "out_hub")?;
        // SAFETY: the caller's contract.
        let path = unsafe { text(db_path, "db_path") }?;
        // SAFETY: the caller's contract.
        let opts = match unsafe { opt_text(options_json, "options_json") }? {
            Some(s) => OpenOptions::parse(s)?,
            None => OpenOptions::default(),
        };
        let hub_opts = opts.settings.to_options()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.unwrap_or(2).clamp(1, 64))
            .thread_name("nexus-ffi")
            .enable_all()
            .build()
            .map_err(|e| {
                fail(
                    NexusResult::NexusInternal,
                    format!("cannot start runtime: {e}"),
                )
            })?;
        let hub = if path == ":memory:" {
            Hub::open_in_memory(hub_opts)?
        } else {
            Hub::open(path, hub_opts)?
        };
        let boxed = Box::new(NexusHub {
            rt: Arc::new(rt),
            hub,
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out_hub = Box::into_raw(boxed) };
        Ok(())
    })
}

/// Closes a hub: pending usage records are written first. `NULL` is a no-op. Streams opened from
/// it stay usable until freed.
///
/// # Safety
/// `hub` must be NULL or a handle from [`nexus_hub_open`] not yet freed, and no other thread may
/// be using it.
#[no_mangle]
pub unsafe extern "C" fn nexus_hub_free(hub: *mut NexusHub) {
    if hub.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: from `Box::into_raw` in `nexus_hub_open`, by contract.
        let h = unsafe { Box::from_raw(hub) };
        let _ = h.hub.flush();
        let rt = h.rt.clone();
        let _enter = rt.enter();
        drop(h);
    }));
}

/// Runs `f` with the hub and an out-string, the shape of every JSON-returning call.
///
/// # Safety
/// `hub` and `out_json` as documented on the public functions.
unsafe fn json_call(
    hub: *const NexusHub,
    out_json: *mut *mut c_char,
    f: impl FnOnce(&NexusHub) -> Result<String, Fail>,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_json) };
    guard(|| {
        need(out_json, "out_json")?;
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        let s = f(h)?;
        // SAFETY: checked non-NULL above.
        unsafe { put_string(out_json, s) }
    })
}

/// Creates a provider from JSON (`name`, `base_url`, `api_key`, optional `description`,
/// `enabled`, `personalized_key`, `options`). `*out_json` receives the stored provider (the
/// upstream key only as a hint); free it with [`nexus_string_free`].
///
/// # Safety
/// `hub` must be a live hub; `provider_json` a NUL-terminated string; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_provider_create(
    hub: *const NexusHub,
    provider_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let p = json(text(provider_json, "provider_json")?, "provider_json")?;
            to_json(&h.hub.registry().create_provider(p)?)
        })
    }
}

/// Updates a provider with a partial JSON object (absent fields are kept; an empty `api_key`
/// keeps the current key). `*out_json` receives the updated provider.
///
/// # Safety
/// As for [`nexus_provider_create`].
#[no_mangle]
pub unsafe extern "C" fn nexus_provider_update(
    hub: *const NexusHub,
    provider_id: i64,
    patch_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let p = json(text(patch_json, "patch_json")?, "patch_json")?;
            to_json(&h.hub.registry().update_provider(provider_id, p)?)
        })
    }
}

/// Lists the providers as a JSON array into `*out_json`.
///
/// # Safety
/// `hub` must be a live hub; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_provider_list(
    hub: *const NexusHub,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe { json_call(hub, out_json, |h| to_json(&h.hub.registry().providers()?)) }
}

/// Deletes a provider and its models. `NEXUS_NOT_FOUND` if there is none.
///
/// # Safety
/// `hub` must be a live hub.
#[no_mangle]
pub unsafe extern "C" fn nexus_provider_delete(
    hub: *const NexusHub,
    provider_id: i64,
) -> NexusResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        Ok(h.hub.registry().delete_provider(provider_id)?)
    })
}

/// Adds a model to a provider from JSON (`name`, optional `upstream_name`, `description`,
/// `input_price`, `output_price`). `*out_json` receives the stored model.
///
/// # Safety
/// As for [`nexus_provider_create`].
#[no_mangle]
pub unsafe extern "C" fn nexus_model_create(
    hub: *const NexusHub,
    provider_id: i64,
    model_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let m = json(text(model_json, "model_json")?, "model_json")?;
            to_json(&h.hub.registry().create_model(provider_id, m)?)
        })
    }
}

/// Lists models as a JSON array into `*out_json`: of one provider, or of all when
/// `provider_id <= 0`.
///
/// # Safety
/// `hub` must be a live hub; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_model_list(
    hub: *const NexusHub,
    provider_id: i64,
    out_json: *mut *mut c_char,
) -> NexusResult {
    let filter = (provider_id > 0).then_some(provider_id);
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            to_json(&h.hub.registry().models(filter)?)
        })
    }
}

/// Deletes a model.
///
/// # Safety
/// `hub` must be a live hub.
#[no_mangle]
pub unsafe extern "C" fn nexus_model_delete(hub: *const NexusHub, model_id: i64) -> NexusResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        Ok(h.hub.registry().delete_model(model_id)?)
    })
}

/// Creates a client key from JSON (`name`, optional `provider_ids`, `models`, `expires_at`,
/// `rpm`, `tpm`, `enabled`). `*out_json` receives the record with the plaintext `key`: the only
/// time it exists outside the caller, since only its hash is stored.
///
/// # Safety
/// As for [`nexus_provider_create`].
#[no_mangle]
pub unsafe extern "C" fn nexus_key_create(
    hub: *const NexusHub,
    key_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let k = json(text(key_json, "key_json")?, "key_json")?;
            to_json(&h.hub.registry().create_key(k)?)
        })
    }
}

/// Lists client keys (prefixes only, never the secrets) as a JSON array into `*out_json`.
///
/// # Safety
/// `hub` must be a live hub; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_key_list(
    hub: *const NexusHub,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe { json_call(hub, out_json, |h| to_json(&h.hub.registry().keys()?)) }
}

/// Revokes (deletes) a client key.
///
/// # Safety
/// `hub` must be a live hub.
#[no_mangle]
pub unsafe extern "C" fn nexus_key_delete(hub: *const NexusHub, key_id: i64) -> NexusResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        Ok(h.hub.registry().delete_key(key_id)?)
    })
}

/// A blocking chat completion. `api_key` is a client key, or NULL to call as the hub's owner
/// (no key checks). `request_json` is an OpenAI chat completion request; fields the hub does not
/// model pass through. `*out_json` receives the upstream's JSON answer. Usage is recorded once.
///
/// # Safety
/// `hub` must be a live hub; `api_key` NULL or a NUL-terminated string; `request_json` a
/// NUL-terminated string; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat(
    hub: *const NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let resp = blocking_chat(h, api_key, request_json)?;
            body_text(&resp)
        })
    }
}

/// The blocking chat behind [`nexus_chat`] and [`nexus_chat_ex`].
///
/// # Safety
/// `api_key` NULL or a NUL-terminated string; `request_json` a NUL-terminated string.
unsafe fn blocking_chat(
    h: &NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
) -> Result<nexus::ChatResponse, Fail> {
    // SAFETY: forwarded contract.
    let key = unsafe { opt_text(api_key, "api_key") }?;
    // SAFETY: forwarded contract.
    let req = ChatRequest::from_slice(unsafe { text(request_json, "request_json") }?.as_bytes())?;
    Ok(h.rt.block_on(h.hub.chat(caller(key), req, RequestContext::default()))?)
}

fn body_text(resp: &nexus::ChatResponse) -> Result<String, Fail> {
    String::from_utf8(resp.body.to_vec())
        .map_err(|_| fail(NexusResult::NexusUpstream, "upstream answer is not UTF-8"))
}

/// [`nexus_chat`], also handing out what the hub knows about the answer: `*out_meta_json`
/// (when `out_meta_json` is not NULL) receives `{"request_id", "conversation_id",
/// "provider_id", "provider_name", "usage_source", "cost_usd", "cached", "upstream_ms"}`, where
/// `cost_usd` is null for an unpriced model. Free both strings with [`nexus_string_free`].
///
/// # Safety
/// As for [`nexus_chat`]; `out_meta_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_ex(
    hub: *const NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
    out_meta_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_meta_json) };
    let mut meta: Option<String> = None;
    // SAFETY: forwarded contract.
    let r = unsafe {
        json_call(hub, out_json, |h| {
            let resp = blocking_chat(h, api_key, request_json)?;
            meta = Some(to_json(&resp.meta())?);
            body_text(&resp)
        })
    };
    if r == NexusResult::NexusOk && !out_meta_json.is_null() {
        if let Some(m) = meta {
            // SAFETY: checked non-NULL; writable by contract.
            if let Err(Fail(code, msg)) = unsafe { put_string(out_meta_json, m) } {
                set_last_error(&msg);
                return code;
            }
        }
    }
    r
}

/// A client key's spend in its current budget period, as JSON into `*out_json`:
/// `{"key_id", "period", "period_start", "period_end", "spent_usd", "reserved_usd",
/// "budget_usd", "budget_left_usd", "soft_budget_usd", "soft_budget_reached",
/// "budget_reached"}`.
///
/// # Safety
/// `hub` must be a live hub; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_key_spend(
    hub: *const NexusHub,
    key_id: i64,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe { json_call(hub, out_json, |h| to_json(&h.hub.key_spend(key_id)?)) }
}

/// Recomputes recorded costs at the models' current prices. `query_json` selects the rows
/// (`{"since", "until", "model", "provider_id", "dry_run"}`, every field optional; `"{}"` is
/// everything); `*out_json` receives `{"rows_examined", "rows_changed", "cost_before_usd",
/// "cost_after_usd", "unpriced_rows", "dry_run"}`.
///
/// # Safety
/// `hub` must be a live hub; `query_json` a NUL-terminated string; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_reprice(
    hub: *const NexusHub,
    query_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let q: nexus::usage::RepriceQuery =
                serde_json::from_str(text(query_json, "query_json")?).map_err(|e| {
                    fail(NexusResult::NexusInvalidRequest, format!("query_json: {e}"))
                })?;
            to_json(&h.hub.reprice(&q)?)
        })
    }
}

/// Blocking embeddings. `api_key` is a client key, or NULL to call as the hub's owner.
/// `request_json` is an OpenAI embeddings request (`model`, `input` as a string, strings, token
/// ids or token-id arrays, optional `dimensions`, `encoding_format` `float` or `base64`, `user`);
/// the model must be an `embedding` model. `*out_json` receives OpenAI's embedding list
/// (`{"object":"list","data":[...],"model","usage"}`). Usage is recorded once.
///
/// # Safety
/// As for [`nexus_chat`].
#[no_mangle]
pub unsafe extern "C" fn nexus_embeddings(
    hub: *const NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let key = opt_text(api_key, "api_key")?;
            let req = nexus::EmbeddingsRequest::from_slice(
                text(request_json, "request_json")?.as_bytes(),
            )?;
            let resp = h.rt.block_on(h.hub.embeddings(
                caller(key),
                req,
                RequestContext::default(),
            ))?;
            String::from_utf8(resp.body.to_vec())
                .map_err(|_| fail(NexusResult::NexusUpstream, "upstream answer is not UTF-8"))
        })
    }
}

/// Starts a streaming chat (the request's `stream` is forced on). Retries and failover happen
/// before this returns. On success `*out_stream` owns a new stream: read it with
/// [`nexus_chat_stream_next`] and release it with [`nexus_chat_stream_free`].
///
/// # Safety
/// As for [`nexus_chat`]; `out_stream` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_stream_open(
    hub: *const NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
    out_stream: *mut *mut NexusStream,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_stream) };
    guard(|| {
        need(out_stream, "out_stream")?;
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        // SAFETY: the caller's contract.
        let key = unsafe { opt_text(api_key, "api_key") }?;
        // SAFETY: the caller's contract.
        let body = unsafe { text(request_json, "request_json") }?;
        let mut req = ChatRequest::from_slice(body.as_bytes())?;
        req.stream = Some(true);
        let stream = h.rt.block_on(h.hub.chat_stream(
            caller(key),
            req,
            RequestContext::default(),
        ))?;
        let boxed = Box::new(NexusStream {
            rt: h.rt.clone(),
            stream: Some(stream),
            ended: false,
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out_stream = Box::into_raw(boxed) };
        Ok(())
    })
}

/// Waits for the next chunk. On `NEXUS_OK`, `*out_chunk` is either a chunk's JSON
/// (free it with [`nexus_string_free`]) or NULL at the end of the stream. A failure mid-stream
/// returns its code once; after the end or an error, further calls return OK with NULL.
///
/// # Safety
/// `stream` must be a live stream not used by another thread at the same time; `out_chunk`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_stream_next(
    stream: *mut NexusStream,
    out_chunk: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_chunk) };
    guard(|| {
        need(out_chunk, "out_chunk")?;
        need(stream, "stream")?;
        // SAFETY: non-NULL live stream, used by one thread at a time, by contract.
        let s = unsafe { &mut *stream };
        if s.ended {
            return Ok(());
        }
        let Some(inner) = s.stream.as_mut() else {
            return Ok(());
        };
        match s.rt.block_on(inner.next()) {
            Some(Ok(chunk)) => {
                // SAFETY: checked non-NULL above.
                unsafe { put_string(out_chunk, chunk.json().to_owned()) }
            }
            Some(Err(e)) => {
                s.ended = true;
                Err(e.into())
            }
            None => {
                s.ended = true;
                Ok(())
            }
        }
    })
}

/// How the stream ended, as JSON (`usage`, `usage_source`, `cost_usd`, `finish_reason`,
/// `latency_ms`, `ttft_ms`, `error_kind`), into `*out_json`; `NEXUS_NOT_FOUND` before the end.
///
/// # Safety
/// `stream` must be a live stream; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_stream_summary(
    stream: *const NexusStream,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: the caller's contract.
    unsafe { clear(out_json) };
    guard(|| {
        need(out_json, "out_json")?;
        need(stream, "stream")?;
        // SAFETY: non-NULL live stream by contract.
        let s = unsafe { &*stream };
        let summary = s
            .stream
            .as_ref()
            .and_then(ChatStream::summary)
            .ok_or_else(|| fail(NexusResult::NexusNotFound, "the stream has not ended yet"))?;
        // SAFETY: checked non-NULL above.
        unsafe { put_string(out_json, to_json(&summary)?) }
    })
}

/// Releases a stream. If it has not ended, the upstream request is cancelled and what was
/// produced so far is recorded. `NULL` is a no-op.
///
/// # Safety
/// `stream` must be NULL or a stream from [`nexus_chat_stream_open`] not yet freed.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_stream_free(stream: *mut NexusStream) {
    if stream.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: from `Box::into_raw` in `nexus_chat_stream_open`, by contract.
        let s = unsafe { Box::from_raw(stream) };
        let rt = s.rt.clone();
        // Dropping the upstream response belongs inside the runtime that owns its connection.
        let _enter = rt.enter();
        drop(s);
    }));
}

/// Convenience over the pull API: streams a chat and calls `callback` on the calling thread for
/// every chunk, until the end, an error, or a non-zero return from the callback (which cancels
/// the upstream request and returns OK).
///
/// # Safety
/// As for [`nexus_chat`]; `callback` must be a valid function that never unwinds (no C++
/// exception escapes it, no `longjmp` out of it; see [`NexusChunkCallback`]); `user_data` is
/// passed through.
#[no_mangle]
pub unsafe extern "C" fn nexus_chat_stream_each(
    hub: *const NexusHub,
    api_key: *const c_char,
    request_json: *const c_char,
    callback: NexusChunkCallback,
    user_data: *mut c_void,
) -> NexusResult {
    let Some(cb) = callback else {
        set_last_error("callback is NULL");
        return NexusResult::NexusNullArgument;
    };
    let mut stream: *mut NexusStream = ptr::null_mut();
    // SAFETY: forwarded contract; `stream` is a valid out-parameter.
    let rc = unsafe { nexus_chat_stream_open(hub, api_key, request_json, &mut stream) };
    if rc != NexusResult::NexusOk {
        return rc;
    }
    let mut result = NexusResult::NexusOk;
    loop {
        let mut chunk: *mut c_char = ptr::null_mut();
        // SAFETY: `stream` is live; `chunk` is a valid out-parameter.
        let rc = unsafe { nexus_chat_stream_next(stream, &mut chunk) };
        if rc != NexusResult::NexusOk {
            result = rc;
            break;
        }
        if chunk.is_null() {
            break;
        }
        // SAFETY: `chunk` is a NUL-terminated string we own.
        let len = unsafe { CStr::from_ptr(chunk) }.to_bytes().len();
        // SAFETY: the caller vouches for the callback.
        let stop = unsafe { cb(chunk, len, user_data) } != 0;
        // SAFETY: `chunk` came from this library.
        unsafe { nexus_string_free(chunk) };
        if stop {
            break;
        }
    }
    // SAFETY: `stream` is live and freed once.
    unsafe { nexus_chat_stream_free(stream) };
    result
}

fn token_count(c: nexus::tokens::TokenCount) -> NexusTokenCount {
    NexusTokenCount {
        tokens: c.tokens,
        method: match c.method {
            Method::Exact => NexusTokenMethod::NexusTokensExact,
            Method::Estimate => NexusTokenMethod::NexusTokensEstimate,
        },
        encoding: match c.encoding {
            Some(nexus::tokens::Encoding::Cl100kBase) => c"cl100k_base".as_ptr(),
            Some(nexus::tokens::Encoding::O200kBase) => c"o200k_base".as_ptr(),
            None => ptr::null(),
        },
    }
}

/// Counts the tokens of `text` as `model` would: exact where the model's encoding is known
/// (cl100k/o200k families, or a configured mapping), else an estimate.
///
/// # Safety
/// `hub` must be a live hub; `model` and `text` NUL-terminated strings; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_count_text(
    hub: *const NexusHub,
    model: *const c_char,
    text_in: *const c_char,
    out: *mut NexusTokenCount,
) -> NexusResult {
    guard(|| {
        need(out, "out")?;
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        // SAFETY: the caller's contract.
        let (m, t) = unsafe { (text(model, "model")?, text(text_in, "text")?) };
        // SAFETY: checked non-NULL above.
        unsafe { *out = token_count(h.hub.count_text(m, t)) };
        Ok(())
    })
}

/// Counts the prompt tokens of chat `messages_json` (a JSON array of messages) with OpenAI's
/// per-message overhead.
///
/// # Safety
/// As for [`nexus_count_text`].
#[no_mangle]
pub unsafe extern "C" fn nexus_count_messages(
    hub: *const NexusHub,
    model: *const c_char,
    messages_json: *const c_char,
    out: *mut NexusTokenCount,
) -> NexusResult {
    guard(|| {
        need(out, "out")?;
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        // SAFETY: the caller's contract.
        let m = unsafe { text(model, "model") }?;
        // SAFETY: the caller's contract.
        let msgs: Vec<serde_json::Value> = json(
            unsafe { text(messages_json, "messages_json") }?,
            "messages_json",
        )?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = token_count(h.hub.count_messages(m, &msgs)) };
        Ok(())
    })
}

/// Usage totals as JSON into `*out_json` (including the original system's `/stats/total` keys:
/// `total_conversations`, `total_rounds`, `prompt_tokens`, `completion_tokens`, `total_tokens`).
/// Records still queued are written first.
///
/// # Safety
/// `hub` must be a live hub; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_stats_summary(
    hub: *const NexusHub,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            h.hub.flush()?;
            to_json(&h.hub.summary()?)
        })
    }
}

/// A usage time series as JSON into `*out_json`. `query_json`:
/// `{"bucket":"hour"|"day","group_by":null|"model"|"provider"|"key"|"endpoint","since":<unix seconds>}`.
///
/// # Safety
/// `hub` must be a live hub; `query_json` NUL-terminated; `out_json` writable.
#[no_mangle]
pub unsafe extern "C" fn nexus_stats_timeseries(
    hub: *const NexusHub,
    query_json: *const c_char,
    out_json: *mut *mut c_char,
) -> NexusResult {
    // SAFETY: forwarded contract.
    unsafe {
        json_call(hub, out_json, |h| {
            let q: TimeseriesQuery = json(text(query_json, "query_json")?, "query_json")?;
            h.hub.flush()?;
            to_json(&h.hub.timeseries(&q)?)
        })
    }
}

/// Blocks until every usage record queued so far is in the database.
///
/// # Safety
/// `hub` must be a live hub.
#[no_mangle]
pub unsafe extern "C" fn nexus_stats_flush(hub: *const NexusHub) -> NexusResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { hub_ref(hub) }?;
        Ok(h.hub.flush()?)
    })
}
