//! The C result codes are the core's: `NexusResult` for every error kind carries the number
//! `ErrorKind::c_code` fixes (and the core's snapshot pins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nexus::ErrorKind;
use nexus_ffi::NexusResult;

#[test]
fn every_kind_has_the_core_c_code() {
    for k in ErrorKind::ALL {
        assert_eq!(NexusResult::from(k) as i32, k.c_code(), "{k}");
    }
}
