//! `stencil convert`'s flags (a file of its own to keep cli.rs short).

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub(crate) const CONVERT_EXAMPLES: &str = "\
Examples:
  # A confd confdir (conf.d/*.toml, templates/*.tmpl), keys from etcd:
  stencil convert confd /etc/confd --backend etcd --node http://127.0.0.1:2379 -o /etc/stencil

  # A consul-template config file (HCL):
  stencil convert consul-template /etc/consul-template/config.hcl -o /etc/stencil

  # consul-template's -template flags instead of a config file:
  stencil convert consul-template --template 'in.ctmpl:/etc/app.conf:systemctl reload app' -o out

Every template is translated from Go's text/template to Jinja so that it
renders the same bytes; stencil.toml sets trim_blocks = false for them.
Anything that cannot be translated is an error naming the file, line,
column and construct, and nothing is written. The report lists every
judgement call (and the functions stencil does not have yet).";

/// `stencil convert confd|consul-template ... -o DIR`.
#[derive(Debug, Args)]
#[command(after_help = CONVERT_EXAMPLES)]
pub struct ConvertArgs {
    #[command(subcommand)]
    pub command: ConvertCommand,

    /// The directory to write stencil.toml and templates/ into.
    #[arg(short = 'o', long, global = true, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Overwrite files already in DIR.
    #[arg(long, global = true)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConvertCommand {
    /// A confd confdir: conf.d/*.toml and templates/*.tmpl.
    Confd(ConfdArgs),
    /// A consul-template HCL config file, or -template arguments.
    ConsulTemplate(ConsulTemplateArgs),
}

#[derive(Debug, Args)]
pub struct ConfdArgs {
    /// The confdir (holding conf.d/ and templates/).
    #[arg(value_name = "CONFDIR")]
    pub confdir: PathBuf,

    /// confd's --backend: etcd, etcdv3, consul, env or file.
    #[arg(long, default_value = "etcd")]
    pub backend: String,

    /// confd's --node: the backend's address (repeatable).
    #[arg(long)]
    pub node: Vec<String>,

    /// confd's --prefix: prepended to every template's prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,

    /// confd's --file (file backend): the YAML data file(s).
    #[arg(long)]
    pub file: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConsulTemplateArgs {
    /// consul-template's HCL config file.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// consul-template's -template "in:out[:command]" (repeatable; given here as --template or -t).
    #[arg(long = "template", short = 't', value_name = "IN:OUT[:CMD]")]
    pub templates: Vec<String>,

    /// consul-template's -consul-addr.
    #[arg(long = "consul-addr")]
    pub consul_addr: Option<String>,
}
