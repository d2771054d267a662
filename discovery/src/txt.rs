//! The advertised record: what a hub puts in its `_ferry._tcp.local.` TXT record.
//!
//! Every value that comes off the network is hostile until [`HubAdvert::parse`]
//! has checked it: missing keys, keys without values, non-UTF-8 bytes, numbers
//! out of range and control characters are all rejected with a [`TxtError`]
//! that names the field and the problem. Nothing in this module panics on input.
//!
//! Keys follow RFC 6763 §6: they are matched case-insensitively, only the first
//! occurrence of a key counts, and unknown keys are ignored so that newer hubs
//! can add keys without breaking older ones.

use std::fmt;

/// The DNS-SD service type every Ferry hub advertises and browses.
pub const SERVICE_TYPE: &str = "_ferry._tcp.local.";

/// Highest accepted [`HubAdvert::load`] value.
pub const LOAD_MAX: u32 = 10_000;

/// Longest accepted hub id and cluster id, in characters.
pub const ID_MAX_LEN: usize = 64;

/// Longest accepted hub name, in characters.
pub const NAME_MAX_CHARS: usize = 63;

/// Longest accepted hub name, in bytes of UTF-8.
///
/// A TXT string holds at most 255 bytes and `name=` takes 5 of them.
pub const NAME_MAX_BYTES: usize = 250;

/// Longest numeric value we look at: `u32::MAX` has 10 digits.
const NUMBER_MAX_DIGITS: usize = 10;

/// What a hub tells the LAN about itself through its TXT record.
///
/// mDNS only *suggests* peers: none of these values is trusted until a probe
/// of the peer confirms its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAdvert {
    /// Hub id, the identity of a hub: 1 to 64 characters of `[A-Za-z0-9-]`.
    pub id: String,
    /// Human-readable hub name: 1 to 63 printable characters (at most 250 bytes),
    /// no control or bidirectional-formatting characters, no leading or
    /// trailing whitespace.
    pub name: String,
    /// TCP port of the hub's gRPC server, 1 to 65535.
    pub port: u16,
    /// Ferry protocol version the hub speaks.
    pub proto: u32,
    /// Cluster id: same syntax as the hub id.
    pub cluster: String,
    /// Coarse load figure, 0 to [`LOAD_MAX`], in thousandths of the hub's
    /// capacity: 0 is idle, 1000 means fully busy, and values above 1000 say
    /// by how much the hub is overloaded (2500 = work queued for 2.5 times its
    /// capacity). Only the hub computes it; discovery just carries it.
    pub load: u32,
}

/// A TXT key of [`HubAdvert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxtField {
    /// `id`: the hub id.
    Id,
    /// `name`: the hub name.
    Name,
    /// `port`: the gRPC port.
    Port,
    /// `proto`: the protocol version.
    Proto,
    /// `cluster`: the cluster id.
    Cluster,
    /// `load`: the coarse load figure.
    Load,
}

impl TxtField {
    /// Every field, in the order they are advertised and checked.
    pub const ALL: [TxtField; 6] = [
        TxtField::Id,
        TxtField::Name,
        TxtField::Port,
        TxtField::Proto,
        TxtField::Cluster,
        TxtField::Load,
    ];

    /// The TXT key of this field.
    pub fn key(self) -> &'static str {
        match self {
            TxtField::Id => "id",
            TxtField::Name => "name",
            TxtField::Port => "port",
            TxtField::Proto => "proto",
            TxtField::Cluster => "cluster",
            TxtField::Load => "load",
        }
    }
}

impl fmt::Display for TxtField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.key())
    }
}

/// What is wrong with a TXT value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtProblem {
    /// The key is absent.
    Missing,
    /// The key is present as a boolean attribute, without `=value`.
    NoValue,
    /// The value is not valid UTF-8.
    NotUtf8,
    /// The value is empty.
    Empty,
    /// The value has more characters than allowed.
    TooLong {
        /// Characters in the value.
        chars: usize,
        /// Most characters allowed.
        max: usize,
    },
    /// The value has more bytes than allowed.
    TooManyBytes {
        /// Bytes in the value.
        bytes: usize,
        /// Most bytes allowed.
        max: usize,
    },
    /// The value contains a character the field does not allow.
    ForbiddenChar(char),
    /// The value starts or ends with whitespace.
    EdgeWhitespace,
    /// The value is not a plain decimal number (digits only, no sign).
    NotDecimal,
    /// The number is outside the allowed range.
    OutOfRange {
        /// The number, or `None` when it has more than 10 significant digits
        /// (more than any `u32`), in which case it is not even read.
        value: Option<u64>,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
}

