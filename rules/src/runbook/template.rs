//! Parameter templates: `{name}` is replaced by a variable, `{{` and `}}` are
//! literal braces. A missing (or empty) variable is an error naming it, never an
//! empty string: an action with a hole in its parameters is not run.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// Why rendering failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// The template is malformed.
    Syntax(String),
    /// A variable it names has no (non-empty) value.
    Missing(String),
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub(crate) fn parse(text: &str) -> std::result::Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' at byte {at} (write '}}}}' for a literal brace)"
                    ));
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed '{{' at byte {at} (write '{{{{' for a literal brace)"
                        ));
                    }
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
                    {
                        return Err(format!(
                            "{{{name}}} at byte {at} is not a variable name \
                             (letters, digits, '_', '.', '-', '/')"
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The variables it names, in order (with repeats).
    pub(crate) fn variables(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Renders with `vars`; the first missing or empty variable is an error.
    pub(crate) fn render(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> std::result::Result<String, String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => match vars.get(v) {
                    Some(value) if !value.is_empty() => out.push_str(value),
                    _ => return Err(v.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// Parses and renders in one go.
pub(crate) fn render_text(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> std::result::Result<String, RenderError> {
    let template = Template::parse(text).map_err(RenderError::Syntax)?;
    template.render(vars).map_err(RenderError::Missing)
}

/// Renders a parameter template: `{name}` from `vars`, `{{`/`}}` as braces. A
/// variable that is missing or empty is an [`Error::Template`] naming it.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    render_text(template, vars).map_err(|e| Error::Template {
        template: template.to_owned(),
        reason: match e {
            RenderError::Syntax(reason) => reason,
            RenderError::Missing(name) => format!("missing variable {{{name}}}"),
        },
    })
}
