//! Policy packages as uploaded (`POST /v1/policies`), through the package loader
//! (`CompiledPackage::compile`): Cedar schemas and policies, Rego modules. Never panics, and
//! the content hash does not depend on the order the files came in.
//!
//! Input: the first byte picks the language (even: Cedar, odd: Rego); the rest is the files'
//! texts separated by NUL bytes. Cedar: the first text is the schema (`p.cedarschema`), the
//! others policies (`p0.cedar`, …); Rego: modules (`m0.rego`, …), default entry point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{CompiledPackage, Language, PackageSource};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let texts: Vec<&str> = text.split('\0').collect();
    let (language, files): (Language, Vec<(String, String)>) = if choice % 2 == 0 {
        let mut files = vec![("p.cedarschema".to_owned(), texts[0].to_owned())];
        files.extend(
            texts[1..]
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("p{i}.cedar"), (*t).to_owned())),
        );
        (Language::Cedar, files)
    } else {
        let files = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("m{i}.rego"), (*t).to_owned()))
            .collect();
        (Language::Rego, files)
    };
    let mut source = PackageSource {
        language,
        files,
        entrypoint: None,
    };
    let compiled = CompiledPackage::compile(&source);
    source.files.reverse();
    let again = CompiledPackage::compile(&source);
    assert_eq!(compiled.is_ok(), again.is_ok());
    if let (Ok(a), Ok(b)) = (compiled, again) {
        assert_eq!(a.content_hash(), b.content_hash());
    }
});
