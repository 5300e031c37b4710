//! The template language: minijinja configured as DESIGN.md says, plus
//! stencil's functions and filters, with every read recorded.
//!
//! Jinja2 users expect strict undefined values, `trim_blocks` and a kept
//! trailing newline; auto-escaping is off because the output is
//! configuration, not HTML.
//!
//! Reads are recorded per render: a template's dependencies are what it
//! actually read (including keys it asked for that did not exist), so watch
//! mode can watch exactly those, and `stencil deps` can show them.
//!
//! - `reads`: what a render may read and what it read, and the render in
//!   progress that the functions record into.
//! - `functions`, `filters`: what stencil adds to minijinja.

mod aliases;
mod catalog;
mod dns;
mod encode;
mod filters;
mod functions;
mod gofmt;
mod gotime;
mod limits;
mod reads;
mod substitution;
mod tz;
mod vars;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use crate::error::UsageError;
pub use filters::FILTERS;
pub use functions::FUNCTIONS;
pub use limits::{LimitExceeded, Limits, MAX_DEPTH_CEILING};
pub use reads::{Dep, Deps, Scope};
use reads::{RenderState, lock};

/// The outcome of one render: the text, or the error, and always the reads
/// made up to that point (a template waiting for a key depends on it).
#[derive(Debug)]
pub struct Rendered {
    pub result: Result<String>,
    pub deps: Deps,
}

/// Jinja's whitespace switches, per template (`trim_blocks`,
/// `lstrip_blocks`, `keep_trailing_newline` in stencil.toml). The default
/// is what Jinja2 users of config tools expect: blocks trimmed, trailing
/// newline kept; a template converted from Go's text/template turns
/// `trim_blocks` off, since Go keeps every newline it is not told to trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Whitespace {
    pub trim_blocks: bool,
    pub lstrip_blocks: bool,
    pub keep_trailing_newline: bool,
}

impl Default for Whitespace {
    fn default() -> Whitespace {
        Whitespace {
            trim_blocks: true,
            lstrip_blocks: false,
            keep_trailing_newline: true,
        }
    }
}

/// A parsed template, ready to render any number of times.
pub struct Template {
    path: PathBuf,
    env: Environment<'static>,
    /// Files pulled in by include/import/extends, recorded by the loader;
    /// the loader runs once per file, so they are kept across renders.
    included: Arc<Mutex<BTreeSet<PathBuf>>>,
    limits: Limits,
    /// The environment's globals, which a data file's keys do not hide.
    globals: Arc<BTreeSet<String>>,
    /// A template of only text and `{{ env.NAME }}` renders from this, and
    /// is compiled only if it must be rendered the ordinary way.
    substitution: Option<substitution::Plan>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("path", &self.path)
            .finish()
    }
}

impl Template {
    /// Reads and parses a template. A syntax error is a usage error naming
    /// file, line and column.
    pub(crate) fn load(path: &Path, whitespace: Whitespace) -> Result<Template> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read template {}", path.display()))?;
        Template::with_whitespace(path, source, whitespace)
    }

    /// A template from text, with the default whitespace switches.
    pub fn from_source(path: &Path, source: String) -> Result<Template> {
        Template::with_whitespace(path, source, Whitespace::default())
    }

    /// A template from text, with the given whitespace switches.
    pub fn with_whitespace(
        path: &Path,
        source: String,
        whitespace: Whitespace,
    ) -> Result<Template> {
        match substitution::Plan::of(&source, whitespace.keep_trailing_newline) {
            // Compiled by the loader if ever needed: it has no syntax error.
            Some(plan) => Ok(Template::build(path, Some((source, plan)), whitespace)),
            None => Template::compiled(path, source, whitespace),
        }
    }

    /// A template compiled now, whatever its shape: a syntax error is a
    /// usage error naming file, line and column.
    fn compiled(path: &Path, source: String, whitespace: Whitespace) -> Result<Template> {
        let mut template = Template::build(path, None, whitespace);
        let name = path.display().to_string();
        template.env.add_template_owned(name, source).map_err(|e| {
            anyhow::Error::new(e).context(UsageError(format!(
                "template {} has a syntax error",
                path.display()
            )))
        })?;
        Ok(template)
    }

    /// The environment, with a loader for the files the template includes
    /// and, for a substitution-only template, for the template itself.
    fn build(
        path: &Path,
        substitution: Option<(String, substitution::Plan)>,
        whitespace: Whitespace,
    ) -> Template {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let included = Arc::new(Mutex::new(BTreeSet::new()));
        let limits = Limits::default();
        let mut env = new_environment(whitespace);
        apply_limits(&mut env, &limits);
        let loader_included = included.clone();
        let name = path.display().to_string();
        let (own_source, plan) = substitution.unzip();
        env.set_loader(move |requested| {
            if requested == name
                && let Some(source) = &own_source
            {
                return Ok(Some(source.clone()));
            }
            let file = dir.join(requested);
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    lock(&loader_included).insert(file);
                    Ok(Some(text))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("cannot read {}: {e}", file.display()),
                )),
            }
        });
        let globals = Arc::new(env.globals().map(|(name, _)| name.to_string()).collect());
        Template {
            path: path.to_path_buf(),
            env,
            included,
            limits,
            globals,
            substitution: plan,
        }
    }

    /// Renders from now on within `limits` (the defaults until then).
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        apply_limits(&mut self.env, &limits);
        self.limits = limits;
    }

    /// Top-level names the template uses that are neither stencil's functions,
    /// nor defined in the template, nor keys of the default data file's
    /// document: they are undefined whenever they are reached.
    pub(crate) fn unknown_names(&self, scope: &Scope) -> Vec<String> {
        let Ok(tmpl) = self.env.get_template(&self.path.display().to_string()) else {
            return Vec::new();
        };
        let data: BTreeSet<String> = scope
            .default_source
            .as_deref()
            .and_then(|name| scope.sources.get(name))
            .and_then(|src| src.document())
            .and_then(Result::ok)
            .and_then(|doc| doc.as_object().map(|o| o.keys().cloned().collect()))
            .unwrap_or_default();
        let mut unknown: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|n| !self.globals.contains(n) && !data.contains(n))
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "loop" | "self" | "super" | "caller" | "varargs" | "kwargs" | vars::VARS
                )
            })
            .collect();
        unknown.sort();
        unknown
    }

    /// Renders with the reads recorded.
    pub fn render(&self, scope: &Scope) -> Rendered {
        let dir = self.path.parent().unwrap_or(Path::new("")).to_path_buf();
        if let Some(plan) = &self.substitution {
            let state = RenderState::new(scope.clone(), dir.clone(), self.limits);
            if let (Some(text), mut deps) = RenderState::run(state, || plan.render(&self.limits)) {
                deps.read.insert(Dep::File {
                    path: self.path.clone(),
                });
                return Rendered {
                    result: Ok(text),
                    deps,
                };
            }
        }
        let state = RenderState::new(scope.clone(), dir, self.limits);
        let context = Value::from_object(vars::DataContext {
            state: state.clone(),
            globals: self.globals.clone(),
        });
        let name = self.path.display().to_string();
        let mut out = limits::CappedOutput::new(self.limits.max_output);
        let (result, mut deps) = RenderState::run(state, || {
            self.env
                .get_template(&name)
                .and_then(|t| t.render_captured_to(context, &mut out))
                .map(drop)
        });
        deps.read.insert(Dep::File {
            path: self.path.clone(),
        });
        for path in lock(&self.included).iter() {
            deps.read.insert(Dep::File { path: path.clone() });
        }
        let result = match result {
            Err(_) if out.over => Err(anyhow::Error::new(LimitExceeded(format!(
                "the output is larger than max_output ({} bytes); raise [limits] max_output \
                 if that is meant",
                self.limits.max_output
            )))
            .context(format!("cannot render template {}", self.path.display()))),
            Err(e) => Err(match limits::explain(&e, &self.limits) {
                // minijinja's error stays in the chain for its location.
                Some(why) => anyhow::Error::new(e)
                    .context(LimitExceeded(why))
                    .context(format!("cannot render template {}", self.path.display())),
                None => explain(e, &deps, &self.path),
            }),
            Ok(()) => String::from_utf8(out.bytes).map_err(|_| {
                anyhow::anyhow!("template {} rendered invalid UTF-8", self.path.display())
            }),
        };
        Rendered { result, deps }
    }
}

