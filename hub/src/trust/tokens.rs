//! Join tokens: what a new hub presents to be given a hub certificate.
//!
//! A token is `ferry-join.<ca>.<id>.<secret>`: `<ca>` is the BLAKE3
//! fingerprint of the cluster CA's certificate (the joiner checks the
//! server's chain against it before it sends anything), `<id>` names the
//! token (`ferry cluster token rm ID`), and `<secret>` proves the joiner was
//! given it. The hub keeps only the secret's hash, the expiry and the uses
//! left, in `tls/join-tokens.json` (mode 0600).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TrustError;
use super::credential::{read_json_or_default, write_private};

const PREFIX: &str = "ferry-join";

/// The fingerprint of a CA certificate (DER), as tokens carry it.
pub fn ca_fingerprint(ca_der: &[u8]) -> String {
    blake3::hash(ca_der).to_hex().to_string()
}

/// A token taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl std::str::FromStr for ParsedToken {
    type Err = String;

    fn from_str(text: &str) -> Result<ParsedToken, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [prefix, fingerprint, id, secret] = parts[..] else {
            return Err(format!(
                "not a join token: it has {} parts, not 4 ({PREFIX}.<ca>.<id>.<secret>)",
                parts.len()
            ));
        };
        let hex = |part: &str, length: usize| part.len() == length && part.bytes().all(|byte| byte.is_ascii_hexdigit());
        if prefix != PREFIX || !hex(fingerprint, 64) || !hex(id, 8) || !hex(secret, 32) {
            return Err(format!("not a join token: expected {PREFIX}.<64 hex>.<8 hex>.<32 hex>"));
        }
        Ok(ParsedToken {
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    secret_hash: String,
    expires_at: i64,
    uses_left: u32,
}

/// A token as listed: id, expiry, uses left (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub expires_at: i64,
    pub uses_left: u32,
}

/// Why a join was refused. Deliberately not more precise than needed: a
/// stranger guessing ids learns nothing from the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the join token is unknown, revoked or used up")]
    Unknown,
    #[error("the join token expired")]
    Expired,
}

/// The join tokens a hub made.
#[derive(Debug)]
pub struct JoinTokens {
    path: PathBuf,
    records: Mutex<Vec<TokenRecord>>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system provides randomness");
    hex::encode(buffer)
}

impl JoinTokens {
    /// The tokens kept in `dir` (none yet if the file does not exist).
    pub fn open(dir: &Path) -> Result<JoinTokens, TrustError> {
        let path = dir.join("join-tokens.json");
        let records = read_json_or_default(&path)?;
        Ok(JoinTokens {
            path,
            records: Mutex::new(records),
        })
    }

    fn save(&self, records: &[TokenRecord]) -> Result<(), TrustError> {
        let text = serde_json::to_vec_pretty(records).expect("token records serialize");
        write_private(&self.path, &text)
    }

    /// A new token for the CA with `ca_fingerprint`: valid for `ttl`, for
    /// `uses` joins. Returns the whole token and what `list` shows of it.
    pub fn create(&self, ca_fingerprint: &str, ttl: Duration, uses: u32) -> Result<(String, TokenInfo), TrustError> {
        let id = random_hex(4);
        let secret = random_hex(16);
        let record = TokenRecord {
            id: id.clone(),
            secret_hash: hash_secret(&secret),
            expires_at: now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            uses_left: uses.max(1),
        };
        let mut records = self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        records.retain(|record| record.expires_at > now());
        records.push(record.clone());
        self.save(&records)?;
        let info = TokenInfo {
            id: id.clone(),
            expires_at: record.expires_at,
            uses_left: record.uses_left,
        };
        Ok((format!("{PREFIX}.{ca_fingerprint}.{id}.{secret}"), info))
    }

    /// Tokens still usable.
    pub fn list(&self) -> Vec<TokenInfo> {
        let records = self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        records
            .iter()
            .filter(|record| record.expires_at > now())
            .map(|record| TokenInfo {
                id: record.id.clone(),
                expires_at: record.expires_at,
                uses_left: record.uses_left,
            })
            .collect()
    }

    /// Revokes token `id`; `false` if there is none.
    pub fn remove(&self, id: &str) -> Result<bool, TrustError> {
        let mut records = self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = records.len();
        records.retain(|record| record.id != id);
        if records.len() == before {
            return Ok(false);
        }
        self.save(&records)?;
        Ok(true)
    }

    /// Uses token `id` with `secret` once, durably, or says why not.
    pub fn redeem(&self, id: &str, secret: &str) -> Result<(), RedeemError> {
        let mut records = self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let position = records
            .iter()
            .position(|record| record.id == id && constant_time_eq(&record.secret_hash, &hash_secret(secret)))
            .ok_or(RedeemError::Refused(TokenRefusal::Unknown))?;
        if records[position].expires_at <= now() {
            return Err(RedeemError::Refused(TokenRefusal::Expired));
        }
        records[position].uses_left -= 1;
        if records[position].uses_left == 0 {
            records.remove(position);
        }
        self.save(&records).map_err(RedeemError::Store)
    }
}

/// Why [`JoinTokens::redeem`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error(transparent)]
    Refused(TokenRefusal),
    #[error(transparent)]
    Store(TrustError),
}

fn constant_time_eq(left: &str, right: &str) -> bool {
    left.len() == right.len() && left.bytes().zip(right.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_as_many_times_as_it_allows_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::open(dir.path()).unwrap();
        let fingerprint = "ab".repeat(32);
        let (token, info) = tokens.create(&fingerprint, Duration::from_secs(60), 2).unwrap();
        let parsed: ParsedToken = token.parse().unwrap();
        assert_eq!(
            (parsed.ca_fingerprint.as_str(), parsed.id.as_str()),
            (fingerprint.as_str(), info.id.as_str())
        );
        tokens.redeem(&parsed.id, &parsed.secret).unwrap();
        let reopened = JoinTokens::open(dir.path()).unwrap();
        assert_eq!(reopened.list()[0].uses_left, 1);
        reopened.redeem(&parsed.id, &parsed.secret).unwrap();
        let used_up = reopened.redeem(&parsed.id, &parsed.secret).unwrap_err();
        assert!(
            matches!(used_up, RedeemError::Refused(TokenRefusal::Unknown)),
            "{used_up}"
        );
    }

    #[test]
    fn wrong_secrets_expired_and_revoked_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::open(dir.path()).unwrap();
        let (token, info) = tokens.create(&"00".repeat(32), Duration::from_secs(60), 1).unwrap();
        let parsed: ParsedToken = token.parse().unwrap();
        assert!(tokens.redeem(&parsed.id, &"0".repeat(32)).is_err());
        assert!(tokens.remove(&info.id).unwrap());
        assert!(tokens.redeem(&parsed.id, &parsed.secret).is_err());
        let (expired, _) = tokens.create(&"00".repeat(32), Duration::ZERO, 1).unwrap();
        let expired: ParsedToken = expired.parse().unwrap();
        let refusal = tokens.redeem(&expired.id, &expired.secret).unwrap_err();
        assert!(
            matches!(refusal, RedeemError::Refused(TokenRefusal::Expired)),
            "{refusal}"
        );
    }

    #[test]
    fn garbage_is_not_a_token() {
        for garbage in [
            "",
            "hello",
            "ferry-join.zz.00000000.00",
            &format!("other.{}.00000000.{}", "a".repeat(64), "b".repeat(32)),
        ] {
            let error = garbage.parse::<ParsedToken>().unwrap_err();
            assert!(error.contains("not a join token"), "{garbage:?}: {error}");
        }
    }
}
