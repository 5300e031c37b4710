//! The output directory: every template translated first, then
//! stencil.toml and templates/*.j2 written, or nothing at all.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Plan, PlanTemplate, go_to_jinja};
use crate::error::{Exit, usage};

pub(super) fn write(plan: Plan, output: Option<&PathBuf>, force: bool) -> Result<Exit> {
    let Some(dir) = output else {
        return Err(usage(
            "stencil convert needs -o DIR, the directory to write into",
        ));
    };
    let mut report = plan.report.clone();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut errors = Vec::new();
    for t in &plan.templates {
        match translate(t, plan.consul_template, &mut report) {
            Ok(jinja) => files.push((dir.join("templates").join(format!("{}.j2", t.name)), jinja)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} template(s) cannot be converted; nothing was written:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    files.push((dir.join("stencil.toml"), stencil_toml(&plan)?));
    if !force {
        if let Some((existing, _)) = files.iter().find(|(p, _)| p.exists()) {
            return Err(usage(format!(
                "{} exists; nothing was written (--force overwrites)",
                existing.display()
            )));
        }
    }
    std::fs::create_dir_all(dir.join("templates"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = format!(
        "wrote {} and {} template(s) into {}\n",
        dir.join("stencil.toml").display(),
        plan.templates.len(),
        dir.join("templates").display()
    );
    for line in &report {
        let _ = writeln!(out, "note: {line}");
    }
    print!("{out}");
    Ok(Exit::Success)
}

fn translate(t: &PlanTemplate, consul_template: bool, report: &mut Vec<String>) -> Result<String> {
    let src = std::fs::read_to_string(&t.go_source)
        .with_context(|| format!("cannot read template {}", t.go_source.display()))?;
    let converted = go_to_jinja(&src, consul_template)
        .map_err(|e| anyhow::anyhow!(e.at(&t.go_source, &src)))?;
    for f in &converted.missing {
        report.push(format!(
            "{}: calls {f}, which stencil does not have yet: rendering fails until it does",
            t.go_source.display()
        ));
    }
    Ok(converted.jinja)
}

fn stencil_toml(plan: &Plan) -> Result<String> {
    let mut top = toml::Table::new();
    top.insert("trim_blocks".into(), false.into());
    top.insert("lstrip_blocks".into(), false.into());
    top.insert("keep_trailing_newline".into(), true.into());
    if let Some((min, max)) = &plan.wait {
        let mut w = toml::Table::new();
        w.insert("min".into(), min.clone().into());
        if let Some(max) = max {
            w.insert("max".into(), max.clone().into());
        }
        top.insert("wait".into(), w.into());
    }
    let mut sources = toml::Table::new();
    for (name, table) in &plan.sources {
        sources.insert(name.clone(), table.clone().into());
    }
    if !sources.is_empty() {
        top.insert("sources".into(), sources.into());
    }
    let templates: Vec<toml::Value> = plan
        .templates
        .iter()
        .map(|t| template_table(t).into())
        .collect();
    top.insert("templates".into(), templates.into());
    let head = "# Written by `stencil convert`. Go's text/template keeps every newline it\n\
                # is not told to trim, so these templates render with trim_blocks off.\n";
    Ok(format!("{head}{}", toml::to_string(&top)?))
}

fn template_table(t: &PlanTemplate) -> toml::Table {
    let mut m = toml::Table::new();
    let path = Path::new("templates").join(format!("{}.j2", t.name));
    m.insert("source".into(), path.display().to_string().into());
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    };
    put("destination", &t.destination);
    put("data", &t.data);
    put("mode", &t.mode);
    put("owner", &t.owner);
    put("group", &t.group);
    put("check", &t.check);
    put("reload", &t.reload);
    if t.create_dirs {
        m.insert("create_dirs".into(), true.into());
    }
    m
}
