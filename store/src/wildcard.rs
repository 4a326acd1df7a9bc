//! Wildcards in queries: `user.name:dan*`, `event.action:user.session.*`, `acme-*`,
//! `user.id:00u?abc`.
//!
//! tantivy's grammar has no wildcard terms (only a quoted phrase's last word may be a prefix,
//! `"big bad wo"*`): a `*` was dropped by the word tokenizers (`dana*` searched the word
//! `dana`) and kept as a character by the keyword ones (`user.session*` matched nothing). Here
//! an unquoted literal with `*` or `?` becomes a pattern over the field's terms, written as its
//! tokenizer writes terms: lowercased, and for the word fields one word. A pattern over several
//! words of a word field (`user.name:d*@acme.example`) must have each word's pattern among
//! the field's terms and the whole pattern among the catch-all's (which keeps whole values
//! such as addresses). The term dictionary is intersected with the pattern.

use tantivy::query_grammar::{Delimiter, Occur, UserInputAst, UserInputLeaf, UserInputLiteral};

use crate::catch_all::map_leaves;
use crate::tantivy_sink::{KEYWORD_FIELDS, TEXT_FIELDS};

/// Rewrite wildcard literals on text fields into pattern (or phrase-prefix) leaves.
pub(crate) fn rewrite_wildcards(ast: UserInputAst) -> UserInputAst {
    map_leaves(ast, &|leaf| {
        UserInputAst::Leaf(Box::new(match leaf {
            UserInputLeaf::Literal(lit) if is_wildcard(&lit) => return wildcard_ast(lit),
            // `user.name:*` (has a value): tantivy answers it from fast fields only, which the
            // text fields are not; any term of the field is the same question.
            UserInputLeaf::Exists { field } if is_text_field(&field) => UserInputLeaf::Regex {
                field: Some(field),
                pattern: ".*".into(),
            },
            other => other,
        }))
    })
}

/// Fields whose terms are text (so patterns and edit distances apply to them).
pub(crate) fn is_text_field(field: &str) -> bool {
    field == "all"
        || field == "event.module"
        || KEYWORD_FIELDS.contains(&field)
        || TEXT_FIELDS.contains(&field)
}

/// An unquoted literal with `*` or `?` in it, other than a lone `*` (has a value, which
/// tantivy's grammar reads itself). Wildcards alone are patterns too: `??` is any
/// two-character term, `???*` any of three or more (they were taken literally and matched
/// nothing, silently).
fn is_wildcard(lit: &UserInputLiteral) -> bool {
    lit.delimiter == Delimiter::None && lit.phrase.contains(['*', '?']) && lit.phrase != "*"
}

fn only_wildcards(glob: &str) -> bool {
    glob.chars().all(|c| c == '*' || c == '?')
}

fn wildcard_ast(lit: UserInputLiteral) -> UserInputAst {
    let field = lit.field_name.clone().unwrap_or_else(|| "all".to_string());
    let glob = lit.phrase.to_lowercase();
    if TEXT_FIELDS.contains(&field.as_str()) && !only_wildcards(&glob) {
        // Word fields hold words: a pattern spanning several words cannot match one term.
        // Wildcards cut off from their word by a character the tokenizer drops (`dana🔥*`)
        // stay with the word before them; with no word at all (`🔥*`, `.*`) no term can match:
        // the pattern must not become a bare `*` matching every term. (Wildcards alone, `???*`,
        // are a pattern over one word, below.)
        let mut words: Vec<String> = Vec::new();
        for fragment in glob.split(|c: char| !(c.is_alphanumeric() || c == '*' || c == '?')) {
            if fragment.chars().any(char::is_alphanumeric) {
                words.push(fragment.to_string());
            } else if let Some(last) = words.last_mut() {
                last.push_str(fragment);
            }
        }
        return match words.as_slice() {
            [] => leaf(UserInputLeaf::Set {
                field: Some(field),
                elements: Vec::new(),
            }),
            [word] => pattern_leaf(field, word),
            // Only a trailing `*` (`dana.k*`): the words as a phrase, the last one a prefix,
            // which finds `dana.kim@...` and `dana-kim` alike (the tokenizer drops the
            // separators as it does from the values).
            words if !glob.trim_end_matches('*').contains(['*', '?']) => {
                leaf(UserInputLeaf::Literal(UserInputLiteral {
                    phrase: words.join(" ").replace('*', ""),
                    delimiter: Delimiter::DoubleQuotes,
                    prefix: true,
                    ..lit
                }))
            }
            // Each word's pattern a term of the field, the whole pattern a value in the event:
            // `d*@acme.example` is `d*`, `acme`, `example` in user.name and an address like
            // it in the catch-all (a pattern across words cannot match one word term).
            words => UserInputAst::Clause(
                std::iter::once(pattern_leaf("all".into(), &glob))
                    .chain(words.iter().map(|w| pattern_leaf(field.clone(), w)))
                    .map(|ast| (Some(Occur::Must), ast))
                    .collect(),
            ),
        };
    }
    if is_text_field(&field) {
        return pattern_leaf(field, &glob);
    }
    // Not a text field: left to the parser, which says what is wrong with it.
    leaf(UserInputLeaf::Literal(lit))
}

fn leaf(leaf: UserInputLeaf) -> UserInputAst {
    UserInputAst::Leaf(Box::new(leaf))
}

fn pattern_leaf(field: String, glob: &str) -> UserInputAst {
    leaf(UserInputLeaf::Regex {
        field: Some(field),
        pattern: glob_pattern(glob),
    })
}

/// `*` any run of characters, `?` one character, everything else literally.
pub(crate) fn glob_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' | '.' | '+' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&'
            | '-' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_anchored_patterns() {
        assert_eq!(glob_pattern("user.session.*"), "user\\.session\\..*");
        assert_eq!(glob_pattern("00u?ab"), "00u.ab");
        assert_eq!(glob_pattern("a-b(c)*"), "a\\-b\\(c\\).*");
        for glob in ["user.session.*", "a-b(c)*", "*[x]{2}$^#&~*", "é*"] {
            let field = tantivy::schema::Field::from_field_id(0);
            tantivy::query::RegexQuery::from_pattern(&glob_pattern(glob), field)
                .unwrap_or_else(|e| panic!("{glob}: {e}"));
        }
    }
}
