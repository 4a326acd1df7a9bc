//! Tokenizers of the catch-all `all` field and the query rewrite that goes with them.
//!
//! Free text over audit logs is mostly identifiers: IPs, emails, ids, actions
//! (`user.session.start`), paths. The `all` field indexes each of them **whole** and, when it
//! has inner separators, also each of its alphanumeric words, lowercased, without positions:
//!
//! - index side ([`CATCH_ALL_TOKENIZER`]): the text is cut into *chunks* at whitespace and
//!   punctuation other than the joiners `. @ - _ : / +`; a chunk loses leading and trailing
//!   joiners; a chunk with joiners inside yields itself plus its words
//!   (`alice@acme.test` -> `alice@acme.test`, `alice`, `acme`, `test`), a plain word itself;
//!   the parts between its `@`s and `/`s that have joiners of their own are tokens too (an
//!   address's domain `acme.test`, a URL's host, a file name: [`pieces`]);
//!   a token already seen in the same text is dropped (the field keeps no frequencies);
//!   three kinds of chunk are cheaper: a date-time (`2026-10-01T00:04:08.123Z`, anything starting
//!   `YYYY-MM-DDThh:mm`) is left out altogether, and a chunk of digits and joiners only (an IP,
//!   a decimal, a version, a date: `10.1.2.3`, `11.5`, `2026-10-01`) is indexed whole without
//!   its words ([`is_date_time`], [`is_numeric`]), and so is a UUID ([`is_uuid`]);
//! - query side ([`CATCH_ALL_QUERY_TOKENIZER`]): the same chunks, each whole, so `10.1.2.3`,
//!   `"10.1.2.3"`, `alice@acme.test`, `user.session.start` and `alice` are one term each;
//! - a query phrase of several chunks on `all` (`"Mozilla/5.0 (X11; Linux"`) is rewritten by
//!   [`rewrite_catch_all_phrases`] into the AND of its chunks: every chunk must occur in the
//!   event, not necessarily adjacent (the field has no positions).
//!
//! Why: the catch-all carries most of the indexing work (the ~1 KB raw record of every event);
//! positions and one token per word of every identifier made it the ingest bottleneck, and
//! whole identifiers make the common free-text searches single-term lookups instead of phrase
//! queries.

use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Index-side tokenizer name of `all`.
pub const CATCH_ALL_TOKENIZER: &str = "catch_all";
/// Query-side tokenizer name of `all` (registered under the index name for the query parser).
pub const CATCH_ALL_QUERY_TOKENIZER: &str = "catch_all_query";

/// Longer tokens are not indexed (a chunk that long still yields its words).
pub const MAX_TOKEN_BYTES: usize = 128;

/// Characters that join the parts of one identifier.
fn is_joiner(c: char) -> bool {
    matches!(c, '.' | '@' | '-' | '_' | ':' | '/' | '+')
}

/// The chunks of `text`: maximal runs of alphanumerics and joiners, trimmed of joiners at both
/// ends, with whether they contain a joiner.
fn chunks(text: &str, mut f: impl FnMut(usize, usize, bool)) {
    if text.is_ascii() {
        return ascii_chunks(text.as_bytes(), f);
    }
    let mut from = 0;
    while let Some(start) = next_alnum(text, from) {
        let mut end = text.len();
        let mut alnum_end = start;
        for (off, c) in text[start..].char_indices() {
            if c.is_alphanumeric() {
                alnum_end = start + off + c.len_utf8();
            } else if !is_joiner(c) {
                end = start + off;
                break;
            }
        }
        f(start, alnum_end, text[start..alnum_end].contains(is_joiner));
        from = end.max(alnum_end);
    }
}

/// [`chunks`] for ASCII text (almost all of it), byte by byte.
fn ascii_chunks(b: &[u8], mut f: impl FnMut(usize, usize, bool)) {
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        let mut alnum_end = i;
        let mut joiners = 0usize;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_alphanumeric() {
                alnum_end = i + 1;
            } else if is_joiner(c as char) {
                joiners += 1;
            } else {
                break;
            }
            i += 1;
        }
        // Only joiners strictly inside the chunk count; trailing ones were passed over.
        let trailing = i - alnum_end;
        f(start, alnum_end, joiners > trailing);
    }
}

fn next_alnum(text: &str, from: usize) -> Option<usize> {
    text[from..]
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric())
        .map(|(o, _)| from + o)
}

