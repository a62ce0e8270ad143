//! Finding personal data in text: hand-written scanners, one pass over the bytes for what
//! starts a word (numbers, IBANs, secrets, IPv6) and one over the `@`s for emails.
//!
//! Precision matters as much as recall, so every number must pass the checks its kind has:
//! a card its Luhn digit and an issuer's first digit, an IBAN its country's length and mod-97,
//! an SSN the area/group/serial rules, an IPv4 four octets with nothing dotted around them, a
//! phone number a real shape (`+` and a country code, a North American 3-3-4 with valid area
//! and exchange, or a trunk `0` and 9 to 11 digits; a bare run of digits only after a word
//! like "phone"). Versions, dates, times, UUIDs, prices and order numbers have none of these
//! shapes. Prose costs a look at each byte, eight at a time: only words near a mark (a digit,
//! `+ ( : = - _`, a capital inside a word) are read.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use memchr::memmem;

use crate::config::PiiEntity;

/// One value found: its byte range in the text and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub entity: PiiEntity,
}

/// A set of entity kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entities(u8);

impl Entities {
    pub fn of(entities: &[PiiEntity]) -> Entities {
        entities
            .iter()
            .fold(Entities::default(), |set, &e| set.with(e))
    }

    fn bit(entity: PiiEntity) -> u8 {
        1 << match entity {
            PiiEntity::Email => 0,
            PiiEntity::Phone => 1,
            PiiEntity::Card => 2,
            PiiEntity::Iban => 3,
            PiiEntity::Ssn => 4,
            PiiEntity::Ip => 5,
            PiiEntity::Secret => 6,
        }
    }

    pub fn with(self, entity: PiiEntity) -> Entities {
        Entities(self.0 | Entities::bit(entity))
    }

