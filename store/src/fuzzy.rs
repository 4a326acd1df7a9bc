//! Fuzzy terms, in Lucene's syntax: `user.name:dnaa~1`, `okat~` (two edits when no number is
//! given). They match the field's terms within that many edits (an insertion, deletion,
//! substitution or transposition each) of the word: typos in a name an analyst heard on a call,
//! or a vendor spelling an action differently.
//!
//! tantivy's grammar reads `dana~1` as the text `dana~1`, which the tokenizers split into `dana`
//! and `1`, so the query found nothing, without an error; and tantivy can only make every term of
//! a field fuzzy, not one. So a literal ending in `~` or `~N` is rewritten first into a marked
//! leaf that the other rewrites pass over (a regex leaf whose pattern starts with a NUL mark:
//! regexes typed by users are refused before any rewriting, and no real pattern starts with
//! one), and [`build`] turns marked leaves into `FuzzyTermQuery`s and leaves the rest of the
//! query to the parser.

use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::Schema;
use tantivy::Term;

use crate::catch_all::{query_tokens, try_map_leaves};
use crate::tantivy_sink::TEXT_FIELDS;
use crate::wildcard::is_text_field;
use crate::StoreError;

/// Starts the pattern of a marked fuzzy leaf: `<MARK><distance>:<term>`.
const MARK: &str = "\u{0}fuzzy:";
/// Most edits accepted (tantivy's automata grow steeply beyond this).
const MAX_DISTANCE: u8 = 2;

/// Rewrite fuzzy literals (`word~`, `word~N`) into marked leaves.
pub(crate) fn rewrite_fuzzy(ast: UserInputAst) -> Result<UserInputAst, String> {
    try_map_leaves(ast, &|leaf| {
        Ok(match leaf {
            UserInputLeaf::Literal(lit) => match fuzzy_parts(&lit) {
                // Other fields are left to the parser, which says what is wrong (an unknown
                // field is named with the fields there are).
                Some((word, distance))
                    if is_text_field(lit.field_name.as_deref().unwrap_or("all")) =>
                {
                    marked_leaf(lit.field_name.clone(), word, distance)?
                }
                _ => UserInputLeaf::Literal(lit),
            },
            other => other,
        })
    })
}

/// The word and distance of an unquoted `word~N` literal.
fn fuzzy_parts(lit: &UserInputLiteral) -> Option<(&str, &str)> {
    if lit.delimiter != Delimiter::None {
        return None;
    }
    let (word, distance) = lit.phrase.rsplit_once('~')?;
    (!word.is_empty() && distance.bytes().all(|b| b.is_ascii_digit())).then_some((word, distance))
}

fn marked_leaf(field: Option<String>, word: &str, distance: &str) -> Result<UserInputLeaf, String> {
    let distance = match distance {
        "" => MAX_DISTANCE,
        d => d
            .parse::<u8>()
            .ok()
            .filter(|d| *d <= MAX_DISTANCE)
            .ok_or_else(|| {
                format!(
                    "fuzzy `{word}~{d}`: at most {MAX_DISTANCE} edits (`{word}~{MAX_DISTANCE}`)"
                )
            })?,
    };
    let field = field.unwrap_or_else(|| "all".to_string());
    if word.contains(['*', '?']) {
        return Err(format!(
            "fuzzy `{word}~{distance}`: wildcards and `~` cannot be combined"
        ));
    }
    // The term as the field's tokenizer writes it (lowercased; one word on the word fields).
    let term = if field == "all" {
        match query_tokens(word).as_slice() {
            [one] => one.clone(),
            _ => return Err(one_word_error(word, distance)),
        }
    } else if TEXT_FIELDS.contains(&field.as_str()) {
        if !word.chars().all(char::is_alphanumeric) {
            return Err(one_word_error(word, distance));
        }
        word.to_lowercase()
    } else {
        word.to_lowercase()
    };
    Ok(UserInputLeaf::Regex {
        field: Some(field),
        pattern: format!("{MARK}{distance}:{term}"),
    })
}

fn one_word_error(word: &str, distance: u8) -> String {
    format!("fuzzy `{word}~{distance}` matches one word; search the words apart (`dana~1 kim~1`)")
}

fn is_marked(leaf: &UserInputLeaf) -> bool {
    matches!(leaf, UserInputLeaf::Regex { pattern, .. } if pattern.starts_with(MARK))
}

fn has_fuzzy(ast: &UserInputAst) -> bool {
    match ast {
        UserInputAst::Clause(clauses) => clauses.iter().any(|(_, sub)| has_fuzzy(sub)),
        UserInputAst::Boost(inner, _) => has_fuzzy(inner),
        UserInputAst::Leaf(leaf) => is_marked(leaf),
    }
}

/// The query for `ast`: marked leaves become fuzzy term queries, parts without any are built by
/// `plain` (the query parser, with conjunction by default: a clause without `+`/`-` is a must).
pub(crate) fn build(
    ast: UserInputAst,
    schema: &Schema,
    plain: &dyn Fn(UserInputAst) -> Result<Box<dyn Query>, StoreError>,
) -> Result<Box<dyn Query>, StoreError> {
    if !has_fuzzy(&ast) {
        return plain(ast);
    }
    match ast {
        UserInputAst::Clause(clauses) => {
            let clauses = clauses
                .into_iter()
                .map(|(occur, sub)| {
                    let occur = match occur {
                        Some(tantivy::query_grammar::Occur::Should) => Occur::Should,
                        Some(tantivy::query_grammar::Occur::MustNot) => Occur::MustNot,
                        Some(tantivy::query_grammar::Occur::Must) | None => Occur::Must,
                    };
                    Ok((occur, build(sub, schema, plain)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Box::new(BooleanQuery::new(clauses)))
        }
        UserInputAst::Boost(inner, boost) => Ok(Box::new(BoostQuery::new(
            build(*inner, schema, plain)?,
            boost.into_inner() as f32,
        ))),
        UserInputAst::Leaf(leaf) => match *leaf {
            UserInputLeaf::Regex {
                field: Some(field),
                pattern,
            } => {
                let spec = pattern.strip_prefix(MARK).unwrap_or_default();
                let (distance, term) = spec.split_once(':').unwrap_or_default();
                let field = schema
                    .get_field(&field)
                    .map_err(|_| StoreError::InvalidQuery(format!("unknown field `{field}`")))?;
                Ok(Box::new(FuzzyTermQuery::new(
                    Term::from_field_text(field, term),
                    distance.parse().unwrap_or(MAX_DISTANCE),
                    true,
                )))
            }
            other => plain(UserInputAst::Leaf(Box::new(other))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(q: &str) -> Result<String, String> {
        let ast = tantivy::query_grammar::parse_query(q).unwrap();
        rewrite_fuzzy(ast).map(|a| format!("{a:?}"))
    }

    #[test]
    fn fuzzy_literals_are_marked_and_the_rest_is_left_alone() {
        let marked = rewritten("user.name:DNAA~1").unwrap();
        assert!(marked.contains("fuzzy:1:dnaa"), "{marked}");
        assert!(rewritten("okat~").unwrap().contains("fuzzy:2:okat"));
        for q in ["\"dana kim\"~1", "dana", "a~b", "~x"] {
            assert!(!rewritten(q).unwrap().contains("fuzzy:"), "{q}");
        }
        for (q, says) in [
            ("dana~3", "at most 2"),
            ("user.name:dana.kim~1", "one word"),
            ("dan*~1", "wildcards"),
        ] {
            let err = rewritten(q).unwrap_err();
            assert!(err.contains(says), "{q}: {err}");
        }
    }
}
