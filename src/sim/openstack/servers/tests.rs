use super::super::Cloud;
use super::views::name_matches;
use super::*;

#[test]
fn nova_error_bodies_are_keyed_by_status() {
    let e = ApiError::nova(StatusCode::FORBIDDEN, "Quota exceeded");
    assert_eq!(
        e.body,
        r#"{"forbidden":{"code":403,"message":"Quota exceeded"}}"#
    );
    assert_eq!(e.message(), "Quota exceeded");
}

#[test]
fn the_name_filter_understands_anchors() {
    assert!(name_matches("w-0", "demo-w-01"));
    assert!(name_matches("^demo", "demo-w-01"));
    assert!(!name_matches("^w", "demo-w-01"));
    assert!(name_matches("^demo-w-01$", "demo-w-01"));
    assert!(!name_matches("^demo-w-0$", "demo-w-01"));
}

/// The demo cloud with instant boots, and its admin's token.
fn demo() -> (Cloud, Token) {
    let scenario = crate::sim::scenario::Scenario::parse(crate::sim::scenario::DEMO).unwrap();
    let mut c = Cloud::new(
        &scenario,
        "http://sim".into(),
        &mut fastrand::Rng::with_seed(7),
    )
    .unwrap();
    c.boot_seconds = 0.0;
    let (p, u) = (&c.projects[0], &c.projects[0].users[0]);
    let t = Token {
        project_id: p.id.clone(),
        user_id: u.id.clone(),
        roles: u.roles.clone(),
        issued_at: chrono::Utc::now(),
        expires_at: chrono::Utc::now(),
    };
    (c, t)
}

#[test]
fn controllers_create_break_and_delete_servers_without_http() {
    let (mut c, t) = demo();
    c.no_valid_host.push(NoValidHost {
        availability_zone: Some("az2".into()),
        host: None,
        probability: 1.0,
    });
    let req = |az: &str| {
        json!({ "name": "w", "flavorRef": c.flavors[0].id, "imageRef": c.images[0].id,
                "availability_zone": az, "networks": "none" })
    };
    let (in_az1, in_az2, nowhere) = (req("az1"), req("az2"), req("az9"));
    let id = |v: Value| v["server"]["id"].as_str().unwrap().to_string();

    let doomed = id(c.create_server(&t, &in_az2, (2, 60)).unwrap());
    let s = c.servers.iter().find(|s| s.id == doomed).unwrap();
    assert_eq!(s.status, ServerStatus::Error);
    let fault = s.fault.as_ref().unwrap();
    assert_eq!(
        (fault.code, fault.message.as_str()),
        (500, "No valid host was found. ")
    );

    let fine = id(c.create_server(&t, &in_az1, (2, 60)).unwrap());
    assert_eq!(c.servers[1].status, ServerStatus::Active);
    assert!(c.break_server(&fine, "Hypervisor compute-1 lost power"));
    assert_eq!(c.servers[1].status, ServerStatus::Error);
    assert_eq!(
        c.servers[1].fault.as_ref().unwrap().message,
        "Hypervisor compute-1 lost power"
    );
    assert_eq!(c.compute_usage(&t.project_id).0, 2);

    let refused = c.create_server(&t, &nowhere, (2, 60)).unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body,
        r#"{"badRequest":{"code":400,"message":"The requested availability zone is not available"}}"#
    );

    c.delete_server(&t, &fine).unwrap();
    let gone = c.delete_server(&t, &fine).unwrap_err();
    assert_eq!(
        gone.message(),
        format!("Instance {fine} could not be found.")
    );
}

#[test]
fn unknown_keypairs_security_groups_and_slashed_metadata_keys_are_refused_as_nova_does() {
    let (mut c, t) = demo();
    let (flavor, image) = (c.flavors[0].id.clone(), c.images[0].id.clone());
    let req = |extra: Value| {
        let mut r = json!({ "name": "w", "flavorRef": flavor, "imageRef": image,
                            "networks": "none" });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let refused = |c: &mut Cloud, r: Value| c.create_server(&t, &r, (2, 60)).unwrap_err();
    let e = refused(&mut c, req(json!({"key_name": "nope"})));
    assert_eq!(
        (e.status, e.message()),
        (StatusCode::BAD_REQUEST, "Invalid key_name provided.".into())
    );
    let e = refused(&mut c, req(json!({"security_groups": [{"name": "web"}]})));
    assert_eq!(
        e.message(),
        "Unable to find security_group with name or id 'web'"
    );
    let e = refused(&mut c, req(json!({"metadata": {"capstan.io/job": "j"}})));
    assert_eq!(
        e.message(),
        "Invalid input for field/attribute metadata. Value: {'capstan.io/job': 'j'}. \
         'capstan.io/job' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"
    );
    let fine = req(
        json!({"key_name": "demo-key", "security_groups": [{"name": "default"}],
                           "metadata": {"capstan.io:job": "j"}}),
    );
    c.create_server(&t, &fine, (2, 60)).unwrap();
    assert_eq!(c.servers[0].key_name.as_deref(), Some("demo-key"));
}

#[test]
fn microversions_come_from_either_header() {
    let mut h = HeaderMap::new();
    assert_eq!(microversion(&h), (2, 1));
    h.insert("x-openstack-nova-api-version", "2.47".parse().unwrap());
    assert_eq!(microversion(&h), (2, 47));
    let mut h = HeaderMap::new();
    h.insert("openstack-api-version", "compute 2.60".parse().unwrap());
    assert_eq!(microversion(&h), (2, 60));
}