/// The alphanumeric runs of `part`.
fn words(part: &str, mut f: impl FnMut(usize, usize)) {
    if part.is_ascii() {
        let b = part.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let s = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            f(s, i);
        }
        return;
    }
    let mut p = 0;
    while let Some(s) = next_alnum(part, p) {
        let e = part[s..]
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map(|(o, _)| s + o)
            .unwrap_or(part.len());
        f(s, e);
        p = e;
    }
}

fn push_lower(out: &mut String, s: &str) {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
    } else {
        out.extend(s.chars().flat_map(char::to_lowercase));
    }
}

/// Whether `chunk` starts like an ISO 8601 / RFC 3339 date-time, `YYYY-MM-DDThh:mm`.
///
/// Such a chunk (a raw record's `published`, `id.time`, ...) is near-unique per event, so it
/// cost every segment a term dictionary entry and a posting list of its own, and its words
/// (`2026`, `01t00`, `04`) match nothing an analyst looks for: time is searched with the
/// `@timestamp` range.
fn is_date_time(chunk: &[u8]) -> bool {
    const SHAPE: &[u8; 16] = b"dddd-dd-ddTdd:dd";
    chunk.len() >= SHAPE.len()
        && chunk.iter().zip(SHAPE).all(|(&c, &s)| match s {
            b'd' => c.is_ascii_digit(),
            b'T' => c == b'T' || c == b't',
            _ => c == s,
        })
}

/// Whether `chunk` has only digits between its joiners: an IP address, a decimal, a version
/// or a date. It is indexed whole; its words (the octets of an IP, `5` and `0` of `5.0`) are
/// small numbers that would match nearly every event.
fn is_numeric(chunk: &[u8]) -> bool {
    chunk
        .iter()
        .all(|&c| c.is_ascii_digit() || is_joiner(c as char))
}

/// Whether `chunk` is a UUID, `8-4-4-4-12` hex digits (the `uuid`, `eventID`, `requestID`, `Id`
/// of Okta, CloudTrail, Microsoft 365 records). It is indexed whole; its five hex groups are
/// near-unique per event, so as words they cost every segment five more term dictionary
/// entries and posting lists, and nobody searches a fifth of a UUID.
fn is_uuid(chunk: &[u8]) -> bool {
    chunk.len() == 36
        && chunk.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The parts of `chunk` between its `@`s and `/`s that are identifiers of several words
/// themselves: an address's local part and domain (`dana.kim` and `acme-corp.example` of
/// `dana.kim@acme-corp.example`), a URL's host (`evil.example.com` of
/// `https://evil.example.com/cb`), a file name in a path (`report.pdf`). Analysts search for
/// those on their own (every event of a domain), and as a part of the chunk spanning a joiner
/// they would match nothing. Numeric parts (`5.0` of `Mozilla/5.0`) are left out, like the
/// words of numeric chunks; single words are among the chunk's words anyway.
fn pieces(chunk: &[u8], mut f: impl FnMut(usize, usize)) {
    let splits = |c: u8| c == b'@' || c == b'/';
    if !chunk.iter().any(|&c| splits(c)) {
        return;
    }
    let joiner = |c: u8| is_joiner(char::from(c));
    let mut from = 0;
    for i in 0..=chunk.len() {
        if i < chunk.len() && !splits(chunk[i]) {
            continue;
        }
        let (mut s, mut e) = (from, i);
        while s < e && joiner(chunk[s]) {
            s += 1;
        }
        while e > s && joiner(chunk[e - 1]) {
            e -= 1;
        }
        let piece = &chunk[s..e];
        if piece.iter().any(|&c| joiner(c)) && !is_numeric(piece) {
            f(s, e);
        }
        from = i + 1;
    }
}

/// Byte ranges of the tokens of `text` (see the module doc); `whole_only` is the query side.
fn token_ranges(text: &str, whole_only: bool, out: &mut Vec<(usize, usize)>) {
    out.clear();
    chunks(text, |start, end, has_joiner| {
        let fits = end - start <= MAX_TOKEN_BYTES;
        if !has_joiner {
            if fits {
                out.push((start, end));
            }
            return;
        }
        if whole_only && fits {
            out.push((start, end));
            return;
        }
        let chunk = &text.as_bytes()[start..end];
        if is_date_time(chunk) {
            return;
        }
        if fits {
            out.push((start, end));
            if is_numeric(chunk) || is_uuid(chunk) {
                return;
            }
        }
        pieces(chunk, |s, e| {
            if e - s <= MAX_TOKEN_BYTES {
                out.push((start + s, start + e));
            }
        });
        words(&text[start..end], |s, e| {
            if e - s <= MAX_TOKEN_BYTES {
                out.push((start + s, start + e));
            }
        });
    });
}

/// Keep the first of the (ASCII case-insensitively) equal tokens of `ranges` over `text`.
///
/// The field records no frequencies or positions, so a repeat adds nothing to the index; but
/// tantivy would still build, hash and look up its term. An event repeats many of its values
/// (`source.ip` and the raw `client.ipAddress`, the user in `user.name`, `user.email`,
/// `related.user` and the raw actor, template words), and this open-addressing set over the
/// token bytes is several times cheaper than tantivy's lookup. Non-ASCII tokens are kept as
/// they are (their lowercasing is not byte-wise).
fn dedup_ranges(text: &[u8], ranges: &mut Vec<(usize, usize)>, slots: &mut Vec<u32>) {
    const EMPTY: u32 = u32::MAX;
    let cap = (ranges.len() * 2).next_power_of_two().max(16);
    slots.clear();
    slots.resize(cap, EMPTY);
    let mut kept = 0;
    for i in 0..ranges.len() {
        let (s, e) = ranges[i];
        let tok = &text[s..e];
        if tok.is_ascii() {
            let h = fold_hash(tok);
            let mut j = (h >> 40) as usize & (cap - 1);
            let duplicate = loop {
                let slot = slots[j];
                if slot == EMPTY {
                    slots[j] = kept as u32;
                    break false;
                }
                let (ks, ke) = ranges[slot as usize];
                if text[ks..ke].eq_ignore_ascii_case(tok) {
                    break true;
                }
                j = (j + 1) & (cap - 1);
            };
            if duplicate {
                continue;
            }
        }
        // `kept <= i`: the entries still to be read are not overwritten.
        ranges[kept] = (s, e);
        kept += 1;
    }
    ranges.truncate(kept);
}

/// A hash of an ASCII token that ignores case, eight bytes at a time. `| 0x20` folds upper to
/// lower case and keeps every other token byte (digits and the joiners `. - : / +`) as it is
/// or maps it (`@`, `_`) to a byte no token has, so equal-ignoring-case tokens hash equal.
fn fold_hash(tok: &[u8]) -> u64 {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = tok.len() as u64;
    let mut words = tok.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ (u64::from_le_bytes(b) | FOLD))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h ^ (u64::from_le_bytes(b) | FOLD))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    h.wrapping_mul(K)
}

