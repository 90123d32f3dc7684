//! Whether a Lark grammar's `start` rule can derive a finite text at all.
//! llguidance compiles `start: "a" start` without complaint and then lets
//! the model write `a` forever; this check turns such a grammar into an
//! error before anything runs. It reads the rule syntax llguidance's Lark
//! shares with Lark (rules, alternatives, groups, `[...]`, `*`, `+`, `?`,
//! `~ n`, strings, regexes, directives) and gives up (says nothing) on
//! anything it does not recognise: llguidance remains the judge of syntax.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// A string, a regex, a token or anything else that is text.
    Terminal,
    Open(char),
    Close(char),
    Bar,
    /// `*`, `?`, or `~ 0..`: the item may be absent.
    Optional,
    /// `+`, or `~ n` with n ≥ 1: the item is needed.
    Needed,
}

/// `Some(rule)` naming the first unproductive rule reachable as `start`, when
/// `start` can never end; `None` when it can or the grammar is beyond this check.
pub(super) fn start_cannot_end(grammar: &str) -> Option<String> {
    let rules = rules(grammar)?;
    if !rules.contains_key("start") {
        return None;
    }
    let mut productive: HashMap<&str, bool> = rules.keys().map(|k| (k.as_str(), false)).collect();
    loop {
        let mut changed = false;
        for (name, body) in &rules {
            if productive[name.as_str()] {
                continue;
            }
            let mut pos = 0;
            if alternatives(body, &mut pos, &productive)? {
                productive.insert(name.as_str(), true);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    (!productive["start"]).then(|| "start".to_string())
}

/// Rule name → its tokens (alternatives separated by `|`).
fn rules(grammar: &str) -> Option<HashMap<String, Vec<Tok>>> {
    let mut out: HashMap<String, Vec<Tok>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in grammar.lines() {
        let line = strip_comment(line);
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('%') {
            current = None;
            continue;
        }
        if let Some(rest) = t.strip_prefix('|') {
            let name = current.as_ref()?;
            let body = out.get_mut(name)?;
            body.push(Tok::Bar);
            body.extend(tokens(rest)?);
            continue;
        }
        let colon = t.find(':')?;
        let head = t[..colon].trim();
        let name = head.trim_start_matches(['?', '!']);
        let name = name.split('.').next()?.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let body = tokens(&t[colon + 1..])?;
        if out.insert(name.to_string(), body).is_some() {
            return None;
        }
        current = Some(name.to_string());
    }
    Some(out)
}

/// The line without a `//` comment outside strings and regexes.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let (mut i, mut quote) = (0, None::<u8>);
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'"') => quote = Some(b'"'),
            (None, b'/') if b.get(i + 1) == Some(&b'/') => return &line[..i],
            (None, b'/') => quote = Some(b'/'),
            _ => {}
        }
        i += 1;
    }
    line
}

fn tokens(s: &str) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' => i += 1,
            '"' | '/' => {
                i += 1;
                while i < c.len() && c[i] != ch {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                if i >= c.len() {
                    return None;
                }
                i += 1;
                // Flags of a regex or string (`i`, `s`, ...).
                while i < c.len() && c[i].is_ascii_alphabetic() {
                    i += 1;
                }
                out.push(Tok::Terminal);
            }
            '<' => {
                // A special token `<|...|>` or `<[ids]>`.
                let end = c[i..].iter().position(|&x| x == '>')?;
                i += end + 1;
                out.push(Tok::Terminal);
            }
            '(' | '[' => {
                out.push(Tok::Open(ch));
                i += 1;
            }
            ')' | ']' => {
                out.push(Tok::Close(ch));
                i += 1;
            }
            '|' => {
                out.push(Tok::Bar);
                i += 1;
            }
            '*' | '?' => {
                out.push(Tok::Optional);
                i += 1;
            }
            '+' => {
                out.push(Tok::Needed);
                i += 1;
            }
            '~' => {
                i += 1;
                while i < c.len() && c[i] == ' ' {
                    i += 1;
                }
                let start = i;
                while i < c.len() && c[i].is_ascii_digit() {
                    i += 1;
                }
                let n: usize = c[start..i].iter().collect::<String>().parse().ok()?;
                if i + 1 < c.len() && c[i] == '.' && c[i + 1] == '.' {
                    i += 2;
                    while i < c.len() && c[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                out.push(if n == 0 { Tok::Optional } else { Tok::Needed });
            }
            c0 if c0.is_alphabetic() || c0 == '_' => {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Name(c[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Whether some alternative from `pos` (up to a closing bracket or the
/// end) derives a finite text; `None` on syntax this check does not know.
fn alternatives(t: &[Tok], pos: &mut usize, productive: &HashMap<&str, bool>) -> Option<bool> {
    let mut any = false;
    loop {
        any |= sequence(t, pos, productive)?;
        match t.get(*pos) {
            Some(Tok::Bar) => *pos += 1,
            _ => return Some(any),
        }
    }
}

fn sequence(t: &[Tok], pos: &mut usize, productive: &HashMap<&str, bool>) -> Option<bool> {
    let mut all = true;
    while let Some(tok) = t.get(*pos) {
        let mut item = match tok {
            Tok::Bar | Tok::Close(_) => break,
            Tok::Terminal => {
                *pos += 1;
                true
            }
            // An undefined name (a lexer rule llguidance knows): text.
            Tok::Name(n) => {
                *pos += 1;
                productive.get(n.as_str()).copied().unwrap_or(true)
            }
            Tok::Open(kind) => {
                let kind = *kind;
                *pos += 1;
                let inner = alternatives(t, pos, productive)?;
                let close = if kind == '(' { ')' } else { ']' };
                if t.get(*pos) != Some(&Tok::Close(close)) {
                    return None;
                }
                *pos += 1;
                // `[...]` may be absent.
                inner || kind == '['
            }
            Tok::Optional | Tok::Needed => return None,
        };
        while let Some(op) = t.get(*pos) {
            match op {
                Tok::Optional => item = true,
                Tok::Needed => {}
                _ => break,
            }
            *pos += 1;
        }
        all &= item;
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::start_cannot_end;

    #[test]
    fn grammars_that_cannot_end_are_found() {
        assert!(start_cannot_end("start: \"a\" start").is_some());
        assert!(start_cannot_end("start: x\nx: \"(\" x \")\"").is_some());
        assert!(start_cannot_end("start: a b\na: \"x\"\nb: b \"y\"\n  | \"(\" b").is_some());
        assert!(start_cannot_end("start: (\"a\" start)+").is_some());
    }

    #[test]
    fn grammars_that_can_end_pass() {
        for g in [
            "start: \"a\" start | \"b\"",
            "start: x\nx: \"(\" x \")\" | \"()\"",
            "start: (\"a\" start)*",
            "start: [\"a\" start]",
            "start: item (\",\" item)*\nitem: /[a-z]+/ // a word",
            "start: x\n%import common.WS\nx: NUMBER\n",
            "start: \"a\" start ~ 0..3",
        ] {
            assert_eq!(start_cannot_end(g), None, "{g:?}");
        }
    }
}