impl fmt::Display for TxtProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxtProblem::Missing => formatter.write_str("is missing"),
            TxtProblem::NoValue => formatter.write_str("has no value"),
            TxtProblem::NotUtf8 => formatter.write_str("is not valid utf-8"),
            TxtProblem::Empty => formatter.write_str("is empty"),
            TxtProblem::TooLong { chars, max } => {
                write!(formatter, "has {chars} characters, more than {max}")
            }
            TxtProblem::TooManyBytes { bytes, max } => {
                write!(formatter, "has {bytes} bytes, more than {max}")
            }
            TxtProblem::ForbiddenChar(character) => {
                write!(
                    formatter,
                    "contains forbidden character U+{:04X}",
                    u32::from(*character)
                )
            }
            TxtProblem::EdgeWhitespace => formatter.write_str("starts or ends with whitespace"),
            TxtProblem::NotDecimal => formatter.write_str("is not a decimal number"),
            TxtProblem::OutOfRange { value, min, max } => {
                write!(formatter, "is out of range {min}..={max}")?;
                match value {
                    Some(value) => write!(formatter, " (got {value})"),
                    None => formatter.write_str(" (got more than 10 digits)"),
                }
            }
        }
    }
}

/// A TXT record, or a peer identity, that does not describe a valid hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("txt field `{field}` {problem}")]
pub struct TxtError {
    /// The offending field.
    pub field: TxtField,
    /// What is wrong with it.
    pub problem: TxtProblem,
}

impl TxtError {
    fn new(field: TxtField, problem: TxtProblem) -> Self {
        Self { field, problem }
    }
}

impl HubAdvert {
    /// Parses a TXT record given as `(key, value)` pairs, as decoded by mDNS
    /// (a value of `None` is a key without `=`).
    ///
    /// Keys match case-insensitively, the first occurrence of a key wins and
    /// unknown keys are ignored. Fields are checked in the order of
    /// [`TxtField::ALL`] and the first problem found is returned.
    pub fn parse<'a, I>(properties: I) -> Result<Self, TxtError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        let mut values: [Option<Option<&'a [u8]>>; 6] = [None; 6];
        for (key, value) in properties {
            let Some(index) = TxtField::ALL
                .iter()
                .position(|field| field.key().eq_ignore_ascii_case(key))
            else {
                continue;
            };
            if values[index].is_none() {
                values[index] = Some(value);
            }
        }
        let [id, name, port, proto, cluster, load] = values;

        let id = text_value(TxtField::Id, id)?;
        validate_id(TxtField::Id, id)?;
        let name = text_value(TxtField::Name, name)?;
        validate_name(TxtField::Name, name)?;
        let port = number_value(TxtField::Port, port, 1, u64::from(u16::MAX))?;
        let proto = number_value(TxtField::Proto, proto, 0, u64::from(u32::MAX))?;
        let cluster = text_value(TxtField::Cluster, cluster)?;
        validate_id(TxtField::Cluster, cluster)?;
        let load = number_value(TxtField::Load, load, 0, u64::from(LOAD_MAX))?;

        Ok(Self {
            id: id.to_owned(),
            name: name.to_owned(),
            port: u16::try_from(port).map_err(|_| out_of_range(TxtField::Port, port, 1, 65535))?,
            proto: u32::try_from(proto).map_err(|_| out_of_range(TxtField::Proto, proto, 0, u64::from(u32::MAX)))?,
            cluster: cluster.to_owned(),
            load: u32::try_from(load).map_err(|_| out_of_range(TxtField::Load, load, 0, u64::from(LOAD_MAX)))?,
        })
    }

    /// The TXT properties that advertise this hub, in [`TxtField::ALL`] order.
    ///
    /// `HubAdvert::parse` of these properties gives back `self` when `self`
    /// is valid.
    pub fn to_properties(&self) -> Vec<(&'static str, String)> {
        vec![
            (TxtField::Id.key(), self.id.clone()),
            (TxtField::Name.key(), self.name.clone()),
            (TxtField::Port.key(), self.port.to_string()),
            (TxtField::Proto.key(), self.proto.to_string()),
            (TxtField::Cluster.key(), self.cluster.clone()),
            (TxtField::Load.key(), self.load.to_string()),
        ]
    }

    /// Checks the rules [`HubAdvert::parse`] enforces, for an advert built in code.
    pub fn validate(&self) -> Result<(), TxtError> {
        validate_id(TxtField::Id, &self.id)?;
        validate_name(TxtField::Name, &self.name)?;
        if self.port == 0 {
            return Err(out_of_range(TxtField::Port, 0, 1, 65535));
        }
        validate_id(TxtField::Cluster, &self.cluster)?;
        validate_load(self.load)
    }
}

