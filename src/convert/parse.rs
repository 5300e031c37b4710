//! Go text/template's grammar over the lexer's items: control structures
//! nested into a tree, each action a pipeline of commands.

use super::GoError;
use super::lex::{Item, Tok, lex};

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    /// `$a, $b :=` (or `=` when `assign`).
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Vec<Expr>>,
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Dot,
    Nil,
    Bool(bool),
    Number(String),
    Str(String),
    Var(String),
    Ident(String, usize),
    Field(Box<Expr>, String),
    Paren(Box<Pipeline>),
}

/// Parses a whole template.
pub(crate) fn parse(src: &str) -> Result<Vec<Node>, GoError> {
    let items = lex(src)?;
    let mut p = Parser { items, at: 0 };
    let (nodes, end) = p.list()?;
    if let Some((word, offset)) = end {
        return Err(GoError::new(
            offset,
            &format!("unexpected {{{{{word}}}}}"),
            &word,
        ));
    }
    Ok(nodes)
}

struct Parser {
    items: Vec<Item>,
    at: usize,
}

/// What ended a list: `end`, `else` (with the rest of the action) and where.
type Ended = Option<(String, usize)>;

impl Parser {
    /// Nodes up to `{{end}}` or `{{else ...}}` (returned, the action's
    /// remaining tokens left in `self.rest`), or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, Ended), GoError> {
        let mut nodes = Vec::new();
        while self.at < self.items.len() {
            let item = self.items[self.at].clone();
            self.at += 1;
            match item {
                Item::Text(t) => nodes.push(Node::Text(t)),
                Item::Action(toks, offset) => {
                    if let Some(end) = self.action(toks, offset, &mut nodes)? {
                        return Ok((nodes, Some(end)));
                    }
                }
            }
        }
        Ok((nodes, None))
    }

    fn action(
        &mut self,
        toks: Vec<(Tok, usize)>,
        offset: usize,
        nodes: &mut Vec<Node>,
    ) -> Result<Ended, GoError> {
        let keyword = match toks.first() {
            Some((Tok::Ident(w), _)) => w.as_str(),
            None => return Err(GoError::new(offset, "missing value for command", "{{}}")),
            _ => "",
        };
        match keyword {
            "end" | "else" => {
                // Leave `else`'s remaining tokens for the caller.
                if keyword == "else" && toks.len() > 1 {
                    self.at -= 1;
                    self.items[self.at] = Item::Action(toks[1..].to_vec(), offset);
                    return Ok(Some(("else+".into(), offset)));
                }
                Ok(Some((keyword.to_string(), offset)))
            }
            "if" | "range" | "with" => {
                let pipe = pipeline(&toks[1..], offset)?;
                nodes.push(self.control(keyword, pipe, offset)?);
                Ok(None)
            }
            "break" | "continue" if toks.len() == 1 => {
                nodes.push(if keyword == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
                Ok(None)
            }
            "define" | "template" | "block" => Err(GoError::new(
                offset,
                &format!("{{{{{keyword}}}}} (named templates) cannot be translated"),
                keyword,
            )),
            _ => {
                nodes.push(Node::Action(pipeline(&toks, offset)?));
                Ok(None)
            }
        }
    }

    fn control(&mut self, keyword: &str, pipe: Pipeline, offset: usize) -> Result<Node, GoError> {
        let (body, end) = self.list()?;
        let mut else_body = Vec::new();
        let mut branches = vec![(pipe, body)];
        let mut end = end;
        loop {
            match end {
                None => {
                    return Err(GoError::new(
                        offset,
                        &format!("unexpected EOF: {{{{{keyword}}}}} has no {{{{end}}}}"),
                        keyword,
                    ));
                }
                Some((ref w, _)) if w == "end" => break,
                Some((ref w, _)) if w == "else" => {
                    let (b, e) = self.list()?;
                    else_body = b;
                    if let Some((w, at)) = &e {
                        if w != "end" {
                            return Err(GoError::new(*at, "expected {{end}}", "else"));
                        }
                    }
                    end = e;
                }
                Some((_, at)) => {
                    // `{{else if …}}`: the rest of the action is pending.
                    let Some(Item::Action(toks, _)) = self.items.get(self.at).cloned() else {
                        return Err(GoError::new(at, "bad else", "else"));
                    };
                    self.at += 1;
                    // Go chains `else if` in an if, `else with` in a with.
                    let chained = matches!(keyword, "if" | "with")
                        && matches!(&toks[0].0, Tok::Ident(w) if w == keyword);
                    if !chained {
                        return Err(GoError::new(
                            at,
                            "only {{else if}} in an if and {{else with}} in a with can be translated",
                            "else",
                        ));
                    }
                    let pipe = pipeline(&toks[1..], at)?;
                    let (b, e) = self.list()?;
                    branches.push((pipe, b));
                    end = e;
                }
            }
        }
        Ok(match keyword {
            "if" => Node::If(branches, else_body),
            "range" => {
                let (p, b) = branches.remove(0);
                Node::Range(p, b, else_body)
            }
            // `{{with a}}x{{else with b}}y{{else}}z{{end}}` is, as Go reads
            // it, `{{with a}}x{{else}}{{with b}}y{{else}}z{{end}}{{end}}`.
            _ => {
                let mut rest = else_body;
                for (p, b) in branches.into_iter().rev() {
                    rest = vec![Node::With(p, b, rest)];
                }
                rest.pop().expect("a with has its first branch")
            }
        })
    }
}

