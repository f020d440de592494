//! The Cedar index decides exactly like the plain `cedar-policy` authorizer: same decision,
//! same determining policies, same errors, on randomized requests over a large generated
//! policy set that uses every scope form.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/generate.rs"]
mod generate;

use std::str::FromStr;

use cedar_policy::{Authorizer, Decision as CedarDecision, PolicySet, Schema};
use policy::{CedarIndex, CompiledPackage, Effect, Language, Limits, PackageSource};
use rand::SeedableRng;
use rand::rngs::StdRng;

use generate::Mix;

const POLICIES: usize = 2_000;
const REQUESTS: usize = 5_000;

/// Compares `requests` decisions; returns how many were allows, forbids and had errors.
fn check(mix: Mix, seed: u64, policies: usize, requests: usize) -> (usize, usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let schema_text = generate::schema();
    let text = generate::policies(&mut rng, policies, mix);
    let package = CompiledPackage::compile(&PackageSource {
        language: Language::Cedar,
        files: vec![
            ("generated.cedar".into(), text.clone()),
            ("generated.cedarschema".into(), schema_text.clone()),
        ],
        entrypoint: None,
    })
    .unwrap();

    // The reference: cedar-policy alone, over the whole set, with the schema's action
    // hierarchy as entities.
    let (schema, _) = Schema::from_cedarschema_str(&schema_text).unwrap();
    let plain_set = PolicySet::from_str(&text).unwrap();
    assert_eq!(plain_set.num_of_policies(), policies);
    let entities = schema.action_entities().unwrap();
    let authorizer = Authorizer::new();
    let index = CedarIndex::new(&plain_set, &schema).unwrap();
    // Warden names a policy by its `@id`, else by Cedar's own `policy<N>`.
    let warden_id = |id: &cedar_policy::PolicyId| -> String {
        plain_set
            .annotation(id, "id")
            .map_or_else(|| id.to_string(), str::to_owned)
    };

    let (mut allows, mut forbids, mut with_errors) = (0, 0, 0);
    let population = match mix {
        Mix::Adversarial => 60,
        Mix::Realistic => policies / 10,
    };
    for i in 0..requests {
        let request = generate::request(&mut rng, population);
        let got = package.decide(&request, &Limits::default()).unwrap();

        let cedar_request = generate::cedar_request(&schema, &request);
        let response = authorizer.is_authorized(&cedar_request, &plain_set, &entities);
        let effect = match response.decision() {
            CedarDecision::Allow => Effect::Allow,
            CedarDecision::Deny => Effect::Deny,
        };
        let mut determining: Vec<String> = response.diagnostics().reason().map(warden_id).collect();
        determining.sort();
        let mut errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                let id = e.policy_id();
                e.to_string()
                    .replace(&format!("`{id}`"), &format!("`{}`", warden_id(id)))
            })
            .collect();
        errors.sort();

        // The index alone, on the same Cedar request and set (Cedar's own ids).
        let indexed = index.is_authorized(&cedar_request, &entities);
        let mut plain_ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        plain_ids.sort();
        let mut plain_errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        plain_errors.sort();
        assert_eq!(
            (indexed.effect, &indexed.determining, &indexed.errors),
            (effect, &plain_ids, &plain_errors),
            "index alone, request {i}: {request:?}"
        );

        // The whole pipeline: Warden's request → Cedar request conversion, validation, index.
        assert_eq!(got.effect, effect, "request {i}: {request:?}");
        assert_eq!(got.determining, determining, "request {i}: {request:?}");
        assert_eq!(got.errors, errors, "request {i}: {request:?}");
        if i % 10 == 0 {
            let full = package
                .decide_unindexed(&request, &Limits::default())
                .unwrap();
            assert_eq!(full, got, "unindexed, request {i}: {request:?}");
        }

        match (got.effect, got.determining.is_empty()) {
            (Effect::Allow, _) => allows += 1,
            (Effect::Deny, false) => forbids += 1,
            (Effect::Deny, true) => {}
        }
        if !got.errors.is_empty() {
            with_errors += 1;
        }
    }
    (allows, forbids, with_errors)
}

#[test]
fn index_equals_plain_authorizer() {
    let (allows, forbids, with_errors) = check(Mix::Adversarial, 0x5eed_0004, POLICIES, REQUESTS);
    // The comparison covered every kind of outcome, not just default denies.
    let tenth = REQUESTS / 10;
    assert!(allows > tenth, "only {allows} allows");
    assert!(forbids > tenth, "only {forbids} forbids");
    assert!(with_errors > tenth, "only {with_errors} with errors");
}

#[test]
fn index_equals_plain_authorizer_on_the_realistic_mix() {
    let (allows, forbids, with_errors) = check(Mix::Realistic, 0x5eed_0005, POLICIES, 1_000);
    assert!(
        allows > 0 && forbids > 0 && with_errors > 0,
        "{allows} {forbids} {with_errors}"
    );
}
