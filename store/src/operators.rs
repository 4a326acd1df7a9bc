//! Operators analysts type from other query languages, spelled the way tantivy's grammar reads
//! them, before the query is parsed.
//!
//! tantivy's grammar knows `AND`, `OR`, `NOT`, `+` and `-`. Anything else between terms is read
//! as one more term, which the word tokenizers turn into nothing, so it silently vanished:
//! `a || b` (Lucene, KQL) meant `a AND b` and found the events holding both, not either. And an
//! apostrophe inside a word (`o'brien@acme.test`) opened a single-quoted phrase that never
//! closed: a syntax error for an ordinary name.

/// `query` with `||` as `OR`, `&&` as `AND`, `!term` as `-term`, and apostrophes inside words
/// escaped; `Err` for a lone `|`, which in a log search means a pipe to a command Perimeter
/// does not have, not an operator. Quoted phrases are copied as typed.
pub(crate) fn spell_operators(query: &str) -> Result<String, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let at_token_start = prev.is_none_or(|p| p.is_whitespace() || p == '(');
        match c {
            '"' => i = copy_phrase(&chars, i, &mut out),
            '\'' if at_token_start || prev == Some(':') => i = copy_phrase(&chars, i, &mut out),
            '\\' => {
                // An escape is copied with the character it escapes.
                out.extend(&chars[i..(i + 2).min(chars.len())]);
                i += 2;
            }
            '\'' => {
                out.push_str("\\'");
                i += 1;
            }
            // As in Lucene, `||` and `&&` are operators wherever they stand (`dana||grace`).
            '|' | '&' if chars.get(i + 1) == Some(&c) => {
                let word = if c == '|' { "OR" } else { "AND" };
                if !at_token_start {
                    out.push(' ');
                }
                out.push_str(word);
                i += 2;
                if chars
                    .get(i)
                    .is_some_and(|n| !n.is_whitespace() && *n != ')')
                {
                    out.push(' ');
                }
            }
            // A `|` standing alone (also the third of `|||`), not one inside a word.
            '|' if at_token_start
                || (prev == Some('|') && i.checked_sub(2).map(|p| chars[p]) != Some('\\')) =>
            {
                return Err(
                    "`|` is not an operator here (there are no piped commands): use OR, AND or NOT between terms"
                        .into(),
                );
            }
            '!' if at_token_start
                && chars
                    .get(i + 1)
                    .is_some_and(|n| !n.is_whitespace() && *n != '=' && *n != '!') =>
            {
                out.push('-');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Copy the phrase opening at `start` (its quote character) up to and including its closing
/// quote, or to the end when it does not close (the grammar then says what is wrong); the
/// index after it.
fn copy_phrase(chars: &[char], start: usize, out: &mut String) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    let end = (i + 1).min(chars.len());
    out.extend(&chars[start..end]);
    end
}

#[cfg(test)]
mod tests {
    use super::spell_operators;

    fn spelt(q: &str) -> String {
        spell_operators(q).expect("a query")
    }

    #[test]
    fn other_languages_operators_become_tantivys() {
        assert_eq!(spelt("a || b"), "a OR b");
        assert_eq!(spelt("a && b"), "a AND b");
        assert_eq!(spelt("(a || b) && !c"), "(a OR b) AND -c");
        assert_eq!(spelt("!(a OR b)"), "-(a OR b)");
        assert_eq!(
            spelt("user.name:dana !event.outcome:success"),
            "user.name:dana -event.outcome:success"
        );
        // Without spaces too, as in Lucene (it meant `dana AND grace`).
        assert_eq!(spelt("dana||grace"), "dana OR grace");
        assert_eq!(
            spelt("event.module:okta||event.module:github"),
            "event.module:okta OR event.module:github"
        );
        assert_eq!(spelt("(a&&b)"), "(a AND b)");
        // Not operators: phrases, escapes, and `!=`-like text.
        assert_eq!(spelt("\"a || b\""), "\"a || b\"");
        assert_eq!(spelt("x:wow!"), "x:wow!");
        assert_eq!(spelt("! a"), "! a");
        assert_eq!(spelt("a \\|| b"), "a \\|| b");
    }

    #[test]
    fn apostrophes_inside_words_are_escaped_and_quotes_stay_phrases() {
        assert_eq!(
            spelt("user.email:o'brien@acme.test"),
            "user.email:o\\'brien@acme.test"
        );
        assert_eq!(spelt("o'brien"), "o\\'brien");
        assert_eq!(spelt("dana'"), "dana\\'");
        assert_eq!(spelt("'dana smith'"), "'dana smith'");
        assert_eq!(spelt("user.name:'dana smith'"), "user.name:'dana smith'");
        assert_eq!(spelt("\"it's\" o'neil"), "\"it's\" o\\'neil");
        assert_eq!(spelt("o\\'brien"), "o\\'brien");
    }

    #[test]
    fn a_lone_pipe_is_refused() {
        let e = spell_operators("event.module:okta | stats count").unwrap_err();
        assert!(e.contains("`|`"), "{e}");
        assert!(spell_operators("a |").is_err());
        // `|||` is `||` and a lone `|` (it found nothing without a word).
        assert!(spell_operators("a ||| b").is_err());
    }

    #[test]
    fn spelt_queries_parse() {
        for q in [
            "dana||grace",
            "a || b",
            "o'brien",
            "(a || b) && !c",
            "user.email:o'brien@acme.test OR x",
        ] {
            let spelt = spelt(q);
            tantivy::query_grammar::parse_query(&spelt)
                .unwrap_or_else(|_| panic!("{q} -> {spelt} does not parse"));
        }
    }
}
