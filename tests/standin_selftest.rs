//! Runs the stand-in plugin's own Python tests (tests/standin/test_standin.py) with the same
//! virtualenv the end-to-end tests use, so `cargo test` is the one command for everything.

mod common;

use std::process::Command;

#[test]
fn standin_plugin_tests_pass() {
    let python = common::standin_python();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin");
    let out = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_standin.py",
        ])
        .current_dir(&dir)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the stand-in's tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Make sure pytest really ran the tests rather than collecting nothing.
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains(" passed"), "{summary}");
    println!("stand-in plugin: {summary}");
}