/// `[$a[, $b] (:=|=)] cmd | cmd …`
fn pipeline(toks: &[(Tok, usize)], offset: usize) -> Result<Pipeline, GoError> {
    let mut decl = Vec::new();
    let mut assign = false;
    let mut rest = toks;
    let declares = toks
        .iter()
        .position(|(t, _)| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(i) = declares {
        if toks[..i]
            .iter()
            .all(|(t, _)| matches!(t, Tok::Var(_) | Tok::Comma))
            && i > 0
        {
            for (t, _) in &toks[..i] {
                if let Tok::Var(v) = t {
                    decl.push(v.clone());
                }
            }
            assign = matches!(toks[i].0, Tok::Assign);
            rest = &toks[i + 1..];
        }
    }
    let mut cmds = Vec::new();
    let mut i = 0;
    let mut cmd = Vec::new();
    while i < rest.len() {
        let (tok, at) = &rest[i];
        if matches!(tok, Tok::Pipe) {
            if cmd.is_empty() {
                return Err(GoError::new(*at, "missing command before |", "|"));
            }
            cmds.push(std::mem::take(&mut cmd));
            i += 1;
            continue;
        }
        let (e, used) = operand(&rest[i..], *at)?;
        cmd.push(e);
        i += used;
    }
    if cmd.is_empty() {
        return Err(GoError::new(offset, "missing value for command", "{{ }}"));
    }
    cmds.push(cmd);
    Ok(Pipeline {
        decl,
        assign,
        cmds,
        offset,
    })
}

/// One operand and the fields after it; returns how many tokens it took.
fn operand(toks: &[(Tok, usize)], at: usize) -> Result<(Expr, usize), GoError> {
    let (mut e, mut used) = match &toks[0].0 {
        Tok::Dot => (Expr::Dot, 1),
        Tok::Field(f) => (Expr::Field(Box::new(Expr::Dot), f.clone()), 1),
        Tok::Var(v) => (Expr::Var(v.clone()), 1),
        Tok::Str(s) => (Expr::Str(s.clone()), 1),
        Tok::Number(n) => (Expr::Number(n.clone()), 1),
        Tok::Ident(w) => (
            match w.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "nil" => Expr::Nil,
                _ => Expr::Ident(w.clone(), at),
            },
            1,
        ),
        Tok::LParen => {
            let mut depth = 0;
            let close = toks
                .iter()
                .position(|(t, _)| {
                    match t {
                        Tok::LParen => depth += 1,
                        Tok::RParen => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .ok_or_else(|| GoError::new(at, "unclosed left paren", "("))?;
            let inner = pipeline(&toks[1..close], at)?;
            (Expr::Paren(Box::new(inner)), close + 1)
        }
        other => {
            return Err(GoError::new(
                at,
                "unexpected token in operand",
                &format!("{other:?}"),
            ));
        }
    };
    // `x.F` chains a field; `x .F` (with a space) is a second operand.
    while let Some((Tok::Field(f), at)) = toks.get(used) {
        if *at != end_of(&toks[used - 1]) {
            break;
        }
        e = Expr::Field(Box::new(e), f.clone());
        used += 1;
    }
    Ok((e, used))
}

/// Where a token ends, for the tokens a field can follow directly.
fn end_of((tok, at): &(Tok, usize)) -> usize {
    at + match tok {
        Tok::Ident(w) => w.len(),
        Tok::Field(f) | Tok::Var(f) => f.len() + 1,
        _ => 1,
    }
}
