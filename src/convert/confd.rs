//! confd's confdir: `conf.d/*.toml` template resources (`[template]` with
//! src, dest, keys, prefix, mode, uid, gid, owner, check_cmd, reload_cmd)
//! and `templates/*.tmpl`, plus confd's backend flags.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Plan, PlanTemplate};
use crate::cli::ConfdArgs;

const KEYS: &[&str] = &[
    "src",
    "dest",
    "keys",
    "prefix",
    "mode",
    "uid",
    "gid",
    "owner",
    "check_cmd",
    "reload_cmd",
];

pub(super) fn plan(args: &ConfdArgs) -> Result<Plan> {
    let conf_d = args.confdir.join("conf.d");
    let mut files: Vec<_> = std::fs::read_dir(&conf_d)
        .with_context(|| format!("cannot read {}", conf_d.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.toml template resources", conf_d.display());
    }
    let mut plan = Plan::default();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let Some(toml::Value::Table(t)) = table.get("template") else {
            bail!("{}: no [template] table", file.display());
        };
        let tmpl = resource(args, file, t, &mut plan)?;
        plan.templates.push(tmpl);
    }
    Ok(plan)
}

fn string(file: &Path, t: &toml::Table, key: &str) -> Result<Option<String>> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(toml::Value::Integer(i)) if matches!(key, "uid" | "gid") => Ok(Some(i.to_string())),
        Some(v) => bail!(
            "{}: [template] {key} must be a string, not {v}",
            file.display()
        ),
    }
}

fn resource(
    args: &ConfdArgs,
    file: &Path,
    t: &toml::Table,
    plan: &mut Plan,
) -> Result<PlanTemplate> {
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        bail!("{}: [template] has an unknown key {k:?}", file.display());
    }
    let src = string(file, t, "src")?
        .with_context(|| format!("{}: [template] needs src", file.display()))?;
    let dest = string(file, t, "dest")?
        .with_context(|| format!("{}: [template] needs dest", file.display()))?;
    let prefix = format!(
        "{}/{}",
        args.prefix.trim_matches('/'),
        string(file, t, "prefix")?
            .unwrap_or_default()
            .trim_matches('/')
    );
    let prefix = prefix.trim_matches('/').to_string();
    let data = source_for(args, &prefix, plan);
    let name = Path::new(&src)
        .file_stem()
        .map_or_else(|| "template".into(), |s| s.to_string_lossy().to_string());
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let command = |c: Option<String>| {
        c.map(|c| {
            c.replace("{{.src}}", "{{ staged }}")
                .replace("{{ .src }}", "{{ staged }}")
                .replace("{{.dest}}", "{{ destination }}")
                .replace("{{ .dest }}", "{{ destination }}")
        })
    };
    let check = command(string(file, t, "check_cmd")?);
    if check
        .as_ref()
        .is_some_and(|c| c.contains("{{.") || c.contains("{{ ."))
    {
        plan.report.push(format!(
            "{}: check_cmd uses a template field other than .src; stencil knows {{{{ staged }}}} and {{{{ destination }}}} only",
            file.display()
        ));
    }
    if t.contains_key("keys") {
        plan.report.push(format!(
            "{}: keys is dropped: stencil watches exactly the keys a render reads",
            file.display()
        ));
    }
    Ok(PlanTemplate {
        go_source: args.confdir.join("templates").join(&src),
        name: unique(plan, &format!("{stem}-{name}")),
        destination: Some(dest),
        data,
        mode: string(file, t, "mode")?,
        owner: string(file, t, "uid")?.or(string(file, t, "owner")?),
        group: string(file, t, "gid")?,
        check,
        reload: command(string(file, t, "reload_cmd")?),
        create_dirs: false,
    })
}

fn unique(plan: &Plan, name: &str) -> String {
    let mut n = name.to_string();
    let mut i = 1;
    while plan.templates.iter().any(|t| t.name == n) {
        i += 1;
        n = format!("{name}-{i}");
    }
    n
}

/// The `[sources.NAME]` for a backend and prefix: one per distinct prefix,
/// since stencil's prefix belongs to the source.
fn source_for(args: &ConfdArgs, prefix: &str, plan: &mut Plan) -> Option<String> {
    let mut table = toml::Table::new();
    match args.backend.as_str() {
        "etcd" | "etcdv3" => {
            table.insert("kind".into(), "etcd".into());
            if !args.node.is_empty() {
                table.insert("endpoints".into(), args.node.clone().into());
            }
            table.insert("prefix".into(), format!("/{prefix}").into());
        }
        "consul" => {
            table.insert("kind".into(), "consul".into());
            if let Some(node) = args.node.first() {
                table.insert("address".into(), node.clone().into());
            }
            table.insert("prefix".into(), prefix.into());
        }
        "file" => {
            table.insert("kind".into(), "file".into());
            table.insert(
                "path".into(),
                args.file.first().cloned().unwrap_or_default().into(),
            );
            table.insert("prefix".into(), prefix.into());
        }
        other => {
            let note = format!(
                "backend {other:?} has no stencil source; templates that read keys need a [sources] table added by hand"
            );
            if !plan.report.contains(&note) {
                plan.report.push(note);
            }
            return None;
        }
    }
    if let Some((name, _)) = plan.sources.iter().find(|(_, t)| *t == table) {
        return Some(name.clone());
    }
    let name = if plan.sources.is_empty() {
        "confd".to_string()
    } else {
        format!("confd{}", plan.sources.len() + 1)
    };
    plan.sources.push((name.clone(), table));
    Some(name)
}
