//! OpenFGA authorization models as uploaded (`POST /v1/rebac/stores/{store}/models`): the
//! modeling language (schema 1.1) and the JSON form. Never panics; a model that parses has a
//! JSON form that reads back to the same model (same content id), whichever form it came in.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(model) = rebac::Model::parse(s) {
        let again = rebac::Model::from_json(&model.to_json()).expect("its JSON form reads back");
        assert_eq!(again.id(), model.id());
        assert_eq!(again.to_json(), model.to_json());
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(s) {
        if let Ok(model) = rebac::Model::from_json(&json) {
            let again =
                rebac::Model::from_json(&model.to_json()).expect("its JSON form reads back");
            assert_eq!(again.id(), model.id());
        }
    }
});
