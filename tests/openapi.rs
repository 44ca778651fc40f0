//! The broker's served `/openapi.json` passes a real OpenAPI validator
//! (`openapi-spec-validator` from PyPI, in the `.venv-ci` that `.ci/run`
//! creates), and the validator is strict enough to refuse the mistake it
//! once let through (`required: []`, which OpenAPI 3.0 forbids).

mod common;

use common::python::python_with_or_skip;
use common::*;
use std::path::Path;
use std::process::Command;

/// What the validator needs to import.
const VALIDATOR: &str = "openapi_spec_validator";

/// Validate the document at `path`: Ok, or the validator's last words.
fn validate(python: &Path, path: &Path) -> Result<(), String> {
    let script = "import json, sys\nfrom openapi_spec_validator import validate\n\
                  validate(json.load(open(sys.argv[1])))\nprint('valid')";
    let out = Command::new(python).args(["-c", script]).arg(path).output().map_err(|e| e.to_string())?;
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid") {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr.lines().rev().take(6).collect::<Vec<_>>().join(" | "))
}

#[tokio::test]
async fn the_served_openapi_document_passes_openapi_spec_validator() {
    let Some(python) = python_with_or_skip("the_served_openapi_document_passes_openapi_spec_validator", VALIDATOR)
    else {
        return;
    };
    let b = BrokerProc::start("");
    let served = client().get(format!("{}/openapi.json", b.url)).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let text = served.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &text).unwrap();
    if let Err(why) = validate(&python, &path) {
        panic!("/openapi.json is not a valid OpenAPI document: {why}");
    }

    // The control: the same document with an empty `required` is refused,
    // so a pass above means the validator checked what it should.
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schemas = doc["components"]["schemas"].as_object_mut().expect("components.schemas");
    let (_, first) = schemas.iter_mut().next().expect("a schema");
    first["required"] = serde_json::json!([]);
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(validate(&python, &broken).is_err(), "the validator let `required: []` through");
}
