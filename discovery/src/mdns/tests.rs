use mdns_sd::TxtProperty;

use super::*;

fn advert() -> HubAdvert {
    HubAdvert {
        id: "hub-b".into(),
        name: "beta".into(),
        port: 7000,
        proto: 1,
        cluster: "lab".into(),
        load: 250,
    }
}

/// A resolved service as mdns-sd would report it: SRV port 9999 on purpose,
/// to show that the TXT port wins.
fn resolved(properties: Vec<TxtProperty>, addresses: &str) -> ResolvedService {
    ServiceInfo::new(SERVICE_TYPE, "hub-b", "ferry-hub-b.local.", addresses, 9999, properties)
        .expect("service info")
        .as_resolved_service()
}

fn valid_properties() -> Vec<TxtProperty> {
    advert().to_properties().into_iter().map(TxtProperty::from).collect()
}

fn with_property(key: &str, value: &[u8]) -> Vec<TxtProperty> {
    let mut properties: Vec<TxtProperty> = valid_properties()
        .into_iter()
        .filter(|property| property.key() != key)
        .collect();
    properties.push(TxtProperty::from((key, value)));
    properties
}

#[test]
fn mdns_names_derive_from_the_hub_id_within_one_dns_label() {
    let id_64 = "x".repeat(64);
    #[rustfmt::skip]
    let cases: [(&str, &str, String); 3] = [
        ("hub-b", "hub-b", "ferry-hub-b.local.".into()),
        (&id_64, &id_64[..63], format!("ferry-{}.local.", &id_64[..57])),
        ("a", "a", "ferry-a.local.".into()),
    ];
    for (id, instance, host) in cases {
        assert_eq!(instance_name(id), instance);
        assert_eq!(host_name(id), host);
        assert!(instance_name(id).len() <= 63);
        assert!(host_name(id).trim_end_matches(".local.").len() <= 63);
    }
}

#[test]
fn our_registration_parses_back_to_our_advert() {
    let info = service_info(&advert(), None).expect("service info");
    assert_eq!(info.get_fullname(), "hub-b._ferry._tcp.local.");
    assert_eq!(info.get_hostname(), "ferry-hub-b.local.");
    assert_eq!(info.get_port(), 7000);
    assert!(info.is_addr_auto());
    assert!(!info.requires_probe());
    let (parsed, addrs) = resolved_advert(&info.as_resolved_service()).expect("valid advert");
    assert_eq!(parsed, advert());
    assert_eq!(addrs, Vec::<SocketAddr>::new());
}

#[test]
fn resolved_addresses_use_the_txt_grpc_port() {
    let service = resolved(valid_properties(), "10.0.0.2,fd00::2,fe80::2");
    let (_, addrs) = resolved_advert(&service).expect("valid advert");
    let rendered: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    assert_eq!(rendered, ["10.0.0.2:7000", "[fd00::2]:7000", "[fe80::2]:7000"]);
}

#[test]
fn hostile_adverts_are_dropped_and_valid_ones_become_table_inputs() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<TxtProperty>, Option<&str>)> = vec![
        (valid_properties(), Some("hub-b beta 7000 [10.0.0.2:7000]")),
        (with_property("port", b"0"), None),
        (with_property("port", b"70000"), None),
        (with_property("port", b"99999999999999999999999999999999"), None),
        (with_property("load", b"10001"), None),
        (with_property("proto", b"one"), None),
        (with_property("name", b"\xff\xfe"), None),
        (with_property("name", b"beta\x1b[31m"), None),
        (with_property("id", b"hub b"), None),
        (with_property("cluster", &[b'c'; 200]), None),
        (valid_properties().into_iter().filter(|property| property.key() != "id").collect(), None),
        (vec![TxtProperty::from("id")], None),
        (Vec::new(), None),
    ];
    for (properties, expected) in cases {
        let description = format!("{properties:?}");
        let event = interpret(ServiceEvent::ServiceResolved(Box::new(resolved(
            properties, "10.0.0.2",
        ))));
        let rendered = event.map(|event| match event {
            MdnsEvent::Advert { advert, addrs, .. } => format!(
                "{} {} {} {:?}",
                advert.id,
                advert.name,
                advert.port,
                addrs.iter().map(ToString::to_string).collect::<Vec<_>>()
            )
            .replace('"', ""),
            MdnsEvent::Removed { instance } => format!("removed {instance}"),
        });
        assert_eq!(rendered.as_deref(), expected, "{description}");
    }
}

#[test]
fn goodbyes_become_removals_and_other_events_are_ignored() {
    let removed = interpret(ServiceEvent::ServiceRemoved(
        SERVICE_TYPE.into(),
        "hub-b._ferry._tcp.local.".into(),
    ));
    assert_eq!(
        removed,
        Some(MdnsEvent::Removed {
            instance: "hub-b._ferry._tcp.local.".into()
        })
    );
    let ignored = [
        ServiceEvent::SearchStarted(SERVICE_TYPE.into()),
        ServiceEvent::ServiceFound(SERVICE_TYPE.into(), "hub-b._ferry._tcp.local.".into()),
        ServiceEvent::SearchStopped(SERVICE_TYPE.into()),
    ];
    for event in ignored {
        assert_eq!(interpret(event), None);
    }
}
