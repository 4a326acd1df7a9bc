//! The Sigma condition grammar: `and`, `or`, `not`, parentheses, `1 of x*`, `all of x*`,
//! `1 of them`, `all of them`. Precedence (loosest first): or, and, not, `x of`, parentheses.

/// A parsed condition; search identifiers are resolved to selection indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Sel(usize),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    LParen,
    RParen,
    And,
    Or,
    Not,
    Of,
    One,
    All,
    Them,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' {
            toks.push(Tok::LParen);
            chars.next();
        } else if c == ')' {
            toks.push(Tok::RParen);
            chars.next();
        } else if c == '|' {
            return Err(AGGREGATION.into());
        } else if c.is_alphanumeric() || c == '_' || c == '*' || c == '-' || c == '.' || c == '?' {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' || d == '*' || d == '-' || d == '.' || d == '?' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &text[i..end];
            toks.push(match word.to_ascii_lowercase().as_str() {
                "and" => Tok::And,
                "or" => Tok::Or,
                "not" => Tok::Not,
                "of" => Tok::Of,
                "1" | "any" => Tok::One,
                "all" => Tok::All,
                "them" => Tok::Them,
                _ => Tok::Ident(word.to_string()),
            });
        } else {
            return Err(format!("unexpected character `{c}` at position {i}"));
        }
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    names: &'a [String],
    depth: usize,
}

/// Glob match for `x of pattern`: `*` matches any run of characters.
pub fn ident_pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|k| go(rest, &n[k..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

const MAX_DEPTH: usize = 64;
const AGGREGATION: &str =
    "aggregation expressions (`| count() ...`) are deprecated Sigma v1 syntax; use a correlation rule";

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or_expr(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.and_expr()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Or(parts)
        })
    }

    fn and_expr(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.not_expr()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.not_expr()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::And(parts)
        })
    }

    fn not_expr(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("condition nested too deeply".into());
            }
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, String> {
        match self.next() {
            Some(Tok::LParen) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("condition nested too deeply".into());
                }
                let inner = self.or_expr()?;
                self.depth -= 1;
                match self.next() {
                    Some(Tok::RParen) => Ok(inner),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Tok::Ident(name)) => match self.names.iter().position(|n| *n == name) {
                Some(i) => Ok(Cond::Sel(i)),
                // `2 of them` reads like the grammar but is not in it.
                None if self.peek() == Some(&Tok::Of) && name.bytes().all(|b| b.is_ascii_digit()) => {
                    Err(format!(
                        "`{name} of` is not supported: Sigma has `1 of` and `all of` only (write the combinations with `and`/`or`)"
                    ))
                }
                None => Err(format!("unknown search identifier `{name}`")),
            },
            Some(q @ (Tok::One | Tok::All)) => {
                if self.next() != Some(Tok::Of) {
                    return Err("expected `of` after `1`/`all`".into());
                }
                let targets: Vec<usize> = match self.next() {
                    Some(Tok::Them) => (0..self.names.len())
                        .filter(|&i| !self.names[i].starts_with('_'))
                        .collect(),
                    Some(Tok::Ident(pat)) => {
                        let found: Vec<usize> = (0..self.names.len())
                            .filter(|&i| ident_pattern_matches(&pat, &self.names[i]))
                            .collect();
                        if found.is_empty() {
                            return Err(format!("pattern `{pat}` matches no search identifier"));
                        }
                        found
                    }
                    _ => {
                        return Err(
                            "expected `them` or a search-identifier pattern after `of`".into()
                        )
                    }
                };
                if targets.is_empty() {
                    return Err("`of them` with no search identifiers".into());
                }
                let parts: Vec<Cond> = targets.into_iter().map(Cond::Sel).collect();
                Ok(if parts.len() == 1 {
                    parts.into_iter().next().unwrap_or(Cond::Or(Vec::new()))
                } else if q == Tok::One {
                    Cond::Or(parts)
                } else {
                    Cond::And(parts)
                })
            }
            Some(t) => Err(format!("unexpected {}", describe(&t))),
            None => Err("unexpected end of condition".into()),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("identifier `{s}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::And => "`and`".into(),
        Tok::Or => "`or`".into(),
        Tok::Not => "`not`".into(),
        Tok::Of => "`of`".into(),
        Tok::One => "`1`".into(),
        Tok::All => "`all`".into(),
        Tok::Them => "`them`".into(),
    }
}

