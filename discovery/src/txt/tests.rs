use super::*;

/// Parses TXT strings as they appear on the wire (`key=value`, or a bare
/// `key` for a key without value) and renders the outcome as one line.
fn parse_rendered(strings: &[&[u8]]) -> String {
    let pairs: Vec<(String, Option<&[u8]>)> = strings
        .iter()
        .map(|string| match string.iter().position(|byte| *byte == b'=') {
            Some(at) => (
                String::from_utf8(string[..at].to_vec()).expect("test keys are utf-8"),
                Some(&string[at + 1..]),
            ),
            None => (String::from_utf8(string.to_vec()).expect("test keys are utf-8"), None),
        })
        .collect();
    match HubAdvert::parse(pairs.iter().map(|(key, value)| (key.as_str(), *value))) {
        Ok(advert) => render(&advert),
        Err(error) => error.to_string(),
    }
}

fn render(advert: &HubAdvert) -> String {
    format!(
        "ok id={} name={:?} port={} proto={} cluster={} load={}",
        advert.id, advert.name, advert.port, advert.proto, advert.cluster, advert.load
    )
}

/// A valid record with `replace` substituted for the string of the same key
/// (or removed when `replace` is just `-key`).
fn valid_with(replace: &[u8]) -> Vec<Vec<u8>> {
    let base: [&[u8]; 6] = [
        b"id=hub-a",
        b"name=alpha",
        b"port=7000",
        b"proto=1",
        b"cluster=lab",
        b"load=250",
    ];
    let (key, remove) = match replace.strip_prefix(b"-") {
        Some(key) => (key, true),
        None => (replace.split(|byte| *byte == b'=').next().unwrap_or_default(), false),
    };
    base.iter()
        .filter_map(|string| {
            let same_key = string.split(|byte| *byte == b'=').next() == Some(key);
            match (same_key, remove) {
                (true, true) => None,
                (true, false) => Some(replace.to_vec()),
                (false, _) => Some(string.to_vec()),
            }
        })
        .collect()
}

const VALID: &str = r#"ok id=hub-a name="alpha" port=7000 proto=1 cluster=lab load=250"#;

