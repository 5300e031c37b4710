//! `stencil convert`: confd and consul-template setups -> a stencil.toml
//! and Jinja templates that render the same bytes.
//!
//! - `lex`, `parse`: Go's text/template, as Go reads it (trim markers
//!   applied to the text, comments dropped).
//! - `translate`, `builtins`: the tree as Jinja, under Go's whitespace rules
//!   (`trim_blocks = false`).
//! - `confd`, `consul_template`: their config files -> [`Plan`].
//! - `write`: the output directory and the report.

mod builtins;
mod confd;
mod consul_template;
mod lex;
mod names;
mod parse;
mod translate;
mod write;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{ConvertArgs, ConvertCommand};
use crate::error::Exit;

/// A template that cannot be translated: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoError {
    /// Byte offset in the template source.
    pub offset: usize,
    pub what: String,
    /// The construct, as written (`define`, `$x =`, a function name).
    pub construct: String,
}

impl GoError {
    pub(crate) fn new(offset: usize, what: &str, construct: &str) -> GoError {
        GoError {
            offset,
            what: what.to_string(),
            construct: construct.to_string(),
        }
    }

    /// The message with `file:line:col`.
    pub fn at(&self, file: &Path, src: &str) -> String {
        let before = &src[..self.offset.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
        format!(
            "{}:{line}:{col}: {} (construct: {})",
            file.display(),
            self.what,
            self.construct
        )
    }
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (construct: {})", self.what, self.construct)
    }
}

/// A converted template's text and the stencil functions it calls that
/// stencil does not have.
#[derive(Debug)]
pub struct Converted {
    pub jinja: String,
    pub missing: Vec<String>,
}

/// Translates one Go template to Jinja (for the fuzz target and tests):
/// with confd's functions, or consul-template's.
pub fn go_to_jinja(src: &str, consul_template: bool) -> Result<Converted, GoError> {
    let nodes = parse::parse(src)?;
    let mut t = translate::Translator::new(crate::template::FUNCTIONS, consul_template);
    let mut out = String::new();
    t.nodes(&nodes, &mut out)?;
    Ok(Converted {
        jinja: out,
        missing: t.notes.missing.into_iter().collect(),
    })
}

/// One template of the plan: where its Go source is and what stencil.toml
/// says of it.
#[derive(Debug, Default)]
pub(crate) struct PlanTemplate {
    pub go_source: PathBuf,
    /// The file name under `templates/` in the output.
    pub name: String,
    pub destination: Option<String>,
    pub data: Option<String>,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub check: Option<String>,
    pub reload: Option<String>,
    pub create_dirs: bool,
}

/// What the output directory will hold, and the judgement calls made.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// `[sources.NAME]` tables, as TOML text.
    pub sources: Vec<(String, toml::Table)>,
    pub templates: Vec<PlanTemplate>,
    pub wait: Option<(String, Option<String>)>,
    pub report: Vec<String>,
    pub consul_template: bool,
}

