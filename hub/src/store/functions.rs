//! Function records: what the hub must remember about each function across restarts.

use ferry_proto::RECORD_FORMAT_VERSION;
use ferry_proto::internal::v1::FunctionRecord;
use prost::Message;

use super::{Store, StoreError, off_worker};

impl Store {
    pub fn put_function(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        off_worker(|| {
            let name = record.spec.as_ref().map(|spec| spec.name.as_str()).unwrap_or_default();
            self.functions.insert(name, record.encode_to_vec())?;
            Ok(())
        })
    }

    pub fn remove_function(&self, name: &str) -> Result<(), StoreError> {
        off_worker(|| {
            self.functions.remove(name)?;
            Ok(())
        })
    }

    /// Every function record, in name order.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        off_worker(|| {
            self.functions
                .iter()
                .map(|item| {
                    let (key, value) = item?;
                    decode_record(&key, &value)
                })
                .collect()
        })
    }
}

fn decode_record(key: &[u8], value: &[u8]) -> Result<FunctionRecord, StoreError> {
    let name = String::from_utf8_lossy(key);
    let record = FunctionRecord::decode(value).map_err(|error| StoreError::Corrupt {
        what: format!("function record {name:?}"),
        reason: error.to_string(),
    })?;
    if record.format_version != RECORD_FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            what: format!("function record {name:?}"),
            reason: format!(
                "format version {} is not the supported {RECORD_FORMAT_VERSION}",
                record.format_version
            ),
        });
    }
    if record.spec.is_none() {
        return Err(StoreError::Corrupt {
            what: format!("function record {name:?}"),
            reason: "it has no spec".to_owned(),
        });
    }
    Ok(record)
}
