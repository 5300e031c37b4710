//! confd's and consul-template's template functions, each with the
//! original's semantics (stencil-templates(7), "Aliases").

use crate::support::Test;

const DATA: &str = r#"{"db": {"host": "10.0.0.5", "tags": "a,b,c", "empty": ""}}"#;

fn render(tpl: &str) -> crate::support::Output {
    Test::new()
        .file("a.j2", tpl)
        .file("d.json", DATA)
        .env("STENCIL_EMPTY", "")
        .env("STENCIL_SET", "v")
        .args(["render", "--data", "d.json", "-t", "a.j2"])
        .run()
}

#[test]
fn split_of_an_empty_string_is_an_empty_list() {
    render(
        "{{ split(',', key('db/tags')) | length }} {{ split(',', key('db/empty')) | length }}\n\
         {% for t in split(',', '') %}never{% endfor %}{{ split(',', ' x,y ') | join('|') }}\n",
    )
    .success()
    .stdout_is("3 0\nx|y\n");
}

#[test]
fn json_and_yaml_are_what_consul_template_writes() {
    render(concat!(
        "{{ toJSON({'b': '<&>', 'a': [1, 2]}) }}\n",
        "{{ toJSONPretty({'b': 1, 'a': 'x'}) }}\n",
        "{{ toYAML({'b': 1, 'a': 'x'}) }}\n",
        "end\n",
    ))
    .success()
    .stdout_is(concat!(
        "{\"a\":[1,2],\"b\":\"\\u003c\\u0026\\u003e\"}\n",
        "{\n  \"a\": \"x\",\n  \"b\": 1\n}\n",
        "a: x\nb: 1\n",
        "end\n",
    ));
}

#[test]
fn env_or_default_keeps_a_set_empty_value() {
    render(
        "[{{ envOrDefault('STENCIL_SET', 'd') }}][{{ envOrDefault('STENCIL_EMPTY', 'd') }}]\
         [{{ envOrDefault('STENCIL_UNSET_X', 'd') }}]\n",
    )
    .success()
    .stdout_is("[v][][d]\n");
}

#[test]
fn base64_and_sha256() {
    render(concat!(
        "{{ base64Encode('secret') }} {{ base64Decode('c2VjcmV0') }}\n",
        "{{ sha256Hex('abc') }}\n",
    ))
    .success()
    .stdout_is(
        "c2VjcmV0 secret\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n",
    );
}

#[test]
fn base64_decode_errors_do_not_show_the_value() {
    Test::new()
        .file("a.j2", "{{ base64Decode(env.TOKEN) }}\n")
        .env("TOKEN", "hunter2-s3cr3t!")
        .args(["render", "-t", "a.j2:out"])
        .run()
        .code(1)
        .stderr_has("base64Decode: illegal base64 data")
        .stderr_lacks("hunter2")
        .stderr_lacks("s3cr3t")
        .no_file("out");
}

#[test]
fn in_and_contains_test_list_membership() {
    render(concat!(
        "{{ in(['web', 'db'], 'db') }} {{ in(['web'], 'we') }} {{ contains('web', ['web']) }}\n",
        "{{ in([1, 2], 2) }} {{ in(['1'], 1) }} {{ in('production', 'prod') }}\n",
    ))
    .success()
    .stdout_is("true false true\ntrue false true\n");
}

#[test]
fn regex_match_and_replace_use_go_syntax() {
    render(concat!(
        "{{ regexMatch('^10\\\\.', key('db/host')) }} {{ regexMatch('^192', key('db/host')) }}\n",
        "{{ regexReplaceAll('(\\\\d+)\\\\.(\\\\d+)', '${2}_$1', key('db/host')) }}\n",
    ))
    .success()
    .stdout_is("true false\n0_10.5_0\n");
}

#[test]
fn a_bad_regex_is_an_error_naming_the_function() {
    render("{{ regexMatch('(', 'x') }}\n")
        .code(1)
        .stderr_has("regexMatch: invalid pattern");
}

#[test]
fn confd_get_gives_a_key_value_pair() {
    render("{{ get('/db/host').Key }}={{ get('db/host').Value }}\n")
        .success()
        .stdout_is("/db/host=10.0.0.5\n");
    render("{{ get('/db/nope').Value }}\n")
        .code(1)
        .stderr_has("\"db/nope\" not found");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn timestamp_and_datetime_give_the_current_time_in_go_layouts() {
    let before = unix_now();
    let out = render(concat!(
        "{{ timestamp('unix') }}\n",
        "{{ timestamp() }}\n",
        "{{ timestamp('2006') }} {{ datetime().Format('2006') }}\n",
        "{{ datetime() }}\n",
    ))
    .success()
    .stdout_str();
    let after = unix_now();
    let lines: Vec<&str> = out.lines().collect();
    let unix: u64 = lines[0].parse().unwrap();
    assert!(before <= unix && unix <= after, "{out}");
    // RFC 3339 in UTC: 2026-11-30T00:25:07Z
    assert_eq!(lines[1].len(), 20, "{out}");
    assert!(
        lines[1].ends_with('Z') && lines[1].as_bytes()[10] == b'T',
        "{out}"
    );
    let year = &lines[1][..4];
    assert_eq!(lines[2], format!("{year} {year}"));
    // Go's time.Time: 2026-11-30 00:25:07.123456789 +0000 UTC
    assert!(
        lines[3].starts_with(year) && lines[3].ends_with(" +0000 UTC"),
        "{out}"
    );
}
