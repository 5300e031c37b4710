//! The command line itself: help, version, man pages, exit codes for usage
//! errors.

use crate::support::Test;

#[test]
fn man_pages_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for (name, text) in stencil::man_pages().unwrap() {
        let committed = std::fs::read(dir.join(&name)).unwrap_or_default();
        assert!(
            committed == text,
            "man/{name} is stale: run `cargo run -- man man/` and commit the result"
        );
    }
}

#[test]
fn help_shows_examples() {
    Test::new().args(["render", "--help"]).run().success();
    let out = Test::new().args(["--help"]).run().success();
    assert!(
        out.stdout_str().contains("Examples:"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn version_prints_the_crate_version_commit_and_build_date() {
    let out = Test::new().args(["--version"]).run().success();
    let text = out.stdout_str();
    // rustc's form: stencil 0.1.0 (0123456789ab 2026-01-31)
    let rest = text
        .strip_prefix(&format!("stencil {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("unexpected --version output: {text:?}"));
    let (commit, date) = rest.split_once(' ').expect("commit and date");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text:?}"
    );
    let date: Vec<&str> = date.split('-').collect();
    assert!(
        date.len() == 3 && date.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{text:?}"
    );
    // -V stays the bare version, for scripts that compare it.
    let short = Test::new().args(["-V"]).run().success();
    assert_eq!(
        short.stdout_str(),
        format!("stencil {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    Test::new()
        .args(["render", "--no-such-flag"])
        .run()
        .code(2)
        .stderr_has("--no-such-flag");
}

#[test]
fn render_without_templates_is_a_usage_error() {
    Test::new()
        .args(["render"])
        .run()
        .code(2)
        .stderr_has("no templates");
}

#[test]
fn options_can_come_from_stencil_environment_variables() {
    Test::new()
        .file("a.j2", "x={{ env.X }}\n")
        .env("X", "1")
        .env("STENCIL_TEMPLATE", "a.j2:out.conf")
        .args(["render"])
        .run()
        .success()
        .file_is("out.conf", "x=1\n");
}

#[test]
fn every_template_function_and_filter_is_documented() {
    let pages = stencil::man_pages().unwrap();
    let (_, page) = pages
        .iter()
        .find(|(name, _)| name == "stencil-templates.7")
        .expect("stencil-templates.7 is generated");
    let page = String::from_utf8_lossy(page);
    let documented = |forms: &[String]| forms.iter().any(|f| page.contains(f.as_str()));
    for name in stencil::FUNCTIONS {
        assert!(
            documented(&[format!("\\fB{name}("), format!("\\fB{name}.")]),
            "template function {name} is not documented in doc/stencil-templates.7.md"
        );
    }
    for name in stencil::FILTERS {
        assert!(
            documented(&[format!("\\fB{name}\\fR"), format!("\\fB{name}(")]),
            "filter {name} is not documented in doc/stencil-templates.7.md"
        );
    }
}
