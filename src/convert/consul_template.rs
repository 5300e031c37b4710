//! consul-template's HCL config (`consul { address token }`, `wait`,
//! `template { source destination contents command perms backup wait
//! create_dest_dirs user group }`) or its `-template in:out:cmd` flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hcl::{Body, Expression};

use super::{Plan, PlanTemplate};
use crate::cli::ConsulTemplateArgs;

const TEMPLATE_KEYS: &[&str] = &[
    "source",
    "destination",
    "contents",
    "command",
    "command_timeout",
    "perms",
    "backup",
    "wait",
    "create_dest_dirs",
    "user",
    "group",
    "error_on_missing_key",
    "left_delimiter",
    "right_delimiter",
];

pub(super) fn plan(args: &ConsulTemplateArgs) -> Result<Plan> {
    let mut plan = Plan {
        consul_template: true,
        ..Plan::default()
    };
    let mut consul = toml::Table::new();
    consul.insert("kind".into(), "consul".into());
    if let Some(config) = &args.config {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("cannot read {}", config.display()))?;
        let body: Body =
            hcl::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        read_body(config, &body, &mut plan, &mut consul)?;
    }
    if let Some(addr) = &args.consul_addr {
        consul.insert("address".into(), addr.clone().into());
    }
    for flag in &args.templates {
        let mut parts = flag.splitn(3, ':');
        let source = parts.next().unwrap_or_default();
        let Some(dest) = parts.next() else {
            bail!("-template {flag:?}: expected IN:OUT[:COMMAND]");
        };
        let name = unique(&plan, source);
        plan.templates.push(PlanTemplate {
            go_source: PathBuf::from(source),
            name,
            destination: Some(dest.to_string()),
            reload: parts.next().map(str::to_string),
            create_dirs: true,
            ..PlanTemplate::default()
        });
    }
    if plan.templates.is_empty() {
        bail!("no templates: give a config file with template blocks or --template IN:OUT[:CMD]");
    }
    plan.sources.push(("consul".into(), consul));
    for t in &mut plan.templates {
        t.data = Some("consul".into());
    }
    Ok(plan)
}

fn read_body(file: &Path, body: &Body, plan: &mut Plan, consul: &mut toml::Table) -> Result<()> {
    for attr in body.attributes() {
        match attr.key() {
            "wait" => plan.wait = Some(wait(file, attr.expr())?),
            other => plan.report.push(format!(
                "{}: top-level {other} is not converted",
                file.display()
            )),
        }
    }
    for block in body.blocks() {
        match block.identifier() {
            "consul" => {
                for attr in block.body().attributes() {
                    match attr.key() {
                        "address" => {
                            consul.insert("address".into(), string(file, attr.expr(), "address")?.into());
                        }
                        // The token goes to the environment, never into a
                        // file stencil writes: stencil reads CONSUL_HTTP_TOKEN.
                        "token" => plan.report.push(format!(
                            "{}: consul.token is not copied into stencil.toml; set CONSUL_HTTP_TOKEN or token_file",
                            file.display()
                        )),
                        other => plan.report.push(format!(
                            "{}: consul.{other} is not converted",
                            file.display()
                        )),
                    }
                }
            }
            "wait" => {
                let get = |k: &str| {
                    block
                        .body()
                        .attributes()
                        .find(|a| a.key() == k)
                        .map(|a| string(file, a.expr(), k))
                };
                let min = get("min").transpose()?.unwrap_or_else(|| "0s".into());
                plan.wait = Some((min, get("max").transpose()?));
            }
            "template" => {
                let t = template(file, block.body(), plan)?;
                plan.templates.push(t);
            }
            other => plan.report.push(format!(
                "{}: the {other} block is not converted",
                file.display()
            )),
        }
    }
    Ok(())
}

fn template(file: &Path, body: &Body, plan: &mut Plan) -> Result<PlanTemplate> {
    let base = file.parent().unwrap_or(Path::new(""));
    let mut t = PlanTemplate::default();
    let mut create_dirs = true;
    for attr in body.attributes() {
        let key = attr.key();
        if !TEMPLATE_KEYS.contains(&key) {
            bail!(
                "{}: template block has an unknown key {key:?}",
                file.display()
            );
        }
        let e = attr.expr();
        match key {
            "source" => t.go_source = base.join(string(file, e, key)?),
            "destination" => t.destination = Some(string(file, e, key)?),
            "command" => t.reload = Some(command(file, e)?),
            "perms" => t.mode = Some(string(file, e, key)?),
            "user" => t.owner = Some(string(file, e, key)?),
            "group" => t.group = Some(string(file, e, key)?),
            "create_dest_dirs" => create_dirs = matches!(e, Expression::Bool(true)),
            "left_delimiter" | "right_delimiter" | "contents" => bail!(
                "{}: template {key} is not supported by stencil convert: put the template in a file with {{{{ }}}} delimiters",
                file.display()
            ),
            other => plan.report.push(format!(
                "{}: template {other} is not converted",
                file.display()
            )),
        }
    }
    if t.go_source.as_os_str().is_empty() {
        bail!("{}: a template block needs source", file.display());
    }
    t.create_dirs = create_dirs;
    if create_dirs {
        plan.report.push(format!(
            "{}: consul-template creates missing destination directories; stencil.toml sets create_dirs = true",
            t.go_source.display()
        ));
    }
    t.name = unique(plan, &t.go_source.display().to_string());
    Ok(t)
}

fn unique(plan: &Plan, source: &str) -> String {
    let stem = Path::new(source)
        .file_stem()
        .map_or_else(|| "template".into(), |s| s.to_string_lossy().to_string());
    let mut n = stem.clone();
    let mut i = 1;
    while plan.templates.iter().any(|t| t.name == n) {
        i += 1;
        n = format!("{stem}-{i}");
    }
    n
}

fn string(file: &Path, e: &Expression, key: &str) -> Result<String> {
    match e {
        Expression::String(s) => Ok(s.clone()),
        Expression::Number(n) => Ok(n.to_string()),
        _ => bail!("{}: {key} must be a plain string", file.display()),
    }
}

/// `command = "…"` (run by a shell) or `["argv", …]`, kept as a shell line.
fn command(file: &Path, e: &Expression) -> Result<String> {
    match e {
        Expression::Array(items) => {
            let words: Result<Vec<String>> =
                items.iter().map(|i| string(file, i, "command")).collect();
            let words = words?;
            Ok(shlex::try_join(words.iter().map(String::as_str))
                .map_err(|e| anyhow::anyhow!("{}: command: {e}", file.display()))?)
        }
        _ => string(file, e, "command"),
    }
}

/// `wait = "5s:10s"` or `wait = "5s"`.
fn wait(file: &Path, e: &Expression) -> Result<(String, Option<String>)> {
    let s = string(file, e, "wait")?;
    Ok(match s.split_once(':') {
        Some((min, max)) => (min.to_string(), Some(max.to_string())),
        None => (s, None),
    })
}