/// Checks a hub id or cluster id: 1 to [`ID_MAX_LEN`] characters of `[A-Za-z0-9-]`.
pub fn validate_id(field: TxtField, value: &str) -> Result<(), TxtError> {
    if value.is_empty() {
        return Err(TxtError::new(field, TxtProblem::Empty));
    }
    if let Some(forbidden) = value
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || *character == '-'))
    {
        return Err(TxtError::new(field, TxtProblem::ForbiddenChar(forbidden)));
    }
    // All characters are ASCII here, so the byte length is the character count.
    if value.len() > ID_MAX_LEN {
        return Err(TxtError::new(
            field,
            TxtProblem::TooLong {
                chars: value.len(),
                max: ID_MAX_LEN,
            },
        ));
    }
    Ok(())
}

/// Checks a hub name: see [`HubAdvert::name`].
pub fn validate_name(field: TxtField, value: &str) -> Result<(), TxtError> {
    if value.is_empty() {
        return Err(TxtError::new(field, TxtProblem::Empty));
    }
    if let Some(forbidden) = value.chars().find(|character| is_unprintable(*character)) {
        return Err(TxtError::new(field, TxtProblem::ForbiddenChar(forbidden)));
    }
    let chars = value.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(TxtError::new(
            field,
            TxtProblem::TooLong {
                chars,
                max: NAME_MAX_CHARS,
            },
        ));
    }
    if value.len() > NAME_MAX_BYTES {
        return Err(TxtError::new(
            field,
            TxtProblem::TooManyBytes {
                bytes: value.len(),
                max: NAME_MAX_BYTES,
            },
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(TxtError::new(field, TxtProblem::EdgeWhitespace));
    }
    Ok(())
}

/// Checks a load figure: 0 to [`LOAD_MAX`].
pub fn validate_load(load: u32) -> Result<(), TxtError> {
    if load > LOAD_MAX {
        return Err(out_of_range(TxtField::Load, u64::from(load), 0, u64::from(LOAD_MAX)));
    }
    Ok(())
}

/// Control characters, and the invisible formatting characters that can
/// make a name display as something else (bidirectional overrides,
/// zero-width characters, byte-order mark).
fn is_unprintable(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

fn out_of_range(field: TxtField, value: u64, min: u64, max: u64) -> TxtError {
    TxtError::new(
        field,
        TxtProblem::OutOfRange {
            value: Some(value),
            min,
            max,
        },
    )
}

/// The raw value of a present key, or the problem with it.
fn raw_value(field: TxtField, slot: Option<Option<&[u8]>>) -> Result<&[u8], TxtError> {
    match slot {
        None => Err(TxtError::new(field, TxtProblem::Missing)),
        Some(None) => Err(TxtError::new(field, TxtProblem::NoValue)),
        Some(Some(bytes)) => Ok(bytes),
    }
}

fn text_value(field: TxtField, slot: Option<Option<&[u8]>>) -> Result<&str, TxtError> {
    let bytes = raw_value(field, slot)?;
    std::str::from_utf8(bytes).map_err(|_| TxtError::new(field, TxtProblem::NotUtf8))
}

/// Parses a plain decimal number within `min..=max`, without ever overflowing.
fn number_value(field: TxtField, slot: Option<Option<&[u8]>>, min: u64, max: u64) -> Result<u64, TxtError> {
    let bytes = raw_value(field, slot)?;
    if bytes.is_empty() {
        return Err(TxtError::new(field, TxtProblem::Empty));
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return Err(TxtError::new(field, TxtProblem::NotDecimal));
    }
    let significant = bytes
        .iter()
        .position(|digit| *digit != b'0')
        .map_or(&bytes[bytes.len() - 1..], |start| &bytes[start..]);
    if significant.len() > NUMBER_MAX_DIGITS {
        return Err(TxtError::new(field, TxtProblem::OutOfRange { value: None, min, max }));
    }
    let value = significant
        .iter()
        .fold(0_u64, |value, digit| value * 10 + u64::from(digit - b'0'));
    if value < min || value > max {
        return Err(out_of_range(field, value, min, max));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