/// Adds what stencil knows about a render error: which environment
/// variable was unset, which key was missing.
fn explain(err: Error, deps: &Deps, path: &Path) -> anyhow::Error {
    let line_text = err
        .template_source()
        .zip(err.line())
        .and_then(|(src, line)| src.lines().nth(line.wrapping_sub(1)))
        .unwrap_or_default()
        .to_string();
    let unset_env: Vec<&str> = deps
        .missing
        .iter()
        .filter_map(|d| match d {
            Dep::Env { name } if line_text.contains(name.as_str()) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut error = anyhow::Error::new(err);
    if err_is_undefined(&error) && !unset_env.is_empty() {
        let names = unset_env
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        error = error.context(format!(
            "environment variable {names} is not set (for an optional one write env.{} | default(\"…\"))",
            unset_env[0]
        ));
    }
    error.context(format!("cannot render template {}", path.display()))
}

fn err_is_undefined(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Error>()
        .is_some_and(|e| e.kind() == ErrorKind::UndefinedError)
}

/// Fuel and recursion limit; the output and value caps are checked at
/// render time from [`Template::limits`].
fn apply_limits(env: &mut Environment<'static>, limits: &Limits) {
    env.set_fuel(Some(limits.render_fuel));
    env.set_recursion_limit(limits.max_depth);
}

fn new_environment(whitespace: Whitespace) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(whitespace.trim_blocks)
            .lstrip_blocks(whitespace.lstrip_blocks)
            .keep_trailing_newline(whitespace.keep_trailing_newline)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(true);
    env.set_auto_reload(false);
    // Booleans print as `true`/`false`, not Python's `True`/`False`: the
    // output is YAML, TOML, JSON, nginx, where only the lowercase form is
    // valid, and it is what confd and consul-template print.
    env.set_formatter(|out, state, value| match value.kind() {
        minijinja::value::ValueKind::Bool => out
            .write_str(if value.is_true() { "true" } else { "false" })
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    });

    // Jinja2 templates call Python methods (`d.items()`, `s.split(',')`);
    // people porting templates from Python tools expect them to work.
    // (Through limits.rs, which refuses a `replace`, `join` or `format` that
    // would build a value larger than max_output.)
    env.set_unknown_method_callback(limits::method_callback);

    functions::register(&mut env);
    gofmt::register(&mut env);
    aliases::register(&mut env);
    catalog::register(&mut env);
    dns::register(&mut env);
    encode::register(&mut env);
    gotime::register(&mut env);
    filters::register(&mut env);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_list_matches_the_environment() {
        let env = new_environment(Whitespace::default());
        let builtin: BTreeSet<String> = Environment::new()
            .globals()
            .map(|(name, _)| name.to_string())
            .collect();
        let ours: BTreeSet<&str> = env
            .globals()
            .map(|(name, _)| name)
            .filter(|name| !builtin.contains(*name))
            .collect();
        assert_eq!(ours, FUNCTIONS.iter().copied().collect());
    }
}
