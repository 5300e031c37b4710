//! `stencil convert`: confd and consul-template setups -> a stencil.toml
//! and Jinja templates that render the same bytes.
//!
//! - `lex`, `parse`: Go's text/template, as Go reads it (trim markers
//!   applied to the text, comments dropped).
//! - `translate`: the tree as Jinja, under Go's whitespace rules
//!   (`trim_blocks = false`).
//! - `confd`, `consul_template`: their config files -> [`Plan`].
//! - `write`: the output directory and the report.

mod confd;
mod consul_template;
mod lex;
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