#[test]
fn txt_records_parse_to_adverts_or_name_the_field_and_problem() {
    let long_id = "a".repeat(64);
    let too_long_id = "a".repeat(65);
    let huge_id = "a".repeat(10_000);
    let long_name = "n".repeat(63);
    let too_long_name = "n".repeat(64);
    let wide_name = "é".repeat(63);
    let too_wide_name = "\u{1F600}".repeat(63);
    #[rustfmt::skip]
    let cases: Vec<(Vec<u8>, String)> = vec![
        // One field replaced (or removed with a leading '-') in a valid record.
        (b"id=hub-a".to_vec(), VALID.into()),
        (format!("id={long_id}").into_bytes(), format!(r#"ok id={long_id} name="alpha" port=7000 proto=1 cluster=lab load=250"#)),
        (format!("id={too_long_id}").into_bytes(), "txt field `id` has 65 characters, more than 64".into()),
        (format!("id={huge_id}").into_bytes(), "txt field `id` has 10000 characters, more than 64".into()),
        (b"-id".to_vec(), "txt field `id` is missing".into()),
        (b"id".to_vec(), "txt field `id` has no value".into()),
        (b"id=".to_vec(), "txt field `id` is empty".into()),
        (b"id=hub_a".to_vec(), "txt field `id` contains forbidden character U+005F".into()),
        (b"id=hub.a".to_vec(), "txt field `id` contains forbidden character U+002E".into()),
        (b"id=hub a".to_vec(), "txt field `id` contains forbidden character U+0020".into()),
        ("id=hüb".as_bytes().to_vec(), "txt field `id` contains forbidden character U+00FC".into()),
        (b"id=hub\xff".to_vec(), "txt field `id` is not valid utf-8".into()),
        (format!("name={long_name}").into_bytes(), format!(r#"ok id=hub-a name="{long_name}" port=7000 proto=1 cluster=lab load=250"#)),
        (format!("name={too_long_name}").into_bytes(), "txt field `name` has 64 characters, more than 63".into()),
        (format!("name={wide_name}").into_bytes(), format!(r#"ok id=hub-a name="{wide_name}" port=7000 proto=1 cluster=lab load=250"#)),
        (format!("name={too_wide_name}").into_bytes(), "txt field `name` has 252 bytes, more than 250".into()),
        ("name=Küche 2".as_bytes().to_vec(), r#"ok id=hub-a name="Küche 2" port=7000 proto=1 cluster=lab load=250"#.into()),
        (b"-name".to_vec(), "txt field `name` is missing".into()),
        (b"name".to_vec(), "txt field `name` has no value".into()),
        (b"name=".to_vec(), "txt field `name` is empty".into()),
        (b"name=al\npha".to_vec(), "txt field `name` contains forbidden character U+000A".into()),
        (b"name=al\x7fpha".to_vec(), "txt field `name` contains forbidden character U+007F".into()),
        (b"name=al\x00pha".to_vec(), "txt field `name` contains forbidden character U+0000".into()),
        ("name=alpha\u{202E}".as_bytes().to_vec(), "txt field `name` contains forbidden character U+202E".into()),
        ("name=al\u{200B}pha".as_bytes().to_vec(), "txt field `name` contains forbidden character U+200B".into()),
        (b"name= alpha".to_vec(), "txt field `name` starts or ends with whitespace".into()),
        (b"name=alpha ".to_vec(), "txt field `name` starts or ends with whitespace".into()),
        (b"name=\xc3\x28".to_vec(), "txt field `name` is not valid utf-8".into()),
        (b"port=1".to_vec(), r#"ok id=hub-a name="alpha" port=1 proto=1 cluster=lab load=250"#.into()),
        (b"port=65535".to_vec(), r#"ok id=hub-a name="alpha" port=65535 proto=1 cluster=lab load=250"#.into()),
        (b"port=07000".to_vec(), VALID.into()),
        (b"port=0".to_vec(), "txt field `port` is out of range 1..=65535 (got 0)".into()),
        (b"port=0000".to_vec(), "txt field `port` is out of range 1..=65535 (got 0)".into()),
        (b"port=65536".to_vec(), "txt field `port` is out of range 1..=65535 (got 65536)".into()),
        (b"port=4294967296".to_vec(), "txt field `port` is out of range 1..=65535 (got 4294967296)".into()),
        (b"port=99999999999999999999999999".to_vec(), "txt field `port` is out of range 1..=65535 (got more than 10 digits)".into()),
        (b"port=-1".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=+7000".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port= 7000".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=7000.0".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=0x1b58".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=seven".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=\xff\xfe".to_vec(), "txt field `port` is not a decimal number".into()),
        (b"port=".to_vec(), "txt field `port` is empty".into()),
        (b"port".to_vec(), "txt field `port` has no value".into()),
        (b"-port".to_vec(), "txt field `port` is missing".into()),
        (b"proto=0".to_vec(), r#"ok id=hub-a name="alpha" port=7000 proto=0 cluster=lab load=250"#.into()),
        (b"proto=4294967295".to_vec(), r#"ok id=hub-a name="alpha" port=7000 proto=4294967295 cluster=lab load=250"#.into()),
        (b"proto=4294967296".to_vec(), "txt field `proto` is out of range 0..=4294967295 (got 4294967296)".into()),
        (b"proto=v1".to_vec(), "txt field `proto` is not a decimal number".into()),
        (b"-proto".to_vec(), "txt field `proto` is missing".into()),
        (b"cluster=lab-2".to_vec(), r#"ok id=hub-a name="alpha" port=7000 proto=1 cluster=lab-2 load=250"#.into()),
        (b"cluster=lab/2".to_vec(), "txt field `cluster` contains forbidden character U+002F".into()),
        (b"cluster=".to_vec(), "txt field `cluster` is empty".into()),
        (b"-cluster".to_vec(), "txt field `cluster` is missing".into()),
        (format!("cluster={too_long_id}").into_bytes(), "txt field `cluster` has 65 characters, more than 64".into()),
        (b"load=0".to_vec(), r#"ok id=hub-a name="alpha" port=7000 proto=1 cluster=lab load=0"#.into()),
        (b"load=10000".to_vec(), r#"ok id=hub-a name="alpha" port=7000 proto=1 cluster=lab load=10000"#.into()),
        (b"load=10001".to_vec(), "txt field `load` is out of range 0..=10000 (got 10001)".into()),
        (b"load=-5".to_vec(), "txt field `load` is not a decimal number".into()),
        (b"load=0.5".to_vec(), "txt field `load` is not a decimal number".into()),
        (b"-load".to_vec(), "txt field `load` is missing".into()),
    ];
    for (replace, expected) in cases {
        let record = valid_with(&replace);
        let strings: Vec<&[u8]> = record.iter().map(Vec::as_slice).collect();
        assert_eq!(
            parse_rendered(&strings),
            expected,
            "record with {:?}",
            String::from_utf8_lossy(&replace)
        );
    }
}

#[test]
fn txt_key_rules_follow_rfc_6763() {
    #[rustfmt::skip]
    let cases: [(&[&[u8]], &str); 6] = [
        // Keys match case-insensitively.
        (
            &[b"ID=hub-a", b"Name=alpha", b"PORT=7000", b"proto=1", b"cluster=lab", b"load=250"],
            VALID,
        ),
        // The first occurrence of a key wins, even when a later one is valid.
        (
            &[b"id=hub-a", b"id=hub-b", b"name=alpha", b"port=7000", b"proto=1", b"cluster=lab", b"load=250"],
            VALID,
        ),
        (
            &[b"port=0", b"id=hub-a", b"name=alpha", b"port=7000", b"proto=1", b"cluster=lab", b"load=250"],
            "txt field `port` is out of range 1..=65535 (got 0)",
        ),
        // Unknown keys are ignored.
        (
            &[b"id=hub-a", b"name=alpha", b"future=yes", b"flag", b"port=7000", b"proto=1", b"cluster=lab", b"load=250"],
            VALID,
        ),
        // Nothing at all: the first field in check order is reported.
        (&[], "txt field `id` is missing"),
        // Several problems: the first field in check order is reported.
        (
            &[b"id=hub-a", b"name=", b"port=0", b"proto=1", b"cluster=lab", b"load=250"],
            "txt field `name` is empty",
        ),
    ];
    for (strings, expected) in cases {
        assert_eq!(parse_rendered(strings), expected, "record {strings:?}");
    }
}

fn valid_advert() -> HubAdvert {
    HubAdvert {
        id: "hub-a".into(),
        name: "alpha".into(),
        port: 7000,
        proto: 1,
        cluster: "lab".into(),
        load: 250,
    }
}

#[test]
fn properties_of_a_valid_advert_parse_back_to_the_same_advert() {
    let adverts = [
        valid_advert(),
        HubAdvert {
            id: "a".repeat(ID_MAX_LEN),
            name: "\u{1F600}".repeat(NAME_MAX_BYTES / 4),
            port: u16::MAX,
            proto: u32::MAX,
            cluster: "Z-9".into(),
            load: LOAD_MAX,
        },
    ];
    for advert in adverts {
        let properties = advert.to_properties();
        let parsed = HubAdvert::parse(properties.iter().map(|(key, value)| (*key, Some(value.as_bytes()))));
        assert_eq!(parsed, Ok(advert.clone()));
        assert_eq!(advert.validate(), Ok(()));
    }
}

/// A change to a valid advert.
type Mutation = fn(&mut HubAdvert);

#[test]
fn validate_rejects_adverts_that_parse_would_reject() {
    #[rustfmt::skip]
    let cases: [(Mutation, &str); 5] = [
        (|advert| advert.id = "hub a".into(), "txt field `id` contains forbidden character U+0020"),
        (|advert| advert.name = String::new(), "txt field `name` is empty"),
        (|advert| advert.port = 0, "txt field `port` is out of range 1..=65535 (got 0)"),
        (|advert| advert.cluster = "x".repeat(65), "txt field `cluster` has 65 characters, more than 64"),
        (|advert| advert.load = LOAD_MAX + 1, "txt field `load` is out of range 0..=10000 (got 10001)"),
    ];
    for (mutate, expected) in cases {
        let mut advert = valid_advert();
        mutate(&mut advert);
        let outcome = advert.validate().map_err(|error| error.to_string());
        assert_eq!(outcome, Err(expected.to_owned()));
    }
}
