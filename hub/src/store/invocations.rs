//! Asynchronous invocations the HTTP API accepted, by id: what
//! `GET /v1/invocations/{id}` answers after the hub restarted.

use ferry_proto::internal::v1::InvocationRecord;
use prost::Message;

use super::{Store, StoreError, off_worker};

impl Store {
    /// Keeps `record`, replacing the one with its id (durable within the
    /// store's flush interval, or at [`Store::flush_off_runtime`]).
    pub fn put_invocation(&self, record: &InvocationRecord) -> Result<(), StoreError> {
        off_worker(|| {
            let value = record.encode_to_vec();
            self.claim_room(value.len())?;
            self.invocations.insert(record.id.as_bytes(), value)?;
            Ok(())
        })
    }

    pub fn remove_invocation(&self, id: &str) -> Result<(), StoreError> {
        off_worker(|| {
            self.invocations.remove(id.as_bytes())?;
            Ok(())
        })
    }

    /// Every kept invocation. One that does not decode is dropped with a
    /// warning: an id it held answers "no invocation", as one forgotten.
    pub fn invocations(&self) -> Result<Vec<InvocationRecord>, StoreError> {
        off_worker(|| {
            let mut records = Vec::new();
            for item in self.invocations.iter() {
                let (key, value) = item?;
                match InvocationRecord::decode(value.as_ref()) {
                    Ok(record) => records.push(record),
                    Err(error) => {
                        let id = String::from_utf8_lossy(&key).into_owned();
                        tracing::warn!(%id, %error, "stored invocation does not decode; dropped");
                        self.invocations.remove(key)?;
                    }
                }
            }
            Ok(records)
        })
    }
}