/// The `all` tokenizer; `whole_only` selects the query side.
#[derive(Clone, Default)]
pub struct CatchAllTokenizer {
    whole_only: bool,
    ranges: Vec<(usize, usize)>,
    slots: Vec<u32>,
    token: Token,
}

impl CatchAllTokenizer {
    pub fn index_side() -> Self {
        CatchAllTokenizer::default()
    }
    pub fn query_side() -> Self {
        CatchAllTokenizer {
            whole_only: true,
            ..Default::default()
        }
    }
}

pub struct CatchAllTokenStream<'a> {
    text: &'a str,
    ranges: &'a [(usize, usize)],
    next: usize,
    token: &'a mut Token,
}

impl Tokenizer for CatchAllTokenizer {
    type TokenStream<'a> = CatchAllTokenStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> CatchAllTokenStream<'a> {
        token_ranges(text, self.whole_only, &mut self.ranges);
        if !self.whole_only {
            dedup_ranges(text.as_bytes(), &mut self.ranges, &mut self.slots);
        }
        self.token.reset();
        CatchAllTokenStream {
            text,
            ranges: &self.ranges,
            next: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for CatchAllTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(&(from, to)) = self.ranges.get(self.next) else {
            return false;
        };
        self.token.position = self.next;
        self.token.offset_from = from;
        self.token.offset_to = to;
        push_lower(&mut self.token.text, &self.text[from..to]);
        self.next += 1;
        true
    }
    fn token(&self) -> &Token {
        self.token
    }
    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The query-side tokens of `text`, lowercased.
pub fn query_tokens(text: &str) -> Vec<String> {
    let mut ranges = Vec::new();
    token_ranges(text, true, &mut ranges);
    let mut out = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        let mut s = String::new();
        push_lower(&mut s, &text[from..to]);
        out.push(s);
    }
    out
}

/// Rewrite every phrase on the catch-all field (`all:"..."` or a bare one, whose default field
/// is `all`) that has several query tokens into the AND of its tokens: the field has no
/// positions, so "all of these, anywhere in the event" is the phrase-like match it offers.
pub fn rewrite_catch_all_phrases(ast: UserInputAst) -> UserInputAst {
    map_leaves(ast, &|leaf| match leaf {
        UserInputLeaf::Literal(lit)
            if !lit.prefix
                && lit.field_name.as_deref().is_none_or(|f| f == "all")
                && query_tokens(&lit.phrase).len() > 1 =>
        {
            let field_name = lit.field_name;
            UserInputAst::Clause(
                query_tokens(&lit.phrase)
                    .into_iter()
                    .map(|t| {
                        let leaf = UserInputLeaf::Literal(UserInputLiteral {
                            field_name: field_name.clone(),
                            phrase: t,
                            delimiter: Delimiter::DoubleQuotes,
                            slop: 0,
                            prefix: false,
                        });
                        (
                            Some(tantivy::query_grammar::Occur::Must),
                            UserInputAst::Leaf(Box::new(leaf)),
                        )
                    })
                    .collect(),
            )
        }
        other => UserInputAst::Leaf(Box::new(other)),
    })
}

/// `ast` with every leaf replaced by what `f` makes of it (clauses and boosts kept): the walk
/// the query rewrites share.
pub(crate) fn map_leaves(
    ast: UserInputAst,
    f: &impl Fn(UserInputLeaf) -> UserInputAst,
) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => UserInputAst::Clause(
            clauses
                .into_iter()
                .map(|(occur, a)| (occur, map_leaves(a, f)))
                .collect(),
        ),
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(map_leaves(*inner, f)), boost)
        }
        UserInputAst::Leaf(leaf) => f(*leaf),
    }
}