/// Parse a condition over the given search identifiers (in detection order).
pub fn parse_condition(text: &str, names: &[String]) -> Result<Cond, String> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err("empty condition".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        names,
        depth: 0,
    };
    let cond = p.or_expr()?;
    match p.peek() {
        None => Ok(cond),
        Some(t) => Err(format!(
            "unexpected {} after the end of the expression",
            describe(t)
        )),
    }
}

impl Cond {
    /// The selections this condition reads, by index (sorted, deduplicated).
    pub fn selections_used(&self) -> Vec<usize> {
        fn walk(c: &Cond, out: &mut Vec<usize>) {
            match c {
                Cond::Sel(i) => out.push(*i),
                Cond::And(parts) | Cond::Or(parts) => parts.iter().for_each(|p| walk(p, out)),
                Cond::Not(inner) => walk(inner, out),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Evaluate with a selection oracle.
pub fn eval(cond: &Cond, sel: &mut dyn FnMut(usize) -> bool) -> bool {
    match cond {
        Cond::Sel(i) => sel(*i),
        Cond::And(parts) => parts.iter().all(|p| eval(p, sel)),
        Cond::Or(parts) => parts.iter().any(|p| eval(p, sel)),
        Cond::Not(inner) => !eval(inner, sel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "selection",
            "selection_b",
            "filter_1",
            "filter_2",
            "_hidden",
            "keywords",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn run(cond: &str, truth: &[bool]) -> bool {
        let c = parse_condition(cond, &names()).unwrap();
        eval(&c, &mut |i| truth[i])
    }

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        // selection or (selection_b and filter_1)
        assert!(run(
            "selection or selection_b and filter_1",
            &[true, false, false, false, false, false]
        ));
        assert!(!run(
            "(selection or selection_b) and filter_1",
            &[true, false, false, false, false, false]
        ));
        assert!(!run(
            "not selection or selection_b",
            &[true, false, false, false, false, false]
        ));
        assert!(run(
            "not (selection and selection_b)",
            &[true, false, false, false, false, false]
        ));
    }

    #[test]
    fn of_forms() {
        let t = [true, false, false, true, true, false];
        assert!(run("1 of selection*", &t));
        assert!(!run("all of selection*", &t));
        assert!(run(
            "selection and not 1 of filter_*",
            &[true, false, false, false, false, false]
        ));
        assert!(!run("selection and not 1 of filter_*", &t));
        assert!(run("1 of them", &t));
        assert!(!run("all of them", &t));
        // `_hidden` is excluded from `them` but not from explicit patterns.
        assert!(run("all of them", &[true, true, true, true, false, true]));
        assert!(run(
            "all of _hid*",
            &[false, false, false, false, true, false]
        ));
        assert!(run(
            "any of filter*",
            &[false, false, false, true, false, false]
        ));
    }

    #[test]
    fn errors_are_reported() {
        let n = names();
        assert!(parse_condition("selection and", &n)
            .unwrap_err()
            .contains("end"));
        assert!(parse_condition("nope", &n)
            .unwrap_err()
            .contains("unknown search identifier `nope`"));
        assert!(parse_condition("1 of zzz*", &n)
            .unwrap_err()
            .contains("matches no"));
        for cond in ["2 of them", "3 of selection*"] {
            let e = parse_condition(cond, &n).unwrap_err();
            assert!(
                e.contains("Sigma has `1 of` and `all of` only"),
                "{cond}: {e}"
            );
        }
        assert!(parse_condition("(selection", &n).unwrap_err().contains(")"));
        assert!(parse_condition("selection | count() > 5", &n)
            .unwrap_err()
            .contains("correlation"));
        assert!(parse_condition("selection selection_b", &n).is_err());
        assert!(parse_condition("", &n).is_err());
        let deep = format!("{}selection{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_condition(&deep, &n).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,80}") {
            let _ = parse_condition(&s, &names());
        }

        #[test]
        fn parser_never_panics_on_token_soup(words in proptest::collection::vec(
            proptest::sample::select(vec!["and", "or", "not", "(", ")", "1", "all", "of", "them", "selection", "filter_*", "x*", "|", "keywords"]), 0..20)) {
            let s = words.join(" ");
            let _ = parse_condition(&s, &names());
        }
    }
}
