//! `portcullis test` as users run it: the example suites pass (so `cargo test` guards the demo
//! policies), a deliberately failing suite fails with file, line and determining policies, and a
//! malformed suite is a configuration error naming its line.

use crate::common::{repo_path, run_portcullis};

/// Runs `portcullis test` on the repository's configuration; returns (success, stdout, stderr).
fn portcullis_test(args: &[&str]) -> (bool, String, String) {
    run_portcullis("test", &repo_path("portcullis.toml"), args)
}

#[test]
fn the_example_suites_pass() {
    let (ok, stdout, stderr) = portcullis_test(&[]);
    assert!(ok, "{stdout}{stderr}");
    let suite = std::fs::read_to_string(repo_path("policies/tests/tasks.toml")).unwrap();
    let cases = suite.matches("[[cases]]").count();
    assert!(cases >= 10);
    assert_eq!(stdout, format!("{cases} passed, 0 failed\n"));
}

#[test]
fn a_failing_suite_reports_each_failure_and_exits_non_zero() {
    let fixture = repo_path("tests/fixtures/failing-suite.toml");
    let (ok, stdout, stderr) = portcullis_test(&[fixture.to_str().unwrap()]);
    assert!(!ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("FAIL {}:9 ", fixture.display()))
            && lines[0].ends_with(
                "expected allow, got deny (403); determining policies: [tenant-isolation]"
            ),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("FAIL {}:15 ", fixture.display()))
            && lines[1]
                .ends_with("expected 200, got none (401): not authenticated: no bearer token"),
        "{stdout}"
    );
    assert_eq!(lines[2], "1 passed, 2 failed");
    assert!(stderr.contains("2 policy test case(s) failed"), "{stderr}");
}

#[test]
fn a_malformed_suite_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("broken.toml");
    std::fs::write(
        &suite,
        "[[cases]]\nname = \"x\"\nrequest = { method = \"GET\", path = \"/health\" }\ncaller = \"anonymous\"\nexpect = \"allow\"\nexpected = 1\n",
    )
    .unwrap();
    let (ok, _, stderr) = portcullis_test(&[suite.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:6:", suite.display())) && stderr.contains("expected"),
        "{stderr}"
    );
}

#[test]
fn generated_tokens_follow_the_issuers_algorithm_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo_path("portcullis.toml"))
        .unwrap()
        .replace(
            "algorithms = [\"RS256\", \"ES256\"]",
            "algorithms = [\"ES256\"]\ntoken_type = \"at+jwt\"",
        )
        .replace(
            "routes = \"routes.toml\"",
            &format!("routes = {:?}", repo_path("routes.toml")),
        )
        .replace(
            "policies = \"policies\"",
            &format!("policies = {:?}", repo_path("policies")),
        );
    assert!(config.contains("token_type = \"at+jwt\""));
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config).unwrap();
    let (ok, stdout, stderr) = run_portcullis("test", &path, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.ends_with(" passed, 0 failed\n"), "{stdout}");
}

#[test]
fn the_pipeline_itself_refuses_two_host_headers() {
    // The HTTP/1 parser in front of it refuses them too; the pipeline does not rely on that.
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("hosts.toml");
    std::fs::write(
        &suite,
        "[[cases]]\nname = \"two hosts\"\nrequest = { method = \"GET\", path = \"/health\", headers = { host = \"a\" } }\ncaller = \"anonymous\"\nexpect = 200\n",
    )
    .unwrap();
    let (ok, stdout, _) = portcullis_test(&[suite.to_str().unwrap()]);
    assert!(ok, "one Host header is fine: {stdout}");
    let two = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("host = \"a\"", "host = \"a\", Host = \"b\"")
        .replace("expect = 200", "expect = 400");
    std::fs::write(&suite, two).unwrap();
    let (ok, stdout, stderr) = portcullis_test(&[suite.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout, "1 passed, 0 failed\n");
}