/// [`map_leaves`] for rewrites that can refuse a leaf: the first `Err` is the answer.
pub(crate) fn try_map_leaves(
    ast: UserInputAst,
    f: &impl Fn(UserInputLeaf) -> Result<UserInputLeaf, String>,
) -> Result<UserInputAst, String> {
    Ok(match ast {
        UserInputAst::Clause(clauses) => UserInputAst::Clause(
            clauses
                .into_iter()
                .map(|(occur, a)| try_map_leaves(a, f).map(|a| (occur, a)))
                .collect::<Result<_, _>>()?,
        ),
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(try_map_leaves(*inner, f)?), boost)
        }
        UserInputAst::Leaf(leaf) => UserInputAst::Leaf(Box::new(f(*leaf)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index-side tokens; repeats are dropped (`dedup_ranges`).
    fn index_tokens(text: &str) -> Vec<String> {
        let mut t = CatchAllTokenizer::index_side();
        let mut s = t.token_stream(text);
        let mut out = Vec::new();
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }

    #[test]
    fn identifiers_are_indexed_whole_and_by_word() {
        assert_eq!(
            index_tokens("Alice@Acme.test 10.1.2.3 FAILURE"),
            [
                "alice@acme.test",
                "acme.test",
                "alice",
                "acme",
                "test",
                "10.1.2.3",
                "failure"
            ]
        );
        assert_eq!(
            index_tokens("Mozilla/5.0 (X11; Linux x86_64) /oauth2/na/v1?x=1 user. -11.5"),
            [
                "mozilla/5.0",
                "mozilla",
                "5",
                "0",
                "x11",
                "linux",
                "x86_64",
                "x86",
                "64",
                "oauth2/na/v1",
                "oauth2",
                "na",
                "v1",
                "x",
                "1",
                "user",
                "11.5"
            ]
        );
        assert_eq!(index_tokens(""), Vec::<String>::new());
        assert_eq!(index_tokens(" .-@ "), Vec::<String>::new());
        assert_eq!(
            index_tokens("Ünïcode-Wört"),
            ["ünïcode-wört", "ünïcode", "wört"]
        );
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(index_tokens(&long).is_empty());
        let long_joined = format!("{long}.b");
        assert_eq!(index_tokens(&long_joined), ["b"]);
    }

    #[test]
    fn address_parts_hosts_and_file_names_are_tokens_of_their_own() {
        let tokens = index_tokens(
            "dana.kim@acme-corp.example https://evil.example.com/cb/x.y.php Mozilla/5.0 \
             /api/v1/users ops@acme",
        );
        for t in [
            "dana.kim",
            "acme-corp.example",
            "evil.example.com",
            "x.y.php",
        ] {
            assert!(tokens.iter().any(|x| x == t), "{t} in {tokens:?}");
        }
        // Not pieces: single words (already words of the chunk), numeric parts, a scheme.
        for t in ["5.0", "https:", "cb/x.y.php", "api/v1"] {
            assert!(!tokens.iter().any(|x| x == t), "{t} in {tokens:?}");
        }
        // A chunk without `@` or `/` has no pieces.
        assert_eq!(
            index_tokens("user.session.start"),
            ["user.session.start", "user", "session", "start"]
        );
    }

    #[test]
    fn repeated_tokens_are_indexed_once() {
        assert_eq!(
            index_tokens("10.1.2.3 alice 10.1.2.3 ALICE Alice@x.y alice@X.Y 1 Ä ä Ä"),
            [
                "10.1.2.3",
                "alice",
                "alice@x.y",
                "x.y",
                "x",
                "y",
                "1",
                "ä",
                "ä",
                "ä"
            ]
        );
        // Many distinct tokens (the set grows with them), every one kept once.
        let text: String = (0..500).map(|i| format!("t{i} T{i} ")).collect();
        let toks = index_tokens(&text);
        assert_eq!(toks.len(), 500);
        assert_eq!(
            toks.iter().collect::<std::collections::HashSet<_>>().len(),
            500
        );
    }

    #[test]
    fn uuids_are_indexed_whole_only() {
        assert_eq!(
            index_tokens(
                "DC9FD3C0-598c-11ef-8478-2b7584bf8d5a req:dc9fd3c0-598c-11ef-8478-2b7584bf8d5a"
            ),
            [
                "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a",
                "req:dc9fd3c0-598c-11ef-8478-2b7584bf8d5a",
                "req",
                "dc9fd3c0",
                "598c",
                "11ef",
                "8478",
                "2b7584bf8d5a"
            ]
        );
        // Not UUIDs: a group too short or not hex, so the words stay.
        assert_eq!(
            index_tokens(
                "dc9fd3c0-598c-11ef-8478-2b7584bf8d5 zc9fd3c0-598c-11ef-8478-2b7584bf8d5a"
            ),
            [
                "dc9fd3c0-598c-11ef-8478-2b7584bf8d5",
                "dc9fd3c0",
                "598c",
                "11ef",
                "8478",
                "2b7584bf8d5",
                "zc9fd3c0-598c-11ef-8478-2b7584bf8d5a",
                "zc9fd3c0",
                "2b7584bf8d5a"
            ]
        );
    }

    #[test]
    fn date_times_are_left_out_and_numeric_chunks_indexed_whole_only() {
        assert_eq!(
            index_tokens(
                "2026-10-01T00:04:08.123+00:00 2021-10-27t23:59:31Z at 2026-10-01 1625045793351"
            ),
            ["at", "2026-10-01", "1625045793351"]
        );
        // Numeric chunks: IPs, decimals, versions, dates, phone-like numbers keep only the
        // whole; a chunk with a letter keeps its words, numbers included.
        assert_eq!(
            index_tokens("10.1.2.3 -11.1111 +1-555-0100 10.0.0.1:8080 rv:78.0 okta-000123"),
            [
                "10.1.2.3",
                "11.1111",
                "1-555-0100",
                "10.0.0.1:8080",
                "rv:78.0",
                "rv",
                "78",
                "0",
                "okta-000123",
                "okta",
                "000123"
            ]
        );
        // Not date-times: too short, or not the date-time shape.
        assert_eq!(
            index_tokens("2026-10-01T00 2026-1-01T00:04:08"),
            [
                "2026-10-01t00",
                "2026",
                "10",
                "01t00",
                "2026-1-01t00:04:08",
                "1",
                "04",
                "08"
            ]
        );
        // The query side is unchanged: such a query term matches nothing now.
        assert_eq!(
            query_tokens("2026-10-01T00:04:08Z"),
            ["2026-10-01t00:04:08z"]
        );
    }

    #[test]
    fn query_side_keeps_chunks_whole() {
        assert_eq!(query_tokens("10.1.2.3"), ["10.1.2.3"]);
        assert_eq!(query_tokens("Alice@acme.test."), ["alice@acme.test"]);
        assert_eq!(
            query_tokens("Mozilla/5.0 (X11; Linux"),
            ["mozilla/5.0", "x11", "linux"]
        );
        // Every query token is also an index token of the same text.
        for text in ["a.b-c d@e.f", "user.session.start", "x/y:z+1", "Wört.Ä"] {
            let idx = index_tokens(text);
            assert!(query_tokens(text).iter().all(|t| idx.contains(t)), "{text}");
        }
    }

    #[test]
    fn multi_chunk_phrases_on_all_become_conjunctions() {
        let ast = tantivy::query_grammar::parse_query("\"okta login\" user.name:\"a b\"").unwrap();
        let text = format!("{:?}", rewrite_catch_all_phrases(ast));
        assert!(
            text.contains("\"okta\"") && text.contains("\"login\""),
            "{text}"
        );
        assert!(
            text.contains("\"a b\""),
            "other fields keep their phrases: {text}"
        );
    }
}
