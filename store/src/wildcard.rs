//! Wildcards in queries: `user.name:dan*`, `event.action:user.session.*`, `acme-*`,
//! `user.id:00u?abc`.
//!
//! tantivy's grammar has no wildcard terms (only a quoted phrase's last word may be a prefix,
//! `"big bad wo"*`): a `*` was dropped by the word tokenizers (`dana*` searched the word
//! `dana`) and kept as a character by the keyword ones (`user.session*` matched nothing). Here
//! an unquoted literal with `*` or `?` becomes a pattern over the field's terms, written as its
//! tokenizer writes terms: lowercased, and for the word fields one word (several words make a
//! phrase whose last word is the prefix). The term dictionary is intersected with the pattern.

use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};

use crate::catch_all::map_leaves;
use crate::tantivy_sink::{KEYWORD_FIELDS, TEXT_FIELDS};

/// Rewrite wildcard literals on text fields into pattern (or phrase-prefix) leaves.
pub(crate) fn rewrite_wildcards(ast: UserInputAst) -> UserInputAst {
    map_leaves(ast, &|leaf| {
        UserInputAst::Leaf(Box::new(match leaf {
            UserInputLeaf::Literal(lit) if is_wildcard(&lit) => wildcard_leaf(lit),
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

fn is_wildcard(lit: &UserInputLiteral) -> bool {
    lit.delimiter == Delimiter::None
        && lit.phrase.contains(['*', '?'])
        && lit.phrase.chars().any(|c| c != '*' && c != '?')
}

fn wildcard_leaf(lit: UserInputLiteral) -> UserInputLeaf {
    let field = lit.field_name.clone().unwrap_or_else(|| "all".to_string());
    let glob = lit.phrase.to_lowercase();
    if TEXT_FIELDS.contains(&field.as_str()) {
        // Word fields hold words: a pattern spanning several words cannot match one term.
        // Wildcards cut off from their word by a character the tokenizer drops (`dana🔥*`)
        // stay with the word before them; with no word at all (`🔥*`, `.*`) no term can match:
        // the pattern must not become a bare `*` matching every term.
        let mut words: Vec<String> = Vec::new();
        for fragment in glob.split(|c: char| !(c.is_alphanumeric() || c == '*' || c == '?')) {
            if fragment.chars().any(char::is_alphanumeric) {
                words.push(fragment.to_string());
            } else if let Some(last) = words.last_mut() {
                last.push_str(fragment);
            }
        }
        match words.as_slice() {
            [] => {
                return UserInputLeaf::Set {
                    field: Some(field),
                    elements: Vec::new(),
                }
            }
            [word] => return pattern_leaf(field, word),
            _ => {}
        }
        // `"dana kim"*`-style: the words as a phrase, the last one a prefix (wildcards inside
        // the words are dropped, as the word tokenizer drops them).
        let phrase = words.join(" ").replace(['*', '?'], "");
        let ends_with_star = glob.ends_with('*');
        return UserInputLeaf::Literal(UserInputLiteral {
            phrase,
            delimiter: Delimiter::DoubleQuotes,
            prefix: ends_with_star,
            ..lit
        });
    }
    if is_text_field(&field) {
        return pattern_leaf(field, &glob);
    }
    // Not a text field: left to the parser, which says what is wrong with it.
    UserInputLeaf::Literal(lit)
}

fn pattern_leaf(field: String, glob: &str) -> UserInputLeaf {
    UserInputLeaf::Regex {
        field: Some(field),
        pattern: glob_pattern(glob),
    }
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
