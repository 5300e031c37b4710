//! Go template tree -> Jinja text that renders the same bytes under
//! `trim_blocks = false`, `lstrip_blocks = false`,
//! `keep_trailing_newline = true`.
//!
//! Go's trim markers were applied by the lexer, so the text is emitted as
//! it stands and no Jinja tag trims anything. Values are printed through
//! `print()` unless known to be strings, so a list prints `[a b c]` and a
//! float `1.5` as Go prints them.

use std::collections::{BTreeSet, HashMap};

use super::GoError;
use super::builtins::{RESERVED, builtin, escape_text, jinja_string, number};
use super::names::{OTHER_FUNCS, STRING_FUNCS, is_time, offset_of, returns_list};
use super::parse::{Expr, Node, Pipeline};

/// What a translation found worth telling the user.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Functions called that stencil does not define (yet).
    pub missing: BTreeSet<String>,
}

pub(crate) struct Translator<'a> {
    /// stencil's own functions.
    known: &'a [&'a str],
    /// consul-template's functions rather than confd's, where a name means
    /// different things (`ls`: pairs there, names in confd).
    consul_template: bool,
    /// The expression `.` stands for, innermost last; None at the top,
    /// where confd and consul-template pass no data.
    dots: Vec<Option<String>>,
    /// Go variable -> (Jinja name, loop depth of its declaration).
    vars: HashMap<String, (String, usize)>,
    loops: usize,
    fresh: usize,
    pub notes: Notes,
}

fn err(offset: usize, what: &str, construct: &str) -> GoError {
    GoError::new(offset, what, construct)
}