    pub fn has(self, entity: PiiEntity) -> bool {
        self.0 & Entities::bit(entity) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`PiiEntity::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = PiiEntity> {
        PiiEntity::ALL.into_iter().filter(move |&e| self.has(e))
    }
}

/// Every value of the `wanted` kinds in `text`, in order, none overlapping.
pub fn find(text: &str, wanted: Entities) -> Vec<Finding> {
    let mut found = Vec::new();
    if wanted.is_empty() {
        return found;
    }
    let b = text.as_bytes();
    if wanted.has(PiiEntity::Secret) {
        private_keys(text, &mut found);
    }
    if wanted.has(PiiEntity::Email) {
        for at in memchr::memchr_iter(b'@', b) {
            if let Some((start, end)) = email(b, at) {
                found.push(Finding {
                    start,
                    end,
                    entity: PiiEntity::Email,
                });
            }
        }
    }
    words(b, wanted, &mut found);
    if found.len() > 1 {
        // Earliest first, the longer of two at the same place; overlaps give way.
        found.sort_by_key(|f| (f.start, usize::MAX - f.end));
        let mut end = 0;
        found.retain(|f| {
            let keep = f.start >= end;
            if keep {
                end = f.end;
            }
            keep
        });
    }
    found
}

/// Letters, digits, `_` and any non-ASCII byte: what a word is made of here.
fn is_word(c: u8) -> bool {
    WORD_BYTES[usize::from(c)]
}

/// [`is_word`] for each byte, looked up: it is asked of almost every byte of every prompt, and
/// the three tests took a fifth of the scan.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        c += 1;
    }
    table
};

fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(b' ')
}

/// The pass over word starts: numbers, IBANs, secrets and IPv6 addresses.
///
/// Most words of a prompt start none of them, and each that does has a mark nearby
/// ([`next_mark`]): a digit, one of `+ ( : = - _`, or a capital inside a word. So the pass goes
/// from mark to mark and reads the words from a little before each ([`lead`]) up to it; it finds
/// what a reading of every word finds (a test holds it to that).
fn words(b: &[u8], wanted: Entities, found: &mut Vec<Finding>) {
    let mut i = 0;
    while let Some(mark) = next_mark(b, i) {
        i = scan(b, lead(b, mark).max(i), mark, wanted, found);
    }
}

/// Bytes that may mark something near: digits, `+ ( : = - _` ([`MARK`]), and capitals
/// ([`CAPITAL`]), which mark only inside a word (`AKIA`, `eyJ`, an IBAN's `DE89`), not at its
/// start, where most are.
static MARKS: [u8; 256] = {
    let mut table = [0; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = if b.is_ascii_digit() || matches!(b, b'+' | b'(' | b':' | b'=' | b'-' | b'_') {
            MARK
        } else if b.is_ascii_uppercase() {
            CAPITAL
        } else {
            0
        };
        c += 1;
    }
    table
};
const MARK: u8 = 1;
const CAPITAL: u8 = 2;

/// The first mark at or after `from`.
fn next_mark(b: &[u8], mut from: usize) -> Option<usize> {
    let marks = |bytes: &[u8]| bytes.iter().fold(0, |m, &c| m | MARKS[usize::from(c)]);
    loop {
        // Eight bytes at a time while there is none, as in most stretches of prose.
        while let Some(chunk) = b.get(from..from + 8) {
            if marks(chunk) != 0 {
                break;
            }
            from += 8;
        }
        let at = from
            + b.get(from..)?
                .iter()
                .position(|&c| MARKS[usize::from(c)] != 0)?;
        if MARKS[usize::from(b[at])] == MARK || (at > 0 && is_word(b[at - 1])) {
            return Some(at);
        }
        from = at + 1;
    }
}

/// Where to start reading so as to see everything the mark at `at` can be part of: back over
/// the token it is in (a key or a bearer token: word bytes and `-._~+/=`), what may separate a
/// field's name from its value (spaces, quotes, `:`, `=`), and the word before (the name, or
/// `bearer`). Never inside a word.
fn lead(b: &[u8], at: usize) -> usize {
    let mut k = at;
    while k > 0 && (is_word(b[k - 1]) || b"-._~+/=".contains(&b[k - 1])) {
        k -= 1;
    }
    while k > 0 && b" \"':=".contains(&b[k - 1]) {
        k -= 1;
    }
    while k > 0 && is_word(b[k - 1]) {
        k -= 1;
    }
    k
}

/// Reads what starts at each word (and `+`, `(`, `:`) from `i` up to `until`. Returns where
/// it stopped: past `until`, and never inside a word.
fn scan(b: &[u8], mut i: usize, until: usize, wanted: Entities, found: &mut Vec<Finding>) -> usize {
    let numbers = wanted.has(PiiEntity::Phone)
        || wanted.has(PiiEntity::Card)
        || wanted.has(PiiEntity::Ssn)
        || wanted.has(PiiEntity::Ip);
    let ip = wanted.has(PiiEntity::Ip);
    while i <= until {
        let Some(&c) = b.get(i) else {
            break;
        };
        let next = match c {
            b'A'..=b'Z' | b'a'..=b'z' => word(b, i, wanted, found),
            b'0'..=b'9' | b'+' | b'(' if numbers => number(b, i, wanted, found),
            b':' if ip && byte(b, i + 1) == b':' => ipv6(b, i, found).unwrap_or(i + 2),
            // A word starting otherwise (`_`, a non-ASCII letter, a digit when no number is
            // wanted) starts nothing.
            _ if is_word(c) => word_end(b, i),
            _ => i + 1,
        };
        i = next.max(i + 1);
        // A scan can stop inside a word (an IBAN-shaped run cut short): the rest of the word
        // starts nothing either.
        if i < b.len() && is_word(b[i]) && is_word(b[i - 1]) {
            i = word_end(b, i);
        }
    }
    i
}

/// The end of the word that starts at `i`.
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_word(b[i]) {
        i += 1;
    }
    i
}

/// A word starting with a letter at `i`: an IBAN, a secret, a keyword with a secret after it,
/// or an IPv6 address starting with a hex letter. Returns where scanning goes on.
fn word(b: &[u8], i: usize, wanted: Entities, found: &mut Vec<Finding>) -> usize {
    let end = word_end(b, i);
    if wanted.has(PiiEntity::Iban) && end - i >= 4 && b[i].is_ascii_uppercase() {
        match iban(b, i) {
            Some(Ok(stop)) => {
                found.push(Finding {
                    start: i,
                    end: stop,
                    entity: PiiEntity::Iban,
                });
                return stop;
            }
            // Shaped like one but failing its check: none of it is anything else either.
            Some(Err(stop)) => return stop,
            None => {}
        }
    }
    if wanted.has(PiiEntity::Secret) {
        if let Some((start, stop)) = secret(b, i, end) {
            found.push(Finding {
                start,
                end: stop,
                entity: PiiEntity::Secret,
            });
            return stop;
        }
    }
    // An address's first group is at most four hex digits (five fail later) and a colon.
    if wanted.has(PiiEntity::Ip)
        && end - i <= 5
        && byte(b, end) == b':'
        && matches!(b[i], b'a'..=b'f' | b'A'..=b'F')
    {
        if let Some(stop) = ipv6(b, i, found) {
            return stop;
        }
    }
    end
}

// ---------------------------------------------------------------------------------------------
// Emails

/// The email around the `@` at `at`: a local part of the usual characters and a domain of two
/// or more labels ending in a letters-only top-level domain (not a file extension, so
/// `icon@2x.png` is not one).
fn email(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-'".contains(&c);
    let mut start = at;
    while start > 0 && local(b[start - 1]) && at - start < 64 {
        start -= 1;
    }
    while start < at && matches!(b[start], b'.' | b'\'' | b'-') {
        start += 1;
    }
    if start == at || b[at - 1] == b'.' || (start > 0 && is_word(b[start - 1])) {
        return None;
    }
    let mut end = at + 1;
    let mut labels = 0;
    let mut tld_start = end;
    loop {
        let label = end;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'-') {
            end += 1;
        }
        if end == label || b[label] == b'-' || b[end - 1] == b'-' {
            // An empty or malformed label: the domain ended at the dot before it.
            end = label.saturating_sub(1);
            break;
        }
        labels += 1;
        tld_start = label;
        if byte(b, end) == b'.' && byte(b, end + 1).is_ascii_alphanumeric() {
            end += 1;
        } else {
            break;
        }
    }
    if labels < 2 || end <= tld_start {
        return None;
    }
    let tld = &b[tld_start..end];
    const FILES: [&[u8]; 9] = [
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"css", b"js", b"ts",
    ];
    let is_file = FILES.iter().any(|f| tld.eq_ignore_ascii_case(f));
    (tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !is_file
        && !is_word(byte(b, end)))
    .then_some((start, end))
}

// ---------------------------------------------------------------------------------------------
// Numbers: phones, cards, SSNs, IPv4

/// One run of digits in a number, with what came before it.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    /// The separator before it (0 for the first), `(` for a group in parentheses.
    sep: u8,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Each group's length, on the stack (a value is read from at most [`MAX_SPAN`] groups).
fn sizes(groups: &[Group]) -> [usize; MAX_SPAN] {
    let mut sizes = [0; MAX_SPAN];
    for (size, g) in sizes.iter_mut().zip(groups) {
        *size = g.len();
    }
    sizes
}

/// The most digit groups read as one value.
const MAX_SPAN: usize = 8;

/// The most digits a value of any kind has: a card's 19.
const MAX_DIGITS: usize = 19;

/// Longest number read as one: longer runs are tables or data, read in pieces.
const MAX_GROUPS: usize = 24;

/// A number starting at `i` (a digit, `+` or `(`): its digit groups and separators are read
/// whole, then classified; what fails every check is skipped whole, so no part of a rejected
/// number is found on its own. Returns where scanning goes on.
fn number(b: &[u8], i: usize, wanted: Entities, found: &mut Vec<Finding>) -> usize {
    // A number glued to an identifier before it (`ORD-2024-1234`, `v1.2`, `1,234`) is part of
    // that identifier.
    if i >= 2 {
        let (before, prev) = (b[i - 2], b[i - 1]);
        let glued = match prev {
            b'-' | b'.' | b'/' | b'_' | b'#' => before.is_ascii_alphanumeric(),
            b',' | b':' => before.is_ascii_digit(),
            _ => false,
        };
        if glued {
            return skip_number(b, i);
        }
    }
    let plus = b[i] == b'+';
    let mut j = i + usize::from(plus);
    // On the stack: most numbers in text are short and none of ours.
    let mut read = [Group {
        start: 0,
        end: 0,
        sep: 0,
    }; MAX_GROUPS];
    let mut n = 0;
    let mut sep = 0u8;
    while n < MAX_GROUPS {
        let paren = byte(b, j) == b'(' && byte(b, j + 1).is_ascii_digit();
        let start = j + usize::from(paren);
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start || (paren && byte(b, end) != b')') {
            break;
        }
        read[n] = Group {
            start,
            end,
            sep: if paren { b'(' } else { sep },
        };
        n += 1;
        j = end + usize::from(paren);
        // A separator counts only with digits (or an opening parenthesis) right after it.
        let s = byte(b, j);
        let continues = |k: usize| {
            byte(b, k).is_ascii_digit() || (byte(b, k) == b'(' && byte(b, k + 1).is_ascii_digit())
        };
        if matches!(s, b' ' | b'-' | b'.' | b'/') && continues(j + 1) {
            sep = s;
            j += 1;
        } else if paren && continues(j) {
            sep = b' ';
        } else {
            break;
        }
    }
    let groups = &read[..n];
    let Some(last) = groups.last() else {
        return i + 1;
    };
    let token_end = last.end + usize::from(last.sep == b'(');
    // Glued to a word after it (`12d3`, `3rd`): not a number of ours.
    if is_word(byte(b, token_end)) {
        if wanted.has(PiiEntity::Ip) && b[i].is_ascii_hexdigit() {
            if let Some(stop) = ipv6(b, i, found) {
                return stop;
            }
        }
        return skip_number(b, token_end);
    }
    if wanted.has(PiiEntity::Ip) && byte(b, token_end) == b':' && b[i].is_ascii_hexdigit() {
        if let Some(stop) = ipv6(b, i, found) {
            return stop;
        }
    }
    // The whole number first; then pieces of it at spaces, leftmost and longest first (a phone
    // number after a room number, two phone numbers in a row).
    for first in 0..n {
        if first > 0 && groups[first].sep != b' ' && groups[first].sep != b'(' {
            continue;
        }
        let last = n.min(first + MAX_SPAN);
        for stop in (first + 1..=last).rev() {
            if stop < n && groups[stop].sep != b' ' && groups[stop].sep != b'(' {
                continue;
            }
            let plus = plus && first == 0;
            let span = &groups[first..stop];
            if let Some(entity) = classify(b, span, plus, wanted) {
                let start = if plus {
                    i
                } else {
                    span[0].start - usize::from(span[0].sep == b'(')
                };
                let tail = span[span.len() - 1];
                let end = tail.end + usize::from(tail.sep == b'(');
                found.push(Finding { start, end, entity });
                return end;
            }
        }
    }
    token_end
}

/// Past the number (and whatever word it is glued to) at `i`.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (is_word(b[i]) || (b".-/:,".contains(&b[i]) && is_word(byte(b, i + 1)))) {
        i += 1;
    }
    i
}

/// What a run of digit groups is, if it is one of ours.
fn classify(b: &[u8], groups: &[Group], plus: bool, wanted: Entities) -> Option<PiiEntity> {
    // Fewer than 8 digits is only ever an IPv4 address (a year, a price, a count is none).
    let count: usize = groups.iter().map(Group::len).sum();
    if count < 8 && !(groups.len() == 4 && groups[1..].iter().all(|g| g.sep == b'.')) {
        return None;
    }
    // No kind has more digits: a card has at most 19.
    if count > MAX_DIGITS {
        return None;
    }
    // On the stack: this runs for every number of eight digits or more.
    let mut digits = [0; MAX_DIGITS];
    for (slot, d) in digits
        .iter_mut()
        .zip(groups.iter().flat_map(|g| &b[g.start..g.end]))
    {
        *slot = d - b'0';
    }
    let digits = &digits[..count];
    let mut seps = [0; MAX_SPAN];
    for (slot, g) in seps.iter_mut().zip(&groups[1..]) {
        *slot = g.sep;
    }
    let seps = &seps[..groups.len() - 1];
    let paren = groups.iter().any(|g| g.sep == b'(');
    let same_sep = seps.windows(2).all(|w| w[0] == w[1]);
    if plus {
        return (wanted.has(PiiEntity::Phone) && international_phone(groups, digits, seps))
            .then_some(PiiEntity::Phone);
    }
    if seps.contains(&b'/') {
        // Dates.
        return None;
    }
    if wanted.has(PiiEntity::Ip) && !paren && is_ipv4(b, groups, seps) {
        return Some(PiiEntity::Ip);
    }
    if seps.contains(&b'.') && !(groups.len() == 3 || groups.len() >= 4 && digits[0] == 0) {
        // Decimals, versions, dotted dates: only 3.3.4 and trunk-0 phones use dots.
        return None;
    }
    if wanted.has(PiiEntity::Ssn) && !paren && same_sep && is_ssn(b, groups, digits, seps) {
        return Some(PiiEntity::Ssn);
    }
    if wanted.has(PiiEntity::Card) && !paren && same_sep && is_card(groups, digits, seps) {
        return Some(PiiEntity::Card);
    }
    if wanted.has(PiiEntity::Phone) && national_phone(b, groups, digits, seps) {
        return Some(PiiEntity::Phone);
    }
    None
}

/// `+` and a country code, 8 to 15 digits in all (E.164), in groups of at most 8.
fn international_phone(groups: &[Group], digits: &[u8], seps: &[u8]) -> bool {
    (8..=15).contains(&digits.len())
        && digits[0] != 0
        && !seps.contains(&b'/')
        && (groups.len() == 1 || groups.iter().all(|g| g.len() <= 8))
        && (groups.len() > 1 || groups[0].sep != b'(')
        // Unseparated, or the country code stands alone.
        && (groups.len() == 1 || groups[0].len() <= 4)
}

/// A national phone number: North American `(NXX) NXX-XXXX` (optionally with a leading 1), a
/// trunk-0 number of 9 to 11 digits in groups, or a bare 10 or 11 digits after a phone word.
fn national_phone(b: &[u8], groups: &[Group], digits: &[u8], seps: &[u8]) -> bool {
    let sizes = &sizes(groups)[..groups.len()];
    // North American: area and exchange codes start with 2 to 9.
    let nanp = |g: &[Group], d: &[u8]| {
        g.len() == 3
            && g[0].len() == 3
            && g[1].len() == 3
            && g[2].len() == 4
            && d[0] >= 2
            && d[3] >= 2
            && (g[0].sep == b'(' || g[1].sep == g[2].sep)
    };
    if nanp(groups, digits) {
        return true;
    }
    if sizes.len() == 4 && sizes[0] == 1 && digits[0] == 1 && nanp(&groups[1..], &digits[1..]) {
        return true;
    }
    if groups.len() >= 2 && digits[0] == 0 {
        let consistent = seps.iter().skip(1).all(|&s| s == seps[0])
            || (groups[0].sep == b'(' && seps[1..].windows(2).all(|w| w[0] == w[1]));
        // Pairs (`06 12 34 56 78`), or an area code and groups of three or more
        // (`020 7946 0958`, `030 12345678`).
        let grouped = (sizes.len() >= 4 && sizes.iter().all(|&s| s == 2))
            || ((2..=5).contains(&sizes[0]) && sizes[1..].iter().all(|&s| (3..=8).contains(&s)));
        return (9..=11).contains(&digits.len()) && consistent && grouped;
    }
    if groups.len() == 1 && (10..=11).contains(&digits.len()) {
        let shaped = digits[0] == 0 || (digits.len() == 10 && digits[0] >= 2 && digits[3] >= 2);
        return shaped && context_before(b, groups[0].start, PHONE_WORDS);
    }
    false
}

const PHONE_WORDS: &[&str] = &[
    "phone", "tel", "mobile", "cell", "call", "fax", "whatsapp", "sms", "contact",
];
const SSN_WORDS: &[&str] = &["ssn", "social security", "ss#"];

/// Whether one of `words` ends shortly before `at` (case-insensitive): the context that makes
/// a bare run of digits a phone number or an SSN.
fn context_before(b: &[u8], at: usize, words: &[&str]) -> bool {
    let from = at.saturating_sub(32);
    let window = &b[from..at];
    words.iter().any(|w| {
        window
            .windows(w.len())
            .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
    })
}

/// Four dotted octets, 0 to 255 without leading zeros, not after a version word.
fn is_ipv4(b: &[u8], groups: &[Group], seps: &[u8]) -> bool {
    groups.len() == 4
        && seps.iter().all(|&s| s == b'.')
        && groups.iter().all(|g| {
            let d = &b[g.start..g.end];
            d.len() <= 3
                && (d.len() == 1 || d[0] != b'0')
                && d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')) <= 255
        })
        && !version_before(b, groups[0].start)
}

/// Whether the word before `at` is `version`, `ver` or `v`: `version 1.2.3.4` is no address.
fn version_before(b: &[u8], at: usize) -> bool {
    let mut end = at;
    while end > 0 && b[end - 1] == b' ' {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && b[start - 1].is_ascii_alphabetic() {
        start -= 1;
    }
    let w = &b[start..end];
    [&b"version"[..], b"ver", b"v", b"release"]
        .iter()
        .any(|v| w.eq_ignore_ascii_case(v))
}

/// `AAA-GG-SSSS` (dashes or spaces), or 9 bare digits after "SSN": area not 000, 666 or 9xx,
/// group not 00, serial not 0000.
fn is_ssn(b: &[u8], groups: &[Group], digits: &[u8], seps: &[u8]) -> bool {
    let shaped = match groups.len() {
        3 => {
            groups[0].len() == 3
                && groups[1].len() == 2
                && groups[2].len() == 4
                && matches!(seps[0], b'-' | b' ')
        }
        1 => digits.len() == 9 && context_before(b, groups[0].start, SSN_WORDS),
        _ => false,
    };
    if !shaped {
        return false;
    }
    let num = |d: &[u8]| d.iter().fold(0u32, |n, &c| n * 10 + u32::from(c));
    let (area, group, serial) = (num(&digits[..3]), num(&digits[3..5]), num(&digits[5..]));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// 13 to 19 digits from an issuer (first digit 2 to 6), grouped as cards are printed (fours,
/// or Amex's 4-6-5 and Diners' 4-6-4) or not at all, with a valid Luhn check digit.
fn is_card(groups: &[Group], digits: &[u8], seps: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    if seps.iter().any(|&s| s != b' ' && s != b'-') {
        return false;
    }
    let sizes = &sizes(groups)[..groups.len()];
    let printed = sizes.len() == 1
        || sizes == [4, 6, 5]
        || sizes == [4, 6, 4]
        || (sizes.len() >= 4
            && sizes[..sizes.len() - 1].iter().all(|&s| s == 4)
            && (1..=4).contains(&sizes[sizes.len() - 1]));
    printed && luhn(digits)
}

/// The Luhn check: every second digit from the right doubled, the sum a multiple of 10.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 {
                    twice - 9
                } else {
                    twice
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

// ---------------------------------------------------------------------------------------------
// IPv6

/// An IPv6 address starting at `i`: hex groups and colons (an IPv4 tail allowed), with at
/// least three groups, parsed by the standard library. Returns where scanning goes on.
fn ipv6(b: &[u8], i: usize, found: &mut Vec<Finding>) -> Option<usize> {
    if i > 0 && (is_word(b[i - 1]) || b[i - 1] == b':') {
        return None;
    }
    // A group has at most four hex digits, then a colon (or it is `::` itself): most words
    // that start with a hex letter stop here.
    let group = b[i..]
        .iter()
        .take(5)
        .take_while(|c| c.is_ascii_hexdigit())
        .count();
    if byte(b, i + group) != b':' {
        return None;
    }
    let mut end = i;
    while end < b.len() && end - i < 45 && (b[end].is_ascii_hexdigit() || b".:".contains(&b[end])) {
        end += 1;
    }
    // No colon, no address: most words stop here.
    memchr::memchr(b':', &b[i..end])?;
    // A sentence's full stop or colon is not part of it.
    while end > i && matches!(b[end - 1], b'.' | b':') && !b[i..end].ends_with(b"::") {
        end -= 1;
    }
    if is_word(byte(b, end)) {
        return None;
    }
    let text = std::str::from_utf8(&b[i..end]).ok()?;
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    if text.matches(':').count() < 2 || groups < 3 {
        return None;
    }
    text.parse::<Ipv6Addr>().ok()?;
    found.push(Finding {
        start: i,
        end,
        entity: PiiEntity::Ip,
    });
    Some(end)
}

// ---------------------------------------------------------------------------------------------
// IBANs

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// An IBAN starting at `i`: a country code, two check digits and the country's length of
/// letters and digits, unspaced or in groups of four, passing mod-97. `Ok` with its end, or
/// `Err` with the end of what looked like one but failed.
fn iban(b: &[u8], i: usize) -> Option<Result<usize, usize>> {
    let head = b.get(i..i + 4)?;
    let shaped = head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit();
    if !shaped {
        return None;
    }
    let country = [head[0], head[1]];
    let length = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == country)
        .map(|(_, n)| *n)?;
    let mut chars = Vec::with_capacity(length);
    let mut j = i;
    while chars.len() < length && j < b.len() {
        let c = b[j];
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            chars.push(c);
            j += 1;
        } else if c == b' ' && chars.len() % 4 == 0 && byte(b, j + 1).is_ascii_alphanumeric() {
            // Printed in groups of four.
            j += 1;
        } else {
            break;
        }
    }
    if chars.len() != length || is_word(byte(b, j)) {
        return Some(Err(j.max(i + 4)));
    }
    // Move the first four to the end, letters as 10..35, the number mod 97 must be 1.
    let rem = chars[4..].iter().chain(&chars[..4]).fold(0u32, |rem, &c| {
        if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        }
    });
    Some(if rem == 1 { Ok(j) } else { Err(j) })
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Characters of API keys and tokens.
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn run(b: &[u8], mut i: usize, ok: impl Fn(u8) -> bool) -> usize {
    while i < b.len() && ok(b[i]) {
        i += 1;
    }
    i
}

/// A secret at the word starting at `i` (ending at `word_end`): a provider's key by its
/// prefix, a JWT, a bearer token, or a high-entropy value assigned to a key/token/secret/
/// password field. The byte range of the secret.
fn secret(b: &[u8], i: usize, word_end: usize) -> Option<(usize, usize)> {
    let rest = &b[i..];
    let has = |p: &[u8]| rest.starts_with(p);
    let tail = |from: usize, ok: fn(u8) -> bool, min: usize, max: usize| {
        let end = run(b, from, ok);
        let n = end - from;
        ((min..=max).contains(&n) && !is_token(byte(b, end))).then_some((i, end))
    };
    let mixed = |from: usize, to: usize| {
        let s = &b[from..to];
        s.iter().any(u8::is_ascii_digit) && s.iter().any(u8::is_ascii_alphabetic)
    };
    match b[i] {
        b's' if has(b"sk-") => {
            let (s, e) = tail(i + 3, is_token, 20, 512)?;
            mixed(i + 3, e).then_some((s, e))
        }
        b'A' if has(b"AKIA") || has(b"ASIA") => tail(
            i + 4,
            |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
            16,
            16,
        ),
        b'A' if has(b"AIza") => tail(i + 4, is_token, 35, 35),
        b'g' if has(b"github_pat_") => {
            tail(i + 11, |c| c.is_ascii_alphanumeric() || c == b'_', 22, 255)
        }
        b'g' if rest.len() > 4 && has(b"gh") && b"pousr".contains(&rest[2]) && rest[3] == b'_' => {
            tail(i + 4, |c| c.is_ascii_alphanumeric(), 36, 255)
        }
        b'x' if rest.len() > 5 && has(b"xox") && b"bpas".contains(&rest[3]) && rest[4] == b'-' => {
            let (s, e) = tail(i + 5, |c| c.is_ascii_alphanumeric() || c == b'-', 10, 255)?;
            mixed(i + 5, e).then_some((s, e))
        }
        b'e' if has(b"eyJ") => jwt(b, i),
        b'B' | b'b'
            if word_end - i == 6
                && rest.len() > 7
                && rest[..7].eq_ignore_ascii_case(b"bearer ") =>
        {
            let from = run(b, i + 7, |c| c == b' ');
            let end = run(b, from, |c| {
                c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)
            });
            (end - from >= 16 && mixed(from, end) && !is_word(byte(b, end))).then_some((from, end))
        }
        _ => assigned(b, i, word_end),
    }
}

/// `eyJ...` `.` `eyJ...` `.` signature: a JSON Web Token (header and claims are base64url
/// JSON objects, so both start with `eyJ`).
fn jwt(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    let header = run(b, i, b64);
    if header - i < 10 || byte(b, header) != b'.' || !b[header + 1..].starts_with(b"eyJ") {
        return None;
    }
    let claims = run(b, header + 1, b64);
    if claims - header < 10 || byte(b, claims) != b'.' {
        return None;
    }
    let end = run(b, claims + 1, b64);
    Some((i, end))
}

/// Field names whose value is a secret.
const SECRET_FIELDS: &[&str] = &[
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "passphrase",
];
const SECRET_SUFFIXES: &[&str] = &["_key", "_token", "_secret", "_password", "_pwd"];

/// A value assigned to a secret-named field (`password: hunter22`, `"api_key": "..."`,
/// `TOKEN=...`): for passwords six or more characters with a digit or symbol; for keys,
/// tokens and secrets 16 or more of mixed letters and digits with high entropy.
fn assigned(b: &[u8], i: usize, word_end: usize) -> Option<(usize, usize)> {
    // A field name is followed by `:` or `=` (after a closing quote and spaces): most words
    // stop here, before their name is compared with any.
    let mut j = word_end;
    if matches!(byte(b, j), b'"' | b'\'') {
        j += 1;
    }
    j = run(b, j, |c| c == b' ');
    if !matches!(byte(b, j), b':' | b'=') {
        return None;
    }
    let name = &b[i..word_end];
    // Every field name below ends in one of these letters.
    let last = name.last().map_or(0, u8::to_ascii_lowercase);
    if name.len() < 3 || name.len() > 32 || !matches!(last, b'y' | b'n' | b't' | b'd' | b'e') {
        return None;
    }
    let ends = |s: &str| {
        name.len() >= s.len() && name[name.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
    };
    let is_field = SECRET_FIELDS
        .iter()
        .any(|w| name.eq_ignore_ascii_case(w.as_bytes()))
        || SECRET_SUFFIXES.iter().any(|s| ends(s));
    if !is_field {
        return None;
    }
    let password = ["password", "passwd", "pwd", "passphrase"]
        .iter()
        .any(|s| ends(s));
    j = run(b, j + 1, |c| c == b' ');
    let quote = matches!(byte(b, j), b'"' | b'\'');
    let from = j + usize::from(quote);
    let end = run(b, from, |c| {
        c.is_ascii_graphic() && !b"\"'`,;)}]<>".contains(&c)
    });
    let value = &b[from..end];
    let plausible = if password {
        (6..=128).contains(&value.len())
            && value.iter().any(|c| !c.is_ascii_alphabetic())
            && !value.starts_with(b"${")
            && !value.iter().all(|&c| c == b'*' || c == b'x' || c == b'X')
    } else {
        (16..=512).contains(&value.len())
            && value.iter().any(u8::is_ascii_digit)
            && value.iter().any(u8::is_ascii_alphabetic)
            && entropy(value) >= 3.0
    };
    plausible.then_some((from, end))
}

/// Shannon entropy of the bytes, in bits per byte.
fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in s {
        counts[usize::from(c)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// PEM private key blocks, `-----BEGIN ... PRIVATE KEY-----` to the matching end line (or the
/// end of the text, when it is cut off).
fn private_keys(text: &str, found: &mut Vec<Finding>) {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    const TAIL: &[u8] = b"PRIVATE KEY-----";
    // Built once: building a searcher cost more than the search on a short prompt.
    static BEGINS: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(BEGIN));
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = BEGINS.find(&b[from..]) {
        let start = from + offset;
        let line_end = memchr::memchr(b'\n', &b[start..]).map_or(b.len(), |n| start + n);
        let Some(header) = memchr::memmem::find(&b[start..line_end], TAIL) else {
            from = start + BEGIN.len();
            continue;
        };
        let body = start + header + TAIL.len();
        let end = memchr::memmem::find_iter(&b[body..], END)
            .find_map(|n| {
                let at = body + n;
                let close = memchr::memmem::find(&b[at..], TAIL)?;
                Some(at + close + TAIL.len())
            })
            .unwrap_or(b.len());
        found.push(Finding {
            start,
            end,
            entity: PiiEntity::Secret,
        });
        from = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values found in `text`, with their kinds.
    fn found(text: &str) -> Vec<(PiiEntity, &str)> {
        find(text, Entities::of(&PiiEntity::ALL))
            .into_iter()
            .map(|f| (f.entity, &text[f.start..f.end]))
            .collect()
    }

    fn one(text: &str, entity: PiiEntity, value: &str) {
        assert_eq!(found(text), [(entity, value)], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(found(text), [], "in {text:?}");
    }

    /// Skipping from mark to mark finds what reading every word finds, on texts pieced
    /// together at random from values of every kind, their near misses, words and separators.
    #[test]
    fn skipping_to_marks_finds_what_reading_every_word_finds() {
        let pieces = [
            " ",
            " ",
            " ",
            "  ",
            "\n",
            ", ",
            ". ",
            ": ",
            " = ",
            "=",
            "\"",
            "'",
            "-",
            "_",
            "(",
            ")",
            "+",
            "/",
            ".",
            ":",
            "::",
            "#",
            "the",
            "an",
            "Proxima",
            "iPhone",
            "Bearer",
            "bearer",
            "password",
            "api_key",
            "token",
            "Secret",
            "sk",
            "sk-",
            "AKIA",
            "AIza",
            "eyJ",
            "xoxb",
            "ghp_",
            "github_pat_",
            "DE89",
            "GB82",
            "WEST",
            "version",
            "phone",
            "SSN",
            "é",
            "naïve",
            "1234",
            "0",
            "07",
            "555",
            "2671",
            "4111",
            "192",
            "168",
            "fe80",
            "abcd",
            "db8",
            "hunter22",
            "sk-proj-4fT9xQ2mN8vB1kL7pR3sZ6wY0",
            "AKIAIOSFODNN7EXAMPLE",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "4111 1111 1111 1111",
            "(415) 555-2671",
            "+44 20 7946 0958",
            "2001:db8:85a3::8a2e:370:7334",
            "192.168.10.24",
            "123-45-6789",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-1234567890-abcdefghij",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
            "v2.10.3",
            "2024-05-06",
            "ORD-2024-555-1234",
        ];
        let wanted = [
            Entities::of(&PiiEntity::ALL),
            Entities::of(&[PiiEntity::Secret]),
            Entities::of(&[PiiEntity::Phone, PiiEntity::Iban]),
            Entities::of(&[PiiEntity::Ip]),
        ];
        let mut rng = fastrand::Rng::with_seed(16);
        let mut findings = 0;
        for _ in 0..20_000 {
            let text: String = (0..rng.usize(1..16))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            let b = text.as_bytes();
            for &wanted in &wanted {
                let (mut skipping, mut every) = (Vec::new(), Vec::new());
                words(b, wanted, &mut skipping);
                scan(b, 0, b.len() - 1, wanted, &mut every);
                assert_eq!(skipping, every, "in {text:?}");
                findings += every.len();
            }
        }
        // The texts hold values often enough for the comparison to mean something.
        assert!(findings > 10_000, "{findings}");
    }

    #[test]
    fn emails() {
        one(
            "mail ann.lee+tag@mail.example.co.uk.",
            PiiEntity::Email,
            "ann.lee+tag@mail.example.co.uk",
        );
        one(
            "<bob_o'neil@example.org>",
            PiiEntity::Email,
            "bob_o'neil@example.org",
        );
        none("@decorator and user@localhost and icon@2x.png and a@b");
        none("email@ is empty, so is @example.com");
    }

    #[test]
    fn phone_numbers() {
        for phone in [
            "+1 (415) 555-2671",
            "+44 20 7946 0958",
            "+33 6 12 34 56 78",
            "+14155552671",
            "+49 30 12345678",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "1 800 555 0199",
            "020 7946 0958",
            "06 12 34 56 78",
            "030 12345678",
        ] {
            one(&format!("call {phone} today"), PiiEntity::Phone, phone);
        }
        one("phone: 4155552671", PiiEntity::Phone, "4155552671");
        // Two in a row, and one after a room number.
        assert_eq!(
            found("415-555-2671 212-555-0100"),
            [
                (PiiEntity::Phone, "415-555-2671"),
                (PiiEntity::Phone, "212-555-0100")
            ]
        );
        one("room 12 415-555-2671", PiiEntity::Phone, "415-555-2671");
        // Too short, no shape, invalid area or exchange code, a bare number without a phone word.
        none("555-1234, 12 34 56, 123-456-7890, 415-155-2671, order 4155552671");
        none("+1 and +20 and 1+1=2");
    }

    #[test]
    fn cards_need_luhn_an_issuer_and_a_printed_grouping() {
        for card in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
            "6011000990139424",
        ] {
            one(&format!("card {card}."), PiiEntity::Card, card);
        }
        none("4111 1111 1111 1112");
        none("4111111111111112");
        // Luhn-valid, but from no issuer (a millisecond timestamp) or oddly grouped.
        none("1717171717178 and 41 1111 1111 1111 11");
    }

    #[test]
    fn ibans_need_their_length_and_mod_97() {
        one(
            "IBAN DE89 3704 0044 0532 0130 00 please",
            PiiEntity::Iban,
            "DE89 3704 0044 0532 0130 00",
        );
        one(
            "GB82WEST12345698765432",
            PiiEntity::Iban,
            "GB82WEST12345698765432",
        );
        one(
            "FR1420041010050500013M02606",
            PiiEntity::Iban,
            "FR1420041010050500013M02606",
        );
        none("DE88 3704 0044 0532 0130 00");
        none("GB82WEST1234569876543 and XX82WEST12345698765432");
    }

    #[test]
    fn ssns_follow_the_assignment_rules() {
        one("ssn 123-45-6789", PiiEntity::Ssn, "123-45-6789");
        one("SSN: 123456789", PiiEntity::Ssn, "123456789");
        none("000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000");
        none("order 123456789");
    }

    #[test]
    fn ip_addresses() {
        one("from 192.168.1.10.", PiiEntity::Ip, "192.168.1.10");
        one("host 1.2.3.4 answered", PiiEntity::Ip, "1.2.3.4");
        one(
            "at 2001:db8:85a3::8a2e:370:7334, then",
            PiiEntity::Ip,
            "2001:db8:85a3::8a2e:370:7334",
        );
        one(
            "fe80:0:0:0:202:b3ff:fe1e:8329",
            PiiEntity::Ip,
            "fe80:0:0:0:202:b3ff:fe1e:8329",
        );
        // Starting with a hex letter, and with `::`.
        one(
            "ping dead:beef:0:1::2 now",
            PiiEntity::Ip,
            "dead:beef:0:1::2",
        );
        one("via ::ffff:c000:280.", PiiEntity::Ip, "::ffff:c000:280");
        none("version 1.2.3.4, v1.2.3.4, 1.2.3, 10.0.0.1.5, 256.1.1.1, 01.2.3.4");
        none("at 12:30:45, mac 00:1A:2B:3C:4D:5E, std::vector, a::b");
    }

    #[test]
    fn secrets() {
        let cases = [
            "sk-proj-4fT9xQ2mN8vB1kL7pR3sZ6wY0",
            "sk-ant-api03-AbC123dEf456GhI789jKl012",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_1234567890abcdefghijABCDEFGHIJ123456",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "xoxb-123456789012-abcdefABCDEF",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ];
        for secret in cases {
            one(&format!("use {secret} now"), PiiEntity::Secret, secret);
        }
        one(
            "Authorization: Bearer abc123DEF456ghi789JKL",
            PiiEntity::Secret,
            "abc123DEF456ghi789JKL",
        );
        one(
            r#"{"password": "hunter22!"}"#,
            PiiEntity::Secret,
            "hunter22!",
        );
        one(
            "API_KEY=Zq8vK2mT9xL4pW7nR1sY",
            PiiEntity::Secret,
            "Zq8vK2mT9xL4pW7nR1sY",
        );
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        one(&format!("key:\n{pem}\nend"), PiiEntity::Secret, pem);
        // Words that merely look like it.
        none(
            "sk-learn-is-a-library, the key: it matters, password: required, Bearer tokens expire",
        );
        none("token = aaaaaaaaaaaaaaaaaaaaaaaa, password=********, monkey: 1234567890abcdefgh");
    }

    #[test]
    fn ordinary_numbers_are_not_personal_data() {
        none(
            "Released v2.10.3 on 2024-05-06 at 12:30:45Z (12/05/2024, 06.05.2024). \
             Order #123456789 and ORD-2024-555-1234 cost $1,299.99 or 1.234,56 EUR; \
             id 123e4567-e89b-12d3-a456-426614174000, ISBN 978-3-16-148410-0, pi 3.14159, \
             timestamp 1717171717, 2024-05-06T12:30:45Z, 5 x 1000 mg, 12 34 56 78.",
        );
    }

    #[test]
    fn several_in_one_text_are_found_in_order() {
        let text =
            "Ann (ann@example.com, +44 20 7946 0958) paid with 4111 1111 1111 1111 from 10.0.0.7";
        let kinds: Vec<PiiEntity> = found(text).into_iter().map(|(e, _)| e).collect();
        assert_eq!(
            kinds,
            [
                PiiEntity::Email,
                PiiEntity::Phone,
                PiiEntity::Card,
                PiiEntity::Ip
            ]
        );
        // Only the kinds asked for.
        let cards = find(text, Entities::default().with(PiiEntity::Card));
        assert_eq!(cards.len(), 1);
    }
}
