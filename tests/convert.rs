//! `stencil convert`: the migration corpus under templates-examples/migration
//! converts and renders byte for byte what confd and consul-template write;
//! what cannot be translated is an error naming file, line, column and
//! construct, with nothing written.

use std::path::Path;

use crate::support::Test;
use crate::support::consul::ConsulServer;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates-examples/migration");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The case's expected output: its one file that is not input.
fn expected(dir: &Path) -> (String, String) {
    let inputs = ["data.yaml", "kv.txt", "config.hcl"];
    let file = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| !inputs.contains(&n.as_str()) && !n.ends_with(".ctmpl"))
        .unwrap_or_else(|| panic!("{} has no expected output", dir.display()));
    let text = std::fs::read_to_string(dir.join(&file)).unwrap();
    (file, text)
}

fn cases(kind: &str) -> Vec<(String, std::path::PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(Path::new(CORPUS).join(kind))
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .collect();
    found.sort();
    assert!(!found.is_empty());
    found
}

#[test]
fn every_confd_case_converts_and_renders_byte_for_byte() {
    for (name, dir) in cases("confd") {
        let mut test = Test::new();
        copy_tree(&dir, &test.path(&name));
        let data = test.path(&format!("{name}/data.yaml"));
        let out = format!("{name}/conv");
        test = test.args([
            "convert",
            "confd",
            &format!("{name}/confdir"),
            "--backend",
            "file",
            "--file",
            data.to_str().unwrap(),
            "-o",
            &out,
        ]);
        test.run().success();
        let toml = std::fs::read_to_string(test.path(&format!("{out}/stencil.toml"))).unwrap();
        assert!(toml.contains("trim_blocks = false"), "{name}: {toml}");
        // confd writes into an existing directory, as stencil does.
        std::fs::create_dir_all(test.path(&format!("{out}/rendered"))).unwrap();
        test = test.args(["render", "-c", &format!("{out}/stencil.toml")]);
        test.run().success();
        let (file, text) = expected(&dir);
        let got = std::fs::read_to_string(test.path(&format!("{out}/rendered/{file}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, text, "{name}: rendered output differs from confd's");
    }
}

fn put_kv(server: &ConsulServer, dir: &Path) {
    let kv = std::fs::read_to_string(dir.join("kv.txt")).unwrap();
    for line in kv.lines() {
        let (k, v) = line.split_once('=').unwrap();
        server.put(k, v);
    }
}

#[test]
fn every_consul_template_case_converts_and_renders_byte_for_byte() {
    let server = ConsulServer::start();
    for (name, dir) in cases("consul-template") {
        put_kv(&server, &dir);
        let mut test = Test::new().env("APP_NAME", "shop");
        copy_tree(&dir, &test.path(&name));
        let out = format!("{name}/conv");
        let (file, text) = expected(&dir);
        let mut args = vec!["convert".to_string(), "consul-template".into()];
        if dir.join("config.hcl").exists() {
            args.push(format!("{name}/config.hcl"));
        } else {
            let tmpl = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .find(|n| n.ends_with(".ctmpl"))
                .unwrap();
            args.push("--template".into());
            args.push(format!("{name}/{tmpl}:rendered/{file}"));
        }
        args.extend([
            "--consul-addr".into(),
            server.addr(),
            "-o".into(),
            out.clone(),
        ]);
        test = test.args(&args);
        test.run().success();
        test = test.args(["render", "-c", &format!("{out}/stencil.toml")]);
        test.run().success();
        let got = std::fs::read_to_string(test.path(&format!("{out}/rendered/{file}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got, text,
            "{name}: rendered output differs from consul-template's"
        );
    }
}

#[test]
fn an_untranslatable_template_names_file_line_column_and_construct() {
    Test::new()
        .file(
            "c/conf.d/a.toml",
            "[template]\nsrc = \"a.tmpl\"\ndest = \"a.conf\"\n",
        )
        .file("c/templates/a.tmpl", "ok\n  {{ define \"x\" }}{{ end }}\n")
        .args(["convert", "confd", "c", "--backend", "env", "-o", "out"])
        .run()
        .code(1)
        .stderr_has("c/templates/a.tmpl:2:3")
        .stderr_has("define")
        .no_file("out/stencil.toml");
    Test::new()
        .file(
            "c/conf.d/a.toml",
            "[template]\nsrc = \"a.tmpl\"\ndest = \"a.conf\"\n",
        )
        .file(
            "c/templates/a.tmpl",
            "x {{ frobnicate \"secret-value\" }}\n",
        )
        .args(["convert", "confd", "c", "-o", "out"])
        .run()
        .code(1)
        .stderr_has("a.tmpl:1:6")
        .stderr_has("frobnicate")
        .stderr_lacks("secret-value")
        .no_file("out/stencil.toml");
}

#[test]
fn convert_refuses_to_overwrite_without_force_and_reports_missing_functions() {
    let t = Test::new()
        .file(
            "c/conf.d/a.toml",
            "[template]\nsrc = \"a.tmpl\"\ndest = \"a.conf\"\n",
        )
        .file(
            "c/templates/a.tmpl",
            "{{ range datacenters }}{{ . }}{{ end }}\n",
        )
        .file("out/stencil.toml", "keep\n");
    let t = t.args(["convert", "confd", "c", "-o", "out"]);
    t.run()
        .code(2)
        .stderr_has("--force")
        .file_is("out/stencil.toml", "keep\n");
    let t = t.args(["convert", "confd", "c", "-o", "out", "--force"]);
    let stdout = t.run().success().stdout_str();
    assert!(
        stdout.contains("calls datacenters, which stencil does not have yet"),
        "{stdout}"
    );
}

#[test]
fn a_method_call_that_cannot_be_translated_names_file_line_column_and_method() {
    Test::new()
        .file(
            "c/conf.d/a.toml",
            "[template]\nsrc = \"a.tmpl\"\ndest = \"a.conf\"\n",
        )
        .file(
            "c/templates/a.tmpl",
            "ok\n{{range gets \"/x\"}}\n  {{.Value.Trim \"secret-value\"}}{{end}}\n",
        )
        .args(["convert", "confd", "c", "-o", "out"])
        .run()
        .code(1)
        .stderr_has(
            "c/templates/a.tmpl:3:3: the method call .Trim cannot be translated \
             (stencil's datetime() has .Format(layout), .Unix(), .UTC() and .Local()) \
             (construct: .Trim)",
        )
        .stderr_lacks("secret-value")
        .no_file("out/stencil.toml");
}

/// A TZif file (version 2) with no transitions and one zone: `abbr` at
/// `offset` seconds east of UTC, and `footer` as its rule.
fn tzif(offset: i32, abbr: &str, footer: &str) -> Vec<u8> {
    let mut block = Vec::new();
    let header = |block: &mut Vec<u8>| {
        block.extend(b"TZif2");
        block.extend([0; 15]);
        let chars = u32::try_from(abbr.len() + 1).unwrap();
        for n in [0, 0, 0, 0, 1, chars] {
            block.extend(u32::to_be_bytes(n));
        }
        block.extend(offset.to_be_bytes());
        block.extend([0, 0]);
        block.extend(abbr.as_bytes());
        block.push(0);
    };
    header(&mut block);
    header(&mut block);
    block.extend(format!("\n{footer}\n").as_bytes());
    block
}

#[test]
fn confd_datetime_is_local_time_as_go_finds_the_zone() {
    let mut t = Test::new()
        .file("india", tzif(19_800, "IST", "IST-5:30"))
        .file(
            "c/conf.d/a.toml",
            "[template]\nsrc = \"a.tmpl\"\ndest = \"a.conf\"\n",
        )
        .file(
            "c/templates/a.tmpl",
            "{{datetime.Format \"MST -0700 Z07:00\"}} {{(datetime.UTC).Format \"MST Z07:00\"}} \
             {{if gt datetime.Unix 0}}after 1970{{end}}\n",
        )
        .args(["convert", "confd", "c", "--backend", "env", "-o", "out"]);
    t.run().success();
    let india = t.path("india").to_str().unwrap().to_string();
    for (tz, want) in [
        (india.clone(), "IST +0530 +05:30 UTC Z after 1970\n"),
        (format!(":{india}"), "IST +0530 +05:30 UTC Z after 1970\n"),
        // Go: an empty TZ, or a zone it cannot load, is UTC.
        (String::new(), "UTC +0000 Z UTC Z after 1970\n"),
        ("No/Such_Zone".into(), "UTC +0000 Z UTC Z after 1970\n"),
    ] {
        t = t.env("TZ", &tz).args(["render", "-c", "out/stencil.toml"]);
        t.run().success().file_is("out/a.conf", want);
    }
}