pub(crate) fn run(args: &ConvertArgs) -> Result<Exit> {
    let plan = match &args.command {
        ConvertCommand::Confd(a) => confd::plan(a)?,
        ConvertCommand::ConsulTemplate(a) => consul_template::plan(a)?,
    };
    write::write(plan, args.output.as_ref(), args.force)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's property on every prefix of tricky inputs: no
    /// panic, errors point inside the text, translations parse as Jinja.
    #[test]
    fn every_prefix_translates_to_valid_jinja_or_errs_inside_the_text() {
        let inputs = [
            "a {{- /* c */ -}} b {{if and .X (not $)}}{{else if eq 1 2 3}}{{else}}{{end}}",
            "{{range $i, $e := getvs \"/a/*\"}}{{$i}}{{.}}{{break}}{{else}}none{{end}}{",
            "{{with $x := getv \"/k\" \"d\"}}{{$x}}{{printf \"%5.2f|%-3s\" 1.5 `raw`}}{{end}}",
            "{% raw %}{# {{ \"{{\" }} {{ 'a' }} {{ 0x1F }} {{ -1.5e3 }} {{ (len \"é\") }}",
            "{{ $a := 1 }}{{ range getvs \"/x\" }}{{ $a = 2 }}{{ end }}{{ index . 1 }}",
            "{{$0 := get \"/a\"}}{{$0.Key}}{{$é := 1}}{{$é}}{{range $1, $_2 := ls \"/\"}}{{$1}}{{end}}",
            "{{with $x := getv \"/a\"}}{{$x}}{{else with getv \"/b\"}}{{.}}{{else}}n{{end}}\
             {{range $v := json (getv \"/j\")}}{{$v}}{{end}}{{datetime.Format \"2006\"}}\
             {{(datetime.UTC).Unix}}{{ \"x\" | datetime.Format }}{{.X.Y 1}}",
        ];
        for input in inputs {
            for (i, _) in input.char_indices() {
                let src = &input[..i];
                for ct in [false, true] {
                    match go_to_jinja(src, ct) {
                        Ok(c) => {
                            let ws = crate::template::Whitespace {
                                trim_blocks: false,
                                lstrip_blocks: false,
                                keep_trailing_newline: true,
                            };
                            let parsed = crate::template::Template::with_whitespace(
                                Path::new("t.j2"),
                                c.jinja.clone(),
                                ws,
                            );
                            assert!(parsed.is_ok(), "{src:?} -> {:?}", c.jinja);
                        }
                        Err(e) => assert!(src.is_char_boundary(e.offset) && e.offset <= src.len()),
                    }
                }
            }
        }
    }

    #[test]
    fn a_field_after_a_space_is_an_argument_not_a_chain() {
        let c = go_to_jinja(
            "{{range gets \"/x\"}}{{base .Key}}{{(base .Key).A}}{{end}}",
            false,
        )
        .unwrap();
        assert_eq!(
            c.jinja,
            "{% for _item1 in gets(\"/x\") %}{{ base(_item1.Key) }}{{ print((base(_item1.Key)).A) }}{% endfor %}"
        );
    }

    #[test]
    fn a_range_over_what_may_be_a_map_walks_its_values() {
        let c = go_to_jinja(
            "{{range $v := json (getv \"/p\")}}{{$v}}{{end}}{{range getvs \"/x\"}}{{.}}{{end}}",
            false,
        )
        .unwrap();
        assert_eq!(
            c.jinja,
            "{% for _, v in go_range(json((getv(\"/p\")))) %}{{ print(v) }}{% endfor %}\
             {% for _item1 in getvs(\"/x\") %}{{ print(_item1) }}{% endfor %}"
        );
    }

    #[test]
    fn else_with_chains_as_go_reads_it() {
        let c = go_to_jinja(
            "{{with getv \"/a\"}}a{{else with $b := getv \"/b\"}}{{$b}}{{else}}c{{end}}",
            false,
        )
        .unwrap();
        assert_eq!(
            c.jinja,
            "{% set _with1 = getv(\"/a\") %}{% if _with1 %}a{% else %}\
             {% set b = getv(\"/b\") %}{% if b %}{{ print(b) }}{% else %}c{% endif %}{% endif %}"
        );
        let e = go_to_jinja("{{if 1}}{{else with 2}}{{end}}", false).unwrap_err();
        assert_eq!(e.construct, "else");
    }

    #[test]
    fn go_whitespace_and_text_survive_translation() {
        let c = go_to_jinja(
            "a {\n{{- range getvs \"/x\"}}\n  {{.}};\n{{- end}}\n}\n",
            false,
        )
        .unwrap();
        assert_eq!(
            c.jinja,
            "a {{ \"{\" }}{% for _item1 in getvs(\"/x\") %}\n  {{ print(_item1) }};{% endfor %}\n}\n"
        );
    }
}
