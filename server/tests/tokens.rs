//! JWT verification and Keycloak claim mapping, including the attacks a verifier must refuse.
//! The EC keys in tests/fixtures are test-only keys generated for these tests.

use jsonwebtoken::{encode, jwk::JwkSet, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use server::services::identity::tokens::{identity, RoleMapping, TokenError, Verifier};
use std::collections::{BTreeSet, HashMap};

const ISSUER: &str = "http://127.0.0.1:8080/realms/countersign";
const K1: &str = include_str!("fixtures/test-only-es256-k1.pem");
const K2: &str = include_str!("fixtures/test-only-es256-k2.pem");

fn keys() -> JwkSet {
    serde_json::from_value(json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": "TKYMIGNIO5N43GoMvGL4LDkIiVSnSE9fqfu3LHm_Qzw", "y": "0MbQdv3UQZCqbWR7bufMeWRgNTI3arZfkN5yXdS_iOA"
    }]}))
    .expect("jwks")
}

fn verifier() -> Verifier {
    Verifier::new(ISSUER, vec!["countersign".into()], keys())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "5f1c…", "aud": ["countersign", "account"], "azp": "countersign-portal",
        "exp": now() + 300, "iat": now(), "preferred_username": "alice", "name": "Alice Admin",
        "realm_access": { "roles": ["approver", "ssh-linux", "remote-exec", "default-roles-countersign", "offline_access", "uma_authorization"] },
        "resource_access": { "countersign-portal": { "roles": ["auditor"] }, "other-app": { "roles": ["admin"] } }
    })
}

fn sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_good_token_verifies_and_maps_keycloak_roles() {
    let claims = verifier()
        .verify(&sign(K1, "k1", &claims()))
        .expect("valid token");
    let mapping = RoleMapping {
        client_id: "countersign-portal".into(),
        roles: HashMap::new(),
        capabilities: ["ssh-linux", "remote-exec", "local-sudo"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let who = identity(&claims, &mapping);
    assert_eq!(
        (who.id.as_str(), who.display_name.as_str(), who.is_service),
        ("alice", "Alice Admin", false)
    );
    assert_eq!(
        who.roles,
        BTreeSet::from(["approver".to_string(), "auditor".to_string()]),
        "realm + this client's roles; not other clients'"
    );
    assert_eq!(
        who.capabilities,
        BTreeSet::from(["remote-exec".to_string(), "ssh-linux".to_string()])
    );
}

#[test]
fn a_service_account_is_its_client() {
    let mut c = claims();
    c["preferred_username"] = json!("service-account-it-mcp");
    c["azp"] = json!("it-mcp");
    c["aud"] = Value::Null; // Keycloak client-credentials tokens lack `aud` without a mapper…
    c.as_object_mut().map(|o| o.remove("aud"));
    let v = Verifier::new(ISSUER, vec!["it-mcp".into()], keys()); // …so `azp` stands in for it
    let claims = v.verify(&sign(K1, "k1", &c)).expect("valid");
    let who = identity(
        &claims,
        &RoleMapping {
            client_id: "x".into(),
            roles: HashMap::new(),
            capabilities: BTreeSet::new(),
        },
    );
    assert_eq!((who.id.as_str(), who.is_service), ("it-mcp", true));
}

#[test]
fn client_id_alone_does_not_make_a_person_a_service() {
    let none = RoleMapping {
        client_id: "x".into(),
        roles: HashMap::new(),
        capabilities: BTreeSet::new(),
    };
    // RFC 9068 access token of a person: `client_id` names the app they used.
    let mut c = claims();
    c["client_id"] = json!("countersign");
    c["sub"] = json!("alice");
    let person = identity(
        &verifier().verify(&sign(K1, "k1", &c)).expect("valid"),
        &none,
    );
    assert_eq!((person.id.as_str(), person.is_service), ("alice", false));
    // RFC 9068 client-credentials token: the subject is the client itself.
    let mut c = claims();
    c["client_id"] = json!("it-mcp");
    c["sub"] = json!("it-mcp");
    c.as_object_mut().map(|o| o.remove("preferred_username"));
    let service = identity(
        &verifier().verify(&sign(K1, "k1", &c)).expect("valid"),
        &none,
    );
    assert_eq!((service.id.as_str(), service.is_service), ("it-mcp", true));
}

#[test]
fn configured_role_names_map_to_portal_roles() {
    let mut c = claims();
    c["realm_access"]["roles"] = json!(["it-approvers"]);
    let claims = verifier().verify(&sign(K1, "k1", &c)).expect("valid");
    let mapping = RoleMapping {
        client_id: "none".into(),
        roles: HashMap::from([("it-approvers".to_string(), "approver".to_string())]),
        capabilities: BTreeSet::new(),
    };
    assert_eq!(
        identity(&claims, &mapping).roles,
        BTreeSet::from(["approver".to_string()])
    );
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    assert_eq!(
        verifier().verify(&sign(K1, "k1", &c)),
        Err(TokenError::Expired)
    );
    c["exp"] = json!(now() - 30); // within 60 s of skew
    assert!(verifier().verify(&sign(K1, "k1", &c)).is_ok());
    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    assert_eq!(
        verifier().verify(&sign(K1, "k1", &c)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let mut c = claims();
    c["iss"] = json!("http://localhost:8080/realms/countersign"); // must match exactly
    assert_eq!(
        verifier().verify(&sign(K1, "k1", &c)),
        Err(TokenError::Issuer)
    );
    let mut c = claims();
    c["aud"] = json!("someone-else");
    c["azp"] = json!("someone-else");
    assert_eq!(
        verifier().verify(&sign(K1, "k1", &c)),
        Err(TokenError::Audience)
    );
}

#[test]
fn forged_and_tampered_tokens_are_refused() {
    // Signed by a key the realm does not have, claiming the realm's key id.
    assert_eq!(
        verifier().verify(&sign(K2, "k1", &claims())),
        Err(TokenError::Signature)
    );
    // A key id the set does not know: the caller refreshes the set, then refuses.
    assert_eq!(
        verifier().verify(&sign(K2, "k2", &claims())),
        Err(TokenError::UnknownKey("k2".into()))
    );
    // Payload changed after signing.
    let token = sign(K1, "k1", &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["realm_access"]["roles"] = json!(["admin", "local-sudo"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(verifier().verify(&forged), Err(TokenError::Signature));
    // alg: none, with and without a signature.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"k1"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(verifier().verify(&none), Err(TokenError::Malformed));
    // HS256 "signed" with the public key as the secret (the classic key-confusion attack).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let confused = encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(b"TKYMIGNIO5N43GoMvGL4LDkIiVSnSE9fqfu3LHm_Qzw"),
    )
    .expect("hs256");
    assert!(matches!(
        verifier().verify(&confused),
        Err(TokenError::Algorithm(_))
    ));
    // RS256 claimed for an EC key.
    let rs = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","kid":"k1"}"#),
        parts[1],
        parts[2]
    );
    assert_eq!(verifier().verify(&rs), Err(TokenError::KeyMismatch));
    // Garbage and missing key ids.
    assert_eq!(verifier().verify("not-a-jwt"), Err(TokenError::Malformed));
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let no_kid = encode(
        &header,
        &claims(),
        &EncodingKey::from_ec_pem(K1.as_bytes()).expect("key"),
    )
    .expect("sign");
    assert_eq!(verifier().verify(&no_kid), Err(TokenError::NoKeyId));
}
