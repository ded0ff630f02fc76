//! Database maintenance on the hub: the storage view (sizes, row counts, retention settings, the
//! last pass) and a retention pass on demand. Blocking calls.

use crate::error::Result;
use crate::hub::Hub;
use crate::retention::{PruneReport, StorageReport};

impl Hub {
    /// The database's size and contents, the retention settings and the last retention pass.
    pub fn storage(&self) -> Result<StorageReport> {
        // Like every stats read, it includes the rows still queued.
        self.flush()?;
        let stats = self.registry().store().storage()?;
        let path = self.db_path();
        // The write-ahead log is part of what the file system holds.
        let file_bytes = path.map(|p| {
            let wal = {
                let mut s = p.as_os_str().to_owned();
                s.push("-wal");
                std::path::PathBuf::from(s)
            };
            [p.to_path_buf(), wal]
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum()
        });
        Ok(StorageReport {
            path: path.map(|p| p.display().to_string()),
            file_bytes,
            stats,
            retention: self.0.retention.config(),
            last_prune: self.0.retention.last(),
        })
    }

    /// Runs a retention pass now (after one under way, if any) and reports what it deleted.
    /// Requests keep flowing meanwhile: each batch holds the database's writer only briefly.
    pub fn prune_now(&self) -> Result<PruneReport> {
        // Rows still queued are part of what the pass looks at.
        self.flush()?;
        self.0.retention.run()
    }
}
