//! The request explorer on the hub: recorded requests, newest first, filtered and paged, and one
//! request with its attempt log. Blocking calls (they flush the stats writer and read the store).

use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::usage::{RequestPage, RequestQuery, RequestRow};

impl Hub {
    /// One page of recorded requests matching `q`, newest first; pass its `next_cursor` back
    /// for the next page. Requests answered before the call are in it.
    pub fn requests(&self, q: &RequestQuery) -> Result<RequestPage> {
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s >= u {
                return Err(Error::invalid_param(
                    "until",
                    "`until` must be after `since`",
                ));
            }
        }
        self.flush()?;
        let mut page = self.registry().store().list_requests(q)?;
        for r in &mut page.data {
            self.name(r);
        }
        Ok(page)
    }

    /// One recorded request with its attempt-by-attempt log.
    pub fn request(&self, request_id: &str) -> Result<RequestRow> {
        self.flush()?;
        let mut r = self
            .registry()
            .store()
            .get_request(request_id)?
            .ok_or_else(|| Error::not_found(format!("request '{request_id}'")))?;
        self.name(&mut r);
        Ok(r)
    }

    /// Fills the names of the row's key and provider from the registry (while they exist).
    fn name(&self, r: &mut RequestRow) {
        r.key_name = r.key_id.and_then(|k| self.registry().key_name(k));
        r.provider_name = r.provider_id.and_then(|p| self.registry().provider_name(p));
    }
}
