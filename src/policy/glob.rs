//! Tool-name globs: `*` matches any run of characters (including none), `?` exactly one character.
//! Everything else is literal and case-sensitive. No classes, braces or escapes.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(String),
    Any,
    One,
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// As written.
    pattern: String,
    tokens: Vec<Token>,
    literal_chars: usize,
}

/// Why a key is not a usable glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(pub String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `key` contains a wildcard and so is a glob rather than an exact name.
pub fn is_glob(key: &str) -> bool {
    key.contains(['*', '?'])
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if let Some(c) = pattern
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(GlobError(format!(
                "'{c}' is not supported in tool globs (only '*' and '?' are wildcards); remove it or list the tools by name"
            )));
        }
        let mut tokens = Vec::new();
        let mut literal_chars = 0;
        for c in pattern.chars() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                }
                '?' => tokens.push(Token::One),
                c => {
                    literal_chars += 1;
                    match tokens.last_mut() {
                        Some(Token::Lit(s)) => s.push(c),
                        _ => tokens.push(Token::Lit(c.to_string())),
                    }
                }
            }
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            tokens,
            literal_chars,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How many non-wildcard characters the pattern has (the precedence measure).
    pub fn literal_chars(&self) -> usize {
        self.literal_chars
    }

    /// The same pattern with each run of literal characters replaced by `f` of it; wildcards stay wildcards
    /// (a literal that `f` turns into `*` or `?` still matches only itself).
    pub fn map_literals(&self, f: impl Fn(&str) -> String) -> Glob {
        let tokens = self
            .tokens
            .iter()
            .map(|t| match t {
                Token::Lit(s) => Token::Lit(f(s)),
                other => other.clone(),
            })
            .collect();
        Glob {
            pattern: self.pattern.clone(),
            tokens,
            literal_chars: self.literal_chars,
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match_tokens(&self.tokens, name)
    }
}

/// Iterative matcher with single-star backtracking: linear in practice, never recursive.
fn match_tokens(tokens: &[Token], name: &str) -> bool {
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(tok) = tokens.get(t) {
            match tok {
                Token::Any => {
                    star = Some((t, s));
                    t += 1;
                    continue;
                }
                Token::One => {
                    if let Some(c) = name.get(s..).and_then(|r| r.chars().next()) {
                        t += 1;
                        s += c.len_utf8();
                        continue;
                    }
                }
                Token::Lit(lit) => {
                    if name.get(s..).is_some_and(|r| r.starts_with(lit.as_str())) {
                        t += 1;
                        s += lit.len();
                        continue;
                    }
                }
            }
        } else if s == name.len() {
            return true;
        }
        // Mismatch: retry from the last star, letting it swallow one more character.
        match star {
            Some((st, ss)) => match name.get(ss..).and_then(|r| r.chars().next()) {
                Some(c) => {
                    let ns = ss + c.len_utf8();
                    star = Some((st, ns));
                    t = st + 1;
                    s = ns;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn wildcards() {
        assert!(m("get_*", "get_run"));
        assert!(m("get_*", "get_"));
        assert!(!m("get_*", "Get_run"));
        assert!(!m("get_*", "xget_run"));
        assert!(m("*_run", "delete_run"));
        assert!(m("*", ""));
        assert!(m("get_?un", "get_run"));
        assert!(!m("get_?un", "get_un"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*a*a*a*b", "aaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaaaaaaaaaaa"));
        assert!(m("d?l*", "dél_x"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn literal_count() {
        assert_eq!(Glob::new("get_*").unwrap().literal_chars(), 4);
        assert_eq!(Glob::new("*_run").unwrap().literal_chars(), 4);
        assert_eq!(Glob::new("g?t_**").unwrap().literal_chars(), 3);
    }

    #[test]
    fn unsupported_syntax() {
        assert!(Glob::new("get_[ab]").is_err());
        assert!(Glob::new("{a,b}").is_err());
        assert!(Glob::new("a\\*").is_err());
    }
}
