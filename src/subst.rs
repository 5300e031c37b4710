//! `stencil subst`: GNU envsubst, byte for byte.

use std::io::{Read, Write};

use anyhow::{Result, bail};

use crate::cli::SubstArgs;
use crate::error::Exit;

pub fn run(_args: &SubstArgs, _input: &mut dyn Read, _output: &mut dyn Write) -> Result<Exit> {
    bail!("stencil subst is not built yet")
}