impl<'a> Translator<'a> {
    pub(crate) fn new(known: &'a [&'a str], consul_template: bool) -> Translator<'a> {
        Translator {
            known,
            consul_template,
            dots: vec![None],
            vars: HashMap::new(),
            loops: 0,
            fresh: 0,
            notes: Notes::default(),
        }
    }

    pub(crate) fn nodes(&mut self, nodes: &[Node], out: &mut String) -> Result<(), GoError> {
        for node in nodes {
            self.node(node, out)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, out: &mut String) -> Result<(), GoError> {
        match node {
            Node::Text(t) => out.push_str(&escape_text(t)),
            Node::Break => out.push_str("{% break %}"),
            Node::Continue => out.push_str("{% continue %}"),
            Node::Action(p) => {
                if p.decl.is_empty() {
                    let (e, is_str) = self.pipeline(p)?;
                    if is_str {
                        out.push_str(&format!("{{{{ {e} }}}}"));
                    } else {
                        out.push_str(&format!("{{{{ print({e}) }}}}"));
                    }
                } else {
                    self.declare(p, out)?;
                }
            }
            Node::If(branches, else_body) => {
                for (i, (cond, body)) in branches.iter().enumerate() {
                    let c = self.condition(cond, out)?;
                    let tag = if i == 0 { "if" } else { "elif" };
                    out.push_str(&format!("{{% {tag} {c} %}}"));
                    self.nodes(body, out)?;
                }
                if !else_body.is_empty() {
                    out.push_str("{% else %}");
                    self.nodes(else_body, out)?;
                }
                out.push_str("{% endif %}");
            }
            Node::Range(p, body, else_body) => self.range(p, body, else_body, out)?,
            Node::With(p, body, else_body) => {
                let name = self.condition(p, out)?;
                let name = if p.decl.is_empty() {
                    let n = self.fresh_name("with");
                    out.push_str(&format!("{{% set {n} = {name} %}}"));
                    n
                } else {
                    name
                };
                out.push_str(&format!("{{% if {name} %}}"));
                self.dots.push(Some(name));
                self.nodes(body, out)?;
                self.dots.pop();
                if !else_body.is_empty() {
                    out.push_str("{% else %}");
                    self.nodes(else_body, out)?;
                }
                out.push_str("{% endif %}");
            }
        }
        Ok(())
    }

    /// The condition of `if`/`with`; a declaration in it becomes a `set`
    /// before the tag and the condition is the variable.
    fn condition(&mut self, p: &Pipeline, out: &mut String) -> Result<String, GoError> {
        if p.decl.is_empty() {
            return Ok(self.pipeline(p)?.0);
        }
        self.declare(p, out)?;
        Ok(self.vars[&p.decl[0]].0.clone())
    }

    fn declare(&mut self, p: &Pipeline, out: &mut String) -> Result<(), GoError> {
        if p.decl.len() != 1 {
            return Err(err(
                p.offset,
                "two variables are only allowed in range",
                "$a, $b :=",
            ));
        }
        let go = &p.decl[0];
        let (e, _) = self.pipeline(p)?;
        if p.assign {
            let Some((name, depth)) = self.vars.get(go).cloned() else {
                return Err(err(p.offset, "undefined variable", &format!("${go}")));
            };
            if depth != self.loops {
                return Err(err(
                    p.offset,
                    "assigning inside range to a variable declared outside it cannot be translated (Jinja's loop scope)",
                    &format!("${go} ="),
                ));
            }
            out.push_str(&format!("{{% set {name} = {e} %}}"));
        } else {
            let name = self.bind(go);
            out.push_str(&format!("{{% set {name} = {e} %}}"));
        }
        Ok(())
    }

    fn range(
        &mut self,
        p: &Pipeline,
        body: &[Node],
        else_body: &[Node],
        out: &mut String,
    ) -> Result<(), GoError> {
        if p.assign {
            return Err(err(
                p.offset,
                "range with = cannot be translated",
                "range $x =",
            ));
        }
        let (e, _) = self.pipeline(p)?;
        // Go ranges over a map's values (sorted by key), Jinja over its
        // keys: what may be a map goes through go_range, keys dropped.
        let e = if returns_list(p) {
            e
        } else {
            format!("go_range({e})")
        };
        let item = |n: &str| {
            if returns_list(p) {
                n.to_string()
            } else {
                format!("_, {n}")
            }
        };
        self.loops += 1;
        let head = match p.decl.as_slice() {
            [] => {
                let n = self.fresh_name("item");
                let h = format!("{{% for {} in {e} %}}", item(&n));
                self.dots.push(Some(n));
                h
            }
            [v] => {
                let n = self.bind(v);
                self.dots.push(Some(n.clone()));
                format!("{{% for {} in {e} %}}", item(&n))
            }
            [k, v] => {
                let kn = self.bind(k);
                let vn = self.bind(v);
                self.dots.push(Some(vn.clone()));
                let e = if returns_list(p) {
                    format!("go_range({e})")
                } else {
                    e
                };
                format!("{{% for {kn}, {vn} in {e} %}}")
            }
            _ => return Err(err(p.offset, "too many variables in range", "range")),
        };
        out.push_str(&head);
        self.nodes(body, out)?;
        self.dots.pop();
        self.loops -= 1;
        if !else_body.is_empty() {
            out.push_str("{% else %}");
            self.nodes(else_body, out)?;
        }
        out.push_str("{% endfor %}");
        Ok(())
    }

    fn bind(&mut self, go: &str) -> String {
        // Go's variable names may start with a digit or hold any letter
        // (`$0`, `$é`); Jinja's are ASCII and start with a letter or `_`.
        // (Found by the go_template fuzz target.)
        let valid = go.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && go.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let mut name = if go.is_empty() {
            "root".to_string()
        } else if valid {
            go.to_string()
        } else {
            self.fresh_name("var")
        };
        while RESERVED.contains(&name.as_str())
            || self.known.contains(&name.as_str())
            || STRING_FUNCS.contains(&name.as_str())
            || OTHER_FUNCS.contains(&name.as_str())
        {
            name.push('_');
        }
        self.vars.insert(go.to_string(), (name.clone(), self.loops));
        name
    }

    fn fresh_name(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("_{base}{}", self.fresh)
    }

    /// A pipeline as one Jinja expression; true when it is known to be a
    /// string (printed as it is).
    fn pipeline(&mut self, p: &Pipeline) -> Result<(String, bool), GoError> {
        let mut acc: Option<(String, bool)> = None;
        for cmd in &p.cmds {
            // Errors found below the action carry no offset: the action's.
            let r = self.command(cmd, acc, p.offset).map_err(|mut e| {
                if e.offset == 0 {
                    e.offset = p.offset;
                }
                e
            });
            acc = Some(r?);
        }
        Ok(acc.unwrap_or_default())
    }

    fn command(
        &mut self,
        cmd: &[Expr],
        piped: Option<(String, bool)>,
        offset: usize,
    ) -> Result<(String, bool), GoError> {
        let first = &cmd[0];
        let Expr::Ident(name, at) = first else {
            if let (Expr::Field(base, method), true) = (first, cmd.len() > 1 || piped.is_some()) {
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(self.expr(a)?.0);
                }
                args.extend(piped.map(|(p, _)| p));
                return self.method(base, method, &args, offset);
            }
            if cmd.len() > 1 || piped.is_some() {
                return Err(err(
                    offset,
                    "a method call or an argument to a non-function cannot be translated",
                    "command",
                ));
            }
            return self.expr(first);
        };
        let mut args = Vec::new();
        for a in &cmd[1..] {
            args.push(self.expr(a)?.0);
        }
        if let Some((p, _)) = piped {
            args.push(p);
        }
        self.call(name, &args, *at)
    }

    fn call(&mut self, name: &str, args: &[String], at: usize) -> Result<(String, bool), GoError> {
        if let Some(r) = builtin(name, args, at)? {
            return Ok(r);
        }
        Ok(match name {
            // Unset is "" in both tools; confd's second argument is the
            // default for unset or empty.
            "env" | "getenv" if args.len() == 1 => {
                (format!("(env[{}] | default(\"\"))", args[0]), true)
            }
            "getenv" if args.len() == 2 => (
                format!("(env[{}] | default({}, true))", args[0], args[1]),
                true,
            ),
            // consul-template's ls and tree give {Key, Value} pairs, stencil's
            // ls gives names: a differently named call, reported as missing.
            "ls" | "tree" | "safeLs" | "safeTree" if self.consul_template => {
                let n = format!("{name}_pairs");
                self.notes.missing.insert(n.clone());
                (format!("{n}({})", args.join(", ")), false)
            }
            // confd's split and contains are Go's strings.Split(s, sep) and
            // strings.Contains(s, substr); stencil's (consul-template's) take
            // the separator or the needle first and mean something else.
            "split" if !self.consul_template && args.len() == 2 => {
                (format!("({}).split({})", args[0], args[1]), false)
            }
            "contains" if !self.consul_template && args.len() == 2 => {
                (format!("({} in {})", args[1], args[0]), false)
            }
            "html" | "js" | "call" => {
                return Err(err(
                    at,
                    &format!("the function {name} cannot be translated"),
                    name,
                ));
            }
            _ if STRING_FUNCS.contains(&name) || OTHER_FUNCS.contains(&name) => {
                if !self.known.contains(&name) {
                    self.notes.missing.insert(name.to_string());
                }
                (
                    format!("{name}({})", args.join(", ")),
                    STRING_FUNCS.contains(&name),
                )
            }
            _ => {
                return Err(err(
                    at,
                    &format!("function {name:?} is not defined by Go, confd or consul-template"),
                    name,
                ));
            }
        })
    }

    fn expr(&mut self, e: &Expr) -> Result<(String, bool), GoError> {
        Ok(match e {
            Expr::Dot => (self.dot()?, false),
            Expr::Nil => ("none".into(), false),
            Expr::Bool(b) => (b.to_string(), false),
            Expr::Number(n) => (number(n).ok_or_else(|| err(0, "bad number", n))?, false),
            Expr::Str(s) => (jinja_string(s), true),
            Expr::Var(v) => match self.vars.get(v) {
                Some((name, _)) => (name.clone(), false),
                None if v.is_empty() => (self.root()?, false),
                None => return Err(err(0, "undefined variable", &format!("${v}"))),
            },
            Expr::Ident(name, at) => self.call(name, &[], *at)?,
            Expr::Field(base, f) if is_time(base) => self.method(base, f, &[], 0)?,
            Expr::Field(base, f) => {
                let (b, _) = self.expr(base)?;
                // confd's and consul-template's pairs have string fields.
                (format!("{b}.{f}"), matches!(f.as_str(), "Key" | "Value"))
            }
            Expr::Paren(p) => {
                let (inner, s) = self.pipeline(p)?;
                (format!("({inner})"), s)
            }
        })
    }

    /// `base.Method args…`: the methods of confd's `datetime` (a Go
    /// time.Time) that stencil's `datetime()` has; any other method call
    /// is an error naming it.
    fn method(
        &mut self,
        base: &Expr,
        method: &str,
        args: &[String],
        offset: usize,
    ) -> Result<(String, bool), GoError> {
        let known = is_time(base)
            && matches!(
                (method, args.len()),
                ("Format", 1) | ("Unix" | "UTC" | "Local", 0)
            );
        if !known {
            return Err(err(
                offset_of(base).unwrap_or(offset),
                &format!(
                    "the method call .{method} cannot be translated (stencil's datetime() has .Format(layout), .Unix(), .UTC() and .Local())"
                ),
                &format!(".{method}"),
            ));
        }
        let (b, _) = self.expr(base)?;
        Ok((
            format!("{b}.{method}({})", args.join(", ")),
            method == "Format",
        ))
    }

    fn dot(&self) -> Result<String, GoError> {
        self.dots.last().cloned().flatten().ok_or_else(|| {
            err(
                0,
                "`.` at the top level: confd and consul-template render with no data",
                ".",
            )
        })
    }

    fn root(&self) -> Result<String, GoError> {
        Err(err(
            0,
            "`$` is the top-level data, which confd and consul-template leave empty",
            "$",
        ))
    }
}
